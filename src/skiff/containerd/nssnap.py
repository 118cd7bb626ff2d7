"""A namespace's view of a snapshotter, as containerd's metadata snapshotter gives one.

The image library's snapshotters have one flat set of keys. containerd keeps snapshots per
namespace: a key in one namespace is unrelated to the same key in another, and ``walk`` shows
a namespace only its own. Here each namespace's key ``K`` is the backend key ``<ns>/K``
(namespaces are identifiers, so they hold no ``/`` and the mapping is one to one); parents are
mapped the same way, so chains never cross namespaces.

A request's lease (``containerd-lease``) holds the snapshots it creates: the key is added to
the lease *before* the snapshot is made (a garbage collection in between cannot take it), the
committed name likewise before the commit, and a removed key is dropped from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from skiff.images.errors import ImageError, InvalidArgument
from skiff.images.metadata import RESOURCE_SNAPSHOT_PREFIX, MetaDB
from skiff.images.snapshots import Info, Mount, Snapshotter, Usage, compile_filters


def backend_key(namespace: str, key: str) -> str:
    return f"{namespace}/{key}"


def gc_key_map(namespace: str, _snapshotter: str, key: str) -> str:
    """For :func:`skiff.images.gc.collect`: a namespace's snapshot key -> the backend's."""
    return backend_key(namespace, key)


class NamespacedSnapshotter:
    """``Snapshotter`` for one namespace (and optionally one lease) over a backend."""

    def __init__(self, backend: Snapshotter, name: str, namespace: str, meta: MetaDB,
                 lease: str | None = None) -> None:
        self.backend = backend
        self.name = name
        self.namespace = namespace
        self.meta = meta
        self.lease = lease
        self._prefix = namespace + "/"

    # -- mapping

    def _bk(self, key: str, what: str) -> str:
        if not key:
            raise InvalidArgument(f"{what}: snapshot key must not be empty")
        return self._prefix + key

    def _strip(self, key: str) -> str:
        return key[len(self._prefix):] if key.startswith(self._prefix) else key

    def _info(self, info: Info) -> Info:
        return Info(name=self._strip(info.name), parent=self._strip(info.parent), kind=info.kind,
                    labels=dict(info.labels), created=info.created, updated=info.updated)

    def _translate(self, e: ImageError) -> ImageError:
        """The backend's error with its keys as this namespace names them."""
        msg = str(e).replace(self._prefix, "")
        new = type(e)(f"{msg} (snapshotter {self.name}, namespace {self.namespace})")
        new.__cause__ = e
        return new

    def _lease_add(self, key: str, create_namespace: bool = False) -> None:
        """Add ``key`` to the request's lease; with ``create_namespace``, record the namespace
        too (containerd creates a namespace with its first object, snapshots included)."""
        if self.lease is None and not create_namespace:
            return
        with self.meta.transaction() as tx:
            if create_namespace:
                tx.ensure_namespace(self.namespace)
            if self.lease is not None:
                tx.add_lease_resource(self.namespace, self.lease, RESOURCE_SNAPSHOT_PREFIX + self.name, key)

    def _lease_drop(self, key: str) -> None:
        if self.lease is not None:
            with self.meta.transaction() as tx:
                tx.delete_lease_resource(self.namespace, self.lease, RESOURCE_SNAPSHOT_PREFIX + self.name, key)

    # -- the Snapshotter interface

    def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        bk = self._bk(key, "prepare")
        bp = self._bk(parent, "prepare") if parent else ""
        self._lease_add(key, create_namespace=True)
        try:
            return self.backend.prepare(bk, bp, labels)
        except ImageError as e:
            raise self._translate(e) from e

    def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        bk = self._bk(key, "view")
        bp = self._bk(parent, "view") if parent else ""
        self._lease_add(key, create_namespace=True)
        try:
            return self.backend.view(bk, bp, labels)
        except ImageError as e:
            raise self._translate(e) from e

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        bn = self._bk(name, "commit")
        bk = self._bk(key, "commit")
        self._lease_add(name)
        try:
            self.backend.commit(bn, bk, labels)
        except ImageError as e:
            raise self._translate(e) from e
        self._lease_drop(key)

    def remove(self, key: str) -> None:
        bk = self._bk(key, "remove")
        try:
            self.backend.remove(bk)
        except ImageError as e:
            raise self._translate(e) from e
        self._lease_drop(key)

    def mounts(self, key: str) -> list[Mount]:
        try:
            return self.backend.mounts(self._bk(key, "mounts"))
        except ImageError as e:
            raise self._translate(e) from e

    def stat(self, key: str) -> Info:
        try:
            return self._info(self.backend.stat(self._bk(key, "stat")))
        except ImageError as e:
            raise self._translate(e) from e

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info:
        bk = self._bk(info.name, "update")
        binfo = Info(name=bk, parent="", kind=info.kind, labels=dict(info.labels),
                     created=info.created, updated=info.updated)
        try:
            return self._info(self.backend.update(binfo, fieldpaths))
        except ImageError as e:
            raise self._translate(e) from e

    def usage(self, key: str) -> Usage:
        try:
            return self.backend.usage(self._bk(key, "usage"))
        except ImageError as e:
            raise self._translate(e) from e

    def walk(self, fn: Callable[[Info], object], filters: Sequence[str] = ()) -> None:
        pred = compile_filters(filters)
        mine: list[Info] = []

        def collect(info: Info) -> None:
            if info.name.startswith(self._prefix):
                mine.append(self._info(info))
        self.backend.walk(collect)
        mine.sort(key=lambda i: i.name.encode())  # containerd walks a namespace's keys in byte order
        for info in mine:
            if pred(info):
                fn(info)

    def infos(self, filters: Sequence[str] = ()) -> list[Info]:
        out: list[Info] = []
        self.walk(out.append, filters)
        return out

    def has_any(self) -> bool:
        found: list[Info] = []
        self.walk(found.append)
        return bool(found)

    def close(self) -> None:
        """The backend belongs to the daemon; a view closes nothing."""
