"""An asyncio client of containerd 1.6's gRPC API (grpc.aio), for skiffd.

One channel to the containerd socket, one stub per service, made once. Every call carries the
``containerd-namespace`` header (skiffd's namespace, ``skiff``), and ``containerd-lease`` when
the caller works under a lease. gRPC errors become skiffd's API errors with containerd's message
(``map_error``): NOT_FOUND -> NotFound, ALREADY_EXISTS and FAILED_PRECONDITION -> Conflict,
INVALID_ARGUMENT and OUT_OF_RANGE -> InvalidParameter, UNAVAILABLE -> Unavailable, UNIMPLEMENTED
-> NotImplementedYet, anything else -> ApiError (500).

Events come out of ``subscribe`` as ``Envelope(timestamp_ns, namespace, topic, event)`` where
``event`` is the event message as a dict of its fields (proto field names; timestamps as
nanoseconds since the epoch; every field present, defaults included), e.g. ``/tasks/exit``:
``{"container_id", "id", "pid", "exit_status", "exited_at"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import grpc
import grpc.aio
from google.protobuf.any_pb2 import Any as AnyPB
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from skiff.daemon.api.errors import (
    ApiError,
    Conflict,
    InvalidParameter,
    NotFound,
    NotImplementedYet,
    Unavailable,
)

log = logging.getLogger("skiff.daemon.containerd")

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options"
# the runtime name containerd gives runc-compatible binaries named by path (binary_name)
RUNC_SHIM = "io.containerd.runc.v2"
MAX_MESSAGE = 16 << 20
WRITE_CHUNK = 1 << 20

_ERRORS: dict[grpc.StatusCode, type[ApiError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidParameter,
    grpc.StatusCode.OUT_OF_RANGE: InvalidParameter,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNIMPLEMENTED: NotImplementedYet,
}


def map_error(e: grpc.RpcError, address: str = "") -> ApiError:
    """The API error for a gRPC error, keeping containerd's message."""
    code = e.code() if callable(getattr(e, "code", None)) else grpc.StatusCode.UNKNOWN
    details = e.details() if callable(getattr(e, "details", None)) else str(e)
    message = details or (code.name.lower() if code is not None else "unknown error")
    cls = _ERRORS.get(code, ApiError)
    if cls is Unavailable and address:
        message = f"containerd at {address}: {message}"
    err = cls(message)
    err.grpc_code = code   # type: ignore[attr-defined]
    return err


@dataclass
class Mount:
    type: str
    source: str
    options: list[str] = field(default_factory=list)
    target: str = ""


@dataclass
class TaskInfo:
    id: str
    pid: int
    status: str             # "created", "running", "stopped", "paused", "pausing", "unknown"
    exit_status: int = 0
    exited_at_ns: int = 0


@dataclass
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageRecord:
    name: str
    target: Descriptor
    labels: dict[str, str] = field(default_factory=dict)
    created_ns: int = 0
    updated_ns: int = 0


@dataclass
class Envelope:
    timestamp_ns: int
    namespace: str
    topic: str
    event: dict[str, Any]


def ts_to_ns(ts: Timestamp) -> int:
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


def message_to_dict(msg: Message) -> dict[str, Any]:
    """Every field of ``msg`` by its proto name: nested messages as dicts, Timestamps as
    nanoseconds, Any as ``{"type_url", "value"}``, maps as dicts, repeated fields as lists."""
    out: dict[str, Any] = {}
    for fd in msg.DESCRIPTOR.fields:
        value = getattr(msg, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            vfd = fd.message_type.fields_by_name["value"]
            out[fd.name] = {k: (_value(vfd, v)) for k, v in value.items()}
        elif fd.is_repeated:
            out[fd.name] = [_value(fd, v) for v in value]
        else:
            out[fd.name] = _value(fd, value)
    return out


def _value(fd: Any, value: Any) -> Any:
    if fd.message_type is None:
        return value
    name = fd.message_type.full_name
    if name == "google.protobuf.Timestamp":
        return ts_to_ns(value)
    if name == "google.protobuf.Any":
        return {"type_url": value.type_url, "value": value.value}
    return message_to_dict(value)


_STATUS_NAMES = {0: "unknown", 1: "created", 2: "running", 3: "stopped", 4: "paused", 5: "pausing"}


class Containerd:
    """The client; make it with ``await Containerd.connect(address)``."""

    NAMESPACE = "skiff"

    def __init__(self, address: str, namespace: str = NAMESPACE) -> None:
        from skiff.containerd.protos import load
        self.address = address
        self.namespace = namespace
        self.api = api = load()
        target = address if address.startswith("unix:") else "unix:" + address
        self.channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ])
        self._md = ((NAMESPACE_HEADER, namespace),)
        self.version_stub = api.version_grpc.VersionStub(self.channel)
        self.containers = api.containers_grpc.ContainersStub(self.channel)
        self.tasks = api.tasks_grpc.TasksStub(self.channel)
        self.snapshots = api.snapshots_grpc.SnapshotsStub(self.channel)
        self.images = api.images_grpc.ImagesStub(self.channel)
        self.content = api.content_grpc.ContentStub(self.channel)
        self.diff = api.diff_grpc.DiffStub(self.channel)
        self.leases = api.leases_grpc.LeasesStub(self.channel)
        self.events = api.events_grpc.EventsStub(self.channel)
        self._event_types: dict[str, Any] | None = None
        self._metric_types_added = False
        # the image list, kept while nothing changed it: skiffd's own changes (create, update,
        # delete below) and the image events the event monitor hears (``images_changed``) end
        # it; kept only while that monitor is subscribed (``image_events_live``), so that a
        # change made by another client (ctr) is always seen
        self._images_gen = 0
        self._images_cache: tuple[int, list[ImageRecord]] | None = None
        self.image_events_live = False
        self._background: set[asyncio.Task[None]] = set()  # lease deletions under way

    @classmethod
    async def connect(cls, address: str, namespace: str = NAMESPACE) -> Containerd:
        """A client whose first call (Version) succeeded: Unavailable when nothing answers."""
        self = cls(address, namespace)
        try:
            await self.version()
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)
        await self.channel.close()

    def _meta(self, lease: str = "") -> tuple[tuple[str, str], ...]:
        return self._md + ((LEASE_HEADER, lease),) if lease else self._md

    async def _call(self, method: Any, request: Any, lease: str = "", timeout: float | None = None) -> Any:
        try:
            return await method(request, metadata=self._meta(lease), timeout=timeout)
        except grpc.RpcError as e:
            raise map_error(e, self.address) from None

    async def version(self) -> str:
        from google.protobuf.empty_pb2 import Empty
        resp = await self._call(self.version_stub.Version, Empty(), timeout=10)
        return str(resp.version)

    # --- containers ---------------------------------------------------------------------------

    async def create_container(self, id: str, spec: dict, runtime: str, runtime_binary: str = "",
                               labels: dict[str, str] | None = None, image: str = "",
                               snapshot_key: str = "", snapshotter: str = "overlayfs") -> None:
        """``runtime_binary`` (a path) makes the container run that runc-compatible binary:
        runtime ``io.containerd.runc.v2`` (unless another is named) with
        ``containerd.runc.v1.Options{binary_name}``, as dockerd does for configured runtimes."""
        api = self.api
        rt = api.containers.Container.Runtime(name=runtime or RUNC_SHIM)
        if runtime_binary:
            opts = api.runc_options.Options(binary_name=runtime_binary)
            rt.options.CopyFrom(AnyPB(type_url=RUNC_OPTIONS_TYPE_URL, value=opts.SerializeToString()))
        c = api.containers.Container(
            id=id, labels=labels or {}, image=image, runtime=rt,
            spec=AnyPB(type_url=SPEC_TYPE_URL, value=json.dumps(spec).encode()),
            snapshotter=snapshotter if snapshot_key else "", snapshot_key=snapshot_key)
        await self._call(self.containers.Create, api.containers.CreateContainerRequest(container=c))

    async def update_container_spec(self, id: str, spec: dict) -> None:
        api = self.api
        c = api.containers.Container(id=id, spec=AnyPB(type_url=SPEC_TYPE_URL, value=json.dumps(spec).encode()))
        await self._call(self.containers.Update, api.containers.UpdateContainerRequest(
            container=c, update_mask=FieldMask(paths=["spec"])))

    async def get_container(self, id: str) -> dict[str, Any] | None:
        """The container record (``message_to_dict`` of containerd's Container; the spec as
        ``spec_json``), or None when there is none."""
        try:
            resp = await self._call(self.containers.Get, self.api.containers.GetContainerRequest(id=id))
        except NotFound:
            return None
        d = message_to_dict(resp.container)
        d["spec_json"] = json.loads(resp.container.spec.value) if resp.container.spec.value else None
        return d

    async def delete_container(self, id: str) -> None:
        await self._call(self.containers.Delete, self.api.containers.DeleteContainerRequest(id=id))

    async def list_containers(self) -> list[str]:
        resp = await self._call(self.containers.List, self.api.containers.ListContainersRequest())
        return [c.id for c in resp.containers]

    # --- snapshots ----------------------------------------------------------------------------

    def _mounts(self, pbs: Sequence[Any]) -> list[Mount]:
        return [Mount(m.type, m.source, list(m.options), m.target) for m in pbs]

    def _mounts_pb(self, mounts: Sequence[Mount]) -> list[Any]:
        M = self.api.mount.Mount
        return [M(type=m.type, source=m.source, options=list(m.options), target=m.target) for m in mounts]

    async def prepare_snapshot(self, key: str, parent: str, snapshotter: str = "overlayfs",
                               labels: dict[str, str] | None = None, lease: str = "") -> list[Mount]:
        resp = await self._call(self.snapshots.Prepare, self.api.snapshots.PrepareSnapshotRequest(
            snapshotter=snapshotter, key=key, parent=parent, labels=labels or {}), lease)
        return self._mounts(resp.mounts)

    async def snapshot_mounts(self, key: str, snapshotter: str = "overlayfs") -> list[Mount]:
        resp = await self._call(self.snapshots.Mounts, self.api.snapshots.MountsRequest(
            snapshotter=snapshotter, key=key))
        return self._mounts(resp.mounts)

    async def commit_snapshot(self, name: str, key: str, snapshotter: str = "overlayfs",
                              labels: dict[str, str] | None = None, lease: str = "") -> None:
        await self._call(self.snapshots.Commit, self.api.snapshots.CommitSnapshotRequest(
            snapshotter=snapshotter, name=name, key=key, labels=labels or {}), lease)

    async def stat_snapshot(self, key: str, snapshotter: str = "overlayfs") -> dict[str, Any] | None:
        """The snapshot's info (name, parent, kind, labels...), None when there is none."""
        try:
            resp = await self._call(self.snapshots.Stat, self.api.snapshots.StatSnapshotRequest(
                snapshotter=snapshotter, key=key))
        except NotFound:
            return None
        d = message_to_dict(resp.info)
        d["kind"] = self.api.snapshots.Kind.Name(resp.info.kind)
        return d

    async def remove_snapshot(self, key: str, snapshotter: str = "overlayfs") -> None:
        await self._call(self.snapshots.Remove, self.api.snapshots.RemoveSnapshotRequest(
            snapshotter=snapshotter, key=key))

    async def snapshot_usage(self, key: str, snapshotter: str = "overlayfs") -> tuple[int, int]:
        resp = await self._call(self.snapshots.Usage, self.api.snapshots.UsageRequest(
            snapshotter=snapshotter, key=key))
        return int(resp.size), int(resp.inodes)

    # --- tasks --------------------------------------------------------------------------------

    async def create_task(self, id: str, rootfs: list[Mount], stdin: str, stdout: str, stderr: str,
                          terminal: bool) -> int:
        resp = await self._call(self.tasks.Create, self.api.tasks.CreateTaskRequest(
            container_id=id, rootfs=self._mounts_pb(rootfs), stdin=stdin, stdout=stdout, stderr=stderr,
            terminal=terminal))
        return int(resp.pid)

    async def start(self, id: str, exec_id: str = "") -> int:
        resp = await self._call(self.tasks.Start, self.api.tasks.StartRequest(container_id=id, exec_id=exec_id))
        return int(resp.pid)

    async def kill(self, id: str, signal: int, all: bool = False, exec_id: str = "") -> None:
        await self._call(self.tasks.Kill, self.api.tasks.KillRequest(
            container_id=id, exec_id=exec_id, signal=signal, all=all))

    async def delete_task(self, id: str) -> tuple[int, int]:
        resp = await self._call(self.tasks.Delete, self.api.tasks.DeleteTaskRequest(container_id=id))
        return int(resp.exit_status), ts_to_ns(resp.exited_at)

    async def delete_process(self, id: str, exec_id: str) -> tuple[int, int]:
        resp = await self._call(self.tasks.DeleteProcess, self.api.tasks.DeleteProcessRequest(
            container_id=id, exec_id=exec_id))
        return int(resp.exit_status), ts_to_ns(resp.exited_at)

    def _task_info(self, p: Any) -> TaskInfo:
        return TaskInfo(p.container_id if not p.id or p.id == p.container_id else p.id, int(p.pid),
                        _STATUS_NAMES.get(int(p.status), "unknown"), int(p.exit_status), ts_to_ns(p.exited_at))

    async def get_task(self, id: str, exec_id: str = "") -> TaskInfo | None:
        try:
            resp = await self._call(self.tasks.Get, self.api.tasks.GetRequest(container_id=id, exec_id=exec_id))
        except NotFound:
            return None
        return self._task_info(resp.process)

    async def list_tasks(self) -> list[TaskInfo]:
        resp = await self._call(self.tasks.List, self.api.tasks.ListTasksRequest())
        return [self._task_info(p) for p in resp.tasks]

    async def exec(self, id: str, exec_id: str, process_spec: dict, stdin: str, stdout: str, stderr: str,
                   terminal: bool) -> None:
        await self._call(self.tasks.Exec, self.api.tasks.ExecProcessRequest(
            container_id=id, exec_id=exec_id, stdin=stdin, stdout=stdout, stderr=stderr, terminal=terminal,
            spec=AnyPB(type_url=PROCESS_TYPE_URL, value=json.dumps(process_spec).encode())))

    async def resize(self, id: str, width: int, height: int, exec_id: str = "") -> None:
        await self._call(self.tasks.ResizePty, self.api.tasks.ResizePtyRequest(
            container_id=id, exec_id=exec_id, width=width, height=height))

    async def close_stdin(self, id: str, exec_id: str = "") -> None:
        await self._call(self.tasks.CloseIO, self.api.tasks.CloseIORequest(
            container_id=id, exec_id=exec_id, stdin=True))

    async def pause(self, id: str) -> None:
        await self._call(self.tasks.Pause, self.api.tasks.PauseTaskRequest(container_id=id))

    async def resume(self, id: str) -> None:
        await self._call(self.tasks.Resume, self.api.tasks.ResumeTaskRequest(container_id=id))

    async def pids(self, id: str) -> list[int]:
        resp = await self._call(self.tasks.ListPids, self.api.tasks.ListPidsRequest(container_id=id))
        return [int(p.pid) for p in resp.processes]

    async def metrics(self, id: str) -> Any:
        """The task's cgroup metrics message (``io.containerd.cgroups.v1.Metrics`` or v2's)."""
        resp = await self._call(self.tasks.Metrics, self.api.tasks.MetricsRequest(filters=[f'id=="{id}"']))
        for m in resp.metrics:
            if m.id == id:
                return self.decode_any(m.data)
        raise NotFound(f"task {id}: no metrics (the task is not running or its cgroup cannot be read)")

    async def update_resources(self, id: str, resources: dict) -> None:
        await self._call(self.tasks.Update, self.api.tasks.UpdateTaskRequest(
            container_id=id, resources=AnyPB(type_url=RESOURCES_TYPE_URL, value=json.dumps(resources).encode())))

    async def wait(self, id: str, exec_id: str = "") -> tuple[int, int]:
        resp = await self._call(self.tasks.Wait, self.api.tasks.WaitRequest(container_id=id, exec_id=exec_id))
        return int(resp.exit_status), ts_to_ns(resp.exited_at)

    # --- images, content, diff, leases --------------------------------------------------------

    def _desc(self, d: Any) -> Descriptor:
        return Descriptor(d.media_type, d.digest, int(d.size), dict(d.annotations))

    def _desc_pb(self, d: Descriptor) -> Any:
        return self.api.descriptor.Descriptor(media_type=d.media_type, digest=d.digest, size=d.size,
                                              annotations=d.annotations)

    def _image(self, i: Any) -> ImageRecord:
        return ImageRecord(i.name, self._desc(i.target), dict(i.labels), ts_to_ns(i.created_at),
                           ts_to_ns(i.updated_at))

    async def get_image(self, name: str) -> ImageRecord | None:
        try:
            resp = await self._call(self.images.Get, self.api.images.GetImageRequest(name=name))
        except NotFound:
            return None
        return self._image(resp.image)

    def images_changed(self) -> None:
        """Some image record changed: the next ``list_images`` asks containerd."""
        self._images_gen += 1
        self._images_cache = None

    async def list_images(self, filters: Sequence[str] = ()) -> list[ImageRecord]:
        cached = self._images_cache
        if not filters and cached is not None and cached[0] == self._images_gen and self.image_events_live:
            return list(cached[1])
        gen, live = self._images_gen, self.image_events_live
        resp = await self._call(self.images.List, self.api.images.ListImagesRequest(filters=list(filters)))
        out = [self._image(i) for i in resp.images]
        if not filters and live and gen == self._images_gen:
            self._images_cache = (gen, out)
        return list(out)

    async def create_image(self, name: str, target: Descriptor, labels: dict[str, str] | None = None,
                           lease: str = "") -> ImageRecord:
        img = self.api.images.Image(name=name, target=self._desc_pb(target), labels=labels or {})
        try:
            resp = await self._call(self.images.Create, self.api.images.CreateImageRequest(image=img), lease)
        finally:
            self.images_changed()
        return self._image(resp.image)

    async def update_image(self, name: str, target: Descriptor, labels: dict[str, str] | None = None,
                           lease: str = "") -> ImageRecord:
        """Point the image ``name`` at ``target`` (and set its labels when given)."""
        img = self.api.images.Image(name=name, target=self._desc_pb(target), labels=labels or {})
        paths = ["target"] + (["labels"] if labels is not None else [])
        try:
            resp = await self._call(self.images.Update, self.api.images.UpdateImageRequest(
                image=img, update_mask=FieldMask(paths=paths)), lease)
        finally:
            self.images_changed()
        return self._image(resp.image)

    async def delete_image(self, name: str, sync: bool = False) -> None:
        try:
            await self._call(self.images.Delete, self.api.images.DeleteImageRequest(name=name, sync=sync))
        finally:
            self.images_changed()

    async def read_blob(self, digest: str, max_size: int | None = None) -> bytes:
        parts = []
        got = 0
        try:
            async for resp in self.content.Read(self.api.content.ReadContentRequest(digest=digest),
                                                metadata=self._md):
                got += len(resp.data)
                if max_size is not None and got > max_size:
                    raise InvalidParameter(f"content {digest}: larger than {max_size} bytes")
                parts.append(resp.data)
        except grpc.RpcError as e:
            raise map_error(e, self.address) from None
        return b"".join(parts)

    async def content_info(self, digest: str) -> dict[str, Any] | None:
        try:
            resp = await self._call(self.content.Info, self.api.content.InfoRequest(digest=digest))
        except NotFound:
            return None
        return message_to_dict(resp.info)

    async def update_content_labels(self, digest: str, labels: dict[str, str]) -> None:
        """Set (add or replace) these labels of a blob, leaving its others alone."""
        info = self.api.content.Info(digest=digest, labels=labels)
        await self._call(self.content.Update, self.api.content.UpdateRequest(
            info=info, update_mask=FieldMask(paths=[f"labels.{k}" for k in labels])))

    async def write_blob(self, ref: str, data: bytes | BinaryIO, expected_digest: str,
                         labels: dict[str, str] | None = None, lease: str = "", size: int | None = None) -> bool:
        """Write ``data`` (bytes, or a reader of ``size`` bytes) as the blob ``expected_digest``;
        False when the store has it already (its labels are then updated with ``labels``)."""
        content = self.api.content
        actions = content.WriteAction
        total = len(data) if isinstance(data, bytes) else size
        if total is None:
            raise ValueError("write_blob: size is required with a reader")
        if await self.content_info(expected_digest) is not None:
            if labels:
                await self.update_content_labels(expected_digest, labels)
            return False

        def chunk_at(off: int) -> bytes:
            if isinstance(data, bytes):
                return data[off:off + WRITE_CHUNK]
            return data.read(min(WRITE_CHUNK, total - off))

        def requests() -> Any:
            off = 0
            while True:
                chunk = chunk_at(off)
                if not chunk and off < total:
                    raise ApiError(f"content {expected_digest}: source ended at {off} of {total} bytes")
                last = off + len(chunk) >= total
                yield content.WriteContentRequest(
                    action=actions.Value("COMMIT" if last else "WRITE"), ref=ref if off == 0 else "",
                    total=total, expected=expected_digest, offset=off, data=chunk,
                    labels=(labels or {}) if last else {})
                off += len(chunk)
                if last:
                    return
        # the request iterator is consumed by a task of grpc's: the call is cancelled before
        # returning, so that it never reads ``data`` after the caller closed it
        call = self.content.Write(requests(), metadata=self._meta(lease))
        try:
            async for resp in call:
                if resp.action == actions.Value("COMMIT"):
                    if resp.digest != expected_digest:
                        raise ApiError(f"content {expected_digest}: containerd committed {resp.digest}")
                    return True
        except grpc.RpcError as e:
            err = map_error(e, self.address)
            if getattr(err, "grpc_code", None) == grpc.StatusCode.ALREADY_EXISTS:
                if labels:
                    await self.update_content_labels(expected_digest, labels)
                return False
            raise err from None
        finally:
            call.cancel()
        raise ApiError(f"content {expected_digest}: write stream ended before the commit")

    async def apply_layer(self, layer: Descriptor, mounts: list[Mount], lease: str = "") -> Descriptor:
        """Diff.Apply: extract the layer blob onto the mounts; returns the applied (uncompressed)
        descriptor, whose digest is the layer's diff ID."""
        resp = await self._call(self.diff.Apply, self.api.diff.ApplyRequest(
            diff=self._desc_pb(layer), mounts=self._mounts_pb(mounts)), lease)
        return self._desc(resp.applied)

    async def create_lease(self, labels: dict[str, str] | None = None, id: str = "") -> str:
        resp = await self._call(self.leases.Create, self.api.leases.CreateRequest(
            id=id or f"skiffd-{secrets.token_hex(8)}", labels=labels or {}))
        return str(resp.lease.id)

    async def delete_lease(self, id: str) -> None:
        await self._call(self.leases.Delete, self.api.leases.DeleteRequest(id=id))

    @contextlib.asynccontextmanager
    async def temporary_lease(self, expire_seconds: int = 86400) -> AsyncIterator[str]:
        """A lease for the resources one operation makes (containerd's Go client takes one for
        NewContainer the same way): a snapshot prepared under it cannot be taken by a garbage
        collection that runs before a container refers to it. Deleted at the end of the block;
        should that fail, it expires after ``expire_seconds`` (``containerd.io/gc.expire``)."""
        expire = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + expire_seconds))
        lease = await self.create_lease({"containerd.io/gc.expire": expire})
        try:
            yield lease
        finally:
            # nobody waits for the deletion (one round trip less on `docker create`)
            task = asyncio.get_running_loop().create_task(self._drop_lease(lease))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _drop_lease(self, lease: str) -> None:
        try:
            await self.delete_lease(lease)
        except NotFound:
            pass
        except ApiError as e:
            log.error("delete lease %s (it expires by itself within a day): %s", lease, e)

    # --- events -------------------------------------------------------------------------------

    def decode_any(self, a: AnyPB) -> Any:
        """The message packed in ``a``, by its type URL (event and metrics types)."""
        types = self._types()
        name = a.type_url.rsplit("/", 1)[-1]
        cls = types.get(name)
        if cls is None and not self._metric_types_added:
            # the cgroup metrics modules (Tasks.Metrics) only when stats are first asked for
            self._metric_types_added = True
            self._add_types(types, [self.api.cgroups_v1, self.api.cgroups_v2])
            cls = types.get(name)
        if cls is None:
            raise ApiError(f"containerd sent a message of unknown type {a.type_url!r}")
        msg = cls()
        msg.ParseFromString(a.value)
        return msg

    def _types(self) -> dict[str, Any]:
        if self._event_types is None:
            types: dict[str, Any] = {}
            self._add_types(types, self.api.event_modules())
            self._event_types = types
        return self._event_types

    @staticmethod
    def _add_types(types: dict[str, Any], mods: Any) -> None:
        for mod in mods:
            for msg_name in mod.DESCRIPTOR.message_types_by_name:
                cls = getattr(mod, msg_name)
                types[cls.DESCRIPTOR.full_name] = cls

    def decode_envelope(self, env: Any) -> Envelope:
        event = message_to_dict(self.decode_any(env.event)) if env.HasField("event") else {}
        return Envelope(ts_to_ns(env.timestamp), env.namespace, env.topic, event)

    async def subscribe(self, filters: list[str]) -> AsyncIterator[Envelope]:
        """containerd's events matching ``filters`` (e.g. ``['namespace=="skiff"']``), as they come,
        until the caller stops iterating or the connection breaks (Unavailable)."""
        call = self.events.Subscribe(self.api.events.SubscribeRequest(filters=filters), metadata=self._md)
        try:
            async for env in call:
                yield self.decode_envelope(env)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:
                return
            raise map_error(e, self.address) from None
        finally:
            call.cancel()
