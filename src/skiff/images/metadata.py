"""The metadata database: containerd's namespaced metadata in SQLite.

One file (WAL journal, ``synchronous=FULL``: a transaction is on disk when its ``with`` block
returns, and a crash at any moment leaves the last committed state, checked by SQLite's own
recovery). Tables, all keyed by namespace:

- ``namespaces``: name, labels (created implicitly by the first object in a namespace, as in
  containerd, or explicitly);
- ``images``: name, target descriptor, labels, created/updated;
- ``containers``: id, labels, image, runtime (name, options), spec, snapshotter, snapshot key,
  extensions (protobuf ``Any`` values kept as type URL + bytes), created/updated;
- ``leases`` and ``lease_resources`` (``content``, ``ingests``, ``snapshots/<snapshotter>``);
- ``content``: which blobs a namespace holds, their size and labels (the blobs themselves are
  in the content store, :mod:`skiff.images.content`).

Snapshots are not here: each snapshotter keeps its own records (``stat``/``walk``), as
containerd's snapshotter plugins do; the garbage collector reads them from there.

Use::

    db = MetaDB(path)
    with db.transaction() as tx:        # BEGIN IMMEDIATE ... COMMIT (ROLLBACK on exception)
        tx.create_image("default", ImageRecord("docker.io/library/busybox:latest", target))
    with db.view() as tx:               # a consistent read
        tx.list_images("default", ['labels."a"==b'])

Transactions nest (an inner ``transaction`` is a SAVEPOINT). Each thread (and each process
after a fork) uses its own SQLite connection; writers of all processes are serialised by
SQLite's lock, waiting up to ``busy_timeout`` seconds for it.

Filters are containerd's filter syntax (``parse_filters``): ``field==value``, ``field!=value``,
``field~=regexp``, a bare ``field`` for presence, ``,`` for AND, several filters OR'ed, field
names or values quoted with ``"``, ``'`` or backquotes (``labels."containerd.io/gc.root"``).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from skiff.images.content import (
    RESOURCE_CONTENT,
    RESOURCE_INGEST,
    Descriptor,
    Info,
    apply_label_update,
    from_ns,
    validate_digest,
    validate_labels,
)
from skiff.images.errors import (
    AlreadyExists,
    FailedPrecondition,
    ImageError,
    InvalidArgument,
    NotFound,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime

SCHEMA_VERSION = 1
RESOURCE_SNAPSHOT_PREFIX = "snapshots/"
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*\Z")
MAX_IDENTIFIER_LENGTH = 76


def validate_identifier(value: object, what: str) -> str:
    """containerd's identifier rule (namespaces, container ids). Lease ids are not identifiers:
    containerd accepts any non-empty id (its client's random ids may start or end with ``-``)."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} {value!r}: must be a non-empty string")
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise InvalidArgument(f"{what} {value!r}: longer than {MAX_IDENTIFIER_LENGTH} characters")
    if not _IDENTIFIER.match(value):
        raise InvalidArgument(f"{what} {value!r}: must match {_IDENTIFIER.pattern[:-2]}")
    return value


# --- records -------------------------------------------------------------------------------

@dataclass
class AnyValue:
    """A protobuf ``Any``: type URL and serialised value (JSON bytes for an OCI spec)."""

    type_url: str
    value: bytes


def _now_dt() -> datetime.datetime:
    return from_ns(time.time_ns())


@dataclass
class ImageRecord:
    name: str
    target: Descriptor
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None


@dataclass
class ContainerRecord:
    id: str
    runtime_name: str
    spec: AnyValue | None = None
    image: str = ""
    runtime_options: AnyValue | None = None
    snapshotter: str = ""
    snapshot_key: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, AnyValue] = field(default_factory=dict)
    sandbox_id: str = ""
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None


@dataclass
class LeaseRecord:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    created_at: datetime.datetime | None = None


@dataclass(frozen=True)
class Resource:
    """A lease's resource: ``content`` (digest), ``ingests`` (ref), ``snapshots/<name>`` (key)."""

    type: str
    id: str


# --- filters -------------------------------------------------------------------------------

Adaptor = Callable[[Sequence[str]], tuple[str, bool]]
T = TypeVar("T")


class _Selector:
    __slots__ = ("fieldpath", "op", "regex", "value")

    def __init__(self, fieldpath: list[str], op: str | None, value: str | None) -> None:
        self.fieldpath = fieldpath
        self.op = op
        self.value = value
        self.regex = None
        if op == "~=":
            try:
                self.regex = re.compile(value or "")
            except re.error as e:
                raise InvalidArgument(f"filter: {'.'.join(fieldpath)}~={value!r}: invalid regular "
                                      f"expression: {e}") from None

    def match(self, adaptor: Adaptor) -> bool:
        value, present = adaptor(self.fieldpath)
        if self.op is None:
            return present
        if self.op == "==":
            return present and value == self.value
        if self.op == "!=":
            return value != self.value
        assert self.regex is not None
        return self.regex.search(value) is not None


class Filter:
    """Any of several conjunctions of selectors; the empty filter matches everything."""

    def __init__(self, alternatives: list[list[_Selector]]) -> None:
        self.alternatives = alternatives

    def match(self, adaptor: Adaptor) -> bool:
        if not self.alternatives:
            return True
        return any(all(s.match(adaptor) for s in conj) for conj in self.alternatives)

    def select(self, items: Iterable[T], field_of: Callable[[T, Sequence[str]], tuple[str, bool]]) -> list[T]:
        """The items that match, ``field_of(item, fieldpath)`` being the adaptor."""
        return [item for item in items if self.match(functools.partial(field_of, item))]


_QUOTES = {'"', "'", "`"}
_FIELD_CHARS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, why: str) -> InvalidArgument:
        return InvalidArgument(f"filter {self.text!r}: at position {self.pos}: {why}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def quoted(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == quote:
                self.pos += 1
                return "".join(out)
            if c == "\\" and quote != "`":
                self.pos += 1
                if self.pos >= len(self.text):
                    break
                esc = self.text[self.pos]
                out.append({"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}.get(esc, "\\" + esc))
            else:
                out.append(c)
            self.pos += 1
        raise self.error(f"unterminated quoted string starting with {quote}")

    def field(self) -> str:
        if self.peek() in _QUOTES:
            return self.quoted()
        m = _FIELD_CHARS.match(self.text, self.pos)
        if not m:
            raise self.error("expected a field name")
        self.pos = m.end()
        return m.group()

    def value(self) -> str:
        if self.peek() in _QUOTES:
            return self.quoted()
        start = self.pos
        while self.pos < len(self.text) and not self.text[self.pos].isspace() and self.text[self.pos] != ",":
            self.pos += 1
        if self.pos == start:
            raise self.error("expected a value")
        return self.text[start:self.pos]


def _parse_one(text: str) -> list[_Selector]:
    sc = _Scanner(text)
    selectors = []
    while True:
        sc.skip_space()
        path = [sc.field()]
        while sc.peek() == ".":
            sc.pos += 1
            path.append(sc.field())
        sc.skip_space()
        op = None
        value = None
        if sc.peek(2) in ("==", "!=", "~="):
            op = sc.peek(2)
            sc.pos += 2
            sc.skip_space()
            value = sc.value()
            sc.skip_space()
        selectors.append(_Selector(path, op, value))
        if sc.pos >= len(text):
            return selectors
        if sc.peek() != ",":
            raise sc.error("expected ',', '==', '!=' or '~='")
        sc.pos += 1


def parse_filters(filters: Iterable[str]) -> Filter:
    """Parse containerd filter strings (OR'ed); an empty list, or empty strings, match all."""
    alternatives = []
    for text in filters:
        if not isinstance(text, str):
            raise InvalidArgument(f"filter {text!r}: not a string")
        if text.strip():
            alternatives.append(_parse_one(text))
    return Filter(alternatives)


def _labels_field(labels: Mapping[str, str], path: Sequence[str]) -> tuple[str, bool]:
    if len(path) < 2:
        return "", False
    key = ".".join(path[1:])
    return (labels[key], True) if key in labels else ("", False)


def image_field(image: ImageRecord, path: Sequence[str]) -> tuple[str, bool]:
    """Filter adaptor for images: name, target.digest, target.mediatype, labels.KEY."""
    p = list(path)
    if p == ["name"]:
        return image.name, True
    if p == ["target", "digest"]:
        return image.target.digest, True
    if p == ["target", "mediatype"]:
        return image.target.media_type, True
    if p and p[0] == "labels":
        return _labels_field(image.labels, p)
    return "", False


def container_field(c: ContainerRecord, path: Sequence[str]) -> tuple[str, bool]:
    """Filter adaptor for containers: id, image, runtime.name, snapshotter, snapshotkey, labels.KEY."""
    p = list(path)
    simple = {"id": c.id, "image": c.image, "snapshotter": c.snapshotter, "snapshotkey": c.snapshot_key,
              "sandbox": c.sandbox_id}
    if len(p) == 1 and p[0] in simple:
        v = simple[p[0]]
        return v, bool(v)
    if p == ["runtime", "name"]:
        return c.runtime_name, True
    if p and p[0] == "labels":
        return _labels_field(c.labels, p)
    return "", False


def lease_field(lease: LeaseRecord, path: Sequence[str]) -> tuple[str, bool]:
    """Filter adaptor for leases: id, labels.KEY."""
    p = list(path)
    if p == ["id"]:
        return lease.id, True
    if p and p[0] == "labels":
        return _labels_field(lease.labels, p)
    return "", False


# --- (de)serialisation helpers -------------------------------------------------------------

def _dumps(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _any_to_json(value: AnyValue | None) -> str | None:
    if value is None:
        return None
    return _dumps({"type_url": value.type_url, "value": base64.b64encode(value.value).decode("ascii")})


def _any_from_json(text: str | None) -> AnyValue | None:
    if text is None:
        return None
    obj = json.loads(text)
    return AnyValue(obj["type_url"], base64.b64decode(obj["value"]))


def _check_any(value: object, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, AnyValue) or not isinstance(value.type_url, str) or not isinstance(
            value.value, bytes | bytearray):
        raise InvalidArgument(f"{where}: expected an AnyValue(type_url: str, value: bytes)")


def validate_resource(rtype: object, rid: object, where: str) -> Resource:
    """Check a lease resource the way containerd does."""
    if not isinstance(rtype, str) or not isinstance(rid, str) or not rid:
        raise InvalidArgument(f"{where}: resource type and id must be non-empty strings")
    if rtype == RESOURCE_CONTENT:
        validate_digest(rid, f"{where}: content resource")
    elif rtype == RESOURCE_INGEST:
        pass
    elif rtype.startswith(RESOURCE_SNAPSHOT_PREFIX) and len(rtype) > len(RESOURCE_SNAPSHOT_PREFIX):
        pass
    else:
        raise InvalidArgument(f"{where}: unsupported resource type {rtype!r} (content, ingests, "
                              "snapshots/<snapshotter>)")
    return Resource(rtype, rid)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS namespaces (
    name TEXT PRIMARY KEY,
    labels TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS images (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    name TEXT NOT NULL,
    target TEXT NOT NULL,
    labels TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS containers (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    id TEXT NOT NULL,
    labels TEXT NOT NULL,
    image TEXT NOT NULL,
    runtime_name TEXT NOT NULL,
    runtime_options TEXT,
    spec TEXT,
    snapshotter TEXT NOT NULL,
    snapshot_key TEXT NOT NULL,
    extensions TEXT NOT NULL,
    sandbox_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    id TEXT NOT NULL,
    labels TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lease_resources (
    namespace TEXT NOT NULL,
    lease TEXT NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (namespace, lease, type, id),
    FOREIGN KEY (namespace, lease) REFERENCES leases(namespace, id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS content (
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    labels TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS content_by_digest ON content(digest);
"""


# --- the transaction object ----------------------------------------------------------------

class Tx:
    """Operations inside one transaction (from :meth:`MetaDB.transaction` or :meth:`MetaDB.view`)."""

    def __init__(self, conn: sqlite3.Connection, writable: bool) -> None:
        self._c = conn
        self.writable = writable

    def _w(self) -> None:
        if not self.writable:
            raise ImageError("metadata: write attempted inside a read-only view")

    def _q(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        return self._c.execute(sql, args).fetchall()

    def _x(self, sql: str, args: Sequence[object] = ()) -> int:
        self._w()
        return self._c.execute(sql, args).rowcount

    # -- namespaces

    def list_namespaces(self) -> list[str]:
        return [r[0] for r in self._q("SELECT name FROM namespaces ORDER BY name")]

    def namespace_exists(self, ns: str) -> bool:
        return bool(self._q("SELECT 1 FROM namespaces WHERE name=?", (ns,)))

    def ensure_namespace(self, ns: str) -> None:
        validate_identifier(ns, "namespace")
        self._x("INSERT OR IGNORE INTO namespaces(name, labels, created_at) VALUES (?, '{}', ?)",
                (ns, time.time_ns()))

    def create_namespace(self, ns: str, labels: Mapping[str, str] | None = None) -> None:
        validate_identifier(ns, "namespace")
        lbl = validate_labels(labels, f"namespace {ns}")
        if self.namespace_exists(ns):
            raise AlreadyExists(f"namespace {ns}: already exists")
        self._x("INSERT INTO namespaces(name, labels, created_at) VALUES (?, ?, ?)",
                (ns, _dumps(lbl), time.time_ns()))

    def namespace_labels(self, ns: str) -> dict[str, str]:
        rows = self._q("SELECT labels FROM namespaces WHERE name=?", (ns,))
        if not rows:
            raise NotFound(f"namespace {ns}: not found")
        return json.loads(rows[0][0])

    def update_namespace_labels(self, ns: str, labels: Mapping[str, str] | None,
                                fieldpaths: Sequence[str] = ()) -> dict[str, str]:
        new = apply_label_update(self.namespace_labels(ns), labels, tuple(fieldpaths), f"namespace {ns}")
        self._x("UPDATE namespaces SET labels=? WHERE name=?", (_dumps(new), ns))
        return new

    def delete_namespace(self, ns: str) -> None:
        """Delete an empty namespace (containerd refuses to delete one that still has objects)."""
        if not self.namespace_exists(ns):
            raise NotFound(f"namespace {ns}: not found")
        left = [what for what, table in (("images", "images"), ("blobs", "content"),
                                         ("containers", "containers"), ("leases", "leases"))
                if self._q(f"SELECT 1 FROM {table} WHERE namespace=? LIMIT 1", (ns,))]
        if left:
            raise FailedPrecondition(f"namespace {ns} must be empty, but it still has {', '.join(left)}")
        self._x("DELETE FROM namespaces WHERE name=?", (ns,))

    # -- images

    @staticmethod
    def _image(row: tuple) -> ImageRecord:
        name, target, labels, created, updated = row
        return ImageRecord(name, Descriptor.from_json(json.loads(target), f"image {name}: target"),
                           json.loads(labels), from_ns(created), from_ns(updated))

    _IMAGE_COLS = "name, target, labels, created_at, updated_at"

    def get_image(self, ns: str, name: str) -> ImageRecord:
        rows = self._q(f"SELECT {self._IMAGE_COLS} FROM images WHERE namespace=? AND name=?", (ns, name))
        if not rows:
            raise NotFound(f"image {name!r}: not found in namespace {ns}")
        return self._image(rows[0])

    def list_images(self, ns: str, filters: Sequence[str] = ()) -> list[ImageRecord]:
        flt = parse_filters(filters)
        rows = self._q(f"SELECT {self._IMAGE_COLS} FROM images WHERE namespace=? ORDER BY name", (ns,))
        return flt.select([self._image(r) for r in rows], image_field)

    @staticmethod
    def _check_image(image: ImageRecord) -> dict[str, str]:
        if not isinstance(image.name, str) or not image.name:
            raise InvalidArgument("image: name must not be empty")
        where = f"image {image.name!r}"
        if not isinstance(image.target, Descriptor):
            raise InvalidArgument(f"{where}: target must be a Descriptor")
        Descriptor.from_json(image.target.to_json(), f"{where}: target")  # validates every field
        return validate_labels(image.labels, where)

    def create_image(self, ns: str, image: ImageRecord) -> ImageRecord:
        labels = self._check_image(image)
        self.ensure_namespace(ns)
        if self._q("SELECT 1 FROM images WHERE namespace=? AND name=?", (ns, image.name)):
            raise AlreadyExists(f"image {image.name!r}: already exists in namespace {ns}")
        now = time.time_ns()
        self._x("INSERT INTO images(namespace, name, target, labels, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (ns, image.name, _dumps(image.target.to_json()),
                                              _dumps(labels), now, now))
        return self.get_image(ns, image.name)

    def update_image(self, ns: str, image: ImageRecord, fieldpaths: Sequence[str] = ()) -> ImageRecord:
        """containerd's image update: no fieldpaths replaces target and labels; otherwise
        ``target``, ``labels``, ``labels.KEY``, ``annotations`` (the target's), ``annotations.KEY``."""
        current = self.get_image(ns, image.name)
        where = f"image {image.name!r}"
        labels = current.labels
        target = current.target
        if not fieldpaths:
            self._check_image(image)
            labels, target = validate_labels(image.labels, where), image.target
        else:
            label_paths = [p for p in fieldpaths if p == "labels" or p.startswith("labels.")]
            if label_paths:
                labels = apply_label_update(labels, image.labels, label_paths, where)
            for p in fieldpaths:
                if p == "target":
                    self._check_image(ImageRecord(image.name, image.target))
                    target = image.target
                elif p == "annotations" or p.startswith("annotations."):
                    annotations = apply_label_update(target.annotations, image.target.annotations,
                                                     [p], f"{where}: annotations", prefix="annotations")
                    target = Descriptor.from_json({**target.to_json(), "annotations": annotations})
                elif p not in label_paths:
                    raise InvalidArgument(f"{where}: cannot update field {p!r}")
        self._x("UPDATE images SET target=?, labels=?, updated_at=? WHERE namespace=? AND name=?",
                (_dumps(target.to_json()), _dumps(labels), time.time_ns(), ns, image.name))
        return self.get_image(ns, image.name)

    def delete_image(self, ns: str, name: str) -> None:
        if not self._x("DELETE FROM images WHERE namespace=? AND name=?", (ns, name)):
            raise NotFound(f"image {name!r}: not found in namespace {ns}")

    def all_images(self) -> list[tuple[str, ImageRecord]]:
        rows = self._q(f"SELECT namespace, {self._IMAGE_COLS} FROM images ORDER BY namespace, name")
        return [(r[0], self._image(r[1:])) for r in rows]

    # -- containers

    _CONTAINER_COLS = ("id, labels, image, runtime_name, runtime_options, spec, snapshotter, snapshot_key, "
                       "extensions, sandbox_id, created_at, updated_at")

    @staticmethod
    def _container(row: tuple) -> ContainerRecord:
        (cid, labels, image, rname, ropts, spec, snapshotter, skey, ext, sandbox, created, updated) = row
        return ContainerRecord(
            id=cid, labels=json.loads(labels), image=image, runtime_name=rname,
            runtime_options=_any_from_json(ropts), spec=_any_from_json(spec), snapshotter=snapshotter,
            snapshot_key=skey,
            extensions={k: AnyValue(v["type_url"], base64.b64decode(v["value"]))
                        for k, v in json.loads(ext).items()},
            sandbox_id=sandbox, created_at=from_ns(created), updated_at=from_ns(updated))

    def get_container(self, ns: str, cid: str) -> ContainerRecord:
        rows = self._q(f"SELECT {self._CONTAINER_COLS} FROM containers WHERE namespace=? AND id=?", (ns, cid))
        if not rows:
            raise NotFound(f"container {cid!r}: not found in namespace {ns}")
        return self._container(rows[0])

    def list_containers(self, ns: str, filters: Sequence[str] = ()) -> list[ContainerRecord]:
        flt = parse_filters(filters)
        rows = self._q(f"SELECT {self._CONTAINER_COLS} FROM containers WHERE namespace=? ORDER BY id", (ns,))
        return flt.select([self._container(r) for r in rows], container_field)

    def all_containers(self) -> list[tuple[str, ContainerRecord]]:
        rows = self._q(f"SELECT namespace, {self._CONTAINER_COLS} FROM containers ORDER BY namespace, id")
        return [(r[0], self._container(r[1:])) for r in rows]

    @staticmethod
    def _check_container(c: ContainerRecord) -> None:
        validate_identifier(c.id, "container id")
        where = f"container {c.id}"
        if not isinstance(c.runtime_name, str) or not c.runtime_name:
            raise InvalidArgument(f"{where}: must specify a runtime name")
        if c.spec is None:
            raise InvalidArgument(f"{where}: must specify a spec")
        _check_any(c.spec, f"{where}: spec")
        _check_any(c.runtime_options, f"{where}: runtime options")
        if not isinstance(c.image, str) or not isinstance(c.snapshotter, str) or not isinstance(
                c.snapshot_key, str) or not isinstance(c.sandbox_id, str):
            raise InvalidArgument(f"{where}: image, snapshotter, snapshot key and sandbox must be strings")
        if c.snapshot_key and not c.snapshotter:
            raise InvalidArgument(f"{where}: a snapshot key needs a snapshotter")
        validate_labels(c.labels, where)
        if not isinstance(c.extensions, Mapping):
            raise InvalidArgument(f"{where}: extensions must be a mapping")
        for k, v in c.extensions.items():
            if not isinstance(k, str) or not k:
                raise InvalidArgument(f"{where}: extension with an empty name")
            if v is None:
                raise InvalidArgument(f"{where}: extension {k!r}: value must not be empty")
            _check_any(v, f"{where}: extension {k!r}")

    def _put_container(self, ns: str, c: ContainerRecord, created: int, updated: int, insert: bool) -> None:
        ext = _dumps({k: {"type_url": v.type_url, "value": base64.b64encode(v.value).decode("ascii")}
                      for k, v in c.extensions.items()})
        args = (_dumps(c.labels), c.image, c.runtime_name, _any_to_json(c.runtime_options),
                _any_to_json(c.spec), c.snapshotter, c.snapshot_key, ext, c.sandbox_id, created, updated)
        if insert:
            self._x("INSERT INTO containers(labels, image, runtime_name, runtime_options, spec, snapshotter, "
                    "snapshot_key, extensions, sandbox_id, created_at, updated_at, namespace, id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*args, ns, c.id))
        else:
            self._x("UPDATE containers SET labels=?, image=?, runtime_name=?, runtime_options=?, spec=?, "
                    "snapshotter=?, snapshot_key=?, extensions=?, sandbox_id=?, created_at=?, updated_at=? "
                    "WHERE namespace=? AND id=?", (*args, ns, c.id))

    def create_container(self, ns: str, c: ContainerRecord) -> ContainerRecord:
        self._check_container(c)
        self.ensure_namespace(ns)
        if self._q("SELECT 1 FROM containers WHERE namespace=? AND id=?", (ns, c.id)):
            raise AlreadyExists(f"container {c.id!r}: already exists in namespace {ns}")
        now = time.time_ns()
        self._put_container(ns, c, now, now, insert=True)
        return self.get_container(ns, c.id)

    def update_container(self, ns: str, c: ContainerRecord, fieldpaths: Sequence[str] = ()) -> ContainerRecord:
        """containerd's container update: runtime name and snapshotter are immutable; fieldpaths
        ``labels[.KEY]``, ``extensions[.NAME]``, ``spec``, ``image``, ``snapshotkey``, ``runtime``
        (its options); none means all of them."""
        cur = self.get_container(ns, c.id)
        where = f"container {c.id}"
        if c.runtime_name and c.runtime_name != cur.runtime_name:
            raise InvalidArgument(f"{where}: runtime name is immutable ({cur.runtime_name!r})")
        if c.snapshotter and c.snapshotter != cur.snapshotter:
            raise InvalidArgument(f"{where}: snapshotter is immutable ({cur.snapshotter!r})")
        new = ContainerRecord(**{f: getattr(cur, f) for f in cur.__dataclass_fields__})
        paths = list(fieldpaths) or ["labels", "extensions", "spec", "image", "snapshotkey", "runtime"]
        for p in paths:
            if p == "labels" or p.startswith("labels."):
                new.labels = apply_label_update(new.labels, c.labels, [p], where)
            elif p == "extensions":
                new.extensions = dict(c.extensions)
            elif p.startswith("extensions."):
                name = p[len("extensions."):]
                if name in c.extensions:
                    new.extensions[name] = c.extensions[name]
                else:
                    new.extensions.pop(name, None)
            elif p == "spec":
                new.spec = c.spec
            elif p == "image":
                new.image = c.image
            elif p == "snapshotkey":
                new.snapshot_key = c.snapshot_key
            elif p == "runtime":
                new.runtime_options = c.runtime_options
            else:
                raise InvalidArgument(f"{where}: cannot update field {p!r}")
        self._check_container(new)
        created = self._q("SELECT created_at FROM containers WHERE namespace=? AND id=?", (ns, c.id))[0][0]
        self._put_container(ns, new, created, time.time_ns(), insert=False)
        return self.get_container(ns, c.id)

    def delete_container(self, ns: str, cid: str) -> None:
        if not self._x("DELETE FROM containers WHERE namespace=? AND id=?", (ns, cid)):
            raise NotFound(f"container {cid!r}: not found in namespace {ns}")

    # -- leases

    def get_lease(self, ns: str, lid: str) -> LeaseRecord:
        rows = self._q("SELECT id, labels, created_at FROM leases WHERE namespace=? AND id=?", (ns, lid))
        if not rows:
            raise NotFound(f"lease {lid!r}: not found in namespace {ns}")
        return LeaseRecord(rows[0][0], json.loads(rows[0][1]), from_ns(rows[0][2]))

    def list_leases(self, ns: str, filters: Sequence[str] = ()) -> list[LeaseRecord]:
        flt = parse_filters(filters)
        rows = self._q("SELECT id, labels, created_at FROM leases WHERE namespace=? ORDER BY id", (ns,))
        return flt.select([LeaseRecord(r[0], json.loads(r[1]), from_ns(r[2])) for r in rows], lease_field)

    def create_lease(self, ns: str, lid: str, labels: Mapping[str, str] | None = None) -> LeaseRecord:
        if not isinstance(lid, str) or not lid:
            raise InvalidArgument(f"lease id {lid!r}: must be a non-empty string")
        lbl = validate_labels(labels, f"lease {lid}")
        self.ensure_namespace(ns)
        if self._q("SELECT 1 FROM leases WHERE namespace=? AND id=?", (ns, lid)):
            raise AlreadyExists(f"lease {lid!r}: already exists in namespace {ns}")
        self._x("INSERT INTO leases(namespace, id, labels, created_at) VALUES (?, ?, ?, ?)",
                (ns, lid, _dumps(lbl), time.time_ns()))
        return self.get_lease(ns, lid)

    def delete_lease(self, ns: str, lid: str) -> None:
        """Delete a lease and its resource list (what it held is left to the garbage collector)."""
        if not self._x("DELETE FROM leases WHERE namespace=? AND id=?", (ns, lid)):
            raise NotFound(f"lease {lid!r}: not found in namespace {ns}")

    def add_lease_resource(self, ns: str, lid: str, rtype: str, rid: str) -> None:
        validate_resource(rtype, rid, f"lease {lid}")
        if not self._q("SELECT 1 FROM leases WHERE namespace=? AND id=?", (ns, lid)):
            raise NotFound(f"lease {lid!r}: not found in namespace {ns}")
        self._x("INSERT OR IGNORE INTO lease_resources(namespace, lease, type, id) VALUES (?, ?, ?, ?)",
                (ns, lid, rtype, rid))

    def delete_lease_resource(self, ns: str, lid: str, rtype: str, rid: str) -> None:
        if not self._q("SELECT 1 FROM leases WHERE namespace=? AND id=?", (ns, lid)):
            raise NotFound(f"lease {lid!r}: not found in namespace {ns}")
        self._x("DELETE FROM lease_resources WHERE namespace=? AND lease=? AND type=? AND id=?",
                (ns, lid, rtype, rid))

    def list_lease_resources(self, ns: str, lid: str) -> list[Resource]:
        if not self._q("SELECT 1 FROM leases WHERE namespace=? AND id=?", (ns, lid)):
            raise NotFound(f"lease {lid!r}: not found in namespace {ns}")
        rows = self._q("SELECT type, id FROM lease_resources WHERE namespace=? AND lease=? ORDER BY type, id",
                       (ns, lid))
        return [Resource(t, i) for t, i in rows]

    def all_leases(self) -> list[tuple[str, LeaseRecord, list[Resource]]]:
        leases = self._q("SELECT namespace, id, labels, created_at FROM leases ORDER BY namespace, id")
        res: dict[tuple[str, str], list[Resource]] = {}
        for ns, lid, t, i in self._q("SELECT namespace, lease, type, id FROM lease_resources"):
            res.setdefault((ns, lid), []).append(Resource(t, i))
        return [(ns, LeaseRecord(lid, json.loads(lbl), from_ns(created)), res.get((ns, lid), []))
                for ns, lid, lbl, created in leases]

    # -- content records

    @staticmethod
    def _info(row: tuple) -> Info:
        digest, size, labels, created, updated = row
        return Info(digest, size, from_ns(created), from_ns(updated), json.loads(labels))

    _CONTENT_COLS = "digest, size, labels, created_at, updated_at"

    def get_content(self, ns: str, digest: str) -> Info | None:
        rows = self._q(f"SELECT {self._CONTENT_COLS} FROM content WHERE namespace=? AND digest=?", (ns, digest))
        return self._info(rows[0]) if rows else None

    def put_content(self, ns: str, digest: str, size: int, labels: Mapping[str, str] | None) -> None:
        """Record a blob in a namespace (insert, or update size and, unless None, labels)."""
        validate_digest(digest)
        lbl = validate_labels(labels, f"content {digest}")
        self.ensure_namespace(ns)
        now = time.time_ns()
        if self.get_content(ns, digest) is None:
            self._x("INSERT INTO content(namespace, digest, size, labels, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (ns, digest, size, _dumps(lbl), now, now))
        elif labels is None:
            self._x("UPDATE content SET size=?, updated_at=? WHERE namespace=? AND digest=?",
                    (size, now, ns, digest))
        else:
            self._x("UPDATE content SET size=?, labels=?, updated_at=? WHERE namespace=? AND digest=?",
                    (size, _dumps(lbl), now, ns, digest))

    def update_content_labels(self, ns: str, digest: str, labels: Mapping[str, str] | None,
                              fieldpaths: Sequence[str] = ()) -> Info:
        cur = self.get_content(ns, digest)
        if cur is None:
            raise NotFound(f"content {digest}: not found in namespace {ns}")
        new = apply_label_update(cur.labels, labels, tuple(fieldpaths), f"content {digest}")
        self._x("UPDATE content SET labels=?, updated_at=? WHERE namespace=? AND digest=?",
                (_dumps(new), time.time_ns(), ns, digest))
        info = self.get_content(ns, digest)
        assert info is not None
        return info

    def delete_content(self, ns: str, digest: str) -> bool:
        return self._x("DELETE FROM content WHERE namespace=? AND digest=?", (ns, digest)) > 0

    def list_content(self, ns: str) -> list[Info]:
        rows = self._q(f"SELECT {self._CONTENT_COLS} FROM content WHERE namespace=? ORDER BY digest", (ns,))
        return [self._info(r) for r in rows]

    def content_namespaces(self, digest: str) -> list[str]:
        return [r[0] for r in self._q("SELECT namespace FROM content WHERE digest=? ORDER BY namespace",
                                      (digest,))]

    def all_content(self) -> list[tuple[str, Info]]:
        rows = self._q(f"SELECT namespace, {self._CONTENT_COLS} FROM content ORDER BY namespace, digest")
        return [(r[0], self._info(r[1:])) for r in rows]

    def referenced_digests(self) -> set[str]:
        return {r[0] for r in self._q("SELECT DISTINCT digest FROM content")}


# --- the database --------------------------------------------------------------------------

class _ThreadMark:
    """Lives as long as a thread's connection slot (see ``MetaDB._conn``)."""

    __slots__ = ("__weakref__",)


class MetaDB:
    """The metadata database at ``path`` (created with its directory if missing)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 60.0) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._conns: list[tuple[int, sqlite3.Connection]] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        new = not os.path.exists(self.path)
        conn = self._conn()
        if new:
            # The database and its WAL are new directory entries: make them durable too.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as e:
            raise ImageError(f"metadata database {self.path}: cannot open: {e}") from e
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise ImageError(f"metadata database {self.path}: cannot switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            elif version != SCHEMA_VERSION:
                raise ImageError(f"metadata database {self.path}: schema version {version}, this skiff "
                                 f"knows {SCHEMA_VERSION}")
        except sqlite3.Error as e:
            conn.close()
            raise ImageError(f"metadata database {self.path}: {e}") from e
        except BaseException:
            conn.close()
            raise
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise ImageError(f"metadata database {self.path}: closed")
        local = self._local
        pid = os.getpid()
        if getattr(local, "pid", None) != pid:
            # First use in this thread, or a child after fork (never reuse the parent's connection).
            local.conn = self._open()
            local.pid = pid
            local.depth = 0
            local.writable = False
            with self._conns_lock:
                self._conns.append((pid, local.conn))
            # closed when the thread ends (its threading.local goes): a pool whose idle threads
            # end must not accumulate connections
            local.owner = owner = _ThreadMark()
            weakref.finalize(owner, self._forget, pid, local.conn)
        return local.conn

    def _forget(self, pid: int, conn: sqlite3.Connection) -> None:
        with self._conns_lock:
            try:
                self._conns.remove((pid, conn))
            except ValueError:
                return  # closed by close() already
        if pid == os.getpid():
            conn.close()

    @contextmanager
    def _tx(self, write: bool) -> Iterator[Tx]:
        conn = self._conn()
        local = self._local
        depth = local.depth
        if depth == 0:
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
            except sqlite3.Error as e:
                raise ImageError(f"metadata database {self.path}: cannot begin a transaction: {e}") from e
            local.writable = write
        else:
            if write and not local.writable:
                raise ImageError(f"metadata database {self.path}: a write transaction cannot be nested "
                                 "in a read-only view")
            conn.execute(f"SAVEPOINT sp{depth}")
        local.depth = depth + 1
        try:
            yield Tx(conn, write if depth == 0 else (write and local.writable))
        except BaseException as e:
            local.depth = depth
            try:
                if depth == 0:
                    conn.execute("ROLLBACK")
                else:
                    conn.execute(f"ROLLBACK TO sp{depth}")
                    conn.execute(f"RELEASE sp{depth}")
            except sqlite3.Error as rollback_error:
                import sys
                print(f"skiff: metadata database {self.path}: rollback failed: {rollback_error}",
                      file=sys.stderr)
            if isinstance(e, sqlite3.Error):
                raise ImageError(f"metadata database {self.path}: {e}") from e
            raise
        local.depth = depth
        try:
            conn.execute("COMMIT" if depth == 0 else f"RELEASE sp{depth}")
        except sqlite3.Error as e:
            if depth == 0 and conn.in_transaction:
                conn.execute("ROLLBACK")
            raise ImageError(f"metadata database {self.path}: commit failed: {e}") from e

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A write transaction: committed (durably) at the end of the block, rolled back on error."""
        with self._tx(True) as tx:
            yield tx

    @contextmanager
    def view(self) -> Iterator[Tx]:
        """A read-only transaction: a consistent snapshot of the database."""
        with self._tx(False) as tx:
            yield tx

    def integrity_check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check`` (``["ok"]`` when sound) plus foreign keys."""
        conn = self._conn()
        out = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        out.extend(f"foreign key violation: {row}" for row in fk)
        return out

    def close(self) -> None:
        """Close the connections this process opened (in every thread)."""
        self._closed = True
        pid = os.getpid()
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for owner, conn in conns:
            if owner == pid:
                conn.close()

    def __enter__(self) -> MetaDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

