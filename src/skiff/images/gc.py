"""Garbage collection of content, snapshots, leases and ingests (containerd's mark and sweep).

Roots, per namespace:

- images: their target (with the target's media type), and the content/snapshot references
  in their labels;
- containers: their snapshot (snapshotter + key) and the references in their labels;
- leases that have not expired (``containerd.io/gc.expire``): every resource they hold
  (content, ``snapshots/<snapshotter>`` keys, ingest refs); a ``containerd.io/gc.flat`` lease
  holds its resources only, not what they reference;
- blobs and snapshots labelled ``containerd.io/gc.root``.

References followed from a marked object:

- labels ``containerd.io/gc.ref.content`` and ``containerd.io/gc.ref.content.<any>`` (or
  ``/<any>``) on content, images and containers: a digest in the same namespace;
- labels ``containerd.io/gc.ref.snapshot.<snapshotter>[/<any>]``: a snapshot key;
- a snapshot's parent;
- **the JSON of indexes and manifests** (OCI and Docker schema 2): their manifests, config and
  layers, whatever the labels say. Labels are missing on content imported from an archive
  or written by other tools, so the graph is also read from the documents themselves; a
  descriptor's media type decides whether a blob is parsed. A document that cannot be parsed
  stops the collection before anything is removed (with the digest and the reason): GC never
  guesses what an image needs;
- **an image config** reached that way: the snapshots named by the chain IDs of its
  ``rootfs.diff_ids`` (how the unpacker names the snapshots of an image), in every
  snapshotter, so an unpacked image keeps its snapshots without labels.

Sweep: content records of a namespace that were not marked, then the blob files that no
namespace records any more (including blobs orphaned by a crash between commit's rename and
its database write), snapshots not marked (children before parents), expired leases, and
ingests that no writer has open, no lease holds, and that were not written to for
``ingest_expiry`` (24 hours by default, so a crashed pull can still resume).

Consistency: the collection holds the content store's lock exclusively (no commit or delete
runs meanwhile) and marks and deletes records in one SQLite write transaction (no metadata
change runs meanwhile); files are removed only after that transaction is committed, so a crash
leaves at worst unrecorded files for the next collection. Snapshots are not in this database:
create them under a lease (add the key to the lease first) so a collection cannot take them
between ``prepare`` and their first reference.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from skiff.images import manifest as mf
from skiff.images.content import RESOURCE_CONTENT, RESOURCE_INGEST, ContentStore, Descriptor, parse_digest
from skiff.images.errors import FailedPrecondition, ImageError, InvalidArgument
from skiff.images.leases import LABEL_GC_FLAT, lease_expired
from skiff.images.manifest import chain_ids
from skiff.images.metadata import RESOURCE_SNAPSHOT_PREFIX

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.images.content import Info
    from skiff.images.snapshots import Info as SnapshotInfo
    from skiff.images.snapshots import Snapshotter

LABEL_GC_ROOT = "containerd.io/gc.root"
LABEL_GC_REF_CONTENT = "containerd.io/gc.ref.content"
LABEL_GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."

DEFAULT_INGEST_EXPIRY = _dt.timedelta(hours=24)
TMP_INGEST_EXPIRY = _dt.timedelta(minutes=10)  # half-created ingest directories (".tmp-*")

# Maps a snapshot key as a namespace's objects name it to the snapshotter's key
# (namespace, snapshotter, key) -> key; identity by default.
SnapshotKeyMap = Callable[[str, str, str], str]


@dataclass
class GCResult:
    """What a collection removed (or, with ``dry_run``, would remove)."""

    dry_run: bool = False
    removed_content: list[tuple[str, str]] = field(default_factory=list)  # (namespace, digest)
    removed_blobs: list[str] = field(default_factory=list)  # digests whose files were deleted
    removed_snapshots: list[tuple[str, str]] = field(default_factory=list)  # (snapshotter, key)
    removed_leases: list[tuple[str, str]] = field(default_factory=list)  # (namespace, lease id)
    removed_ingests: list[tuple[str, str]] = field(default_factory=list)  # (namespace, ref) or ("", dir)
    marked_content: int = 0
    marked_snapshots: int = 0
    errors: list[str] = field(default_factory=list)


def content_refs(labels: Mapping[str, str]) -> list[str]:
    """Digests named by ``containerd.io/gc.ref.content[.|/<name>]`` labels (invalid ones skipped:
    they cannot name content, as in containerd)."""
    out = []
    n = len(LABEL_GC_REF_CONTENT)
    for key, value in labels.items():
        if key == LABEL_GC_REF_CONTENT or (key.startswith(LABEL_GC_REF_CONTENT) and key[n] in "./"):
            try:
                parse_digest(value)
            except InvalidArgument:
                continue
            out.append(value)
    return out


def snapshot_refs(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """(snapshotter, key) named by ``containerd.io/gc.ref.snapshot.<snapshotter>[/<name>]`` labels."""
    out = []
    for key, value in labels.items():
        if key.startswith(LABEL_GC_REF_SNAPSHOT) and value:
            snapshotter = key[len(LABEL_GC_REF_SNAPSHOT):].split("/", 1)[0]
            if snapshotter:
                out.append((snapshotter, value))
    return out


class _Marker:
    def __init__(self, store: ContentStore, content: dict[tuple[str, str], Info],
                 snapshots: dict[str, dict[str, SnapshotInfo]], key_map: SnapshotKeyMap) -> None:
        self.store = store
        self.content = content
        self.snapshots = snapshots
        self.key_map = key_map
        self.marked_content: set[tuple[str, str]] = set()
        self.followed_content: set[tuple[str, str]] = set()
        self.parsed: set[tuple[str, str, str]] = set()
        self.marked_snapshots: set[tuple[str, str]] = set()
        self.followed_snapshots: set[tuple[str, str]] = set()
        self.queue: deque[tuple] = deque()

    # -- enqueueing

    def content_node(self, ns: str, digest: str, media_type: str | None = None, flat: bool = False) -> None:
        self.queue.append(("c", ns, digest, media_type, flat))

    def snapshot_node(self, snapshotter: str, key: str, flat: bool = False) -> None:
        self.queue.append(("s", snapshotter, key, flat))

    def labelled_refs(self, ns: str, labels: Mapping[str, str]) -> None:
        for digest in content_refs(labels):
            self.content_node(ns, digest)
        for snapshotter, key in snapshot_refs(labels):
            self.snapshot_node(snapshotter, self.key_map(ns, snapshotter, key))

    # -- marking

    def run(self) -> None:
        while self.queue:
            item = self.queue.popleft()
            if item[0] == "c":
                self._content(*item[1:])
            else:
                self._snapshot(*item[1:])

    def _content(self, ns: str, digest: str, media_type: str | None, flat: bool) -> None:
        key = (ns, digest)
        info = self.content.get(key)
        if info is None:
            return  # a reference to content the namespace does not hold (not fetched, or deleted)
        self.marked_content.add(key)
        if flat:
            return
        if key not in self.followed_content:
            self.followed_content.add(key)
            self.labelled_refs(ns, info.labels)
        if media_type is None:
            return
        if media_type in mf.INDEX_TYPES or media_type in mf.MANIFEST_TYPES:
            kind = "manifest"
        elif media_type in mf.CONFIG_TYPES:
            kind = "config"
        else:
            return
        if (ns, digest, kind) in self.parsed:
            return
        self.parsed.add((ns, digest, kind))
        limit = mf.MAX_MANIFEST_SIZE if kind == "manifest" else mf.MAX_CONFIG_SIZE
        where = f"gc: namespace {ns}: {media_type} {digest}"
        if info.size > limit:
            raise FailedPrecondition(f"{where}: {info.size} bytes, more than the {limit} a {kind} may have; "
                                     "nothing was removed")
        try:
            data = self._read(digest, info.size)
        except FileNotFoundError:
            raise ImageError(f"{where}: recorded in the namespace but its blob "
                             f"{self.store.blob_path(digest)} is missing; nothing was removed") from None
        try:
            if kind == "manifest":
                desc = Descriptor(media_type, digest, info.size)
                for child in mf.children(desc, data):
                    self.content_node(ns, child.digest, child.media_type)
            else:
                config = mf.parse_config(data, f"image config {digest}")
                for chain_id in chain_ids(config.diff_ids):
                    for snapshotter in self.snapshots:
                        self.snapshot_node(snapshotter, self.key_map(ns, snapshotter, chain_id))
        except InvalidArgument as e:
            raise FailedPrecondition(f"{where}: cannot follow its references: {e}; nothing was removed") from e

    def _read(self, digest: str, size: int) -> bytes:
        with open(self.store.blob_path(digest), "rb") as f:
            return f.read(size + 1)

    def _snapshot(self, snapshotter: str, key: str, flat: bool) -> None:
        infos = self.snapshots.get(snapshotter)
        if infos is None:
            return  # a snapshotter this collection was not given: nothing of it is swept either
        info = infos.get(key)
        if info is None:
            return
        node = (snapshotter, key)
        self.marked_snapshots.add(node)
        if flat or node in self.followed_snapshots:
            return
        self.followed_snapshots.add(node)
        if info.parent:
            self.snapshot_node(snapshotter, info.parent)
        for ss, ref in snapshot_refs(info.labels):
            self.snapshot_node(ss, ref)


def _identity(_ns: str, _snapshotter: str, key: str) -> str:
    return key


def collect(store: ContentStore, snapshotters: Mapping[str, Snapshotter] | None = None, *,
            dry_run: bool = False, ingest_expiry: _dt.timedelta = DEFAULT_INGEST_EXPIRY,
            now: _dt.datetime | None = None, snapshot_key: SnapshotKeyMap | None = None) -> GCResult:
    """Mark from the roots and sweep the rest (see the module doc); all namespaces at once.

    ``snapshotters`` maps names (as used in labels, containers and lease resources:
    ``overlayfs``, ``native``) to snapshotters; only those are marked and swept. Failures to
    remove individual snapshots or files are collected and raised at the end as one
    ImageError (whose ``result`` attribute has the GCResult) after everything else was done.
    """
    snaps = dict(snapshotters or {})
    key_map = snapshot_key or _identity
    now = now or _dt.datetime.now(_dt.UTC)
    result = GCResult(dry_run=dry_run)
    meta = store.meta
    backend = store._backend
    with backend.lock(exclusive=True):
        # Marking and deleting records happen in one write transaction: no metadata change
        # can slip in between.
        with (meta.view() if dry_run else meta.transaction()) as tx:
            content = {(ns, info.digest): info for ns, info in tx.all_content()}
            snapshot_infos: dict[str, dict[str, SnapshotInfo]] = {}
            for name, ss in snaps.items():
                walked: list[SnapshotInfo] = []
                ss.walk(walked.append)
                snapshot_infos[name] = {info.name: info for info in walked}
            marker = _Marker(store, content, snapshot_infos, key_map)
            protected_ingests: set[tuple[str, str]] = set()
            expired = []
            for ns, lease, resources in tx.all_leases():
                if lease_expired(lease, now):
                    expired.append((ns, lease.id))
                    continue
                flat = LABEL_GC_FLAT in lease.labels
                for r in resources:
                    if r.type == RESOURCE_CONTENT:
                        marker.content_node(ns, r.id, None, flat)
                    elif r.type == RESOURCE_INGEST:
                        protected_ingests.add((ns, r.id))
                    elif r.type.startswith(RESOURCE_SNAPSHOT_PREFIX):
                        ss_name = r.type[len(RESOURCE_SNAPSHOT_PREFIX):]
                        marker.snapshot_node(ss_name, key_map(ns, ss_name, r.id), flat)
            for ns, image in tx.all_images():
                marker.content_node(ns, image.target.digest, image.target.media_type)
                marker.labelled_refs(ns, image.labels)
            for ns, container in tx.all_containers():
                if container.snapshotter and container.snapshot_key:
                    marker.snapshot_node(container.snapshotter,
                                         key_map(ns, container.snapshotter, container.snapshot_key))
                marker.labelled_refs(ns, container.labels)
            for (ns, digest), info in content.items():
                if LABEL_GC_ROOT in info.labels:
                    marker.content_node(ns, digest)
            for name, infos in snapshot_infos.items():
                for key, sinfo in infos.items():
                    if LABEL_GC_ROOT in sinfo.labels:
                        marker.snapshot_node(name, key)
            marker.run()
            result.marked_content = len(marker.marked_content)
            result.marked_snapshots = len(marker.marked_snapshots)

            result.removed_content = sorted(k for k in content if k not in marker.marked_content)
            result.removed_leases = sorted(expired)
            if not dry_run:
                for ns, digest in result.removed_content:
                    tx.delete_content(ns, digest)
                for ns, lease_id in expired:
                    tx.delete_lease(ns, lease_id)
            kept_digests = {digest for _, digest in marker.marked_content}
        # Committed. Now the files.
        for digest, path in sorted(backend.blob_digests()):
            if digest in kept_digests:
                continue
            result.removed_blobs.append(digest)
            if not dry_run:
                try:
                    backend.remove_blob(digest)
                except OSError as e:
                    result.errors.append(f"blob {path}: {e.strerror or e}")
        _sweep_snapshots(snaps, snapshot_infos, marker.marked_snapshots, result, dry_run)
        _sweep_ingests(store, protected_ingests, now, ingest_expiry, result, dry_run)
    if result.errors:
        err = ImageError("gc: " + "; ".join(result.errors))
        err.result = result  # type: ignore[attr-defined]
        raise err
    return result


def _depth(infos: Mapping[str, SnapshotInfo], key: str) -> int:
    depth = 0
    seen = set()
    while key in infos and infos[key].parent and key not in seen:
        seen.add(key)
        key = infos[key].parent
        depth += 1
    return depth


def _sweep_snapshots(snaps: Mapping[str, Snapshotter], infos: Mapping[str, Mapping[str, SnapshotInfo]],
                     marked: set[tuple[str, str]], result: GCResult, dry_run: bool) -> None:
    for name, ss in sorted(snaps.items()):
        unmarked = [key for key in infos[name] if (name, key) not in marked]
        # Children before parents: an unmarked snapshot's children are unmarked too (a marked
        # child marks its parent), so removing deepest first never meets a remaining child.
        unmarked.sort(key=lambda k: (-_depth(infos[name], k), k))
        for key in unmarked:
            result.removed_snapshots.append((name, key))
            if dry_run:
                continue
            try:
                ss.remove(key)
            except ImageError as e:
                result.errors.append(f"snapshot {name}/{key}: {e}")
                result.removed_snapshots.pop()


def _sweep_ingests(store: ContentStore, protected: set[tuple[str, str]], now: _dt.datetime,
                   expiry: _dt.timedelta, result: GCResult, dry_run: bool) -> None:
    backend = store._backend
    now_ns = int(now.timestamp() * 1e9)
    for name, path in sorted(backend.ingest_entries()):
        if name.startswith(".tmp-"):
            try:
                age = now_ns - os.stat(path).st_mtime_ns
            except FileNotFoundError:
                continue
            if age > TMP_INGEST_EXPIRY.total_seconds() * 1e9:
                result.removed_ingests.append(("", name))
                if not dry_run:
                    _remove_tmp(path, result)
            continue
        found = backend.read_ingest_status(path)
        if found is not None:
            ns, _, ref = found[0].partition("/")
            if (ns, ref) in protected:
                continue
            last = int(found[1].updated_at.timestamp() * 1e9)
        else:
            ns, ref = "", name
            try:
                last = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                continue
        if now_ns - last <= expiry.total_seconds() * 1e9:
            continue
        fd = backend.try_lock_ingest(path)
        if fd is None:
            continue  # a writer has it open (or it just went away)
        try:
            result.removed_ingests.append((ns, ref))
            if not dry_run:
                try:
                    for entry in os.listdir(fd):
                        os.unlink(entry, dir_fd=fd)
                    os.rmdir(path)
                except OSError as e:
                    result.errors.append(f"ingest {path}: {e.strerror or e}")
        finally:
            os.close(fd)


def _remove_tmp(path: str, result: GCResult) -> None:
    try:
        for entry in os.listdir(path):
            os.unlink(os.path.join(path, entry))
        os.rmdir(path)
    except FileNotFoundError:
        pass  # its creator renamed or removed it meanwhile
    except OSError as e:
        result.errors.append(f"ingest {path}: {e.strerror or e}")


__all__ = [
    "LABEL_GC_REF_CONTENT",
    "LABEL_GC_REF_SNAPSHOT",
    "LABEL_GC_ROOT",
    "GCResult",
    "chain_ids",
    "collect",
    "content_refs",
    "snapshot_refs",
]
