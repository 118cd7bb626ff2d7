"""The manager's side of the shim API: ``ShimClient`` and ``start_shim``.

Blocking and thread-safe: each call takes an idle connection from a small pool (or opens one),
sends one request and reads its answer, so calls from several threads run side by side; a
long-poll (``wait``, ``events(wait=True)``) simply holds its connection until answered. Errors
are ``ShimError`` with the code the shim sent (containerd's gRPC status names), or
``Unavailable`` when the shim cannot be reached and ``DeadlineExceeded`` on a timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from skiff.shim import protocol as P
from skiff.shim.protocol import ShimError

_DEFAULT = object()


@dataclass
class ProcessState:
    exec_id: str
    pid: int
    status: str            # creating, created, running, paused, stopped, deleted
    terminal: bool
    stdin: str
    stdout: str
    stderr: str
    exit_status: int
    exited_at: int         # ns since the epoch; 0 while it runs

    @classmethod
    def from_json(cls, d: dict) -> ProcessState:
        return cls(d.get("exec_id", ""), d.get("pid", 0), d.get("status", ""), d.get("terminal", False),
                   d.get("stdin", ""), d.get("stdout", ""), d.get("stderr", ""),
                   d.get("exit_status", 0), d.get("exited_at", 0))


@dataclass
class ExitStatus:
    exec_id: str
    pid: int
    exit_status: int
    exited_at: int         # ns since the epoch

    @classmethod
    def from_json(cls, d: dict) -> ExitStatus:
        return cls(d.get("exec_id", ""), d.get("pid", 0), d.get("exit_status", 0), d.get("exited_at", 0))


@dataclass
class Event:
    """``type``: create, start, exec_added, exec_started, paused, resumed, oom, exit, delete.
    ``fields``: the rest (pid, exec_id, exit_status, exited_at, bundle, as the type has them)."""

    seq: int
    type: str
    id: str
    time: int
    fields: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict) -> Event:
        rest = {k: v for k, v in d.items() if k not in ("seq", "type", "id", "time")}
        return cls(d.get("seq", 0), d.get("type", ""), d.get("id", ""), d.get("time", 0), rest)


@dataclass
class EventBatch:
    events: list[Event]
    seq: int               # the last sequence number the shim has given
    dropped: int           # events lost to the queue's bound since the shim started


@dataclass
class ConnectInfo:
    version: int
    shim_pid: int
    id: str
    namespace: str
    bundle: str
    state_dir: str
    address: str
    runtime: str
    runtime_root: str
    deleted: bool
    init: ProcessState | None
    execs: list[ProcessState]
    events_seq: int
    oom: str               # "v1:/dir" / "v2:/dir" being watched, or why OOM events are unavailable

    @classmethod
    def from_json(cls, d: dict) -> ConnectInfo:
        init = d.get("init")
        return cls(d.get("version", 0), d.get("shim_pid", 0), d.get("id", ""), d.get("namespace", ""),
                   d.get("bundle", ""), d.get("state_dir", ""), d.get("address", ""),
                   d.get("runtime", ""), d.get("runtime_root", ""), d.get("deleted", False),
                   ProcessState.from_json(init) if init else None,
                   [ProcessState.from_json(e) for e in d.get("execs") or []],
                   d.get("events_seq", 0), d.get("oom", ""))


@dataclass
class PidInfo:
    pid: int
    exec_id: str           # "" for the init or a process the shim did not start


class _Conn:
    __slots__ = ("sock", "buf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()


class ShimClient:
    """One shim's API. ``timeout``: seconds for an ordinary call (long-polls take their own)."""

    def __init__(self, socket_path: str, *, timeout: float = 60.0, pid: int = 0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.pid = pid
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        self._next_id = 0

    def __repr__(self) -> str:
        return f"ShimClient({self.socket_path!r}, pid={self.pid})"

    # --- transport ------------------------------------------------------------------------

    def _connect(self) -> _Conn:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self.socket_path)
        except OSError as e:
            s.close()
            raise ShimError(P.UNAVAILABLE, f"shim {self.socket_path}: connect: {e.strerror or e}") from None
        return _Conn(s)

    def call(self, method: str, params: dict | None = None, timeout: object = _DEFAULT) -> dict:
        """One request; its result, or ShimError. ``timeout`` None waits for ever."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
            self._next_id += 1
            rid = self._next_id
        if conn is None:
            conn = self._connect()
        t = self.timeout if timeout is _DEFAULT else timeout
        ok = False
        try:
            conn.sock.settimeout(t)  # type: ignore[arg-type]
            try:
                conn.sock.sendall(P.encode({"id": rid, "method": method, "params": params or {}}))
                line = self._read_line(conn)
            except TimeoutError:
                raise ShimError(P.DEADLINE_EXCEEDED,
                                f"shim {self.socket_path}: {method}: no answer in {t} s") from None
            except OSError as e:
                raise ShimError(P.UNAVAILABLE,
                                f"shim {self.socket_path}: {method}: {e.strerror or e}") from None
            try:
                msg = P.decode(line)
            except ValueError as e:
                raise ShimError(P.INTERNAL, f"shim {self.socket_path}: {method}: bad answer: {e}") from None
            if msg.get("id") != rid:
                raise ShimError(P.INTERNAL, f"shim {self.socket_path}: {method}: answer to request "
                                            f"{msg.get('id')!r}, expected {rid}")
            ok = True
        finally:
            if ok:
                with self._lock:
                    self._idle.append(conn)
            else:
                conn.sock.close()
        err = msg.get("error")
        if err is not None:
            raise ShimError(str(err.get("code", P.UNKNOWN)), str(err.get("message", "")))
        result = msg.get("result")
        return result if isinstance(result, dict) else {}

    def _read_line(self, conn: _Conn) -> bytes:
        while True:
            i = conn.buf.find(b"\n")
            if i >= 0:
                line = bytes(conn.buf[:i])
                del conn.buf[:i + 1]
                return line
            chunk = conn.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError(0, "the shim closed the connection")
            conn.buf += chunk

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.sock.close()

    def __enter__(self) -> ShimClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the API --------------------------------------------------------------------------

    def connect(self) -> ConnectInfo:
        info = ConnectInfo.from_json(self.call("connect"))
        self.pid = info.shim_pid
        return info

    def state(self, exec_id: str = "") -> ProcessState:
        return ProcessState.from_json(self.call("state", {"exec_id": exec_id}))

    def create(self, bundle: str, runtime: str, *, runtime_root: str = "",
               runtime_args: list[str] | tuple[str, ...] = (), stdin: str = "", stdout: str = "",
               stderr: str = "", terminal: bool = False, no_pivot: bool = False,
               no_new_keyring: bool = False, timeout: float | None = 300.0) -> int:
        """``runtime create``; returns the init's pid. ``runtime``: a path or a name on PATH;
        ``runtime_args``: extra global flags (``--systemd-cgroup``)."""
        return int(self.call("create", {
            "bundle": bundle, "runtime": runtime, "runtime_root": runtime_root,
            "runtime_args": list(runtime_args), "stdin": stdin, "stdout": stdout, "stderr": stderr,
            "terminal": terminal, "no_pivot": no_pivot, "no_new_keyring": no_new_keyring,
        }, timeout)["pid"])

    def start(self, exec_id: str = "") -> int:
        return int(self.call("start", {"exec_id": exec_id}, 300.0)["pid"])

    def exec(self, exec_id: str, spec: dict, *, stdin: str = "", stdout: str = "", stderr: str = "",
             terminal: bool = False) -> None:
        """Register an exec process (OCI process object ``spec``); ``start(exec_id)`` runs it."""
        self.call("exec", {"exec_id": exec_id, "spec": spec, "stdin": stdin, "stdout": stdout,
                           "stderr": stderr, "terminal": terminal})

    def kill(self, signal: int = 15, *, all: bool = False, exec_id: str = "") -> None:
        self.call("kill", {"signal": int(signal), "all": all, "exec_id": exec_id})

    def delete(self, exec_id: str = "") -> ExitStatus:
        return ExitStatus.from_json(self.call("delete", {"exec_id": exec_id}, 300.0))

    def wait(self, exec_id: str = "", timeout: float | None = None) -> ExitStatus:
        """Block until the process has exited (at once if it has)."""
        return ExitStatus.from_json(self.call("wait", {"exec_id": exec_id}, timeout))

    def pids(self) -> list[PidInfo]:
        return [PidInfo(p["pid"], p.get("exec_id", "")) for p in self.call("pids")["pids"]]

    def pause(self) -> None:
        self.call("pause")

    def resume(self) -> None:
        self.call("resume")

    def update(self, resources: dict) -> None:
        self.call("update", {"resources": resources})

    def resize(self, width: int, height: int, exec_id: str = "") -> None:
        self.call("resize", {"width": int(width), "height": int(height), "exec_id": exec_id})

    def closeio(self, exec_id: str = "") -> None:
        self.call("closeio", {"exec_id": exec_id})

    def stats(self) -> dict:
        """The runtime's ``events --stats`` data (runc's JSON shape)."""
        return self.call("stats")["stats"]

    def events(self, after: int = 0, *, wait: bool = False, timeout: float | None = None) -> EventBatch:
        """Events with a sequence number above ``after``; those up to ``after`` are acknowledged
        (the shim forgets them). ``wait``: block until there is one."""
        res = self.call("events", {"after": after, "wait": wait}, timeout if wait else self.timeout)
        return EventBatch([Event.from_json(e) for e in res.get("events", [])], res.get("seq", 0),
                          res.get("dropped", 0))

    def shutdown(self) -> None:
        """The shim exits (only once the container is deleted, or was never created)."""
        self.call("shutdown")
        self.close()


# --- starting and finding shims ---------------------------------------------------------------

def shim_command() -> list[str]:
    """How to run skiff-shim: the console script beside this Python, else ``python -m``."""
    script = os.path.join(os.path.dirname(sys.executable), "skiff-shim")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "skiff.shim"]


def _run_shim_command(args: list[str], what: str, timeout: float, env: dict | None) -> dict:
    try:
        p = subprocess.run([*shim_command(), *args], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise ShimError(P.DEADLINE_EXCEEDED, f"{what}: skiff-shim did not report in {timeout} s") from None
    if p.returncode != 0:
        msg = p.stderr.decode(errors="replace").strip().splitlines()
        raise ShimError(P.UNKNOWN if p.returncode == 1 else P.INVALID_ARGUMENT,
                        f"{what}: {msg[0] if msg else f'skiff-shim exited with status {p.returncode}'}")
    return P.decode(p.stdout.strip().split(b"\n")[-1])


def _zygote_call(path: str, msg: dict, timeout: float) -> dict:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(P.encode(msg))
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionResetError(0, "closed without an answer")
            buf += chunk
    finally:
        s.close()
    return P.decode(buf.split(b"\n", 1)[0])


def ensure_zygote(socket_path: str, *, pid_file: str = "", timeout: float = 30.0,
                  env: dict | None = None) -> int:
    """The pid of the zygote listening on ``socket_path``, started (detached) if none does.
    Several threads or processes may call this at once: a lock file serializes the start."""
    import fcntl

    lock = os.open(socket_path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return int(_zygote_call(socket_path, {"method": "ping"}, timeout)["pid"])
        except OSError:
            pass  # none is listening: start one
        args = ["zygote", "--socket", socket_path]
        if pid_file:
            args += ["--pid-file", pid_file]
        return int(_run_shim_command(args, f"start the shim zygote on {socket_path}", timeout, env)["pid"])
    finally:
        os.close(lock)


def stop_zygote(socket_path: str, timeout: float = 10.0) -> None:
    """Ask the zygote to exit (its shims stay). Unavailable if none listens."""
    try:
        _zygote_call(socket_path, {"method": "stop"}, timeout)
    except OSError as e:
        raise ShimError(P.UNAVAILABLE, f"shim zygote {socket_path}: {e.strerror or e}") from None


def start_shim(id: str, bundle: str, socket_path: str, *, namespace: str = "default",
               state_dir: str = "", address: str = "", zygote: str = "", timeout: float = 30.0,
               env: dict | None = None) -> ShimClient:
    """Start the shim of container ``id`` and return its client once it listens.

    ``zygote``: the socket of a shim zygote (started first if none listens there): the shim is
    forked from it, sharing its memory; without it ``skiff-shim`` is run and daemonizes.
    ``state_dir`` (default ``bundle``) receives ``shim.pid``, ``address`` and the logs."""
    params = {"id": id, "namespace": namespace, "bundle": bundle, "state_dir": state_dir or bundle,
              "socket": socket_path, "address": address}
    what = f"start the shim of {id}"
    if zygote:
        ensure_zygote(zygote, timeout=timeout, env=env)
        try:
            res = _zygote_call(zygote, {"method": "spawn", "params": params}, timeout)
        except OSError as e:
            raise ShimError(P.UNAVAILABLE, f"{what}: shim zygote {zygote}: {e.strerror or e}") from None
        if "error" in res:
            err = res["error"]
            raise ShimError(str(err.get("code", P.UNKNOWN)), f"{what}: {err.get('message')}")
    else:
        args = []
        for k, v in params.items():
            if v:
                args += ["--" + k.replace("_", "-"), v]
        res = _run_shim_command(args, what, timeout, env)
    return ShimClient(res.get("socket", socket_path), pid=int(res.get("pid", 0)))


def find_shim(state_dir: str, timeout: float = 60.0) -> ShimClient:
    """The shim whose ``address`` file is in ``state_dir`` (after a manager restart).
    NotFound if there is none or its process is gone; the caller then cleans the container
    up with the runtime (``delete --force``)."""
    try:
        with open(os.path.join(state_dir, "address")) as f:
            address = f.read().strip()
        with open(os.path.join(state_dir, "shim.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as e:
        raise ShimError(P.NOT_FOUND, f"no shim recorded in {state_dir}: {e}") from None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise ShimError(P.NOT_FOUND, f"shim {pid} recorded in {state_dir} is gone") from None
    client = ShimClient(address, timeout=timeout, pid=pid)
    info = client.connect()  # Unavailable if nobody answers there
    if info.shim_pid != pid:
        client.close()
        raise ShimError(P.NOT_FOUND, f"{address} is served by pid {info.shim_pid}, not the "
                                     f"shim {pid} recorded in {state_dir}")
    return client


__all__ = ["ConnectInfo", "Event", "EventBatch", "ExitStatus", "PidInfo", "ProcessState",
           "ShimClient", "ShimError", "ensure_zygote", "find_shim", "shim_command",
           "start_shim", "stop_zygote"]
