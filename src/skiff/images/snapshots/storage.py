"""Snapshot metadata of one snapshotter: ``<root>/metadata.db`` (SQLite, WAL, synchronous=FULL).

One row per snapshot: a numeric id (its directory is ``snapshots/<id>``), the key (active
and view snapshots) or name (committed ones) in one unique column, the parent's id, kind,
labels (JSON), created/updated (nanoseconds since the epoch) and, for committed snapshots,
the usage measured at commit. Committing keeps the row and its id (the tree does not move).

All changes run in ``BEGIN IMMEDIATE`` transactions (:meth:`SnapshotDB.transaction`), so the
snapshotter can pair a row change with a rename of the snapshot's directory and roll the row
back if the rename fails; a crash between the two leaves at most an orphan directory, which
``cleanup`` removes.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from skiff.images.errors import AlreadyExists, FailedPrecondition, ImageError, NotFound
from skiff.images.snapshots import Info, Kind

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    parent_id INTEGER REFERENCES snapshots(id) ON DELETE RESTRICT,
    kind INTEGER NOT NULL,
    labels TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
"""


@dataclass
class Row:
    id: int
    key: str
    parent_id: int | None
    parent: str  # the parent's key ("" for none)
    kind: Kind
    labels: dict[str, str]
    created: int
    updated: int
    size: int
    inodes: int

    def info(self) -> Info:
        import datetime as dt

        def ts(ns: int) -> dt.datetime:
            return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
        return Info(name=self.key, parent=self.parent, kind=self.kind, labels=dict(self.labels),
                    created=ts(self.created), updated=ts(self.updated))


_SELECT = ("SELECT s.id, s.key, s.parent_id, COALESCE(p.key, ''), s.kind, s.labels, s.created, "
           "s.updated, s.size, s.inodes FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id")


def _row(r: tuple) -> Row:
    return Row(id=r[0], key=r[1], parent_id=r[2], parent=r[3], kind=Kind(r[4]), labels=json.loads(r[5]),
               created=r[6], updated=r[7], size=r[8], inodes=r[9])


class SnapshotDB:
    """The metadata file of one snapshotter (thread-safe: one connection behind a lock)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)  # idempotent; executescript commits on its own
            with self.transaction():
                cur = self._db.execute("SELECT value FROM meta WHERE key = 'schema'")
                found = cur.fetchone()
                if found is None:
                    self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                elif int(found[0]) != SCHEMA_VERSION:
                    raise ImageError(f"snapshot metadata {path}: schema version {found[0]}, "
                                     f"this program knows {SCHEMA_VERSION}")
        except sqlite3.Error as e:
            raise ImageError(f"snapshot metadata {path}: cannot open: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction (re-entrant: nested calls join the outer one)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._db.execute("ROLLBACK")
                raise
            self._depth = 0
            self._db.execute("COMMIT")

    # --- reads

    def find(self, key: str) -> Row | None:
        with self._lock:
            r = self._db.execute(_SELECT + " WHERE s.key = ?", (key,)).fetchone()
        return _row(r) if r else None

    def get(self, key: str) -> Row:
        row = self.find(key)
        if row is None:
            raise NotFound(f"snapshot {key}: not found")
        return row

    def chain(self, row: Row) -> list[Row]:
        """The parents of ``row``, nearest first."""
        out: list[Row] = []
        with self._lock:
            pid = row.parent_id
            while pid is not None:
                r = self._db.execute(_SELECT + " WHERE s.id = ?", (pid,)).fetchone()
                if r is None:
                    raise ImageError(f"snapshot {row.key}: parent id {pid} missing from {self.path}")
                parent = _row(r)
                out.append(parent)
                pid = parent.parent_id
        return out

    def all(self) -> list[Row]:
        with self._lock:
            return [_row(r) for r in self._db.execute(_SELECT + " ORDER BY s.id")]

    def ids(self) -> set[int]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM snapshots")}

    def children(self, row: Row) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT key FROM snapshots WHERE parent_id = ? ORDER BY key", (row.id,))]

    # --- writes (call inside transaction())

    def create(self, key: str, parent: str, kind: Kind, labels: Mapping[str, str]) -> Row:
        if self.find(key) is not None:
            raise AlreadyExists(f"snapshot {key}: already exists")
        parent_id = None
        if parent:
            p = self.find(parent)
            if p is None:
                raise NotFound(f"snapshot {key}: parent {parent}: not found")
            if p.kind != Kind.COMMITTED:
                raise FailedPrecondition(f"snapshot {key}: parent {parent} is {str(p.kind).lower()}, "
                                         "not committed")
            parent_id = p.id
        now = time.time_ns()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO snapshots (key, parent_id, kind, labels, created, updated) VALUES (?,?,?,?,?,?)",
                (key, parent_id, int(kind), json.dumps(dict(labels), sort_keys=True), now, now))
        assert cur.lastrowid is not None
        return self.get(key)

    def commit(self, key: str, name: str, labels: Mapping[str, str], size: int, inodes: int) -> Row:
        row = self.get(key)
        if row.kind != Kind.ACTIVE:
            raise FailedPrecondition(f"commit {key} as {name}: snapshot {key} is {str(row.kind).lower()}, "
                                     "not active")
        if name != key and self.find(name) is not None:
            raise AlreadyExists(f"commit {key} as {name}: snapshot {name}: already exists")
        with self._lock:
            self._db.execute(
                "UPDATE snapshots SET key = ?, kind = ?, labels = ?, updated = ?, size = ?, inodes = ? "
                "WHERE id = ?",
                (name, int(Kind.COMMITTED), json.dumps(dict(labels), sort_keys=True), time.time_ns(),
                 size, inodes, row.id))
        return self.get(name)

    def delete(self, key: str) -> Row:
        row = self.get(key)
        kids = self.children(row)
        if kids:
            raise FailedPrecondition(f"remove snapshot {key}: it is the parent of "
                                     f"{', '.join(kids[:5])}{' ...' if len(kids) > 5 else ''}")
        with self._lock:
            self._db.execute("DELETE FROM snapshots WHERE id = ?", (row.id,))
        return row

    def set_labels(self, key: str, labels: Mapping[str, str]) -> Row:
        row = self.get(key)
        with self._lock:
            self._db.execute("UPDATE snapshots SET labels = ?, updated = ? WHERE id = ?",
                             (json.dumps(dict(labels), sort_keys=True), time.time_ns(), row.id))
        return self.get(key)
