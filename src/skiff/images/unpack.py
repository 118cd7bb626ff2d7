"""Unpacking an image's layers into a snapshotter, as containerd's unpacker does.

``unpack(desc, content, snapshotter)`` takes an image manifest (or an index, from which the
manifest for the platform is chosen), reads its config's ``rootfs.diff_ids`` and applies the
layers bottom-up. Each layer becomes the committed snapshot named by the *chain ID* of the
layers up to it (image-spec: ``ChainID(L0) = DiffID(L0)``, ``ChainID(L0..Ln) =
sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))``), so images sharing their lower layers share
snapshots, and a layer already there is not applied again.

For a layer: ``prepare("extract-<ns>-<random> <chainID>", parent chain ID)``, apply the blob to
the returned mounts (:func:`skiff.images.layers.apply_to_mounts`: into the overlay's upper
directory or the bind mount's source, no mount needed for the built-in snapshotters),
check the blob's digest and the diff ID against the config, then ``commit(chainID, key)``.
Any failure removes the half-made snapshot; another unpack committing the same chain ID
first is not an error (the work is dropped, theirs is used).

With ``snapshotter_name`` the content gets containerd's labels: the config blob
``containerd.io/gc.ref.snapshot.<name>=<top chain ID>`` (so garbage collection keeps the
snapshots of a kept image) and each compressed layer ``containerd.io/uncompressed=<diff ID>``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Protocol

from skiff.images.errors import AlreadyExists, DigestMismatch, InvalidArgument, NotFound
from skiff.images.layers import apply_to_mounts
from skiff.images.manifest import (
    LABEL_UNCOMPRESSED,
    MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE,
    PlatformMatcher,
    chain_ids,
    is_index,
    is_layer,
    is_manifest,
    no_match_error,
    parse_config,
    parse_index,
    parse_manifest,
    select_manifests,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import BinaryIO

    from skiff.images.content import Descriptor
    from skiff.images.manifest import Platform
    from skiff.images.snapshots import Snapshotter

log = logging.getLogger("skiff.images.unpack")

LABEL_SNAPSHOT_REF = "containerd.io/snapshot.ref"
LABEL_GC_SNAPSHOT = "containerd.io/gc.ref.snapshot."


class ContentProvider(Protocol):
    """What unpacking reads from the content store (``ContentStore`` fits)."""

    def open(self, digest: str) -> BinaryIO: ...

    def read_all(self, digest: str, max_size: int | None = None) -> bytes: ...


def chain_id(diff_ids: Sequence[str]) -> str:
    """The chain ID of the whole list ("" for none)."""
    ids = chain_ids(diff_ids)
    return ids[-1] if ids else ""


def resolve_manifest(desc: Descriptor, content: ContentProvider,
                     platform: Platform | str | None = None, _depth: int = 0) -> Descriptor:
    """``desc`` itself if it is an image manifest, else the best match for ``platform``
    (default: this machine's) in the index it names."""
    if is_manifest(desc.media_type):
        return desc
    if not is_index(desc.media_type):
        raise InvalidArgument(f"unpack {desc.digest}: media type {desc.media_type!r} is neither an image "
                              "manifest nor an index")
    if _depth > 4:
        raise InvalidArgument(f"unpack {desc.digest}: indexes nested too deep")
    index = parse_index(content.read_all(desc.digest, MAX_MANIFEST_SIZE), desc.media_type,
                        f"index {desc.digest}")
    matcher = PlatformMatcher(platform)
    for d in select_manifests(index, matcher):
        return resolve_manifest(d, content, platform, _depth + 1)
    raise no_match_error(matcher, f"index {desc.digest}")


def _label(content: object, digest: str, key: str, value: str) -> None:
    update = getattr(content, "update_labels", None)
    if update is None:
        raise InvalidArgument(f"label content {digest}: the content store cannot hold labels")
    update(digest, {key: value}, [f"labels.{key}"])


def unpack(desc: Descriptor, content: ContentProvider, snapshotter: Snapshotter, *,
           platform: Platform | str | None = None, snapshotter_name: str | None = None,
           labels: Mapping[str, str] | None = None) -> str:
    """Apply the image's layers into ``snapshotter``; return the top layer's chain ID
    (the snapshot to ``prepare`` a container from; "" for an image without layers).

    ``labels`` are added to each committed snapshot (besides ``containerd.io/snapshot.ref``).
    """
    mdesc = resolve_manifest(desc, content, platform)
    where = f"image {mdesc.digest}"
    manifest = parse_manifest(content.read_all(mdesc.digest, MAX_MANIFEST_SIZE), mdesc.media_type,
                              f"manifest {mdesc.digest}")
    config = parse_config(content.read_all(manifest.config.digest, MAX_CONFIG_SIZE),
                          f"image config {manifest.config.digest}")
    if len(config.diff_ids) != len(manifest.layers):
        raise InvalidArgument(f"{where}: the manifest has {len(manifest.layers)} layers but the config "
                              f"lists {len(config.diff_ids)} diff IDs")
    for i, layer in enumerate(manifest.layers):
        if not is_layer(layer.media_type):
            raise InvalidArgument(f"{where}: layers[{i}]: media type {layer.media_type!r} is not a layer")
    chains = chain_ids(config.diff_ids)
    parent = ""
    for i, (layer, diff_id, chain) in enumerate(zip(manifest.layers, config.diff_ids, chains, strict=True)):
        if not _committed(snapshotter, chain):
            _apply_one(snapshotter, content, layer, diff_id, chain, parent, labels or {},
                       f"{where}: layer {i} ({layer.digest})")
        if snapshotter_name and layer.digest != diff_id:
            _label(content, layer.digest, LABEL_UNCOMPRESSED, diff_id)
        parent = chain
    if snapshotter_name and chains:
        _label(content, manifest.config.digest, LABEL_GC_SNAPSHOT + snapshotter_name, chains[-1])
    return chains[-1] if chains else ""


def _committed(snapshotter: Snapshotter, name: str) -> bool:
    from skiff.images.snapshots import Kind
    try:
        info = snapshotter.stat(name)
    except NotFound:
        return False
    if info.kind != Kind.COMMITTED:
        raise AlreadyExists(f"snapshot {name}: exists but is {str(info.kind).lower()}, not committed")
    return True


def _apply_one(snapshotter: Snapshotter, content: ContentProvider, layer: Descriptor, diff_id: str,
               chain: str, parent: str, labels: Mapping[str, str], where: str) -> None:
    key = f"extract-{time.time_ns()}-{os.urandom(4).hex()} {chain}"
    snap_labels = {**labels, LABEL_SNAPSHOT_REF: chain}
    mounts = snapshotter.prepare(key, parent, snap_labels)
    try:
        with content.open(layer.digest) as f:
            applied = apply_to_mounts(mounts, f, compressed_digest=layer.digest, where=where)
        if applied.compressed_size != layer.size:
            raise DigestMismatch(f"{where}: blob is {applied.compressed_size} bytes, the manifest says {layer.size}")
        if applied.diff_id != diff_id:
            raise DigestMismatch(f"{where}: diff ID {applied.diff_id}, the config says {diff_id}")
        try:
            snapshotter.commit(chain, key, snap_labels)
        except AlreadyExists:
            log.info("%s: snapshot %s committed meanwhile by another unpack; using it", where, chain)
            snapshotter.remove(key)
    except BaseException:
        try:
            snapshotter.remove(key)
        except Exception as ce:  # report, then raise the original
            log.error("%s: remove snapshot %s after a failure: %s", where, key, ce)
        raise
