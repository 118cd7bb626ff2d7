"""Image archives: ``docker load``/``docker save``, OCI archives, ``docker import``/``docker export``.

Loading (``load``) reads a tar stream (plain, gzip, bzip2 or xz) once, in order, without
seeking, so it works on a socket. Every regular file is taken in as it comes: files under
``blobs/<algorithm>/<hex>`` go straight into the content store (the commit checks they hash to
their name), other large files (``<id>/layer.tar`` of the legacy format) too, with their digest
computed; small files (JSON) stay in memory. Symbolic and hard links between members (the
legacy format links a repeated layer to its first copy) are resolved by name inside the
archive, never on disk. Then, whichever layout the archive has:

- an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``): what Docker 25+ ``save``
  writes (with a legacy ``manifest.json`` beside it, ignored then), what skopeo/umoci write as
  ``oci-archive``. Image names come from the index entries' ``io.containerd.image.name``
  annotations, else from ``org.opencontainers.image.ref.name`` when it is a full reference, else
  from ``manifest.json``'s ``RepoTags`` for the same config;
- the legacy docker-archive (``manifest.json`` with ``Config``, ``RepoTags``, ``Layers``):
  what Docker up to 24 writes. A Docker schema 2 manifest is made for each image, with the
  layers' media types from their compression (``LayerSources`` when present), and every
  layer's uncompressed digest is checked against the config's ``rootfs.diff_ids``.

Archives are hostile input: member names that are absolute or climb out with ``..``, links
pointing outside the archive, device nodes, a blob that does not hash to its name, a manifest
naming a blob the archive lacks, a diff ID that does not match its layer: each is an error
that names the member or blob, and nothing is recorded. Images are recorded (and unpacked, when
an ``unpack`` callable is given) only once every blob of every image is committed, all under a
temporary lease. An image with no name is recorded as ``moby-dangling@<digest>``, as Docker's
containerd image store names dangling images.

Saving (``save``) writes what Docker 25+ writes, for any images of the store: an OCI layout
whose ``index.json`` has one entry per name (annotated with ``io.containerd.image.name`` and
``org.opencontainers.image.ref.name``), plus ``manifest.json`` (``Config``, ``RepoTags``,
``Layers`` as blob paths, ``LayerSources``) and ``repositories`` for older ``docker load``. The tar
is reproducible in the same way as ``ocilayout`` (sorted ustar members, fixed metadata): for the
built-in busybox image it is byte for byte ``build/images/busybox.tar``. ``format="oci"`` writes
the OCI layout alone (an ``oci-archive``).

Importing (``import_rootfs``, ``docker import``): a root filesystem tarball (compressed or not)
becomes a one-layer image. The layer is stored uncompressed (its digest is its diff ID) after
the stream was checked to be a tar archive; ``changes`` are Dockerfile instructions applied to
the config, the set Docker allows: ``CMD``, ``ENTRYPOINT``, ``ENV``, ``EXPOSE``, ``HEALTHCHECK``,
``LABEL``, ``ONBUILD``, ``STOPSIGNAL``, ``USER``, ``VOLUME``, ``WORKDIR`` (with Dockerfile quoting
and ``$VAR`` expansion from the ENV set so far); anything else is refused with Docker's
``run is not a valid change command``.

Exporting (``export_rootfs``, ``docker export``): a directory tree (a container's mounted root
filesystem) as a PAX tar with owners, modes, mtimes, hard links, symlinks, device nodes, FIFOs
and extended attributes; sockets are left out. The walk goes through directory file
descriptors and never follows a symbolic link, so a container changing its files meanwhile
cannot make it read outside the tree. ``export_mounts`` mounts snapshotter mounts on a temporary
directory, exports, and unmounts (root only).
"""

from __future__ import annotations

import bz2
import datetime as _dt
import errno
import hashlib
import io
import json
import lzma
import os
import posixpath
import re
import secrets
import stat
import tarfile
import tempfile
import zlib

from skiff.images.content import DEFAULT_NAMESPACE, Descriptor, validate_digest
from skiff.images.errors import DigestMismatch, ImageError, InvalidArgument, NotFound
from skiff.images.leases import LeaseManager
from skiff.images.manifest import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_ZSTD,
    DOCKER_MANIFEST,
    LAYER_TYPES,
    MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Platform,
    PlatformMatcher,
    default_platform,
    detect_compression,
    gc_labels,
    is_index,
    is_manifest,
    json_bytes,
    parse_config,
    parse_index,
    parse_manifest,
    parse_platform,
    ref_key,
    select_manifests,
)
from skiff.images.metadata import ImageRecord
from skiff.images.ocilayout import OCI_LAYOUT_VERSION
from skiff.images.reference import ReferenceError, parse_docker_ref

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import IO, Any, BinaryIO

    from skiff.images.content import ContentStore
    from skiff.images.metadata import MetaDB
    from skiff.images.snapshots import Mount

    ProgressCallback = Callable[[dict], None]

BLOCK = 1 << 20
SMALL_FILE = 1 << 20  # archive members up to this size are kept in memory (JSON documents)
DANGLING_PREFIX = "moby-dangling@"

_BLOB_PATH = re.compile(r"blobs/(sha256|sha512)/([0-9a-f]+)\Z")


class ArchiveError(InvalidArgument):
    """An archive (or rootfs tarball) is malformed or hostile."""


# --- compressed streams ---------------------------------------------------------------------

class _Peek:
    """A reader with its first bytes available before reading."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._buf = b""
        while len(self._buf) < 6:
            chunk = f.read(6 - len(self._buf))
            if not chunk:
                break
            self._buf += chunk
        self.head = self._buf

    def read(self, n: int = -1) -> bytes:
        if self._buf:
            if n < 0:
                out, self._buf = self._buf + self._f.read(), b""
                return out
            out, self._buf = self._buf[:n], self._buf[n:]
            if len(out) < n:
                out += self._f.read(n - len(out))
            return out
        return self._f.read(n)


class _Decompressed:
    """The decompressed bytes of a gzip, bzip2, xz or zstd stream (or the stream itself).

    Output is produced only as far as it is read (each decompressor call is bounded by what
    the reader asked for), so a small, highly compressed input cannot make it hold gigabytes.
    """

    def __init__(self, f: BinaryIO, where: str) -> None:
        peek = _Peek(f)
        self.kind = detect_compression(peek.head)
        self._src = peek
        self._where = where
        self._pending = b""  # compressed input not given to the decompressor yet
        self._eof = False
        self._d: Any = None
        if self.kind == "gzip":
            self._d = zlib.decompressobj(wbits=47)
        elif self.kind == "bzip2":
            self._d = bz2.BZ2Decompressor()
        elif self.kind == "xz":
            self._d = lzma.LZMADecompressor()
        elif self.kind == "zstd":
            try:
                import zstandard
            except ImportError:
                raise ArchiveError(f"{where}: zstd-compressed, and the zstandard module is not installed"
                                   ) from None
            src: Any = peek
            self._zstd_reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)

    def _input(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        return self._src.read(BLOCK)

    def _some(self, limit: int) -> bytes:
        """Up to ``limit`` (> 0) decompressed bytes; b"" only at the end."""
        d = self._d
        while True:
            if d.eof:
                rest = d.unused_data + self._pending
                self._pending = b""
                if self.kind == "gzip":
                    rest = rest or self._src.read(BLOCK)
                    if rest.strip(b"\x00"):  # another gzip member (pigz, concatenated files)
                        self._d = d = zlib.decompressobj(wbits=47)
                        self._pending = rest
                        continue
                    while rest:  # zero padding up to the end
                        if rest.strip(b"\x00"):
                            raise ArchiveError(f"{self._where}: data after the end of the gzip stream")
                        rest = self._src.read(BLOCK)
                else:
                    while rest:
                        if rest.strip(b"\x00"):
                            raise ArchiveError(f"{self._where}: data after the end of the {self.kind} stream")
                        rest = self._src.read(BLOCK)
                self._eof = True
                return b""
            if self.kind == "gzip":
                data = d.unconsumed_tail or self._input()
                if not data:
                    raise ArchiveError(f"{self._where}: gzip stream is truncated")
                out = d.decompress(data, limit)
            else:
                data = self._input() if d.needs_input else b""
                if d.needs_input and not data:
                    raise ArchiveError(f"{self._where}: {self.kind} stream is truncated")
                out = d.decompress(data, limit)
            if out:
                return out

    def read(self, n: int = -1) -> bytes:
        if self.kind == "":
            return self._src.read(n)
        if self.kind == "zstd":
            try:
                return self._zstd_reader.read(n if n >= 0 else -1)
            except Exception as e:  # zstandard.ZstdError
                raise ArchiveError(f"{self._where}: zstd data is corrupt: {e}") from e
        out = bytearray()
        want = n if n >= 0 else -1
        try:
            while not self._eof and (want < 0 or len(out) < want):
                out += self._some(BLOCK if want < 0 else want - len(out))
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as e:
            raise ArchiveError(f"{self._where}: {self.kind} data is corrupt: {e}") from e
        return bytes(out)


def uncompressed_digest(f: BinaryIO, where: str) -> tuple[str, int]:
    """sha256 digest and size of the decompressed content of ``f``."""
    d = _Decompressed(f, where)
    h = hashlib.sha256()
    size = 0
    while chunk := d.read(BLOCK):
        h.update(chunk)
        size += len(chunk)
    return "sha256:" + h.hexdigest(), size


# --- reading an archive ---------------------------------------------------------------------

def _clean_member_name(raw: str, where: str) -> str:
    name = raw
    while name.startswith("./"):
        name = name[2:]
    if name.startswith("/"):
        raise ArchiveError(f"{where}: member {raw!r}: absolute path refused")
    norm = posixpath.normpath(name) if name else "."
    if norm == ".." or norm.startswith("../"):
        raise ArchiveError(f"{where}: member {raw!r}: leaves the archive")
    return "" if norm == "." else norm


class _ArchiveFiles:
    """The files of an archive: small ones in memory, others committed to the store."""

    def __init__(self, store: ContentStore, where: str) -> None:
        self.store = store
        self.where = where
        self.small: dict[str, bytes] = {}
        self.blobs: dict[str, tuple[str, int]] = {}  # path -> (digest, size), committed
        self.links: dict[str, str] = {}
        self._counter = 0
        self._session = secrets.token_hex(8)

    def read(self, stream: BinaryIO) -> None:
        try:
            tar = tarfile.open(fileobj=stream, mode="r|*", bufsize=BLOCK)
        except tarfile.TarError as e:
            raise ArchiveError(f"{self.where}: not a tar archive: {e}") from e
        seen: set[str] = set()
        try:
            for member in tar:
                name = _clean_member_name(member.name, self.where)
                if not name or member.isdir():
                    continue
                if name in seen:
                    raise ArchiveError(f"{self.where}: member {name!r} appears twice")
                seen.add(name)
                if member.issym():
                    target = member.linkname
                    if target.startswith("/"):
                        raise ArchiveError(f"{self.where}: symlink {name!r} -> {target!r}: absolute target refused")
                    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
                    if resolved == ".." or resolved.startswith("../"):
                        raise ArchiveError(f"{self.where}: symlink {name!r} -> {target!r} leaves the archive")
                    self.links[name] = resolved
                elif member.islnk():
                    self.links[name] = _clean_member_name(member.linkname, self.where)
                elif member.isreg():
                    f = tar.extractfile(member)
                    assert f is not None
                    self._take(name, member.size, f)
                else:
                    raise ArchiveError(f"{self.where}: member {name!r}: {_type_name(member)} not expected "
                                       "in an image archive")
        except tarfile.TarError as e:
            raise ArchiveError(f"{self.where}: truncated or corrupt tar archive: {e}") from e
        except (EOFError, zlib.error, lzma.LZMAError) as e:
            raise ArchiveError(f"{self.where}: truncated or corrupt archive: {e}") from e

    def _take(self, name: str, size: int, f: IO[bytes]) -> None:
        m = _BLOB_PATH.match(name)
        if m is None and size <= SMALL_FILE:
            data = f.read()
            if len(data) != size:
                raise ArchiveError(f"{self.where}: member {name!r}: truncated")
            self.small[name] = data
            return
        expected = None
        if m is not None:
            expected = f"{m.group(1)}:{m.group(2)}"
            try:
                validate_digest(expected, f"{self.where}: member {name!r}")
            except InvalidArgument as e:
                raise ArchiveError(str(e)) from None
        self._counter += 1
        ref = f"archive-{self._session}-{self._counter}"
        # the store hashes what is written (and checks it against ``expected`` at the commit):
        # the digest comes from the commit, the data is hashed once
        with self.store.writer(ref, expected, size) as w:
            try:
                left = size
                while left > 0:
                    chunk = f.read(min(BLOCK, left))
                    if not chunk:
                        raise ArchiveError(f"{self.where}: member {name!r}: truncated")
                    w.write(chunk)
                    left -= len(chunk)
                try:
                    digest = w.commit(size, expected).digest
                except DigestMismatch as e:
                    raise ArchiveError(f"{self.where}: blob {name}: content has a digest, not the one its name "
                                       f"says ({e})") from None
            except BaseException:
                w.close()
                self.store.abort(ref)
                raise
        self.blobs[name] = (digest, size)

    def resolve(self, path: str, where: str) -> str:
        name = _clean_member_name(path, where)
        for _ in range(40):
            if name in self.links:
                name = self.links[name]
                continue
            return name
        raise ArchiveError(f"{where}: {path!r}: too many levels of links")

    def has(self, path: str) -> bool:
        name = self.resolve(path, self.where)
        return name in self.small or name in self.blobs

    def read_bytes(self, path: str, where: str, limit: int) -> bytes:
        name = self.resolve(path, where)
        if name in self.small:
            return self.small[name]
        if name in self.blobs:
            return self.store.read_all(self.blobs[name][0], limit)
        raise ArchiveError(f"{where}: {path!r} is missing from the archive")

    def blob(self, path: str, where: str) -> tuple[str, int]:
        """(digest, size) of an archive file, committing it to the store if held in memory."""
        name = self.resolve(path, where)
        if name in self.blobs:
            return self.blobs[name]
        if name in self.small:
            data = self.small[name]
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            _commit_bytes(self.store, f"archive-{digest}", digest, data)
            self.blobs[name] = (digest, len(data))
            return self.blobs[name]
        raise ArchiveError(f"{where}: {path!r} is missing from the archive")


def _type_name(m: tarfile.TarInfo) -> str:
    if m.ischr():
        return "character device"
    if m.isblk():
        return "block device"
    if m.isfifo():
        return "FIFO"
    return f"member of type {m.type!r}"


def _commit_bytes(store: ContentStore, ref: str, digest: str, data: bytes,
                  labels: dict[str, str] | None = None) -> None:
    from skiff.images.pull import store_bytes
    store_bytes(store, ref, digest, data, labels)


# --- load -----------------------------------------------------------------------------------

class LoadedImage:
    """An image taken from an archive: its names (normalised), top descriptor, the manifest
    chosen for the platform, and its ID (the config digest)."""

    __slots__ = ("config_digest", "manifest", "names", "records", "target")

    def __init__(self, names: list[str], target: Descriptor, manifest: Descriptor, config_digest: str) -> None:
        self.names = names
        self.target = target
        self.manifest = manifest
        self.config_digest = config_digest
        self.records: list[ImageRecord] = []

    def __repr__(self) -> str:
        return f"LoadedImage({self.names!r}, {self.target.digest!r})"


def _name_from_annotation(value: str) -> str | None:
    try:
        ref = parse_docker_ref(value)
    except ReferenceError:
        return None
    return str(ref)


def load(stream: BinaryIO, content: ContentStore, meta: MetaDB, namespace: str = DEFAULT_NAMESPACE, *,
         progress_cb: ProgressCallback | None = None, platform: str | Platform | None = None,
         unpack: Callable[[Descriptor, ContentStore], object] | None = None,
         where: str = "archive") -> list[LoadedImage]:
    """Load every image of a docker-archive or OCI archive stream (see module doc)."""
    matcher = PlatformMatcher(platform)
    with LeaseManager(meta, namespace).temporary() as lease:
        store = content.using(namespace, lease.id)
        files = _ArchiveFiles(store, where)
        files.read(stream)
        if "index.json" in files.small or "index.json" in files.links:
            images = _load_oci(files, store, matcher, where)
        elif files.has("manifest.json"):
            images = _load_legacy(files, store, where)
        else:
            raise ArchiveError(f"{where}: not a docker-archive or OCI archive: it has neither manifest.json "
                               "nor index.json")
        if not images:
            raise ArchiveError(f"{where}: holds no image")
        if unpack is not None:
            for img in images:
                unpack(img.manifest, store)
        with meta.transaction() as tx:
            for img in images:
                names = img.names or [DANGLING_PREFIX + img.target.digest]
                for name in names:
                    record = ImageRecord(name, img.target)
                    try:
                        tx.get_image(namespace, name)
                    except NotFound:
                        img.records.append(tx.create_image(namespace, record))
                    else:
                        img.records.append(tx.update_image(namespace, record, ["target"]))
    if progress_cb is not None:
        for img in images:
            if img.names:
                for name in img.names:
                    progress_cb({"stream": f"Loaded image: {parse_docker_ref(name).familiar()}\n"})
            else:
                progress_cb({"stream": f"Loaded image ID: {img.config_digest}\n"})
    return images


def _check_manifest_blobs(files: _ArchiveFiles, store: ContentStore, desc: Descriptor, where: str) -> str:
    """Check an image manifest's blobs are all in; returns the config digest."""
    data = store.read_all(desc.digest, MAX_MANIFEST_SIZE)
    manifest = parse_manifest(data, desc.media_type, f"{where}: manifest {desc.digest}")
    for kind, blob in [("config", manifest.config)] + [(f"layers[{i}]", d) for i, d in enumerate(manifest.layers)]:
        if not store.exists(blob.digest):
            raise ArchiveError(f"{where}: manifest {desc.digest}: {kind} blob {blob.digest} is missing from "
                               "the archive")
        if store.info(blob.digest).size != blob.size:
            raise ArchiveError(f"{where}: manifest {desc.digest}: {kind} blob {blob.digest} has size "
                               f"{store.info(blob.digest).size}, the manifest says {blob.size}")
    config = parse_config(store.read_all(manifest.config.digest, MAX_CONFIG_SIZE),
                          f"{where}: config {manifest.config.digest}")
    if len(config.diff_ids) != len(manifest.layers):
        raise ArchiveError(f"{where}: manifest {desc.digest} lists {len(manifest.layers)} layers, its config "
                           f"{len(config.diff_ids)} diff IDs")
    store.update_labels(desc.digest, gc_labels(desc, data),
                        tuple(f"labels.{k}" for k in gc_labels(desc, data)))
    return manifest.config.digest


def _load_oci(files: _ArchiveFiles, store: ContentStore, matcher: PlatformMatcher, where: str) -> list[LoadedImage]:
    if files.has("oci-layout"):
        try:
            layout = json.loads(files.read_bytes("oci-layout", where, SMALL_FILE))
        except ValueError as e:
            raise ArchiveError(f"{where}: oci-layout is not JSON: {e}") from e
        version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
        if version != OCI_LAYOUT_VERSION:
            raise ArchiveError(f"{where}: oci-layout: unsupported imageLayoutVersion {version!r}")
    index_data = files.read_bytes("index.json", where, MAX_MANIFEST_SIZE)
    index = parse_index(index_data, None, f"{where}: index.json")
    repo_tags: dict[str, list[str]] = {}
    if files.has("manifest.json"):
        for item in _legacy_items(files, where):
            cfg = item.get("Config")
            if isinstance(cfg, str) and files.has(cfg):
                digest = files.blob(cfg, where)[0]
                repo_tags.setdefault(digest, []).extend(t for t in item.get("RepoTags") or [] if isinstance(t, str))
    images: dict[str, LoadedImage] = {}
    for i, desc in enumerate(index.manifests):
        w = f"{where}: index.json: manifests[{i}]"
        if not store.exists(desc.digest):
            raise ArchiveError(f"{w}: blob {desc.digest} is missing from the archive")
        if store.info(desc.digest).size != desc.size:
            raise ArchiveError(f"{w}: blob {desc.digest} has size {store.info(desc.digest).size}, the index "
                               f"says {desc.size}")
        if is_index(desc.media_type):
            manifest_desc, config_digest = _check_index(files, store, desc, matcher, w)
        elif is_manifest(desc.media_type):
            manifest_desc, config_digest = desc, _check_manifest_blobs(files, store, desc, w)
        else:
            raise ArchiveError(f"{w}: media type {desc.media_type} is not an image manifest or index")
        target = Descriptor(desc.media_type, desc.digest, desc.size, platform=desc.platform)
        img = images.get(desc.digest)
        if img is None:
            img = images[desc.digest] = LoadedImage([], target, manifest_desc, config_digest)
        name = None
        ann = desc.annotations
        if ann.get(ANNOTATION_IMAGE_NAME):
            name = _name_from_annotation(ann[ANNOTATION_IMAGE_NAME])
        elif ann.get(ANNOTATION_REF_NAME) and ("/" in ann[ANNOTATION_REF_NAME] or ":" in ann[ANNOTATION_REF_NAME]):
            name = _name_from_annotation(ann[ANNOTATION_REF_NAME])
        if name is None:
            for tag in repo_tags.get(config_digest, []):
                n = _name_from_annotation(tag)
                if n is not None and n not in img.names:
                    img.names.append(n)
        elif name not in img.names:
            img.names.append(name)
    return list(images.values())


def _check_index(files: _ArchiveFiles, store: ContentStore, desc: Descriptor, matcher: PlatformMatcher,
                 where: str, depth: int = 0) -> tuple[Descriptor, str]:
    if depth > 4:
        raise ArchiveError(f"{where}: indexes nested more than 4 deep")
    data = store.read_all(desc.digest, MAX_MANIFEST_SIZE)
    index = parse_index(data, desc.media_type, f"{where}: index {desc.digest}")
    present = {c.digest for c in index.manifests if store.exists(c.digest)}
    chosen: tuple[Descriptor, str] | None = None
    for candidate in select_manifests(index, matcher):
        if candidate.digest not in present:
            continue
        if is_index(candidate.media_type):
            chosen = _check_index(files, store, candidate, matcher, where, depth + 1)
        else:
            chosen = (candidate, _check_manifest_blobs(files, store, candidate, where))
        break
    if chosen is None:
        raise ArchiveError(f"{where}: index {desc.digest} has no complete manifest for {matcher.platform} in "
                           "the archive")
    labels = gc_labels(desc, data, present)
    store.update_labels(desc.digest, labels, tuple(f"labels.{k}" for k in labels))
    return chosen


def _legacy_items(files: _ArchiveFiles, where: str) -> list[dict]:
    try:
        doc = json.loads(files.read_bytes("manifest.json", where, MAX_MANIFEST_SIZE))
    except ValueError as e:
        raise ArchiveError(f"{where}: manifest.json is not JSON: {e}") from e
    if not isinstance(doc, list) or not all(isinstance(i, dict) for i in doc):
        raise ArchiveError(f"{where}: manifest.json: expected an array of objects")
    return doc


def _load_legacy(files: _ArchiveFiles, store: ContentStore, where: str) -> list[LoadedImage]:
    images: list[LoadedImage] = []
    for i, item in enumerate(_legacy_items(files, where)):
        w = f"{where}: manifest.json[{i}]"
        cfg_path, layer_paths = item.get("Config"), item.get("Layers")
        tags = item.get("RepoTags") or []
        if not isinstance(cfg_path, str) or not isinstance(layer_paths, list) or not all(
                isinstance(p, str) for p in layer_paths) or not isinstance(tags, list):
            raise ArchiveError(f"{w}: expected Config (string), Layers (array of strings), RepoTags (array)")
        cfg_data = files.read_bytes(cfg_path, f"{w}.Config", MAX_CONFIG_SIZE)
        config = parse_config(cfg_data, f"{w}.Config ({cfg_path})")
        if len(config.diff_ids) != len(layer_paths):
            raise ArchiveError(f"{w}: {len(layer_paths)} layers, but the config lists {len(config.diff_ids)} "
                               "diff IDs")
        cfg_digest, cfg_size = files.blob(cfg_path, f"{w}.Config")
        sources = item.get("LayerSources") or {}
        if not isinstance(sources, dict):
            raise ArchiveError(f"{w}.LayerSources: expected an object")
        layers = []
        for j, (path, diff_id) in enumerate(zip(layer_paths, config.diff_ids, strict=True)):
            lw = f"{w}.Layers[{j}] ({path})"
            digest, size = files.blob(path, lw)
            source = sources.get(diff_id)
            media_type = None
            if isinstance(source, dict) and source.get("digest") == digest and source.get("mediaType") in LAYER_TYPES:
                media_type = source["mediaType"]
            with store.open(digest) as f:
                head = f.read(6)
                kind = detect_compression(head)
                if kind in ("bzip2", "xz"):
                    raise ArchiveError(f"{lw}: {kind}-compressed layers are not supported by the image format")
                if kind == "":
                    actual = digest
                else:
                    f.seek(0)
                    actual = uncompressed_digest(f, lw)[0]
            if actual != diff_id:
                raise ArchiveError(f"{lw}: layer content has diff ID {actual}, the config says {diff_id}")
            if media_type is None:
                media_type = {"": DOCKER_LAYER, "gzip": DOCKER_LAYER_GZIP, "zstd": DOCKER_LAYER_ZSTD}[kind]
            layers.append({"mediaType": media_type, "size": size, "digest": digest})
        manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                    "config": {"mediaType": DOCKER_CONFIG, "size": cfg_size, "digest": cfg_digest},
                    "layers": layers}
        data = json_bytes(manifest)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        desc = Descriptor(DOCKER_MANIFEST, digest, len(data))
        _commit_bytes(store, ref_key(desc), digest, data, gc_labels(desc, data))
        names = []
        for t in tags:
            if not isinstance(t, str):
                raise ArchiveError(f"{w}.RepoTags: expected strings")
            try:
                names.append(str(parse_docker_ref(t)))
            except ReferenceError as e:
                raise ArchiveError(f"{w}.RepoTags: {t!r}: {e}") from None
        target = Descriptor(DOCKER_MANIFEST, digest, len(data),
                            platform=Platform(config.os, config.architecture, config.variant).to_json())
        images.append(LoadedImage(names, target, desc, cfg_digest))
    return images


# --- save -----------------------------------------------------------------------------------

def _tar_sort_key(name: str) -> tuple[bytes, ...]:
    return tuple(part.encode("utf-8") for part in name.split("/"))


class _ReproducibleTar:
    """ustar members with fixed metadata, written in sorted order (see ocilayout)."""

    def __init__(self, out: BinaryIO) -> None:
        self._tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT)

    def _info(self, name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.size = size
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    def write(self, entries: dict[str, Callable[[], tuple[int, BinaryIO]] | None]) -> None:
        """``entries``: path -> None for a directory, or a function giving (size, reader)."""
        for name in sorted(entries, key=_tar_sort_key):
            opener = entries[name]
            try:
                if opener is None:
                    self._tar.addfile(self._info(name, tarfile.DIRTYPE, 0o755))
                else:
                    size, f = opener()
                    with f:
                        self._tar.addfile(self._info(name, tarfile.REGTYPE, 0o644, size), f)
            except ValueError as e:
                raise ImageError(f"save: tar member {name!r}: {e}") from e

    def close(self) -> None:
        self._tar.close()


def _gather(store: ContentStore, target: Descriptor, matcher: PlatformMatcher | None,
            blobs: dict[str, int], where: str) -> tuple[Descriptor, Descriptor]:
    """Collect the blobs to save for ``target`` into ``blobs`` (digest -> size); returns
    (descriptor to put in index.json, the image manifest for manifest.json)."""
    if is_manifest(target.media_type):
        data = store.read_all(target.digest, MAX_MANIFEST_SIZE)
        m = parse_manifest(data, target.media_type, f"{where}: manifest {target.digest}")
        for d in [m.config, *m.layers]:
            if not store.exists(d.digest):
                raise NotFound(f"{where}: blob {d.digest} of manifest {target.digest} is missing from the content "
                               "store")
            blobs[d.digest] = d.size
        blobs[target.digest] = target.size
        return target, target
    if not is_index(target.media_type):
        raise InvalidArgument(f"{where}: {target.digest} has media type {target.media_type}: not an image")
    data = store.read_all(target.digest, MAX_MANIFEST_SIZE)
    index = parse_index(data, target.media_type, f"{where}: index {target.digest}")
    chooser = matcher or PlatformMatcher()
    chosen: Descriptor | None = None
    for cand in select_manifests(index, chooser):
        if store.exists(cand.digest):
            chosen = cand
            break
    if chosen is None:
        raise NotFound(f"{where}: index {target.digest} has no manifest for {chooser.platform} in the content "
                       "store")
    if matcher is not None:
        return _gather(store, chosen, None, blobs, where)
    for child in index.manifests:  # every complete child goes with the index
        if store.exists(child.digest):
            try:
                sub: dict[str, int] = {}
                _gather(store, child, None, sub, where)
            except NotFound:
                if child.digest == chosen.digest:
                    raise
                continue
            blobs.update(sub)
    blobs[target.digest] = target.size
    _, manifest = _gather(store, chosen, None, {}, where)
    return target, manifest


def save(names: Sequence[str], content: ContentStore, meta: MetaDB, out: BinaryIO,
         namespace: str = DEFAULT_NAMESPACE, *, platform: str | Platform | None = None,
         format: str = "docker") -> None:
    """Write the images named ``names`` as a ``docker save`` archive (``format="docker"``) or
    an OCI archive (``format="oci"``) to ``out`` (see module doc)."""
    if format not in ("docker", "oci"):
        raise InvalidArgument(f"save: format {format!r}: expected 'docker' or 'oci'")
    if not names:
        raise InvalidArgument("save: no image names given")
    store = content.using(namespace)
    matcher = PlatformMatcher(platform) if platform is not None else None
    blobs: dict[str, int] = {}
    index_entries: list[dict] = []
    legacy: dict[str, dict] = {}  # manifest digest -> manifest.json item
    repositories: dict[str, dict[str, str]] = {}
    with meta.view() as tx:
        records = []
        for name in names:
            ref = parse_docker_ref(name)
            try:
                records.append((ref, tx.get_image(namespace, str(ref))))
            except NotFound:
                raise NotFound(f"save: image {name}: no such image in namespace {namespace}") from None
    for ref, record in records:
        where = f"save {ref}"
        top, manifest_desc = _gather(store, record.target, matcher, blobs, where)
        mdata = store.read_all(manifest_desc.digest, MAX_MANIFEST_SIZE)
        m = parse_manifest(mdata, manifest_desc.media_type, f"{where}: manifest {manifest_desc.digest}")
        config = parse_config(store.read_all(m.config.digest, MAX_CONFIG_SIZE), f"{where}: config {m.config.digest}")
        entry = Descriptor(top.media_type, top.digest, top.size).to_json()
        annotations = {ANNOTATION_IMAGE_NAME: str(ref)}
        if ref.tag:
            annotations[ANNOTATION_REF_NAME] = ref.tag
        entry["annotations"] = dict(sorted(annotations.items()))
        if is_manifest(top.media_type):
            entry["platform"] = (Platform.from_json(top.platform) if top.platform else config.platform).to_json()
        elif top.platform:
            entry["platform"] = dict(top.platform)
        index_entries.append(entry)
        familiar = ref.familiar()
        item = legacy.get(manifest_desc.digest)
        if item is None:
            diff_ids = config.diff_ids
            sources = {d: {"mediaType": layer.media_type, "size": layer.size, "digest": layer.digest}
                       for d, layer in sorted(zip(diff_ids, m.layers, strict=True), key=lambda p: p[0])}
            item = legacy[manifest_desc.digest] = {
                "Config": _blob_name(m.config.digest), "RepoTags": [],
                "Layers": [_blob_name(layer.digest) for layer in m.layers], "LayerSources": sources}
            if not sources:
                del item["LayerSources"]
        if ref.tag:
            item["RepoTags"].append(f"{familiar.name}:{ref.tag}")
            if config.diff_ids:
                repositories.setdefault(familiar.name, {})[ref.tag] = config.diff_ids[-1].partition(":")[2]
    files: dict[str, Callable[[], tuple[int, BinaryIO]] | None] = {}

    def small(data: bytes) -> Callable[[], tuple[int, BinaryIO]]:
        return lambda: (len(data), io.BytesIO(data))

    def blob(digest: str, size: int) -> Callable[[], tuple[int, BinaryIO]]:
        return lambda: (size, store.open(digest))

    files["oci-layout"] = small(json_bytes({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    files["index.json"] = small(json_bytes({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                            "manifests": index_entries}))
    if format == "docker":
        files["manifest.json"] = small(json_bytes(list(legacy.values())) + b"\n")
        files["repositories"] = small(json_bytes(repositories) + b"\n")
    for digest, size in blobs.items():
        files[_blob_name(digest)] = blob(digest, size)
    dirs = {"blobs"} | {posixpath.dirname(_blob_name(d)) for d in blobs}
    for d in dirs:
        files[d] = None
    writer = _ReproducibleTar(out)
    writer.write(files)
    writer.close()


def _blob_name(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


# --- import (docker import) -----------------------------------------------------------------

class _Tee:
    """Reads from ``src`` and copies what it reads to ``writer``."""

    def __init__(self, src: _Decompressed, writer: Any) -> None:
        self._src = src
        self._writer = writer
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        if data:
            self._writer.write(data)
            self.size += len(data)
        return data


def _rfc3339(t: _dt.datetime) -> str:
    t = t.astimezone(_dt.UTC)
    frac = f".{t.microsecond:06d}".rstrip("0").rstrip(".")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def import_rootfs(stream: BinaryIO, content: ContentStore, meta: MetaDB, namespace: str = DEFAULT_NAMESPACE,
                  *, ref: str | None = None, changes: Iterable[str] = (), message: str = "",
                  platform: str | Platform | None = None, source: str = "-",
                  created: _dt.datetime | None = None) -> LoadedImage:
    """``docker import``: a rootfs tarball as a one-layer image (see module doc)."""
    plat = (parse_platform(platform) if isinstance(platform, str) else platform.normalized()) \
        if platform is not None else default_platform()
    image_cfg = apply_changes({}, list(changes))  # refuse bad changes before reading anything
    named = parse_docker_ref(ref) if ref else None
    when = _rfc3339(created or _dt.datetime.now(_dt.UTC))
    comment = message or f"Imported from {source}"
    with LeaseManager(meta, namespace).temporary() as lease:
        store = content.using(namespace, lease.id)
        ingest = f"import-{secrets.token_hex(8)}"
        with store.writer(ingest) as w:
            try:
                tee = _Tee(_Decompressed(stream, "rootfs tarball"), w)
                try:
                    tar = tarfile.open(fileobj=tee, mode="r|", bufsize=BLOCK)  # type: ignore[call-overload]
                    for _member in tar:
                        pass
                except tarfile.TarError as e:
                    if tee.size == 0:
                        raise ArchiveError("rootfs tarball: empty input") from e
                    raise ArchiveError(f"rootfs tarball: not a tar archive: {e}") from e
                while tee.read(BLOCK):  # the end-of-archive blocks and any padding
                    pass
                if tee.size == 0:
                    raise ArchiveError("rootfs tarball: empty input")
                diff_id = w.digest()
                size = w.offset
                w.commit(size, diff_id)
            except BaseException:
                w.close()
                store.abort(ingest)
                raise
        config: dict[str, Any] = {"created": when, "architecture": plat.architecture, "os": plat.os}
        if plat.variant:
            config["variant"] = plat.variant
        config["config"] = image_cfg
        config["rootfs"] = {"type": "layers", "diff_ids": [diff_id]}
        config["history"] = [{"created": when, "comment": comment}]
        config["comment"] = comment
        cfg_data = json_bytes(config)
        cfg_digest = "sha256:" + hashlib.sha256(cfg_data).hexdigest()
        _commit_bytes(store, f"config-{cfg_digest}", cfg_digest, cfg_data)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": len(cfg_data)},
                    "layers": [{"mediaType": OCI_LAYER, "digest": diff_id, "size": size}]}
        mdata = json_bytes(manifest)
        mdigest = "sha256:" + hashlib.sha256(mdata).hexdigest()
        mdesc = Descriptor(OCI_MANIFEST, mdigest, len(mdata), platform=plat.to_json())
        _commit_bytes(store, ref_key(mdesc), mdigest, mdata, gc_labels(mdesc, mdata))
        img = LoadedImage([str(named)] if named else [], mdesc, mdesc, cfg_digest)
        name = str(named) if named else DANGLING_PREFIX + mdigest
        with meta.transaction() as tx:
            try:
                tx.get_image(namespace, name)
            except NotFound:
                img.records.append(tx.create_image(namespace, ImageRecord(name, mdesc)))
            else:
                img.records.append(tx.update_image(namespace, ImageRecord(name, mdesc), ["target"]))
    return img


# --- Dockerfile-style changes ---------------------------------------------------------------

VALID_CHANGES = ("cmd", "entrypoint", "env", "expose", "healthcheck", "label", "onbuild", "stopsignal",
                 "user", "volume", "workdir")

_SIGNALS = {
    "ABRT": 6, "ALRM": 14, "BUS": 7, "CHLD": 17, "CLD": 17, "CONT": 18, "FPE": 8, "HUP": 1, "ILL": 4,
    "INT": 2, "IO": 29, "IOT": 6, "KILL": 9, "PIPE": 13, "POLL": 29, "PROF": 27, "PWR": 30, "QUIT": 3,
    "SEGV": 11, "STKFLT": 16, "STOP": 19, "SYS": 31, "TERM": 15, "TRAP": 5, "TSTP": 20, "TTIN": 21,
    "TTOU": 22, "URG": 23, "USR1": 10, "USR2": 12, "VTALRM": 26, "WINCH": 28, "XCPU": 24, "XFSZ": 25,
}


def _valid_signal(text: str) -> bool:
    if text.isdigit():
        return 0 < int(text) <= 64
    name = text.upper().removeprefix("SIG")
    if name in _SIGNALS:
        return True
    m = re.fullmatch(r"RTM(IN|AX)([+-]\d+)?", name)
    return m is not None


class _Lexer:
    """Dockerfile word processing: quotes, backslash escapes, ``$VAR`` / ``${VAR}`` and the
    ``${VAR:-w}``, ``${VAR:+w}``, ``${VAR:?w}`` (and colon-less) forms."""

    def __init__(self, text: str, env: dict[str, str], where: str) -> None:
        self.s = text
        self.i = 0
        self.env = env
        self.where = where

    def words(self) -> list[str]:
        out: list[str] = []
        cur: list[str] = []
        started = False
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch in " \t\n\r":
                if started:
                    out.append("".join(cur))
                    cur, started = [], False
                self.i += 1
                continue
            started = True
            cur.append(self._piece())
        if started:
            out.append("".join(cur))
        return out

    def word(self) -> str:
        """The whole text as one word (whitespace kept)."""
        parts = []
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch in " \t\n\r":
                parts.append(ch)
                self.i += 1
            else:
                parts.append(self._piece())
        return "".join(parts)

    def _piece(self) -> str:
        s, ch = self.s, self.s[self.i]
        if ch == "\\":
            self.i += 2
            return s[self.i - 1] if self.i - 1 < len(s) else ""
        if ch == "'":
            end = s.find("'", self.i + 1)
            if end < 0:
                raise ArchiveError(f"{self.where}: unexpected end of statement while looking for matching single-quote")
            out = s[self.i + 1:end]
            self.i = end + 1
            return out
        if ch == '"':
            self.i += 1
            parts: list[str] = []
            while True:
                if self.i >= len(s):
                    raise ArchiveError(f"{self.where}: unexpected end of statement while looking for matching "
                                       "double-quote")
                c = s[self.i]
                if c == '"':
                    self.i += 1
                    return "".join(parts)
                if c == "\\" and self.i + 1 < len(s) and s[self.i + 1] in '"$\\':
                    parts.append(s[self.i + 1])
                    self.i += 2
                elif c == "$":
                    parts.append(self._dollar())
                else:
                    parts.append(c)
                    self.i += 1
        if ch == "$":
            return self._dollar()
        self.i += 1
        return ch

    def _dollar(self) -> str:
        s = self.s
        self.i += 1
        if self.i >= len(s):
            return "$"
        if s[self.i] == "{":
            end = self.i + 1
            depth = 1
            while end < len(s) and depth:
                if s[end] == "{":
                    depth += 1
                elif s[end] == "}":
                    depth -= 1
                end += 1
            if depth:
                raise ArchiveError(f"{self.where}: missing '}}' in variable expansion")
            body = s[self.i + 1:end - 1]
            self.i = end
            m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])(.*))?\Z", body, re.S)
            if m is None:
                raise ArchiveError(f"{self.where}: bad substitution ${{{body}}}")
            name, op, arg = m.group(1), m.group(2), m.group(3) or ""
            value = self.env.get(name)
            if op is None:
                return value or ""
            word = _Lexer(arg, self.env, self.where).word() if arg else ""
            unset_or_empty = value is None or (op.startswith(":") and value == "")
            if op.endswith("-"):
                return word if unset_or_empty else value or ""
            if op.endswith("+"):
                return "" if unset_or_empty else word
            if unset_or_empty:
                raise ArchiveError(f"{self.where}: {name}: {word or 'is not allowed to be unset'}")
            return value or ""
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", s[self.i:])
        if m is None:
            return "$"
        self.i += m.end()
        return self.env.get(m.group(0), "")


def _env_map(cfg: dict) -> dict[str, str]:
    out = {}
    for item in cfg.get("Env") or []:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def _json_or_shell(rest: str) -> tuple[list[str], bool]:
    """Exec form (a JSON array of strings) or shell form; returns (args, is_exec_form)."""
    text = rest.strip()
    if text.startswith("["):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, list) and all(isinstance(x, str) for x in doc):
            return doc, True
    return ["/bin/sh", "-c", text], False


def _name_values(rest: str, env: dict[str, str], where: str, instruction: str) -> list[tuple[str, str]]:
    text = rest.strip()
    first = re.match(r"\S+", text)
    if first is None:
        raise ArchiveError(f"{where}: {instruction} requires at least one argument")
    if "=" not in _strip_quotes_raw(first.group(0)):
        parts = re.split(r"\s+", text, maxsplit=1)
        if len(parts) < 2 or not parts[1].strip():
            raise ArchiveError(f"{where}: {instruction} must have two arguments")
        key = _Lexer(parts[0], env, where).word()
        return [(key, _Lexer(parts[1].strip(), env, where).word())]
    pairs = []
    for word in _Lexer(text, env, where).words():
        if "=" not in word:
            raise ArchiveError(f"{where}: Syntax error - can't find = in {word!r}. Must be of the form: name=value")
        k, _, v = word.partition("=")
        if not k:
            raise ArchiveError(f"{where}: {instruction} names cannot be empty")
        pairs.append((k, v))
    return pairs


def _strip_quotes_raw(word: str) -> str:
    return word.replace('"', "").replace("'", "")


_DURATION_UNITS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_go_duration(text: str, where: str) -> int:
    """A Go duration string (``1m30s``, ``500ms``) in nanoseconds."""
    if text == "0":
        return 0
    pos, total = 0, 0
    if not text:
        raise ArchiveError(f"{where}: invalid duration ''")
    for m in re.finditer(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text):
        if m.start() != pos:
            break
        total += int(float(m.group(1)) * _DURATION_UNITS[m.group(2)])
        pos = m.end()
    if pos != len(text):
        raise ArchiveError(f"{where}: invalid duration {text!r}")
    return total


def _logical_lines(changes: list[str]) -> list[str]:
    """The instructions of ``changes`` joined as one Dockerfile (as Docker does): comments and
    blank lines skipped, lines ending in a backslash continued."""
    lines: list[str] = []
    buf = ""
    for raw in "\n".join(changes).splitlines():
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1]
            continue
        buf += line
        lines.append(buf.strip())
        buf = ""
    if buf.strip():
        lines.append(buf.strip())
    return lines


def apply_changes(config: dict, changes: list[str]) -> dict:
    """Apply Dockerfile-instruction ``changes`` to an image's ``config`` object (a new dict).
    Unknown or disallowed instructions raise ``ArchiveError`` with Docker's message."""
    cfg: dict[str, Any] = json.loads(json.dumps(config))  # deep copy
    lines = _logical_lines(changes)
    for line in lines:  # Docker checks every instruction before applying any
        instr = line.split(None, 1)[0].lower()
        if instr not in VALID_CHANGES:
            raise ArchiveError(f"{instr} is not a valid change command")
    cmd_set = False
    for line in lines:
        parts = line.split(None, 1)
        instr, rest = parts[0].lower(), parts[1] if len(parts) > 1 else ""
        where = f"change {line!r}"
        env = _env_map(cfg)
        if instr == "cmd":
            cfg["Cmd"], _ = _json_or_shell(rest)
            cmd_set = True
        elif instr == "entrypoint":
            args, exec_form = _json_or_shell(rest)
            cfg["Entrypoint"] = args if (exec_form or rest.strip()) else None
            if not cmd_set:
                cfg.pop("Cmd", None)
        elif instr == "env":
            current = cfg.get("Env") or []
            for k, v in _name_values(rest, env, where, "ENV"):
                current = [e for e in current if e.partition("=")[0] != k] + [f"{k}={v}"]
                env[k] = v
            cfg["Env"] = current
        elif instr == "label":
            labels = cfg.get("Labels") or {}
            for k, v in _name_values(rest, env, where, "LABEL"):
                labels[k] = v
            cfg["Labels"] = labels
        elif instr == "expose":
            ports = cfg.get("ExposedPorts") or {}
            words = _Lexer(rest, env, where).words()
            if not words:
                raise ArchiveError(f"{where}: EXPOSE requires at least one argument")
            for spec in words:
                for port in _expand_port(spec, where):
                    ports[port] = {}
            cfg["ExposedPorts"] = dict(sorted(ports.items()))
        elif instr == "volume":
            args, exec_form = _json_or_shell(rest)
            vols = args if exec_form else _Lexer(rest, env, where).words()
            if not vols:
                raise ArchiveError(f"{where}: VOLUME requires at least one argument")
            volumes = cfg.get("Volumes") or {}
            for v in vols:
                v = v.strip()
                if not v:
                    raise ArchiveError(f"{where}: VOLUME specified can not be an empty string")
                volumes[v] = {}
            cfg["Volumes"] = volumes
        elif instr == "workdir":
            words = [_Lexer(rest.strip(), env, where).word()] if rest.strip() else []
            if len(words) != 1 or not words[0]:
                raise ArchiveError(f"{where}: WORKDIR requires exactly one argument")
            requested = words[0]
            if requested.startswith("/"):
                wd = posixpath.normpath(requested)
            else:
                wd = posixpath.normpath(posixpath.join("/", cfg.get("WorkingDir") or "/", requested))
            cfg["WorkingDir"] = "/" + wd.lstrip("/")
        elif instr == "user":
            words = _Lexer(rest, env, where).words()
            if len(words) != 1:
                raise ArchiveError(f"{where}: USER requires exactly one argument")
            cfg["User"] = words[0]
        elif instr == "stopsignal":
            words = _Lexer(rest, env, where).words()
            if len(words) != 1:
                raise ArchiveError(f"{where}: STOPSIGNAL requires exactly one argument")
            if not _valid_signal(words[0]):
                raise ArchiveError(f"{where}: Invalid signal: {words[0]}")
            cfg["StopSignal"] = words[0]
        elif instr == "onbuild":
            trigger = rest.strip()
            first = trigger.split(None, 1)[0].upper() if trigger else ""
            if not first:
                raise ArchiveError(f"{where}: ONBUILD requires at least one argument")
            if first == "ONBUILD":
                raise ArchiveError(f"{where}: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            if first in ("MAINTAINER", "FROM"):
                raise ArchiveError(f"{where}: {first} isn't allowed as an ONBUILD trigger")
            cfg["OnBuild"] = (cfg.get("OnBuild") or []) + [trigger]
        elif instr == "healthcheck":
            cfg["Healthcheck"] = _healthcheck(rest, where)
    return _ordered_config(cfg)


def _expand_port(spec: str, where: str) -> list[str]:
    port, _, proto = spec.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise ArchiveError(f"{where}: invalid proto: {proto}")
    if ":" in port:
        raise ArchiveError(f"{where}: EXPOSE does not support publishing a host port: {spec}")
    lo, sep, hi = port.partition("-")
    if not lo.isdigit() or (sep and not hi.isdigit()):
        raise ArchiveError(f"{where}: invalid containerPort: {port}")
    start, end = int(lo), int(hi) if sep else int(lo)
    if start > 65535 or end > 65535 or end < start:
        raise ArchiveError(f"{where}: invalid containerPort: {port}")
    return [f"{p}/{proto}" for p in range(start, end + 1)]


def _healthcheck(rest: str, where: str) -> dict:
    words = rest.strip()
    flags: dict[str, str] = {}
    while words.startswith("--"):
        token, _, words = words.partition(" ")
        words = words.lstrip()
        key, sep, value = token[2:].partition("=")
        if not sep or key not in ("interval", "timeout", "start-period", "start-interval", "retries"):
            raise ArchiveError(f"{where}: HEALTHCHECK: unknown flag {token}")
        flags[key] = value
    kind, _, args = words.partition(" ")
    kind = kind.upper()
    if kind == "NONE":
        if flags or args.strip():
            raise ArchiveError(f"{where}: HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    if kind != "CMD":
        raise ArchiveError(f'{where}: Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    cmd, exec_form = _json_or_shell(args)
    hc: dict[str, Any] = {"Test": ["CMD", *cmd] if exec_form else ["CMD-SHELL", args.strip()]}
    for key, field in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                       ("start-interval", "StartInterval")):
        if key in flags:
            ns = parse_go_duration(flags[key], f"{where}: --{key}")
            if ns and ns < 10**6:
                raise ArchiveError(f"{where}: Interval \"{key}\" cannot be less than 1ms")
            if ns:
                hc[field] = ns
    if "retries" in flags:
        if not flags["retries"].isdigit() or int(flags["retries"]) < 1:
            raise ArchiveError(f"{where}: --retries must be at least 1")
        hc["Retries"] = int(flags["retries"])
    return hc


_CONFIG_ORDER = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels",
                 "StopSignal", "ArgsEscaped", "Healthcheck", "OnBuild")


def _ordered_config(cfg: dict) -> dict:
    """Keys in the image-spec's Go struct order (then any others, as they were)."""
    out = {k: cfg[k] for k in _CONFIG_ORDER if k in cfg and cfg[k] is not None}
    for k, v in cfg.items():
        if k not in out and k not in _CONFIG_ORDER:
            out[k] = v
    return out


# --- export (docker export) -----------------------------------------------------------------

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def export_rootfs(root: str, out: BinaryIO) -> None:
    """Write the tree under ``root`` to ``out`` as a PAX tar (see module doc)."""
    try:
        rootfd = os.open(root, _OPEN_DIR)
    except OSError as e:
        raise ImageError(f"export {root}: open: {e.strerror}") from e
    tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
    links: dict[tuple[int, int], str] = {}
    try:
        _export_dir(tar, rootfd, "", root, links)
    finally:
        os.close(rootfd)
    tar.close()


def _xattrs(dirfd: int, name: str, fd: int | None) -> dict[str, str]:
    try:
        if fd is not None:
            keys = os.listxattr(fd)
        else:
            keys = os.listxattr(f"/proc/self/fd/{dirfd}/{name}", follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out = {}
    for k in sorted(keys):
        try:
            if fd is not None:
                v = os.getxattr(fd, k)
            else:
                v = os.getxattr(f"/proc/self/fd/{dirfd}/{name}", k, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.ENODATA:
                continue
            raise
        out["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")
    return out


def _export_dir(tar: tarfile.TarFile, dirfd: int, rel: str, root: str, links: dict[tuple[int, int], str]) -> None:
    try:
        names = sorted(os.listdir(dirfd))
    except OSError as e:
        raise ImageError(f"export {root}/{rel}: list: {e.strerror}") from e
    for name in names:
        path = f"{rel}{name}"
        where = f"export {root}/{path}"
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed while we walk
        except OSError as e:
            raise ImageError(f"{where}: stat: {e.strerror}") from e
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            continue
        info = tarfile.TarInfo(path)
        info.mode = stat.S_IMODE(mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        if stat.S_ISDIR(mode):
            try:
                fd = os.open(name, _OPEN_DIR, dir_fd=dirfd)
            except OSError as e:
                raise ImageError(f"{where}: open directory: {e.strerror}") from e
            try:
                info.type = tarfile.DIRTYPE
                info.pax_headers = _xattrs(dirfd, name, fd)
                tar.addfile(info)
                _export_dir(tar, fd, path + "/", root, links)
            finally:
                os.close(fd)
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                info.type = tarfile.LNKTYPE
                info.linkname = links[key]
                tar.addfile(info)
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dirfd)
            except OSError as e:
                raise ImageError(f"{where}: open: {e.strerror}") from e
            try:
                fst = os.fstat(fd)
                if not stat.S_ISREG(fst.st_mode) or fst.st_ino != st.st_ino:
                    raise ImageError(f"{where}: replaced while being exported")
                info.type = tarfile.REGTYPE
                info.size = fst.st_size
                info.pax_headers = _xattrs(dirfd, name, fd)
                with os.fdopen(os.dup(fd), "rb") as f:
                    tar.addfile(info, f)
            finally:
                os.close(fd)
            if st.st_nlink > 1:
                links[key] = path
        elif stat.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(name, dir_fd=dirfd)
            info.pax_headers = _xattrs(dirfd, name, None)
            tar.addfile(info)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            info.pax_headers = _xattrs(dirfd, name, None)
            tar.addfile(info)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
            info.pax_headers = _xattrs(dirfd, name, None)
            tar.addfile(info)


def export_mounts(mounts: Sequence[Mount], out: BinaryIO, *, tmp_parent: str | None = None) -> None:
    """Mount ``mounts`` (a snapshot's) on a private temporary directory, export it, unmount."""
    from skiff.images.mount import mount_all, unmount_all
    target = tempfile.mkdtemp(prefix="skiff-export-", dir=tmp_parent)
    try:
        mount_all(mounts, target)
        try:
            export_rootfs(target, out)
        finally:
            unmount_all(target)
    finally:
        try:
            os.rmdir(target)
        except OSError as e:
            import sys
            print(f"skiff: cleanup: remove {target}: {e.strerror}", file=sys.stderr)


__all__ = [
    "DANGLING_PREFIX",
    "ArchiveError",
    "LoadedImage",
    "apply_changes",
    "export_mounts",
    "export_rootfs",
    "import_rootfs",
    "load",
    "save",
]
