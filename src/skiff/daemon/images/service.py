"""skiffd's images, kept in containerd's image store (namespace ``skiff``), as Docker's
containerd image store keeps them.

An image record is a name (``docker.io/library/busybox:latest``) pointing at a manifest or an
index in containerd's content store; skiffd's image ID is the config digest (what ``docker
images`` shows). Images are unpacked into the ``overlayfs`` snapshotter the way containerd's
unpacker does it (``skiff.images.unpack``): one committed snapshot per layer named by the
ChainID of the layers up to it, each layer extracted by containerd's Diff service, and
containerd's GC labels set so that content and snapshots are kept while an image names them
(manifest -> config and layers, config -> top snapshot). Everything is written under a lease
that expires, so a skiffd killed halfway leaves nothing pinned.

The built-in busybox (``skiff.images.builtin``, made from busybox-static in memory) is loaded
as ``docker.io/library/busybox:latest`` when no busybox image exists. ``docker load`` archives
(docker-archive or OCI archive) are read by ``skiff.images.archive.load`` into a private
scratch store, then copied into containerd, unpacked and named.

Manifests and configs are immutable (content-addressed), so what is read of them is cached by
digest; the image list itself is read from containerd on every call.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import datetime as _dt
import functools
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skiff.daemon.api.errors import ApiError, Conflict, InvalidParameter, NotFound
from skiff.daemon.containerd.client import Containerd, Descriptor
from skiff.daemon.events import EventsHub
from skiff.images.errors import ImageError
from skiff.images.manifest import (
    LABEL_UNCOMPRESSED,
    MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE,
    PlatformMatcher,
    chain_ids,
    gc_labels,
    is_index,
    is_manifest,
    parse_config,
    parse_index,
    parse_manifest,
    select_manifests,
)
from skiff.images.reference import ReferenceError, parse_docker_ref
from skiff.images.unpack import LABEL_GC_SNAPSHOT, LABEL_SNAPSHOT_REF

log = logging.getLogger("skiff.daemon.images")

SNAPSHOTTER = "overlayfs"
BUILTIN_NAME = "docker.io/library/busybox:latest"
BUILTIN_REPO = "docker.io/library/busybox"
DANGLING_PREFIX = "moby-dangling@"     # skiff.images.archive names unnamed images so
# issue 10 (build): every image a build makes has a record "skiff-build@<manifest digest>" whose
# labels hold its parent image ID and its build-cache key (see skiff.daemon.build.cache)
BUILD_PREFIX = "skiff-build@"
LABEL_BUILD_PARENT = "skiff.build.parent"
LABEL_BUILD_KEY = "skiff.build.cachekey"
LEASE_EXPIRE = 3600                    # seconds a load's lease lives at most
LIST_FILTERS = ("before", "dangling", "label", "reference", "since")
ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass
class Image:
    id: str                       # "sha256:..." config digest
    names: list[str]              # familiar form: "busybox:latest"
    config: dict                  # the image config JSON (its "config" holds Cmd, Env, ...)
    chain_id: str                 # snapshot parent for containers ("" for an image without layers)
    created: str                  # RFC 3339 from the config ("" when it has none)
    size: int                     # bytes of the unpacked layers
    repo_digests: list[str]
    full_names: list[str] = field(default_factory=list)   # "docker.io/library/busybox:latest"
    target: Descriptor | None = None                      # what the records point at
    manifest: Descriptor | None = None                    # the manifest for this platform
    layers: list[Descriptor] = field(default_factory=list)
    diff_ids: list[str] = field(default_factory=list)
    record_created_ns: int = 0
    record_updated_ns: int = 0
    # issue 10 (build): the parent image ID, build-cache key and name of the build record (""
    # when the image was not built here)
    parent: str = ""
    build_key: str = ""
    build_record: str = ""

    @property
    def created_unix(self) -> int:
        return parse_rfc3339(self.created)


def parse_rfc3339(text: str) -> int:
    """Seconds since the epoch of an RFC 3339 time (nanosecond fractions allowed); 0 for ""."""
    if not text:
        return 0
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    main, dot, rest = t.partition(".")
    if dot:   # drop the fraction (Python takes at most 6 digits)
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        t = main + rest[i:]
    try:
        d = _dt.datetime.fromisoformat(t)
    except ValueError:
        return 0
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.UTC)
    return int(d.timestamp())


def tag_reference(text: str, digest_refused: str) -> Any:
    """``name[:tag]`` as a reference with a tag (``latest`` when none is given), what tag,
    import, commit and build name an image with; a digest reference is refused with
    ``digest_refused`` (each command's own wording, as dockerd's)."""
    try:
        ref = parse_docker_ref(text)
    except ReferenceError as e:
        raise InvalidParameter(f"invalid reference format: {e}") from None
    if ref.digest:
        raise InvalidParameter(digest_refused)
    return ref if ref.tag else parse_docker_ref(text + ":latest")


@functools.lru_cache(maxsize=4096)
def familiar(name: str) -> str:
    """``docker.io/library/busybox:latest`` -> ``busybox:latest`` (kept: every listing asks)."""
    try:
        return parse_docker_ref(name).familiar_string()
    except ReferenceError:
        return name


def _match_glob(pattern: str, text: str) -> bool:
    """Go's path.Match as Docker's reference filter uses it (``*`` does not cross ``/``)."""
    import fnmatch
    import re
    rx = fnmatch.translate(pattern).replace(".*", "[^/]*")
    return re.match(rx, text) is not None


class ImageService:
    def __init__(self, cd: Containerd, events: EventsHub, *, tmp_dir: str | None = None,
                 busybox: str = "/bin/busybox") -> None:
        self.cd = cd
        self.events = events
        self.tmp_dir = tmp_dir
        self.busybox = busybox
        self._docs: dict[str, bytes] = {}           # manifest/index/config blobs by digest
        self._usage: dict[str, int] = {}            # committed snapshot size by chain ID
        self._parsed: dict[str, Image] = {}         # target digest -> parsed image (_image_from_target)
        self._lock = asyncio.Lock()                 # one load/unpack at a time
        self._matcher = PlatformMatcher()
        # image ID -> [(container ID, running)] of the containers made from it; the Daemon
        # wiring sets it to ask the container service
        self.containers_using: Callable[[str], builtins.list[tuple[str, bool]]] = lambda _id: []
        # daemon.json settings the registry operations use (set by the Daemon wiring)
        self.registry_mirrors: builtins.list[str] = []
        self.insecure_registries: builtins.list[str] = []

    # --- reading ------------------------------------------------------------------------------

    async def _doc(self, digest: str, limit: int) -> bytes:
        data = self._docs.get(digest)
        if data is None:
            data = await self.cd.read_blob(digest, limit)
            self._docs[digest] = data
        return data

    async def _manifest_for(self, target: Descriptor) -> Descriptor:
        desc = target
        for _ in range(5):
            if is_manifest(desc.media_type):
                return desc
            if not is_index(desc.media_type):
                raise ApiError(f"image target {desc.digest}: media type {desc.media_type!r} is neither a "
                               "manifest nor an index")
            index = parse_index(await self._doc(desc.digest, MAX_MANIFEST_SIZE), desc.media_type,
                                f"index {desc.digest}")
            chosen = select_manifests(index, self._matcher)
            if not chosen:
                raise NotFound(f"index {desc.digest}: no manifest for platform {self._matcher}")
            c = chosen[0]
            desc = Descriptor(c.media_type, c.digest, c.size, dict(c.annotations))
        raise ApiError(f"image target {target.digest}: indexes nested too deep")

    async def _image_from_target(self, target: Descriptor) -> Image:
        """The image a record's target describes, a fresh object (callers fill in names). What
        is parsed from content-addressed blobs never changes, so it is kept by target digest
        once every layer's unpacked size is known (``images()`` runs on every request that
        names an image: 200 images parsed each time made ``docker images`` slow)."""
        known = self._parsed.get(target.digest)
        if known is not None:
            return self._copy(known, target)
        img = await self._parse_target(target)
        if all(c in self._usage for c in chain_ids(img.diff_ids)):
            self._parsed[target.digest] = img
            return self._copy(img, target)
        return img

    @staticmethod
    def _copy(img: Image, target: Descriptor) -> Image:
        """A copy of a parsed image that callers may change (its config too)."""
        return dataclasses.replace(img, names=[], repo_digests=[], full_names=[], target=target,
                                   config=json.loads(json.dumps(img.config)), layers=list(img.layers),
                                   diff_ids=list(img.diff_ids))

    async def _parse_target(self, target: Descriptor) -> Image:
        mdesc = await self._manifest_for(target)
        manifest = parse_manifest(await self._doc(mdesc.digest, MAX_MANIFEST_SIZE), mdesc.media_type,
                                  f"manifest {mdesc.digest}")
        cdata = await self._doc(manifest.config.digest, MAX_CONFIG_SIZE)
        config = parse_config(cdata, f"image config {manifest.config.digest}")
        chains = chain_ids(config.diff_ids)
        layers = [Descriptor(layer.media_type, layer.digest, layer.size) for layer in manifest.layers]
        size = 0
        for chain, layer in zip(chains, layers, strict=False):
            size += await self._layer_size(chain, layer)
        return Image(id=manifest.config.digest, names=[], config=config.raw,
                     chain_id=chains[-1] if chains else "", created=config.created, size=size,
                     repo_digests=[], target=target, manifest=mdesc, layers=layers,
                     diff_ids=list(config.diff_ids))

    async def _layer_size(self, chain: str, layer: Descriptor) -> int:
        if chain in self._usage:
            return self._usage[chain]
        try:
            size, _ = await self.cd.snapshot_usage(chain, SNAPSHOTTER)
        except NotFound:
            return layer.size        # not unpacked: the blob's size stands in
        self._usage[chain] = size
        return size

    async def images(self) -> list[Image]:
        """Every image (records with the same config grouped), newest first."""
        records = await self.cd.list_images()
        by_id: dict[str, Image] = {}
        id_of: dict[str, str] = {}                   # target digest -> image ID, for this call
        for rec in records:
            have = by_id.get(id_of.get(rec.target.digest, ""))
            if have is None:
                try:
                    img = await self._image_from_target(rec.target)
                except (ImageError, NotFound) as e:
                    log.warning("image %s: skipped, its content cannot be read: %s", rec.name, e)
                    continue
                id_of[rec.target.digest] = img.id
                have = by_id.get(img.id)
            if have is None:
                have = by_id[img.id] = img
                have.record_created_ns = rec.created_ns
            have.record_updated_ns = max(have.record_updated_ns, rec.updated_ns)
            if rec.name.startswith(BUILD_PREFIX):       # issue 10 (build)
                have.build_record = rec.name
                have.parent = rec.labels.get(LABEL_BUILD_PARENT, "")
                have.build_key = rec.labels.get(LABEL_BUILD_KEY, "")
                continue
            if not rec.name.startswith(DANGLING_PREFIX):
                have.full_names.append(rec.name)
                have.names.append(familiar(rec.name))
                if "@" in rec.name:
                    if familiar(rec.name) not in have.repo_digests:
                        have.repo_digests.append(familiar(rec.name))
                elif rec.target.digest:
                    repo = familiar(rec.name).rpartition(":")[0] or familiar(rec.name)
                    rd = f"{repo}@{rec.target.digest}"
                    if rd not in have.repo_digests:
                        have.repo_digests.append(rd)
        out = sorted(by_id.values(), key=lambda i: (i.created_unix, i.record_created_ns), reverse=True)
        for img in out:
            img.names = [n for n in img.names if "@" not in n]
        return out

    async def resolve(self, ref_or_id: str) -> Image:
        """The image named, or with this ID (``sha256:<hex>``, the hex, or a unique prefix of it).
        NotFound ``No such image: X``."""
        x = ref_or_id.strip()
        if not x:
            raise NotFound("No such image: ")
        images: list[Image] | None = None
        hexpart = x[len("sha256:"):] if x.startswith("sha256:") else x
        is_hex = bool(hexpart) and all(ch in "0123456789abcdef" for ch in hexpart)
        if len(hexpart) == 64 and is_hex:
            images = await self.images()
            for img in images:
                if img.id == "sha256:" + hexpart:
                    return img
            raise NotFound(f"No such image: {ref_or_id}")
        if not x.startswith("sha256:"):
            try:
                ref = parse_docker_ref(x)
            except ReferenceError:
                ref = None
            if ref is not None:
                rec = await self.cd.get_image(str(ref))
                if rec is not None:
                    images = await self.images()
                    for img in images:
                        if str(ref) in img.full_names:
                            return img
                if ref.digest:     # name@digest: an image of that repository with this target
                    images = images or await self.images()
                    for img in images:
                        if img.target is not None and img.target.digest == ref.digest and any(
                                n.rpartition(":")[0] == ref.name or n == ref.name
                                for n in (fn.split("@")[0] for fn in img.full_names)):
                            return img
        if is_hex:
            images = images if images is not None else await self.images()
            found = [img for img in images if img.id[len("sha256:"):].startswith(hexpart)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise InvalidParameter(f"image ID prefix {hexpart!r} is ambiguous: "
                                       f"{', '.join(i.id[7:19] for i in found)}")
        raise NotFound(f"No such image: {ref_or_id}")

    async def count(self) -> int:
        return len(await self.images())

    # --- API shapes ---------------------------------------------------------------------------

    async def list(self, filters: dict[str, builtins.list[str]] | None = None, all: bool = False) -> builtins.list[dict]:
        """``GET /images/json`` entries; untagged images with children (a build's intermediate
        images) only with ``all``, as dockerd."""
        filters = filters or {}
        for key in filters:
            if key not in LIST_FILTERS:
                raise InvalidParameter(f"invalid filter '{key}'")
        images = await self.images()
        dangling: bool | None = None
        for v in filters.get("dangling", []):
            if v.lower() not in ("true", "false", "1", "0"):
                raise InvalidParameter(f"invalid filter 'dangling={v}'")
            dangling = v.lower() in ("true", "1")
        before = [await self.resolve(r) for r in filters.get("before", [])]
        since = [await self.resolve(r) for r in filters.get("since", [])]
        out = []
        parents = {img.parent for img in images if img.parent}     # issue 10 (build)
        for img in images:
            untagged_parent = not img.names and not img.repo_digests and img.id in parents
            if untagged_parent and (not all or dangling is not None):
                continue
            if dangling is not None and (not img.names) != dangling:
                continue
            if before and not builtins.all(img.created_unix < b.created_unix for b in before):
                continue
            if since and not builtins.all(img.created_unix > s.created_unix for s in since):
                continue
            labels = (img.config.get("config") or {}).get("Labels") or {}
            if not self._labels_match(labels, filters.get("label", [])):
                continue
            tags = img.names
            if "reference" in filters:
                tags = [t for t in img.names if self._reference_match(t, filters["reference"])]
                if not tags:
                    continue
            out.append(self.summary(img, tags))
        return out

    @staticmethod
    def _labels_match(labels: dict[str, str], wanted: builtins.list[str]) -> bool:
        for w in wanted:
            k, sep, v = w.partition("=")
            if k not in labels or (sep and labels[k] != v):
                return False
        return True

    @staticmethod
    def _reference_match(tag: str, patterns: builtins.list[str]) -> bool:
        repo, _, _ = tag.rpartition(":")
        for p in patterns:
            if _match_glob(p, tag) or _match_glob(p, repo):
                return True
        return False

    @staticmethod
    def summary(img: Image, tags: builtins.list[str] | None = None) -> dict[str, Any]:
        cfg = img.config.get("config") or {}
        return {
            "Id": img.id,
            "ParentId": img.parent,
            "RepoTags": list(img.names if tags is None else tags),
            "RepoDigests": list(img.repo_digests),
            "Created": img.created_unix,
            "Size": img.size,
            "SharedSize": -1,
            "Labels": dict(cfg.get("Labels") or {}),
            "Containers": -1,
        }

    async def disk_usage(self, containers_per_image: dict[str, int]) -> tuple[int, builtins.list[dict]]:
        """``GET /system/df``'s image part: (LayersSize, image summaries). LayersSize counts each
        layer (chain ID) once however many images use it; an image's SharedSize is the size of
        its layers that other images use too; Containers is how many containers use it (from
        ``containers_per_image``, image ID -> count)."""
        images = await self.images()
        layer_size: dict[str, int] = {}
        refs: dict[str, int] = {}
        per_image: dict[str, builtins.list[str]] = {}
        for img in images:
            chains = chain_ids(img.diff_ids)
            per_image[img.id] = chains
            for chain, layer in zip(chains, img.layers, strict=False):
                if chain not in layer_size:
                    layer_size[chain] = await self._layer_size(chain, layer)
                refs[chain] = refs.get(chain, 0) + 1
        out = []
        for img in images:
            s = self.summary(img)
            s["SharedSize"] = sum(layer_size.get(c, 0) for c in per_image[img.id] if refs[c] > 1)
            s["Containers"] = containers_per_image.get(img.id, 0)
            out.append(s)
        return sum(layer_size.values()), out

    async def inspect(self, ref_or_id: str) -> dict[str, Any]:
        img = await self.resolve(ref_or_id)
        return self.inspect_dict(img)

    @staticmethod
    def inspect_dict(img: Image) -> dict[str, Any]:
        raw = img.config
        d: dict[str, Any] = {
            "Id": img.id,
            "RepoTags": list(img.names),
            "RepoDigests": list(img.repo_digests),
            "Parent": img.parent,
            "Comment": _comment(raw),
            "Created": img.created or ZERO_TIME,
            "DockerVersion": raw.get("docker_version", ""),
            "Author": raw.get("author", ""),
            "Config": raw.get("config") or {},
            "Architecture": raw.get("architecture", ""),
            "Os": raw.get("os", ""),
            "Size": img.size,
            "GraphDriver": {"Name": "overlay2", "Data": None},
            "RootFS": {"Type": "layers", "Layers": list(img.diff_ids)},
            "Metadata": {"LastTagTime": ZERO_TIME},
        }
        if raw.get("variant"):
            d["Variant"] = raw["variant"]
        if raw.get("os.version"):
            d["OsVersion"] = raw["os.version"]
        return d

    # --- writing ------------------------------------------------------------------------------

    async def _lease(self) -> str:
        expire = _dt.datetime.fromtimestamp(time.time() + LEASE_EXPIRE, _dt.UTC)
        return await self.cd.create_lease({"containerd.io/gc.expire": expire.strftime("%Y-%m-%dT%H:%M:%SZ")})

    async def _drop_lease(self, lease: str) -> None:
        try:
            await self.cd.delete_lease(lease)
        except ApiError as e:   # it expires anyway; say so
            log.error("delete lease %s: %s (it expires within %ds)", lease, e, LEASE_EXPIRE)

    async def unpack(self, manifest_desc: Descriptor, lease: str = "") -> str:
        """Unpack the image whose manifest is ``manifest_desc`` into the overlayfs snapshotter
        (containerd's unpacker's way, see the module doc); returns its top ChainID."""
        manifest = parse_manifest(await self._doc(manifest_desc.digest, MAX_MANIFEST_SIZE),
                                  manifest_desc.media_type, f"manifest {manifest_desc.digest}")
        config = parse_config(await self._doc(manifest.config.digest, MAX_CONFIG_SIZE),
                              f"image config {manifest.config.digest}")
        where = f"image {manifest_desc.digest}"
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidParameter(f"{where}: the manifest has {len(manifest.layers)} layers but the config "
                                   f"lists {len(config.diff_ids)} diff IDs")
        chains = chain_ids(config.diff_ids)
        parent = ""
        for i, (layer, diff_id, chain) in enumerate(zip(manifest.layers, config.diff_ids, chains, strict=True)):
            desc = Descriptor(layer.media_type, layer.digest, layer.size)
            info = await self.cd.stat_snapshot(chain, SNAPSHOTTER)
            if info is None:
                await self._apply_one(desc, diff_id, chain, parent, lease, f"{where}: layer {i} ({layer.digest})")
            elif info["kind"] != "COMMITTED":
                raise Conflict(f"{where}: snapshot {chain} exists but is {info['kind'].lower()}, not committed")
            if layer.digest != diff_id:
                await self.cd.update_content_labels(layer.digest, {LABEL_UNCOMPRESSED: diff_id})
            parent = chain
        if chains:
            await self.cd.update_content_labels(manifest.config.digest,
                                                {LABEL_GC_SNAPSHOT + SNAPSHOTTER: chains[-1]})
        return chains[-1] if chains else ""

    async def _apply_one(self, layer: Descriptor, diff_id: str, chain: str, parent: str, lease: str,
                         where: str) -> None:
        key = f"extract-{time.time_ns()}-{secrets.token_hex(4)} {chain}"
        labels = {LABEL_SNAPSHOT_REF: chain}
        mounts = await self.cd.prepare_snapshot(key, parent, SNAPSHOTTER, labels, lease)
        try:
            applied = await self.cd.apply_layer(layer, mounts, lease)
            if applied.digest != diff_id:
                raise InvalidParameter(f"{where}: diff ID {applied.digest}, the config says {diff_id}")
            try:
                await self.cd.commit_snapshot(chain, key, SNAPSHOTTER, labels, lease)
            except Conflict:
                log.info("%s: snapshot %s committed meanwhile; using it", where, chain)
                await self.cd.remove_snapshot(key, SNAPSHOTTER)
        except BaseException:
            try:
                await self.cd.remove_snapshot(key, SNAPSHOTTER)
            except ApiError as ce:
                if not isinstance(ce, NotFound):
                    log.error("%s: remove snapshot %s after a failure: %s", where, key, ce)
            raise

    async def ensure_unpacked(self, img: Image) -> str:
        """The image's top ChainID, unpacking it first when its snapshot is missing."""
        if not img.chain_id or await self.cd.stat_snapshot(img.chain_id, SNAPSHOTTER) is not None:
            return img.chain_id
        assert img.manifest is not None
        async with self._lock:
            lease = await self._lease()
            try:
                return await self.unpack(img.manifest, lease)
            finally:
                await self._drop_lease(lease)

    async def _name(self, name: str, target: Descriptor, lease: str) -> None:
        existing = await self.cd.get_image(name)
        if existing is None:
            try:
                await self.cd.create_image(name, target, lease=lease)
                return
            except Conflict:
                pass    # made meanwhile: point it at ours
        await self.cd.update_image(name, target, lease=lease)

    async def ensure_builtin(self) -> None:
        """Load the built-in busybox as busybox:latest unless an image of busybox exists."""
        for rec in await self.cd.list_images():
            if rec.name.split("@")[0].rpartition(":")[0] == BUILTIN_REPO or rec.name.startswith(BUILTIN_REPO + "@"):
                return
        from skiff.images.builtin import assemble_busybox
        from skiff.images.ocilayout import MEDIA_TYPE_MANIFEST
        image, _platform = await asyncio.to_thread(assemble_busybox, self.busybox)
        async with self._lock:
            lease = await self._lease()
            try:
                for blob in image.layers:
                    await self.cd.write_blob(f"builtin-{blob.digest}", blob.data, blob.digest, lease=lease)
                await self.cd.write_blob(f"builtin-{image.config.digest}", image.config.data, image.config.digest,
                                         lease=lease)
                mdesc = Descriptor(MEDIA_TYPE_MANIFEST, image.manifest.digest, image.manifest.size)
                labels = gc_labels(_lib_desc(mdesc), image.manifest.data)
                await self.cd.write_blob(f"builtin-{mdesc.digest}", image.manifest.data, mdesc.digest,
                                         labels=labels, lease=lease)
                self._docs[mdesc.digest] = image.manifest.data
                await self.unpack(mdesc, lease)
                await self._name(BUILTIN_NAME, mdesc, lease)
            finally:
                await self._drop_lease(lease)
        log.info("loaded the built-in image %s (%s)", BUILTIN_NAME, image.config.digest)

    async def _copy_tree(self, store: Any, desc: Any, lease: str) -> None:
        """Copy a manifest or index and what it names (that the scratch store holds) into
        containerd, children first, with containerd's GC labels (``docker import``)."""
        from skiff.images.manifest import children
        labels: dict[str, str] = {}
        if is_index(desc.media_type) or is_manifest(desc.media_type):
            data = await asyncio.to_thread(store.read_all, desc.digest, MAX_MANIFEST_SIZE)
            have = set()
            for child in children(desc, data):
                if await asyncio.to_thread(store.exists, child.digest):
                    await self._copy_tree(store, child, lease)
                    have.add(child.digest)
            labels = gc_labels(desc, data, have if is_index(desc.media_type) else None)
            self._docs[desc.digest] = data
        info = store.info(desc.digest)
        with store.open(desc.digest) as f:
            await self.cd.write_blob(f"load-{desc.digest}", f, desc.digest, labels=labels, lease=lease,
                                     size=info.size)


    # --- tag, delete, history, prune ----------------------------------------------------------

    async def tag(self, source: str, repo: str, tag: str) -> str:
        """``POST /images/{name}/tag``: name the image ``source`` ``repo:tag``; returns the
        familiar new name."""
        img = await self.resolve(source)
        if not repo:
            raise InvalidParameter("tag: repository name must have at least one component")
        ref = tag_reference(f"{repo}:{tag}" if tag else repo, "refusing to create a tag with a digest reference")
        path_last = ref.path.rpartition("/")[2]
        if len(path_last) == 64 and all(c in "0123456789abcdef" for c in path_last) and not tag:
            raise InvalidParameter(f"invalid repository name ({path_last}), cannot specify 64-byte "
                                   "hexadecimal strings")
        assert img.target is not None
        await self._name(str(ref), img.target, "")
        # an image that had no name loses its dangling record once it has one
        try:
            await self.cd.delete_image(DANGLING_PREFIX + img.target.digest)
        except NotFound:
            pass
        name = ref.familiar_string()
        self.events.publish("image", "tag", img.id, {"name": name})
        return name

    def _users(self, img: Image) -> builtins.list[tuple[str, bool]]:
        return self.containers_using(img.id)

    async def delete(self, ref: str, force: bool = False, noprune: bool = False) -> builtins.list[dict[str, str]]:
        """``DELETE /images/{name}`` (``docker rmi``): untag, or delete the image when its last
        name goes or it is named by ID. Images used by containers are kept (409) unless forced;
        a running container's image is never deleted by ID."""
        img = await self.resolve(ref)
        short = img.id[len("sha256:"):][:12]
        users = self._users(img)
        out: builtins.list[dict[str, str]] = []
        full = self._ref_names(ref, img)
        if full:
            others = [n for n in img.full_names if n not in full and "@" not in n]
            if others:
                for name in full:
                    await self._untag(name, img, out)
                return out
            if users and not force:
                cid = users[0][0]
                raise Conflict(f'conflict: unable to remove repository reference "{ref}" (must force) - '
                               f"container {cid[:12]} is using its referenced image {short}")
            if img.build_record and await self._has_children(img):     # issue 10 (build)
                for name in full:     # its last name goes; the image stays for its children
                    await self._untag(name, img, out)
                return out
            if users:     # forced: the name goes, the image stays (dangling) for its containers
                assert img.target is not None
                await self._name(DANGLING_PREFIX + img.target.digest, img.target, "")
                for name in full:
                    await self._untag(name, img, out)
                return out
        else:
            running = [cid for cid, run in users if run]
            if running:
                raise Conflict(f"conflict: unable to delete {short} (cannot be forced) - image is being used "
                               f"by running container {running[0][:12]}")
            if users and not force:
                raise Conflict(f"conflict: unable to delete {short} (must be forced) - image is being used by "
                               f"stopped container {users[0][0][:12]}")
            if await self._has_children(img):      # issue 10 (build)
                raise Conflict(f"conflict: unable to delete {short} (cannot be forced) - image has dependent "
                               "child images")
            tags = [n for n in img.full_names if "@" not in n]
            if len(tags) > 1 and not force:
                raise Conflict(f"conflict: unable to delete {short} (must be forced) - image is referenced in "
                               "multiple repositories")
        await self._remove_image(img, out, noprune)
        return out

    def _ref_names(self, ref: str, img: Image) -> builtins.list[str]:
        """The records of ``img`` that ``ref`` names (``x`` -> ``docker.io/library/x:latest``)."""
        try:
            r = parse_docker_ref(ref)
        except ReferenceError:
            return []
        names = [n for n in img.full_names if n == str(r)]
        if r.digest:
            names += [n for n in img.full_names if n.startswith(r.name + "@") and n not in names]
        return names

    async def _untag(self, name: str, img: Image, out: builtins.list[dict[str, str]]) -> None:
        await self.cd.delete_image(name)
        out.append({"Untagged": familiar(name)})
        self.events.publish("image", "untag", img.id, {"name": familiar(name)})

    async def _remove_image(self, img: Image, out: builtins.list[dict[str, str]], noprune: bool = False) -> None:
        records = builtins.list(img.full_names)
        assert img.target is not None
        dangling = DANGLING_PREFIX + img.target.digest
        if await self.cd.get_image(dangling) is not None:
            records.append(dangling)
        if img.build_record:          # issue 10 (build)
            records.append(img.build_record)
        # another image record with the same target (another config? no: same target = same
        # image) is covered by full_names; delete every record, the last one synchronously so
        # that containerd's GC has removed content and snapshots when we answer
        for i, name in enumerate(records):
            last = i == len(records) - 1
            try:
                await self.cd.delete_image(name, sync=last and not noprune)
            except NotFound:
                continue
            if name != dangling and name != img.build_record:
                out.append({"Untagged": familiar(name)})
                self.events.publish("image", "untag", img.id, {"name": familiar(name)})
        out.append({"Deleted": img.id})
        for chain in chain_ids(img.diff_ids):
            self._usage.pop(chain, None)
        if img.target is not None:
            self._parsed.pop(img.target.digest, None)
        self.events.publish("image", "delete", img.id, {"name": img.id})
        if img.parent and not noprune:      # issue 10 (build)
            await self._prune_parent(img.parent, out)

    # --- issue 10 (build): parents and intermediate images -----------------------------------

    async def _has_children(self, img: Image) -> bool:
        return any(other.parent == img.id for other in await self.images())

    async def _prune_parent(self, parent_id: str, out: builtins.list[dict[str, str]]) -> None:
        """After an image was deleted: its parent too when it is an untagged image a build
        made that nothing else needs (no name, no other child, no container), as dockerd
        prunes a deleted image's parent chain."""
        images = await self.images()
        parent = next((i for i in images if i.id == parent_id), None)
        if parent is None or not parent.build_record or parent.names or parent.repo_digests:
            return
        if any(i.parent == parent_id for i in images) or self._users(parent):
            return
        await self._remove_image(parent, out)

    async def add_build_image(self, target: Descriptor, parent_id: str, cache_key: str, lease: str) -> None:
        """Record an image a build made (already in containerd and unpacked): its build record
        with its parent and cache key (an untagged image a build made shows in ``docker
        images`` only when it has no children)."""
        labels = {LABEL_BUILD_PARENT: parent_id, LABEL_BUILD_KEY: cache_key}
        name = BUILD_PREFIX + target.digest
        try:
            await self.cd.create_image(name, target, labels=labels, lease=lease)
        except Conflict:      # the same image made again (a build without cache): the same record
            await self.cd.update_image(name, target, labels=labels, lease=lease)

    async def build_children(self, parent_id: str) -> builtins.list[Image]:
        """The images a build made on ``parent_id`` (the candidates of a cache look-up)."""
        return [i for i in await self.images() if i.build_record and i.parent == parent_id]

    async def prune_build_cache(self) -> tuple[builtins.list[str], int]:
        """``POST /build/prune``: delete the untagged images builds made that nothing uses (no
        name, no child, no container: intermediate images left by failed builds or whose final
        image is gone, and untagged build results), repeatedly (a deleted image frees its parent).
        Returns (deleted image IDs, bytes reclaimed)."""
        deleted: builtins.list[str] = []
        sizes: dict[str, int] = {}          # chain ID -> size, of the layers of deleted images
        while True:
            images = await self.images()
            parents = {i.parent for i in images if i.parent}
            victims = [i for i in images if i.build_record and not i.names and not i.repo_digests
                       and i.id not in parents and not self._users(i)]
            if not victims:
                break
            for img in victims:
                for chain, layer in zip(chain_ids(img.diff_ids), img.layers, strict=False):
                    if chain not in sizes:
                        sizes[chain] = await self._layer_size(chain, layer)
                out: builtins.list[dict[str, str]] = []
                await self._remove_image(img, out, noprune=True)
                deleted.append(img.id)
        # what is reclaimed: the layers no remaining image has
        kept = {c for i in await self.images() for c in chain_ids(i.diff_ids)}
        return deleted, sum(n for c, n in sizes.items() if c not in kept)

    async def history(self, ref: str) -> builtins.list[dict[str, Any]]:
        """``GET /images/{name}/history``: the config's history, newest first; layer sizes
        from the snapshots."""
        img = await self.resolve(ref)
        hist = img.config.get("history") or []
        chains = chain_ids(img.diff_ids)
        sizes: builtins.list[int] = []
        for chain, layer in zip(chains, img.layers, strict=False):
            sizes.append(await self._layer_size(chain, layer))
        rows: builtins.list[dict[str, Any]] = []
        li = 0
        if not hist:    # an image without history: one row per layer
            hist = [{"created": img.created} for _ in img.diff_ids] or [{"created": img.created}]
        for h in hist:
            empty = bool(h.get("empty_layer"))
            size = 0
            if not empty and li < len(sizes):
                size = sizes[li]
                li += 1
            rows.append({"Id": "<missing>", "Created": parse_rfc3339(str(h.get("created") or "")),
                         "CreatedBy": str(h.get("created_by") or ""), "Tags": None, "Size": size,
                         "Comment": str(h.get("comment") or "")})
        rows.reverse()
        rows[0]["Id"] = img.id
        rows[0]["Tags"] = builtins.list(img.names)
        # issue 10 (build): the rows of the images of a build's parent chain get their IDs and tags
        # (moby: each image a build made added one history entry to its parent's)
        cur = img
        for row in rows[1:]:
            if not cur.parent:
                break
            try:
                cur = await self.resolve(cur.parent)
            except NotFound:
                break
            row["Id"] = cur.id
            row["Tags"] = builtins.list(cur.names) or None
        return rows

    async def prune(self, filters: dict[str, builtins.list[str]]) -> dict[str, Any]:
        """``POST /images/prune``: delete dangling images (``dangling=false``: every image no
        container uses); filters ``until`` and ``label``/``label!``."""
        for key in filters:
            if key not in ("dangling", "until", "label", "label!"):
                raise InvalidParameter(f"invalid filter '{key}'")
        only_dangling = True
        for v in filters.get("dangling", []):
            if v.lower() not in ("true", "false", "1", "0"):
                raise InvalidParameter(f"invalid filter 'dangling={v}'")
            only_dangling = v.lower() in ("true", "1")
        until: int | None = None
        for v in filters.get("until", []):
            until = _parse_until(v)
        deleted: builtins.list[dict[str, str]] = []
        reclaimed = 0
        images = await self.images()
        parents = {i.parent for i in images if i.parent}     # issue 10 (build)
        for img in images:
            if only_dangling and img.names:
                continue
            if img.id in parents or {"Deleted": img.id} in deleted:
                continue    # a build's intermediate image goes with its child; or already gone so
            if self._users(img):
                continue
            if until is not None and img.created_unix >= until:
                continue
            labels = (img.config.get("config") or {}).get("Labels") or {}
            if not self._labels_match(labels, filters.get("label", [])):
                continue
            if any(self._labels_match(labels, [w]) for w in filters.get("label!", [])):
                continue
            reclaimed += img.size
            await self._remove_image(img, deleted)
        if deleted:
            self.events.publish("image", "prune", "", {"reclaimed": str(reclaimed)})
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    async def add_image(self, names: builtins.list[str], target: Descriptor, lease: str) -> None:
        """Name ``target`` (already in containerd and unpacked) ``names``; an unnamed image gets
        its dangling record. Names that pointed at another image leave that one dangling when
        it has no other name."""
        images = await self.images()
        if not names:
            if not any(img.target is not None and img.target.digest == target.digest and img.full_names
                       for img in images):
                await self._name(DANGLING_PREFIX + target.digest, target, lease)
            return
        for img in images:     # an image losing its last name to this one stays, dangling
            if img.target is None or img.target.digest == target.digest or not img.full_names:
                continue
            if all(n in names for n in img.full_names):
                await self._name(DANGLING_PREFIX + img.target.digest, img.target, lease)
        for name in names:
            await self._name(name, target, lease)
        try:
            await self.cd.delete_image(DANGLING_PREFIX + target.digest)
        except NotFound:
            pass


def _comment(raw: dict) -> str:
    """The config's comment, else the last history entry's (what ``docker commit -m`` sets)."""
    comment = raw.get("comment") or ""
    hist = raw.get("history") or []
    if not comment and hist and isinstance(hist[-1], dict):
        comment = hist[-1].get("comment") or ""
    return str(comment)


def _parse_until(v: str) -> int:
    """A prune ``until``: Unix seconds, RFC 3339, or a Go duration ago (``24h``)."""
    from skiff.images.archive import parse_go_duration
    try:
        return int(float(v))
    except ValueError:
        pass
    t = parse_rfc3339(v)
    if t:
        return t
    try:
        return int(time.time() - parse_go_duration(v, "until") / 1e9)
    except ImageError:
        raise InvalidParameter(f"invalid filter 'until={v}': not a timestamp or duration") from None


def _lib_desc(d: Descriptor) -> Any:
    from skiff.images.content import Descriptor as LibDescriptor
    return LibDescriptor(d.media_type, d.digest, d.size)


def to_json_line(obj: dict) -> bytes:
    return (json.dumps(obj) + "\n").encode()
