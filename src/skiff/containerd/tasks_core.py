"""Task management for skiff-containerd: one skiff-shim per task, found again after a restart.

Layout under the configured ``state`` directory::

    io.containerd.runtime.v2.task/<namespace>/<id>/   the bundle and the shim's state directory:
        config.json                                   the OCI spec from the container record
        rootfs/                                       the request's rootfs mounts, mounted here
        runtime.json                                  the runtime this task runs with (for the
                                                      clean-up of a task whose shim is gone)
        address, shim.pid, shim.log, log.json         written by the shim
    s/<hash>                                          the shims' sockets (short paths)
    zygote.sock                                       the shim zygote (shims are forked from it)
    runtimes/<name>.sh                                wrappers for runtimes that need one
                                                      (``hide_cgroup2_unified``)
    <runtime name>/<namespace>/                       the runtime's ``--root`` unless configured

The manager mounts the rootfs (``skiff.images.mount``) before it starts the shim, and
unmounts it when the task is deleted. Events: one thread per shim long-polls the shim's
``events`` queue and publishes each event as containerd's ``/tasks/*`` event; an event is
acknowledged to the shim only after it was published, so a manager killed in between
publishes it again after the restart (at least once, never lost). At start (``recover``)
every bundle directory is visited: a live shim is reconnected (its task, exit statuses and
output are all still there); a bundle whose shim is gone is cleaned up (``runtime delete
--force``, unmount, remove) and a ``/tasks/exit`` with status 255 is published for it, as
containerd does for a lost shim.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from skiff.containerd.config import Config, ConfigError, Runtime
from skiff.containerd.rpc import RpcError
from skiff.images.errors import AlreadyExists, InvalidArgument, NotFound
from skiff.shim import protocol as P
from skiff.shim.client import (
    ConnectInfo,
    Event,
    ExitStatus,
    ProcessState,
    ShimClient,
    find_shim,
    start_shim,
    stop_zygote,
)

log = logging.getLogger("skiff.containerd.tasks")

TASK_DIR = "io.containerd.runtime.v2.task"
SOCKET_DIR = "s"
WRAPPER_DIR = "runtimes"
ZYGOTE_SOCKET = "zygote.sock"
POLL_SECONDS = 2.0          # long-polls are renewed this often, so stop/cancel is noticed
LOST_SHIM_EXIT_STATUS = 255  # containerd's exit status for a task whose shim vanished

SPEC_TYPE_URLS = ("types.containerd.io/opencontainers/runtime-spec/1/Spec",)

_GRPC_CODES = {
    P.NOT_FOUND: "NOT_FOUND", P.ALREADY_EXISTS: "ALREADY_EXISTS",
    P.FAILED_PRECONDITION: "FAILED_PRECONDITION", P.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    P.UNIMPLEMENTED: "UNIMPLEMENTED", P.UNKNOWN: "UNKNOWN", P.INTERNAL: "INTERNAL",
    P.UNAVAILABLE: "UNAVAILABLE", P.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
}


def rpc_error(e: P.ShimError, what: str = "") -> RpcError:
    """A shim's error as the gRPC status containerd would give."""
    return RpcError(_GRPC_CODES.get(e.code, "UNKNOWN"), f"{what}: {e.message}" if what else e.message)


@dataclass
class MountSpec:
    type: str
    source: str
    options: list[str]


@dataclass
class RuntimeChoice:
    """How the shim runs the runtime: its ``runtime``, ``runtime_root`` and ``runtime_args``."""

    name: str
    binary: str
    root: str
    args: list[str]

    def to_json(self) -> dict:
        return {"name": self.name, "binary": self.binary, "root": self.root, "args": self.args}

    @classmethod
    def from_json(cls, d: dict) -> RuntimeChoice:
        return cls(str(d.get("name", "")), str(d.get("binary", "")), str(d.get("root", "")),
                   [str(a) for a in d.get("args", [])])


def choose_runtime(config: Config, name: str, namespace: str, options: Any = None) -> RuntimeChoice:
    """The runtime a container names, through the config's runtimes table (containerd's shim
    type names such as ``io.containerd.runc.v2`` mean the default runtime). InvalidArgument for
    a name that is not configured.

    ``options`` is the container's ``runtime.options`` (an ``AnyValue`` or None). A
    ``containerd.runc.v1.Options`` (what dockerd sends for a runtime configured by path) is
    honoured as containerd's runc shim does: ``binary_name`` runs that binary (with the settings
    of the configured runtime whose binary it is, if any; else plainly, with its own ``--root``
    under the state directory), ``root`` and ``systemd_cgroup`` override. Its other fields
    (CRIU, shim cgroup, IO owner, no_pivot_root, no_new_keyring) are refused when set, as is
    any other options type."""
    try:
        rt = config.runtime(name)
    except ConfigError as e:
        raise InvalidArgument(f"container runtime: {e}") from None
    opts = _runc_options(options, name) if options is not None else None
    if opts is not None and opts.binary_name:
        rt = _runtime_for_binary(config, opts.binary_name, namespace)
    root = rt.root or os.path.join(config.state, rt.name, namespace)
    systemd = rt.systemd_cgroup
    if opts is not None:
        root = opts.root or root
        systemd = systemd or opts.systemd_cgroup
    args = (["--systemd-cgroup"] if systemd else []) + list(rt.args)
    binary = rt.resolved_binary()
    if rt.hide_cgroup2_unified:
        binary = _wrapper(config, rt)
    return RuntimeChoice(rt.name, binary, root, args)


RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options"
_UNSUPPORTED_RUNC_OPTIONS = ("no_pivot_root", "no_new_keyring", "shim_cgroup", "io_uid", "io_gid",
                             "criu_path", "criu_image_path", "criu_work_path")


def _runc_options(options: Any, name: str) -> Any:
    """The decoded ``containerd.runc.v1.Options`` of a container (None for empty options)."""
    type_url = getattr(options, "type_url", "")
    value = getattr(options, "value", b"")
    if not type_url and not value:
        return None
    if type_url.rsplit("/", 1)[-1] != RUNC_OPTIONS_TYPE_URL:
        raise InvalidArgument(f"container runtime {name!r}: runtime options of type {type_url!r} are not "
                              f"supported (only {RUNC_OPTIONS_TYPE_URL})")
    from google.protobuf.message import DecodeError

    from skiff.containerd.protos import load
    opts = load().runc_options.Options()
    try:
        opts.ParseFromString(value)
    except DecodeError as e:
        raise InvalidArgument(f"container runtime {name!r}: runtime options: not a valid "
                              f"{RUNC_OPTIONS_TYPE_URL}: {e}") from None
    for fname in _UNSUPPORTED_RUNC_OPTIONS:
        if getattr(opts, fname):
            raise InvalidArgument(f"container runtime {name!r}: runtime option {fname} is not supported by "
                                  "skiff-containerd")
    return opts


def _runtime_for_binary(config: Config, binary: str, namespace: str) -> Runtime:
    """The configured runtime whose binary is ``binary`` (same file), else an unconfigured one
    named after the binary (its ``--root`` is ``<state>/binary-<hash>/<namespace>``)."""
    if not os.path.isabs(binary):
        found = shutil.which(binary)
        if not found:
            raise InvalidArgument(f"runtime binary {binary!r}: not found in PATH")
        binary = found
    try:
        want = os.stat(binary)
    except OSError as e:
        raise InvalidArgument(f"runtime binary {binary}: {e.strerror}") from None
    for rt in config.runtimes.values():
        try:
            st = os.stat(rt.resolved_binary())
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            return rt
    tag = hashlib.sha256(binary.encode()).hexdigest()[:12]
    return Runtime(f"binary-{tag}", binary)


def _wrapper(config: Config, rt: Runtime) -> str:
    """A script that runs ``rt`` the way ``Runtime.argv`` says (the shim puts its own global
    flags between the binary and the verb, so the wrapper takes them as arguments)."""
    bare = replace(rt, root="", args=[], systemd_cgroup=False)
    text = "#!/bin/sh\nexec " + shlex.join(bare.argv()) + ' "$@"\n'
    d = os.path.join(config.state, WRAPPER_DIR)
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, f"{rt.name}.sh")
    try:
        with open(path) as f:
            if f.read() == text:
                return path
    except FileNotFoundError:
        pass
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o700)
    os.rename(tmp, path)
    return path


class Task:
    """One task: its shim's client, its bundle, its event pump."""

    def __init__(self, manager: TaskManager, namespace: str, id: str, bundle: str,
                 client: ShimClient, runtime: RuntimeChoice, pid: int = 0) -> None:
        self.manager = manager
        self.namespace = namespace
        self.id = id
        self.bundle = bundle
        self.client = client
        self.runtime = runtime
        self.pid = pid
        self.io = ("", "", "", False)
        self.lock = threading.Lock()  # held while events are published (the pump, delete)
        self.seq = 0                  # last event sequence published and acknowledged
        self.closed = False
        self.thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Task({self.namespace}/{self.id}, shim {self.client.pid})"

    def start_pump(self) -> None:
        self.thread = threading.Thread(target=self._pump, name=f"task-events-{self.id}", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        while not self.closed and not self.manager.stopping:
            try:
                batch = self.client.events(self.seq, wait=True, timeout=POLL_SECONDS)
            except P.ShimError as e:
                if e.code == P.DEADLINE_EXCEEDED:
                    continue
                if self.closed or self.manager.stopping:
                    return
                if e.code == P.UNAVAILABLE and not _alive(self.client.pid):
                    log.error("task %s/%s: shim %d is gone: %s", self.namespace, self.id, self.client.pid, e)
                    return
                log.error("task %s/%s: reading the shim's events: %s", self.namespace, self.id, e)
                time.sleep(POLL_SECONDS)
                continue
            self.publish(batch.events, batch.seq)

    def drain(self) -> None:
        """Publish what the shim has queued, now (before it is shut down)."""
        batch = self.client.events(self.seq, wait=False)
        self.publish(batch.events, batch.seq)

    def publish(self, events: Sequence[Event], seq: int) -> None:
        with self.lock:
            for ev in events:
                if ev.seq <= self.seq:
                    continue  # published already (by drain, or by the pump)
                try:
                    self.manager.publish_event(self, ev)
                except Exception as e:  # a bad event must not stop the pump
                    log.error("task %s/%s: publishing shim event %s: %s", self.namespace, self.id, ev, e)
                self.seq = ev.seq


CGROUP_ROOT = "/sys/fs/cgroup"


def _namespace_cgroup(bundle: str, namespace: str) -> str:
    """``/<namespace>`` when the task's cgroupsPath is ``/<namespace>/...`` (what containerd's
    clients generate; the runtime creates that parent and never removes it), else ""."""
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            path = (json.load(f).get("linux") or {}).get("cgroupsPath") or ""
    except (OSError, ValueError, AttributeError):
        return ""
    if isinstance(path, str) and path.startswith(f"/{namespace}/"):
        return f"/{namespace}"
    return ""


def _remove_empty_cgroup(path: str) -> None:
    """rmdir ``path`` in every cgroup hierarchy where it exists and is empty (the last task of
    a namespace is gone: its namespace cgroup goes too, so nothing is left behind)."""
    import errno
    try:
        names = os.listdir(CGROUP_ROOT)
    except OSError:
        return
    seen: set[str] = set()
    for name in names:
        top = os.path.realpath(os.path.join(CGROUP_ROOT, name))
        if top in seen or not os.path.isdir(top):
            continue
        seen.add(top)
        target = os.path.join(top, path.lstrip("/"))
        try:
            os.rmdir(target)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY, errno.ENOTDIR):
                log.warning("removing the empty cgroup %s: %s", target, e.strerror)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TaskManager:
    """The tasks of every namespace. ``publish(namespace, topic, message)`` sends an event;
    ``api`` holds the generated event messages."""

    def __init__(self, config: Config, api: Any, publish: Callable[[str, str, Any], None]) -> None:
        self.config = config
        self.api = api
        self._publish = publish
        self.root = os.path.join(config.state, TASK_DIR)
        self.socket_dir = os.path.join(config.state, SOCKET_DIR)
        # shims are forked from a pre-imported zygote (started on first use, stopped by close;
        # the shims it forked stay)
        self.zygote = os.path.join(config.state, ZYGOTE_SOCKET)
        self.stopping = False
        self._lock = threading.Lock()
        self._tasks: dict[tuple[str, str], Task] = {}
        self._busy: set[tuple[str, str]] = set()  # being created or deleted

    # --- paths ----------------------------------------------------------------------------

    def bundle_path(self, namespace: str, id: str) -> str:
        return os.path.join(self.root, namespace, id)

    def socket_path(self, namespace: str, id: str) -> str:
        h = hashlib.sha256(f"{namespace}/{id}".encode()).hexdigest()[:20]
        return os.path.join(self.socket_dir, h)

    # --- lookup ---------------------------------------------------------------------------

    def get(self, namespace: str, id: str) -> Task:
        with self._lock:
            t = self._tasks.get((namespace, id))
        if t is None:
            raise NotFound(f"task {id}: not found in namespace {namespace}")
        return t

    def tasks_of(self, namespace: str) -> list[Task]:
        with self._lock:
            return [t for (ns, _), t in sorted(self._tasks.items()) if ns == namespace]

    # --- create / delete ------------------------------------------------------------------

    def create(self, namespace: str, id: str, spec: bytes, rootfs: Sequence[MountSpec], runtime: RuntimeChoice,
               *, stdin: str = "", stdout: str = "", stderr: str = "", terminal: bool = False) -> Task:
        key = (namespace, id)
        with self._lock:
            if key in self._tasks or key in self._busy:
                raise AlreadyExists(f"task {id}: already exists in namespace {namespace}")
            self._busy.add(key)
        try:
            return self._create(namespace, id, spec, rootfs, runtime, stdin, stdout, stderr, terminal)
        finally:
            with self._lock:
                self._busy.discard(key)

    def _create(self, namespace: str, id: str, spec: bytes, rootfs: Sequence[MountSpec],
                runtime: RuntimeChoice, stdin: str, stdout: str, stderr: str, terminal: bool) -> Task:
        from skiff.images.mount import mount_all
        from skiff.images.snapshots import Mount

        bundle = self.bundle_path(namespace, id)
        if os.path.exists(bundle):  # left by a task whose clean-up was interrupted
            log.warning("task %s/%s: removing a stale bundle %s", namespace, id, bundle)
            self._remove_bundle(bundle)
        os.makedirs(os.path.dirname(bundle), mode=0o711, exist_ok=True)
        os.makedirs(self.socket_dir, mode=0o700, exist_ok=True)
        os.mkdir(bundle, 0o711)
        client: ShimClient | None = None
        try:
            with open(os.path.join(bundle, "config.json"), "wb") as f:
                f.write(spec)
            with open(os.path.join(bundle, "runtime.json"), "w") as f:
                json.dump(runtime.to_json(), f)
            rootfs_dir = os.path.join(bundle, "rootfs")
            os.mkdir(rootfs_dir, 0o711)
            if rootfs:
                mount_all([Mount(m.type, m.source, list(m.options)) for m in rootfs], rootfs_dir)
            os.makedirs(runtime.root, mode=0o711, exist_ok=True)
            sock = self.socket_path(namespace, id)
            try:
                os.unlink(sock)
            except FileNotFoundError:
                pass
            try:
                client = start_shim(id, bundle, sock, namespace=namespace, state_dir=bundle,
                                    address=self.config.address, zygote=self.zygote)
                pid = client.create(bundle, runtime.binary, runtime_root=runtime.root,
                                    runtime_args=runtime.args, stdin=stdin, stdout=stdout, stderr=stderr,
                                    terminal=terminal)
            except P.ShimError as e:
                raise rpc_error(e, f"create task {id}") from None
        except BaseException:
            if client is not None:
                try:
                    client.shutdown()
                except P.ShimError as e:
                    log.error("task %s/%s: shutting the shim down after a failed create: %s", namespace, id, e)
            self._remove_bundle(bundle)
            raise
        task = Task(self, namespace, id, bundle, client, runtime, pid)
        task.io = (stdin, stdout, stderr, terminal)
        with self._lock:
            self._tasks[(namespace, id)] = task
        task.start_pump()
        return task

    def delete(self, namespace: str, id: str, exec_id: str = "") -> ExitStatus:
        """Delete a process; for the init (``exec_id`` ""), the whole task: the shim exits,
        the rootfs is unmounted and the bundle removed."""
        task = self.get(namespace, id)
        if exec_id:
            try:
                return task.client.delete(exec_id)
            except P.ShimError as e:
                raise rpc_error(e, f"delete process {exec_id} of task {id}") from None
        key = (namespace, id)
        with self._lock:
            if key in self._busy:
                raise RpcError("FAILED_PRECONDITION", f"task {id}: being deleted already")
            self._busy.add(key)
        try:
            try:
                status = task.client.delete("")
            except P.ShimError as e:
                raise rpc_error(e, f"delete task {id}") from None
            task.closed = True
            try:
                task.drain()
            except P.ShimError as e:
                log.error("task %s/%s: reading the last events: %s", namespace, id, e)
            try:
                task.client.shutdown()
            except P.ShimError as e:
                log.error("task %s/%s: shim shutdown: %s", namespace, id, e)
            cgroup_parent = _namespace_cgroup(task.bundle, namespace)
            self._remove_bundle(task.bundle)
            try:
                os.unlink(self.socket_path(namespace, id))
            except FileNotFoundError:
                pass
            with self._lock:
                self._tasks.pop(key, None)
                if cgroup_parent and not any(ns == namespace for ns, _ in [*self._tasks, *self._busy]
                                             if (ns, _) != key):
                    _remove_empty_cgroup(cgroup_parent)
            if task.thread is not None:
                task.thread.join(POLL_SECONDS * 3)
            return status
        finally:
            with self._lock:
                self._busy.discard(key)

    def _remove_bundle(self, bundle: str) -> None:
        from skiff.images.mount import MNT_DETACH, unmount_all
        rootfs = os.path.join(bundle, "rootfs")
        if os.path.isdir(rootfs):
            unmount_all(rootfs)
            if os.path.ismount(rootfs):
                unmount_all(rootfs, MNT_DETACH)
        def vanished(func: object, path: str, exc: tuple) -> None:
            # the shim removes its own files (shim.pid, address, socket) as it exits, which
            # may race with this removal; anything else is a real error
            if not isinstance(exc[1], FileNotFoundError):
                raise exc[1]

        shutil.rmtree(bundle, onerror=vanished)
        parent = os.path.dirname(bundle)
        try:
            os.rmdir(parent)  # the namespace's directory, when it was the last task
        except OSError:
            pass

    # --- events ---------------------------------------------------------------------------

    def publish_event(self, task: Task, ev: Event) -> None:
        from skiff.containerd.convert import ts_ns
        E = self.api.ev_task
        cid = task.id
        f = ev.fields
        t = ev.type
        msg: Any
        if t == "create":
            msg = E.TaskCreate(container_id=cid, bundle=str(f.get("bundle", task.bundle)),
                               pid=int(f.get("pid", 0)))
            stdin, stdout, stderr, terminal = task.io
            msg.io.stdin, msg.io.stdout, msg.io.stderr, msg.io.terminal = stdin, stdout, stderr, terminal
            topic = "/tasks/create"
        elif t == "start":
            msg, topic = E.TaskStart(container_id=cid, pid=int(f.get("pid", 0))), "/tasks/start"
        elif t == "exec_added":
            msg, topic = E.TaskExecAdded(container_id=cid, exec_id=str(f.get("exec_id", ""))), "/tasks/exec-added"
        elif t == "exec_started":
            msg, topic = (E.TaskExecStarted(container_id=cid, exec_id=str(f.get("exec_id", "")),
                                            pid=int(f.get("pid", 0))), "/tasks/exec-started")
        elif t == "paused":
            msg, topic = E.TaskPaused(container_id=cid), "/tasks/paused"
        elif t == "resumed":
            msg, topic = E.TaskResumed(container_id=cid), "/tasks/resumed"
        elif t == "oom":
            msg, topic = E.TaskOOM(container_id=cid), "/tasks/oom"
        elif t in ("exit", "delete"):
            exec_id = str(f.get("exec_id", "")) or cid  # containerd names the init by the container id
            cls = E.TaskExit if t == "exit" else E.TaskDelete
            msg = cls(container_id=cid, id=exec_id, pid=int(f.get("pid", 0)),
                      exit_status=int(f.get("exit_status", 0)))
            msg.exited_at.CopyFrom(ts_ns(int(f.get("exited_at", 0))))
            topic = "/tasks/exit" if t == "exit" else "/tasks/delete"
        else:
            log.warning("task %s/%s: shim event of unknown type %r ignored", task.namespace, cid, t)
            return
        self._publish(task.namespace, topic, msg)

    # --- restart --------------------------------------------------------------------------

    def recover(self) -> list[Task]:
        """Reconnect the shims that outlived a previous manager; clean up what a lost shim
        left. Returns the tasks found."""
        found: list[Task] = []
        if not os.path.isdir(self.root):
            return found
        for ns in sorted(os.listdir(self.root)):
            nsdir = os.path.join(self.root, ns)
            if not os.path.isdir(nsdir):
                continue
            for id in sorted(os.listdir(nsdir)):
                bundle = os.path.join(nsdir, id)
                try:
                    task = self._recover_one(ns, id, bundle)
                except Exception as e:  # one broken bundle must not stop the daemon
                    log.error("task %s/%s: recovery failed: %s", ns, id, e)
                    continue
                if task is not None:
                    found.append(task)
            try:
                os.rmdir(nsdir)
            except OSError:
                pass
        return found

    def _recover_one(self, ns: str, id: str, bundle: str) -> Task | None:
        try:
            with open(os.path.join(bundle, "runtime.json")) as f:
                runtime = RuntimeChoice.from_json(json.load(f))
        except (OSError, ValueError) as e:
            log.error("task %s/%s: %s has no readable runtime.json (%s); removing it", ns, id, bundle, e)
            self._remove_bundle(bundle)
            return None
        try:
            client = find_shim(bundle)
            info: ConnectInfo = client.connect()
        except P.ShimError as e:
            log.warning("task %s/%s: shim lost (%s); cleaning up", ns, id, e)
            self._cleanup_lost(ns, id, bundle, runtime)
            return None
        if info.deleted or info.init is None:
            log.info("task %s/%s: already deleted in its shim; finishing the clean-up", ns, id)
            try:
                client.shutdown()
            except P.ShimError as e:
                log.error("task %s/%s: shim shutdown: %s", ns, id, e)
            self._remove_bundle(bundle)
            return None
        task = Task(self, ns, id, bundle, client, runtime, info.init.pid)
        task.io = (info.init.stdin, info.init.stdout, info.init.stderr, info.init.terminal)
        with self._lock:
            self._tasks[(ns, id)] = task
        task.start_pump()
        log.info("task %s/%s: reconnected to shim %d (init %s)", ns, id, info.shim_pid, info.init.status)
        return task

    def _cleanup_lost(self, ns: str, id: str, bundle: str, runtime: RuntimeChoice) -> None:
        try:
            with open(os.path.join(bundle, "shim.pid")) as f:
                shim_pid = int(f.read().strip())
        except (OSError, ValueError):
            shim_pid = 0
        if _alive(shim_pid):
            # alive but not answering: it would hold the container; stop it
            try:
                os.kill(shim_pid, 9)
            except ProcessLookupError:
                pass
        cmd = [runtime.binary, *(["--root", runtime.root] if runtime.root else []), *runtime.args,
               "delete", "--force", id]
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode != 0 and "not exist" not in p.stderr and "does not exist" not in p.stderr:
            log.warning("task %s/%s: %s: %s", ns, id, " ".join(cmd), p.stderr.strip())
        self._remove_bundle(bundle)
        try:
            os.unlink(self.socket_path(ns, id))
        except FileNotFoundError:
            pass
        from skiff.containerd.convert import ts_ns
        msg = self.api.ev_task.TaskExit(container_id=id, id=id, exit_status=LOST_SHIM_EXIT_STATUS)
        msg.exited_at.CopyFrom(ts_ns(time.time_ns()))
        self._publish(ns, "/tasks/exit", msg)

    def close(self) -> None:
        """Stop the event pumps and drop the connections; the shims (and containers) stay."""
        self.stopping = True
        with self._lock:
            tasks = list(self._tasks.values())
        for t in tasks:
            if t.thread is not None:
                t.thread.join(POLL_SECONDS * 3)
            t.client.close()
        if os.path.exists(self.zygote):
            try:
                stop_zygote(self.zygote)
            except P.ShimError as e:
                if e.code != P.UNAVAILABLE:  # Unavailable: none listens (never started, or gone)
                    log.error("stopping the shim zygote: %s", e)


def process_state(task: Task, exec_id: str = "") -> ProcessState:
    try:
        return task.client.state(exec_id)
    except P.ShimError as e:
        what = f"process {exec_id} of task {task.id}" if exec_id else f"task {task.id}"
        raise rpc_error(e, what) from None
