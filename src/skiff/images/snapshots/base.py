"""The bookkeeping both snapshotters share: metadata, directories, crash-safe create/remove.

Layout of a snapshotter root::

    <root>/metadata.db           SQLite (see storage.py)
    <root>/snapshots/<id>/fs     the snapshot's tree (overlay: its upper directory)
    <root>/snapshots/<id>/work   overlay's work directory (active snapshots)

A new snapshot's directory is built as ``snapshots/new-XXXX`` and renamed to its id inside
the transaction that adds its row; a removed one is renamed to ``snapshots/rm-<id>`` inside
the transaction that deletes its row and deleted after the commit. A crash at any point
leaves at most a directory that no row names, which :meth:`DirSnapshotter.cleanup` (run on
open) deletes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from typing import TYPE_CHECKING

from skiff.images.errors import FailedPrecondition, ImageError, InvalidArgument
from skiff.images.snapshots import Info, Kind, Mount, Usage, compile_filters, validate_labels
from skiff.images.snapshots.fsutil import disk_usage, remove_tree
from skiff.images.snapshots.storage import Row, SnapshotDB

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger("skiff.images.snapshots")


class DirSnapshotter:
    """Base class; subclasses say how a snapshot's directory is filled and mounted."""

    name = ""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.snapshots_dir = os.path.join(self.root, "snapshots")
        os.makedirs(self.snapshots_dir, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.db = SnapshotDB(os.path.join(self.root, "metadata.db"))
        self._lock = threading.RLock()
        self.cleanup()

    # --- subclass hooks

    def _fill(self, tmpdir: str, kind: Kind, parents: list[Row]) -> None:
        """Create the contents of a new snapshot's directory (``fs``, ...)."""
        raise NotImplementedError

    def _mounts(self, row: Row, parents: list[Row]) -> list[Mount]:
        raise NotImplementedError

    def _usage_dir(self, row: Row) -> str:
        """The directory whose disk usage is the snapshot's own."""
        return self.fs_dir(row.id)

    # --- paths

    def snapshot_dir(self, sid: int) -> str:
        return os.path.join(self.snapshots_dir, str(sid))

    def fs_dir(self, sid: int) -> str:
        return os.path.join(self.snapshots_dir, str(sid), "fs")

    # --- the interface

    def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        return self._create(Kind.ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        return self._create(Kind.VIEW, key, parent, labels)

    def _create(self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None) -> list[Mount]:
        what = f"{'prepare' if kind == Kind.ACTIVE else 'view'} snapshot {key}"
        if not key:
            raise InvalidArgument(f"{what}: empty key")
        lab = validate_labels(labels or {}, what)
        with self._lock:
            with self.db.transaction():
                # fails early (AlreadyExists, parent NotFound/not committed) before any copying
                row = self.db.create(key, parent, kind, lab)
                parents = self.db.chain(row)
                tmp = tempfile.mkdtemp(prefix="new-", dir=self.snapshots_dir)
                try:
                    self._fill(tmp, kind, parents)
                    os.rename(tmp, self.snapshot_dir(row.id))
                except BaseException as e:
                    try:
                        remove_tree(tmp)
                    except OSError as ce:
                        log.error("%s: cleanup of %s after a failure: %s", what, tmp, ce)
                    if isinstance(e, OSError):
                        raise ImageError(f"{what}: create its directory: {e}") from e
                    raise
            return self._mounts(row, parents)

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        what = f"commit snapshot {key} as {name}"
        if not name:
            raise InvalidArgument(f"{what}: empty name")
        lab = validate_labels(labels or {}, what)
        with self._lock:
            row = self.db.get(key)
            if row.kind != Kind.ACTIVE:
                raise FailedPrecondition(f"{what}: snapshot {key} is {str(row.kind).lower()}, not active")
            size, inodes = self._measure(row)
            with self.db.transaction():
                self.db.commit(key, name, lab, size, inodes)
                self._after_commit(row)

    def _after_commit(self, row: Row) -> None:
        """Tidy the directory of a snapshot just committed (inside the transaction)."""

    def remove(self, key: str) -> None:
        with self._lock:
            with self.db.transaction():
                row = self.db.delete(key)
                src = self.snapshot_dir(row.id)
                trash = os.path.join(self.snapshots_dir, f"rm-{row.id}")
                try:
                    if os.path.lexists(src):
                        os.rename(src, trash)
                except OSError as e:
                    raise ImageError(f"remove snapshot {key}: rename {src}: {e.strerror}") from e
        try:
            remove_tree(trash)
        except OSError as e:
            # the row is gone; cleanup() deletes the directory on the next open
            log.error("remove snapshot %s: delete %s: %s (left for cleanup)", key, trash, e)

    def mounts(self, key: str) -> list[Mount]:
        row = self.db.get(key)
        if row.kind == Kind.COMMITTED:
            raise FailedPrecondition(f"mounts of snapshot {key}: it is committed; only active and view "
                                     "snapshots have mounts")
        return self._mounts(row, self.db.chain(row))

    def stat(self, key: str) -> Info:
        return self.db.get(key).info()

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        """Update labels (the only mutable field): all of them when ``fieldpaths`` is empty
        or holds ``labels``, else each ``labels.KEY`` named."""
        what = f"update snapshot {info.name}"
        with self._lock, self.db.transaction():
            row = self.db.get(info.name)
            new = validate_labels(info.labels, what)
            if not fieldpaths:
                labels = new
            else:
                labels = dict(row.labels)
                for fp in fieldpaths:
                    if fp == "labels":
                        labels = dict(new)
                    elif fp.startswith("labels."):
                        k = fp[len("labels."):]
                        if k in new:
                            labels[k] = new[k]
                        else:
                            labels.pop(k, None)
                    else:
                        raise InvalidArgument(f"{what}: field {fp!r} cannot be updated (only labels)")
            return self.db.set_labels(info.name, labels).info()

    def usage(self, key: str) -> Usage:
        row = self.db.get(key)
        if row.kind == Kind.COMMITTED:
            return Usage(row.size, row.inodes)
        size, inodes = self._measure(row)
        return Usage(size, inodes)

    def _measure(self, row: Row) -> tuple[int, int]:
        path = self._usage_dir(row)
        try:
            return disk_usage(path)
        except OSError as e:
            raise ImageError(f"usage of snapshot {row.key}: {path}: {e.strerror}") from e

    def walk(self, fn: Callable[[Info], object], filters: Sequence[str] = ()) -> None:
        pred = compile_filters(filters)
        for row in self.db.all():
            info = row.info()
            if pred(info):
                fn(info)

    def close(self) -> None:
        self.db.close()

    def cleanup(self) -> list[str]:
        """Delete directories under ``snapshots/`` that no row names (left by a crash or a
        failed delete). Returns what was deleted."""
        with self._lock:
            ids = {str(i) for i in self.db.ids()}
            gone: list[str] = []
            for n in sorted(os.listdir(self.snapshots_dir)):
                if n in ids:
                    continue
                path = os.path.join(self.snapshots_dir, n)
                remove_tree(path)
                gone.append(path)
            return gone

    # --- helpers for subclasses and the differ

    def dirs(self, key: str) -> tuple[str, list[str]]:
        """(the snapshot's own fs directory, its parents' fs directories nearest first)."""
        row = self.db.get(key)
        return self.fs_dir(row.id), [self.fs_dir(p.id) for p in self.db.chain(row)]
