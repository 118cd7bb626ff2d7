"""Leases: containerd's way of keeping content, ingests and snapshots alive while in use.

A lease is a namespaced record (id, labels) holding a list of resources: ``content``
(a digest), ``ingests`` (an ingest ref) and ``snapshots/<snapshotter>`` (a snapshot key). The
garbage collector (:mod:`skiff.images.gc`) treats every resource of a live lease as a root.
Labels with a meaning to the collector:

- ``containerd.io/gc.expire``: an RFC 3339 time after which the lease no longer counts and is
  deleted by the next collection (``create(expire=...)`` sets it);
- ``containerd.io/gc.flat``: the lease holds its resources only, not what they reference.

Create a lease *before* the resources it is meant to protect: add a snapshot key to the lease,
then ``prepare`` it; open writers through ``store.using(lease=...)`` (which adds ingests and
committed content to the lease itself). A collection between creating a resource and leasing
it could otherwise remove it.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import re
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from skiff.images.content import DEFAULT_NAMESPACE, rfc3339, validate_namespace
from skiff.images.metadata import LeaseRecord, MetaDB, Resource

LABEL_GC_EXPIRE = "containerd.io/gc.expire"
LABEL_GC_FLAT = "containerd.io/gc.flat"

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")


def parse_rfc3339(text: str) -> _dt.datetime | None:
    """An RFC 3339 timestamp as an aware datetime, or None if it is not one."""
    m = _RFC3339.match(text.strip())
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, zone = m.group(7), m.group(8)
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    if zone in ("Z", "z"):
        tz = _dt.UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = _dt.timezone(sign * _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        return _dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError:
        return None


def lease_expired(lease: LeaseRecord, now: _dt.datetime) -> bool:
    """Whether the lease's ``containerd.io/gc.expire`` label is in the past (an unparsable value
    is ignored, as containerd does: the lease stays)."""
    value = lease.labels.get(LABEL_GC_EXPIRE)
    if value is None:
        return False
    when = parse_rfc3339(value)
    return when is not None and when < now


def new_lease_id() -> str:
    """A unique lease id (time and randomness; a valid containerd identifier)."""
    return f"{time.time_ns()}-{secrets.token_hex(8)}"


class LeaseManager:
    """containerd's lease manager for one namespace (the gRPC Leases service maps onto it)."""

    def __init__(self, meta: MetaDB, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.meta = meta
        self.namespace = validate_namespace(namespace)

    def create(self, lease_id: str | None = None, labels: Mapping[str, str] | None = None, *,
               expire: _dt.timedelta | None = None, flat: bool = False) -> LeaseRecord:
        lbl = dict(labels or {})
        if expire is not None:
            lbl[LABEL_GC_EXPIRE] = rfc3339(time.time_ns() + int(expire.total_seconds() * 1e9))
        if flat:
            lbl[LABEL_GC_FLAT] = "true"
        with self.meta.transaction() as tx:
            return tx.create_lease(self.namespace, lease_id or new_lease_id(), lbl)

    def delete(self, lease_id: str) -> None:
        """Delete the lease; what it held is collected by the next GC unless referenced otherwise."""
        with self.meta.transaction() as tx:
            tx.delete_lease(self.namespace, lease_id)

    def get(self, lease_id: str) -> LeaseRecord:
        with self.meta.view() as tx:
            return tx.get_lease(self.namespace, lease_id)

    def list(self, filters: Sequence[str] = ()) -> list[LeaseRecord]:
        with self.meta.view() as tx:
            return tx.list_leases(self.namespace, filters)

    def add_resource(self, lease_id: str, resource: Resource) -> None:
        with self.meta.transaction() as tx:
            tx.add_lease_resource(self.namespace, lease_id, resource.type, resource.id)

    def delete_resource(self, lease_id: str, resource: Resource) -> None:
        with self.meta.transaction() as tx:
            tx.delete_lease_resource(self.namespace, lease_id, resource.type, resource.id)

    def list_resources(self, lease_id: str) -> builtins.list[Resource]:
        with self.meta.view() as tx:
            return tx.list_lease_resources(self.namespace, lease_id)

    @contextmanager
    def temporary(self, *, expire: _dt.timedelta | None = _dt.timedelta(hours=24),
                  labels: Mapping[str, str] | None = None) -> Iterator[LeaseRecord]:
        """A lease for the duration of a block (a pull, an unpack), deleted at its end. The
        expiry covers a process that dies inside the block."""
        lease = self.create(labels=labels, expire=expire)
        try:
            yield lease
        finally:
            self.delete(lease.id)


__all__ = [
    "LABEL_GC_EXPIRE",
    "LABEL_GC_FLAT",
    "LeaseManager",
    "lease_expired",
    "new_lease_id",
    "parse_rfc3339",
]
