"""Protobuf messages <-> the image library's records (the services' only translation code)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from google.protobuf.any_pb2 import Any as AnyPB
from google.protobuf.timestamp_pb2 import Timestamp

from skiff.images.content import Descriptor, Info, Status
from skiff.images.errors import InvalidArgument
from skiff.images.metadata import AnyValue, ContainerRecord, ImageRecord, LeaseRecord
from skiff.images.snapshots import Info as SnapshotInfo
from skiff.images.snapshots import Kind, Mount


def ts(t: _dt.datetime | None) -> Timestamp:
    out = Timestamp()
    if t is not None:
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.UTC)
        out.FromDatetime(t)
    return out


def ts_ns(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def ns_from_ts(t: Timestamp) -> int:
    return t.seconds * 1_000_000_000 + t.nanos


def from_ts(t: Timestamp) -> _dt.datetime:
    return t.ToDatetime(tzinfo=_dt.UTC)


def descriptor_to_pb(api: Any, d: Descriptor) -> Any:
    return api.descriptor.Descriptor(media_type=d.media_type, digest=d.digest, size=d.size,
                                     annotations=dict(d.annotations))


def descriptor_from_pb(pb: Any, where: str) -> Descriptor:
    """A descriptor from its message (validated like a JSON one, errors under ``where``)."""
    obj: dict[str, Any] = {"mediaType": pb.media_type, "digest": pb.digest, "size": pb.size}
    if pb.annotations:
        obj["annotations"] = dict(pb.annotations)
    return Descriptor.from_json(obj, where)


def mounts_to_pb(api: Any, mounts: list[Mount]) -> list[Any]:
    return [api.mount.Mount(type=m.type, source=m.source, target=m.target, options=list(m.options))
            for m in mounts]


def mounts_from_pb(pbs: Any) -> list[Mount]:
    return [Mount(type=m.type, source=m.source, options=list(m.options), target=m.target) for m in pbs]


def any_to_pb(v: AnyValue | None) -> AnyPB | None:
    if v is None:
        return None
    return AnyPB(type_url=v.type_url, value=v.value)


def any_from_pb(pb: Any, present: bool) -> AnyValue | None:
    if not present:
        return None
    return AnyValue(pb.type_url, bytes(pb.value))


# -- content

def content_info_to_pb(api: Any, info: Info) -> Any:
    return api.content.Info(digest=info.digest, size=info.size, created_at=ts(info.created_at),
                            updated_at=ts(info.updated_at), labels=dict(info.labels))


def status_to_pb(api: Any, st: Status) -> Any:
    return api.content.Status(started_at=ts(st.started_at), updated_at=ts(st.updated_at), ref=st.ref,
                              offset=st.offset, total=st.total, expected=st.expected)


# -- images

def image_to_pb(api: Any, image: ImageRecord) -> Any:
    return api.images.Image(name=image.name, labels=dict(image.labels),
                            target=descriptor_to_pb(api, image.target),
                            created_at=ts(image.created_at), updated_at=ts(image.updated_at))


def image_from_pb(pb: Any, fieldpaths: list[str] | None = None) -> ImageRecord:
    """An image record; the target is checked only when it is to be written (no fieldpaths,
    or ``target`` among them), as containerd's update does."""
    needs_target = not fieldpaths or "target" in fieldpaths or any(
        p == "annotations" or p.startswith("annotations.") for p in fieldpaths)
    if needs_target:
        target = descriptor_from_pb(pb.target, f"image {pb.name!r}: target")
    else:
        target = Descriptor(pb.target.media_type, pb.target.digest, pb.target.size,
                            dict(pb.target.annotations))
    return ImageRecord(name=pb.name, target=target, labels=dict(pb.labels))


# -- containers

def container_to_pb(api: Any, c: ContainerRecord) -> Any:
    runtime = api.containers.Container.Runtime(name=c.runtime_name)
    if c.runtime_options is not None:
        runtime.options.CopyFrom(any_to_pb(c.runtime_options))
    pb = api.containers.Container(id=c.id, labels=dict(c.labels), image=c.image, runtime=runtime,
                                  snapshotter=c.snapshotter, snapshot_key=c.snapshot_key,
                                  created_at=ts(c.created_at), updated_at=ts(c.updated_at))
    if c.spec is not None:
        pb.spec.CopyFrom(any_to_pb(c.spec))
    for k, v in c.extensions.items():
        pb.extensions[k].CopyFrom(any_to_pb(v))
    return pb


def container_from_pb(pb: Any) -> ContainerRecord:
    runtime_options = None
    if pb.HasField("runtime") and pb.runtime.HasField("options"):
        runtime_options = any_from_pb(pb.runtime.options, True)
    return ContainerRecord(
        id=pb.id, runtime_name=pb.runtime.name if pb.HasField("runtime") else "",
        spec=any_from_pb(pb.spec, pb.HasField("spec")), image=pb.image, runtime_options=runtime_options,
        snapshotter=pb.snapshotter, snapshot_key=pb.snapshot_key, labels=dict(pb.labels),
        extensions={k: AnyValue(v.type_url, bytes(v.value)) for k, v in pb.extensions.items()})


# -- leases

def lease_to_pb(api: Any, lease: LeaseRecord) -> Any:
    return api.leases.Lease(id=lease.id, created_at=ts(lease.created_at), labels=dict(lease.labels))


# -- snapshots

def snapshot_info_to_pb(api: Any, info: SnapshotInfo) -> Any:
    return api.snapshots.Info(name=info.name, parent=info.parent, kind=int(info.kind),
                              created_at=ts(info.created), updated_at=ts(info.updated),
                              labels=dict(info.labels))


def snapshot_info_from_pb(pb: Any) -> SnapshotInfo:
    try:
        kind = Kind(pb.kind)
    except ValueError:
        raise InvalidArgument(f"snapshot {pb.name}: unknown kind {pb.kind}") from None
    return SnapshotInfo(name=pb.name, parent=pb.parent, kind=kind, labels=dict(pb.labels),
                        created=from_ts(pb.created_at), updated=from_ts(pb.updated_at))
