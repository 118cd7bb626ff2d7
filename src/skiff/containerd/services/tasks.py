"""containerd.services.tasks.v1.Tasks on skiff-shim (``skiff.containerd.tasks_core``).

Create takes the OCI spec from the container record, the rootfs mounts and stdio paths from
the request (``ctr`` sends the snapshot's mounts and its FIFOs, or ``file://`` paths for
``--log-uri``), and the runtime from the container's runtime name through the config's
runtimes table: ``skiff-runc``, ``runc``, ``crun`` (or any configured name) run that runtime;
containerd's shim type names ``io.containerd.runc.v2`` (ctr's default),
``io.containerd.runc.v1`` and ``io.containerd.runtime.v1.linux`` mean the configured default
(skiff-runc). Any other name is InvalidArgument. A container's ``containerd.runc.v1.Options``
runtime options are honoured as containerd's runc shim does (``binary_name``, ``root``,
``systemd_cgroup``; see ``choose_runtime``).

Metrics answers, like containerd, one ``types.Metric`` per task of the namespace that matches
the filters (fields ``id``, ``namespace``), its data the cgroup metrics message of the host's
cgroup mode (:mod:`skiff.containerd.metrics`); a task whose statistics cannot be read is left
out and the reason logged (containerd does the same).

Not provided: Checkpoint (no CRIU support): UNIMPLEMENTED saying so. List ignores filters
(ctr sends none).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Any

from google.protobuf.any_pb2 import Any as AnyPB
from google.protobuf.empty_pb2 import Empty

from skiff.containerd.convert import ts_ns
from skiff.containerd.metrics import cgroup_unified, metrics_any
from skiff.containerd.rpc import RpcError, handler, namespace_of, require, unimplemented
from skiff.containerd.services import Service
from skiff.containerd.tasks_core import (
    POLL_SECONDS,
    SPEC_TYPE_URLS,
    MountSpec,
    Task,
    TaskManager,
    choose_runtime,
    process_state,
    rpc_error,
)
from skiff.images.errors import FailedPrecondition, InvalidArgument, NotFound
from skiff.images.metadata import parse_filters
from skiff.shim import protocol as P
from skiff.shim.client import ProcessState

CHECKPOINT_MESSAGE = "checkpoint is not supported by skiff-containerd (no CRIU support in skiff-runc)"
log = logging.getLogger("skiff.containerd")

_STATUS = {"creating": "CREATED", "created": "CREATED", "running": "RUNNING", "paused": "PAUSED",
           "pausing": "PAUSING", "stopped": "STOPPED", "deleted": "STOPPED"}


def _metric_field(fields: dict[str, str], path: Any) -> tuple[str, bool]:
    """Filter adaptor of Tasks.Metrics: a task's ``id`` and ``namespace``."""
    if len(path) == 1 and path[0] in fields:
        return fields[path[0]], True
    return "", False


class TasksService(Service):
    def __init__(self, core: Any, api: Any) -> None:
        super().__init__(core, api)
        self.manager = TaskManager(core.config, api, self.publish)
        core.tasks = self.manager
        self.manager.recover()

    # --- helpers ----------------------------------------------------------------------------

    def _task(self, context: Any, container_id: str) -> tuple[str, Task]:
        ns = namespace_of(context)
        require(container_id, "container ID")
        return ns, self.manager.get(ns, container_id)

    def _process_pb(self, task: Task, st: ProcessState) -> Any:
        pb = self.api.task.Process(
            container_id=task.id, id=st.exec_id or task.id, pid=st.pid,
            status=self.api.task.Status.Value(_STATUS.get(st.status, "UNKNOWN")),
            stdin=st.stdin, stdout=st.stdout, stderr=st.stderr, terminal=st.terminal,
            exit_status=st.exit_status)
        if st.exited_at:
            pb.exited_at.CopyFrom(ts_ns(st.exited_at))
        return pb

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except P.ShimError as e:
            raise rpc_error(e, what) from None

    # --- the API ----------------------------------------------------------------------------

    @handler
    def Create(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        require(request.container_id, "container ID")
        if request.HasField("checkpoint") and request.checkpoint.digest:
            raise unimplemented(f"create task {request.container_id} from a checkpoint: {CHECKPOINT_MESSAGE}")
        with self.core.meta.view() as tx:
            container = tx.get_container(ns, request.container_id)
        if container.spec is None or not container.spec.value:
            raise InvalidArgument(f"container {container.id}: has no OCI spec")
        if container.spec.type_url not in SPEC_TYPE_URLS:
            raise InvalidArgument(f"container {container.id}: spec has type {container.spec.type_url!r}, "
                                  f"expected {SPEC_TYPE_URLS[0]}")
        runtime = choose_runtime(self.core.config, container.runtime_name, ns, container.runtime_options)
        mounts = [MountSpec(m.type, m.source, list(m.options)) for m in request.rootfs]
        task = self.manager.create(ns, container.id, container.spec.value, mounts, runtime,
                                   stdin=request.stdin, stdout=request.stdout, stderr=request.stderr,
                                   terminal=request.terminal)
        return self.api.tasks.CreateTaskResponse(container_id=task.id, pid=task.pid)

    @handler
    def Start(self, request: Any, context: Any) -> Any:
        _, task = self._task(context, request.container_id)
        what = f"start process {request.exec_id} of task {task.id}" if request.exec_id else f"start task {task.id}"
        pid = self._call(what, task.client.start, request.exec_id)
        return self.api.tasks.StartResponse(pid=pid)

    def _delete_response(self, task: Task, status: Any) -> Any:
        pb = self.api.tasks.DeleteResponse(id=status.exec_id or task.id, pid=status.pid,
                                           exit_status=status.exit_status)
        pb.exited_at.CopyFrom(ts_ns(status.exited_at))
        return pb

    @handler
    def Delete(self, request: Any, context: Any) -> Any:
        ns, task = self._task(context, request.container_id)
        status = self.manager.delete(ns, task.id)
        return self._delete_response(task, status)

    @handler
    def DeleteProcess(self, request: Any, context: Any) -> Any:
        ns, task = self._task(context, request.container_id)
        require(request.exec_id, "exec ID")
        status = self.manager.delete(ns, task.id, request.exec_id)
        return self._delete_response(task, status)

    @handler
    def Get(self, request: Any, context: Any) -> Any:
        _, task = self._task(context, request.container_id)
        st = process_state(task, request.exec_id)
        return self.api.tasks.GetResponse(process=self._process_pb(task, st))

    @handler
    def List(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        out = []
        for task in self.manager.tasks_of(ns):
            try:
                st = task.client.state("")
            except P.ShimError as e:
                if e.code == P.NOT_FOUND or task.closed:
                    continue  # deleted meanwhile
                raise rpc_error(e, f"task {task.id}") from None
            out.append(self._process_pb(task, st))
        return self.api.tasks.ListTasksResponse(tasks=out)

    @handler
    def Kill(self, request: Any, context: Any) -> Any:
        _, task = self._task(context, request.container_id)
        if request.exec_id and request.all:
            raise InvalidArgument(f"kill task {task.id}: 'all' applies to the task, not to exec {request.exec_id}")
        what = f"kill task {task.id}" + (f" process {request.exec_id}" if request.exec_id else "")
        try:
            task.client.kill(request.signal, all=request.all, exec_id=request.exec_id)
        except P.ShimError as e:
            if task.closed:     # deleted meanwhile: its shim is shutting down (a broken pipe)
                raise NotFound(f"{what}: process already finished (the task was deleted)") from None
            raise rpc_error(e, what) from None
        return Empty()

    @handler
    def Exec(self, request: Any, context: Any) -> Any:
        _, task = self._task(context, request.container_id)
        require(request.exec_id, "exec ID")
        if not request.HasField("spec") or not request.spec.value:
            raise InvalidArgument(f"exec {request.exec_id} in task {task.id}: process spec required")
        try:
            spec = json.loads(request.spec.value)
        except ValueError as e:
            raise InvalidArgument(f"exec {request.exec_id} in task {task.id}: process spec is not JSON: {e}") from None
        if not isinstance(spec, dict):
            raise InvalidArgument(f"exec {request.exec_id} in task {task.id}: process spec is not an object")
        self._call(f"exec {request.exec_id} in task {task.id}", task.client.exec, request.exec_id, spec,
                   stdin=request.stdin, stdout=request.stdout, stderr=request.stderr, terminal=request.terminal)
        return Empty()

    @handler
    def ResizePty(self, request: Any, context: Any) -> Any:
        _, task = self._task(context, request.container_id)
        self._call(f"resize the terminal of task {task.id}", task.client.resize, request.width, request.height,
                   request.exec_id)
        return Empty()

    @handler
    def CloseIO(self, request: Any, context: Any) -> Any:
        _, task = self._task(context, request.container_id)
        if request.stdin:
            self._call(f"close the stdin of task {task.id}", task.client.closeio, request.exec_id)
        return Empty()

    @handler
    def Pause(self, request: Any, context: Any) -> Any:
        _, task = self._task(context, request.container_id)
        self._call(f"pause task {task.id}", task.client.pause)
        return Empty()

    @handler
    def Resume(self, request: Any, context: Any) -> Any:
        _, task = self._task(context, request.container_id)
        self._call(f"resume task {task.id}", task.client.resume)
        return Empty()

    @handler
    def ListPids(self, request: Any, context: Any) -> Any:
        _, task = self._task(context, request.container_id)
        pids = self._call(f"list the processes of task {task.id}", task.client.pids)
        out = []
        for p in pids:
            info = self.api.task.ProcessInfo(pid=p.pid)
            if p.exec_id:  # containerd: ProcessDetails{ExecID} (runc options)
                details = self.api.runc_options.ProcessDetails(exec_id=p.exec_id)
                info.info.CopyFrom(AnyPB(type_url=details.DESCRIPTOR.full_name,
                                         value=details.SerializeToString()))
            out.append(info)
        return self.api.tasks.ListPidsResponse(processes=out)

    @handler
    def Checkpoint(self, request: Any, context: Any) -> Any:
        raise unimplemented(f"checkpoint task {request.container_id}: {CHECKPOINT_MESSAGE}")

    @handler
    def Update(self, request: Any, context: Any) -> Any:
        _, task = self._task(context, request.container_id)
        if not request.HasField("resources") or not request.resources.value:
            raise InvalidArgument(f"update task {task.id}: resources required")
        try:
            resources = json.loads(request.resources.value)
        except ValueError as e:
            raise InvalidArgument(f"update task {task.id}: resources are not JSON: {e}") from None
        if not isinstance(resources, dict):
            raise InvalidArgument(f"update task {task.id}: resources are not an object")
        self._call(f"update task {task.id}", task.client.update, resources)
        return Empty()

    @handler
    def Metrics(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        flt = parse_filters(list(request.filters))
        unified = cgroup_unified()
        out = []
        for task in self.manager.tasks_of(ns):
            if not flt.match(functools.partial(_metric_field, {"id": task.id, "namespace": ns})):
                continue
            collected = time.time_ns()
            try:
                stats = task.client.stats()
            except P.ShimError as e:
                if e.code != P.NOT_FOUND:
                    log.error("metrics of task %s in namespace %s: left out: %s", task.id, ns, e.message)
                continue
            metric = self.api.metrics.Metric(id=task.id, data=metrics_any(self.api, stats, unified=unified))
            metric.timestamp.CopyFrom(ts_ns(collected))
            out.append(metric)
        return self.api.tasks.MetricsResponse(metrics=out)

    @handler
    def Wait(self, request: Any, context: Any) -> Any:
        _, task = self._task(context, request.container_id)
        what = f"wait for task {task.id}" + (f" process {request.exec_id}" if request.exec_id else "")
        while True:
            if self.manager.stopping:
                raise RpcError("UNAVAILABLE", f"{what}: skiff-containerd is shutting down")
            if not context.is_active():
                raise RpcError("CANCELLED", f"{what}: the client went away")
            try:
                status = task.client.wait(request.exec_id, timeout=POLL_SECONDS)
                break
            except P.ShimError as e:
                if e.code == P.DEADLINE_EXCEEDED:
                    continue
                if task.closed:
                    raise NotFound(f"{what}: the task was deleted") from None
                if e.code == P.UNAVAILABLE:
                    raise FailedPrecondition(f"{what}: the shim cannot be reached: {e.message}") from None
                raise rpc_error(e, what) from None
        pb = self.api.tasks.WaitResponse(exit_status=status.exit_status)
        pb.exited_at.CopyFrom(ts_ns(status.exited_at))
        return pb
