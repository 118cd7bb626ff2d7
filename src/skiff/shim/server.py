"""The shim proper: one container, one single-threaded process, one poll loop.

The loop watches: the API socket and its connections, a self-pipe woken by SIGCHLD (the shim
is the container's subreaper: every exit below it, and every runtime command it ran, is reaped
here), the pty masters and stdin FIFOs of terminal processes, and the OOM source.

Runtime commands run one at a time from a queue, spawned with ``posix_spawn`` (no fork of the
shim's memory; skiff-runc in a zygote-forked shim runs in a fork instead, see
``skiff.shim.runtime_fork``) and finished when reaped; the request that asked for one is
answered then, so the loop keeps serving ``state``, ``wait``, ``events`` and the terminals meanwhile.

Exits that are reaped before their pid is known (an exec'd process that ends before
``exec --pid-file`` is read) are kept in a bounded table and matched when the pid is learned.
"""

from __future__ import annotations

import _signal
import _socket
import errno
import os
import select
import time

from skiff import fastjson
from skiff.shim import protocol as P
from skiff.shim import runtime_fork
from skiff.shim.protocol import ShimError
from skiff.shim.stdio import ProcIO

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from skiff.shim.config import ShimConfig
    from skiff.shim.oom import OomWatch

POLLIN = select.POLLIN
POLLOUT = select.POLLOUT
POLLHUP = select.POLLHUP
POLLERR = select.POLLERR
POLLNVAL = select.POLLNVAL
SIGCHLD = 17
SIGKILL = 9
MAX_EVENTS = 1024
MAX_UNKNOWN_EXITS = 1024
TERMINAL_DRAIN = 2.0  # seconds a terminal may stay open after its process exited
VERSION = 1


def now_ns() -> int:
    return time.time_ns()


class Proc:
    """The init (``exec_id == ""``) or an exec process."""

    __slots__ = ("exec_id", "pid", "status", "exit_status", "exited_at", "io", "waiters", "spec",
                 "reaped", "finished", "on_exit", "master_done", "drain_timer", "starting")

    def __init__(self, exec_id: str, io: ProcIO, spec: dict | None = None) -> None:
        self.exec_id = exec_id
        self.pid = 0
        self.status = "creating"     # creating, created, running, paused, stopped, deleted
        self.exit_status = 0
        self.exited_at = 0           # ns since the epoch; 0 while running
        self.io = io
        self.waiters: list[tuple[Conn, object]] = []
        self.spec = spec
        self.reaped = False          # the kernel said it exited
        self.finished = False        # the exit is published (its terminal output drained)
        self.on_exit: list[Callable[[], None]] = []
        self.master_done = False
        self.drain_timer: list | None = None
        self.starting = False        # its start is running: its exit is published after it

    def to_json(self) -> dict:
        return {"exec_id": self.exec_id, "pid": self.pid,
                "status": "running" if self.reaped and not self.finished else self.status,
                "terminal": self.io.terminal, "stdin": self.io.stdin, "stdout": self.io.stdout,
                "stderr": self.io.stderr, "exit_status": self.exit_status,
                "exited_at": self.exited_at}

    def exit_json(self) -> dict:
        return {"exec_id": self.exec_id, "pid": self.pid, "exit_status": self.exit_status,
                "exited_at": self.exited_at}


class Conn:
    __slots__ = ("fd", "rbuf", "wbuf", "closed")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.closed = False


class Op:
    """One runtime command."""

    __slots__ = ("args", "stdio", "capture", "done", "pid", "out", "err", "log_pos", "after_spawn",
                 "req")

    def __init__(self, args: list[str], stdio: list[int] | None, capture: bool,
                 done: Callable[[int, bytes, str], None],
                 after_spawn: Callable[[], None] | None, req: tuple[Conn, object] | None) -> None:
        self.args = args
        self.stdio = stdio
        self.capture = capture
        self.done = done
        self.pid = 0
        self.out = -1
        self.err = -1
        self.log_pos = 0
        self.after_spawn = after_spawn
        self.req = req  # the request answered by ``done``: failed if ``done`` itself fails


def _str(params: dict, key: str, required: bool = False) -> str:
    v = params.get(key, "")
    if v is None:
        v = ""
    if not isinstance(v, str):
        raise ShimError(P.INVALID_ARGUMENT, f"{key}: expected a string, got {type(v).__name__}")
    if required and not v:
        raise ShimError(P.INVALID_ARGUMENT, f"{key}: required")
    return v


def _int(params: dict, key: str, default: int) -> int:
    v = params.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ShimError(P.INVALID_ARGUMENT, f"{key}: expected an integer, got {v!r}")
    return v


def _bool(params: dict, key: str) -> bool:
    v = params.get(key, False)
    if not isinstance(v, bool):
        raise ShimError(P.INVALID_ARGUMENT, f"{key}: expected true or false, got {v!r}")
    return v


class Shim:
    def __init__(self, cfg: ShimConfig) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.poll = select.poll()
        self.handlers: dict[int, Callable[[int, int], None]] = {}
        self.masks: dict[int, int] = {}
        self.conns: dict[int, Conn] = {}
        self.lsock: _socket.socket | None = None
        self.wake_r = self.wake_w = -1
        self.stopping = False
        # the container
        self.init: Proc | None = None
        self.execs: dict[str, Proc] = {}
        self.by_pid: dict[int, Proc] = {}
        self.deleted = False
        self.own_pidns = True
        self.runtime = ""
        self.runtime_root = ""
        self.runtime_args: list[str] = []
        self.oom: OomWatch | None = None
        self.oom_error = ""
        self.file_seq = 0            # names of per-request files (exec specs, console sockets)
        # runtime commands
        self.ops: list[Op] = []
        self.unknown_exits: dict[int, tuple[int, int]] = {}
        # events
        self.events: list[dict] = []
        self.seq = 0
        self.dropped = 0
        self.ev_waiters: list[tuple[Conn, object, int]] = []
        self.timers: list[list] = []

    # --- paths and logging ----------------------------------------------------------------

    def path(self, name: str) -> str:
        return os.path.join(self.cfg.state_dir, name)

    def log(self, level: str, msg: str) -> None:
        t = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
        try:
            os.write(2, f"{ts} {level} skiff-shim[{self.id}] {msg}\n".encode(errors="replace"))
        except OSError:
            pass  # fd 2 is our log file; nowhere else to report that it failed

    def log_exception(self, what: str) -> None:
        import traceback

        self.log("error", f"{what}: {traceback.format_exc()}")

    # --- set-up and teardown --------------------------------------------------------------

    def setup(self) -> None:
        """Listen on the API socket, install the SIGCHLD wake-up, write the pid and address
        files. OSError/ShimError say what failed."""
        path = self.cfg.socket
        if os.path.exists(path):
            probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale: nobody listens there
            else:
                raise ShimError(P.ALREADY_EXISTS, f"shim socket {path}: another process listens on it")
            finally:
                probe.close()
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            s.bind(path)
            os.chmod(path, 0o600)
            s.listen(128)
        except OSError as e:
            s.close()
            raise OSError(e.errno, f"listen on shim socket {path}: {e.strerror}") from None
        s.setblocking(False)
        self.lsock = s
        self.register(s.fileno(), POLLIN, self._on_accept)
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
        _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
        _signal.signal(SIGCHLD, _noop)
        _signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.register(self.wake_r, POLLIN, self._on_sigchld)
        _write_atomic(self.path("shim.pid"), str(os.getpid()))
        _write_atomic(self.path("address"), path)
        self.log("info", f"listening on {path} (namespace {self.cfg.namespace}, pid {os.getpid()})")

    def teardown(self) -> None:
        for conn in list(self.conns.values()):
            self._flush_blocking(conn)
            self._close_conn(conn)
        if self.lsock is not None:
            self.lsock.close()
        for name in ("shim.pid", "address", "init.pid"):
            _unlink(self.path(name))
        _unlink(self.cfg.socket)
        self.log("info", "exiting")

    # --- the loop -------------------------------------------------------------------------

    def register(self, fd: int, mask: int, handler: Callable[[int, int], None]) -> None:
        if fd in self.masks:
            self.poll.modify(fd, mask)
        else:
            self.poll.register(fd, mask)
        self.masks[fd] = mask
        self.handlers[fd] = handler

    def set_mask(self, fd: int, mask: int) -> None:
        if self.masks.get(fd) != mask:
            self.poll.modify(fd, mask)
            self.masks[fd] = mask

    def unregister(self, fd: int) -> None:
        if fd in self.masks:
            self.poll.unregister(fd)
            del self.masks[fd]
            del self.handlers[fd]

    def add_timer(self, delay: float, fn: Callable[[], None]) -> list:
        t = [time.monotonic() + delay, fn]
        self.timers.append(t)
        return t

    def run(self) -> None:
        while not self.stopping:
            timeout = None
            if self.timers:
                timeout = max(0, int((min(t[0] for t in self.timers) - time.monotonic()) * 1000) + 1)
            for fd, ev in self.poll.poll(timeout):
                h = self.handlers.get(fd)
                if h is None:
                    continue
                try:
                    h(fd, ev)
                except Exception:
                    self.log_exception(f"handling fd {fd} (events {ev:#x})")
            if self.timers:
                now = time.monotonic()
                due = [t for t in self.timers if t[0] <= now]
                for t in due:
                    self.timers.remove(t)
                    try:
                        t[1]()
                    except Exception:
                        self.log_exception("timer")

    # --- connections ----------------------------------------------------------------------

    def _on_accept(self, fd: int, ev: int) -> None:
        assert self.lsock is not None
        while True:
            try:
                cfd, _addr = self.lsock._accept()  # type: ignore[attr-defined]  # accept4(SOCK_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.log("error", f"accept on {self.cfg.socket}: {e.strerror}")
                return
            os.set_blocking(cfd, False)
            conn = Conn(cfd)
            self.conns[cfd] = conn
            self.register(cfd, POLLIN, self._on_conn)

    def _on_conn(self, fd: int, ev: int) -> None:
        conn = self.conns[fd]
        if ev & POLLOUT:
            self._flush(conn)
            if conn.closed:
                return
        if ev & (POLLIN | POLLHUP | POLLERR):
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_conn(conn)
                return
            conn.rbuf += data
            for line in P.split_lines(conn.rbuf):
                self._dispatch(conn, line)
                if conn.closed:
                    return
            if len(conn.rbuf) > P.MAX_LINE:
                self.send(conn, P.error_reply(None, P.INVALID_ARGUMENT,
                                              f"request longer than {P.MAX_LINE} bytes"))
                self._flush_blocking(conn)
                self._close_conn(conn)

    def send(self, conn: Conn, msg: dict) -> None:
        if conn.closed:
            return
        conn.wbuf += P.encode(msg)
        self._flush(conn)

    def reply(self, conn: Conn, rid: object, result: dict) -> None:
        self.send(conn, {"id": rid, "result": result})

    def fail(self, conn: Conn, rid: object, code: str, message: str) -> None:
        self.send(conn, P.error_reply(rid, code, message))

    def _flush(self, conn: Conn) -> None:
        while conn.wbuf:
            try:
                n = os.write(conn.fd, conn.wbuf)
            except BlockingIOError:
                break
            except OSError:
                self._close_conn(conn)
                return
            del conn.wbuf[:n]
        self.set_mask(conn.fd, POLLIN | (POLLOUT if conn.wbuf else 0))

    def _flush_blocking(self, conn: Conn) -> None:
        if conn.closed or not conn.wbuf:
            return
        os.set_blocking(conn.fd, True)
        try:
            while conn.wbuf:
                del conn.wbuf[:os.write(conn.fd, conn.wbuf)]
        except OSError:
            pass  # the peer went away: nothing more to tell it
        finally:
            os.set_blocking(conn.fd, False)

    def _close_conn(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.unregister(conn.fd)
        del self.conns[conn.fd]
        os.close(conn.fd)
        for proc in self._procs():
            proc.waiters = [w for w in proc.waiters if w[0] is not conn]
        self.ev_waiters = [w for w in self.ev_waiters if w[0] is not conn]

    def _procs(self) -> list[Proc]:
        return ([self.init] if self.init is not None else []) + list(self.execs.values())

    # --- dispatch -------------------------------------------------------------------------

    def _dispatch(self, conn: Conn, line: bytes) -> None:
        try:
            req = P.decode(line)
        except ValueError as e:
            self.send(conn, P.error_reply(None, P.INVALID_ARGUMENT, f"request is not valid JSON: {e}"))
            return
        rid = req.get("id")
        method = req.get("method")
        params = req.get("params")
        if params is None:
            params = {}
        if not isinstance(method, str) or not method.isidentifier():
            self.fail(conn, rid, P.INVALID_ARGUMENT, f"method: expected a name, got {method!r}")
            return
        if not isinstance(params, dict):
            self.fail(conn, rid, P.INVALID_ARGUMENT, "params: expected an object")
            return
        handler = getattr(self, "m_" + method, None)
        if handler is None:
            self.fail(conn, rid, P.UNIMPLEMENTED, f"method {method!r} is not implemented by skiff-shim")
            return
        try:
            result = handler(conn, rid, params)
        except ShimError as e:
            self.fail(conn, rid, e.code, e.message)
        except Exception as e:
            self.log_exception(f"{method} {params!r}")
            self.fail(conn, rid, P.INTERNAL, f"{method}: {type(e).__name__}: {e}")
        else:
            if result is not None:
                self.reply(conn, rid, result)

    def _proc(self, params: dict) -> Proc:
        eid = _str(params, "exec_id")
        if eid:
            p = self.execs.get(eid)
            if p is None:
                raise ShimError(P.NOT_FOUND, f"container {self.id}: exec process {eid!r} not found")
            return p
        if self.init is None:
            raise ShimError(P.NOT_FOUND, f"container {self.id}: not created")
        if self.deleted:
            raise ShimError(P.NOT_FOUND, f"container {self.id}: deleted")
        return self.init

    # --- runtime commands -----------------------------------------------------------------

    def runtime_op(self, args: list[str], done: Callable[[int, bytes, str], None], *,
                   stdio: list[int] | None = None, capture: bool = True,
                   after_spawn: Callable[[], None] | None = None,
                   req: tuple[Conn, object] | None = None) -> None:
        """Queue ``runtime <global flags> args``; ``done(exit code, stdout, error message)``
        answers ``req``. ``stdio``: fds 0-2 of the runtime (default /dev/null in, captured out
        and err)."""
        self.ops.append(Op(args, stdio, capture, done, after_spawn, req))
        if len(self.ops) == 1:
            self._spawn_next()

    def _argv(self, args: list[str]) -> list[str]:
        argv = [self.runtime]
        if self.runtime_root:
            argv += ["--root", self.runtime_root]
        argv += ["--log", self.path("log.json"), "--log-format", "json", *self.runtime_args, *args]
        return argv

    def _spawn_next(self) -> None:
        while self.ops:
            op = self.ops[0]
            try:
                self._spawn(op)
                return
            except OSError as e:
                self.ops.pop(0)
                self._op_finished(op, -1, f"run {self.runtime} {op.args[0]}: {e.strerror or e}")

    def _spawn(self, op: Op) -> None:
        null = -1
        try:
            try:
                op.log_pos = os.stat(self.path("log.json")).st_size
            except FileNotFoundError:
                op.log_pos = 0
            if op.stdio is not None:
                fds = list(op.stdio)
            else:
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                op.out = os.memfd_create("runtime-stdout", os.MFD_CLOEXEC)
                op.err = os.memfd_create("runtime-stderr", os.MFD_CLOEXEC)
                fds = [null, op.out, op.err]
            actions = [(os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(fds)]
            argv = self._argv(op.args)
            if runtime_fork.can_fork(self.runtime):  # skiff-runc, already imported: no exec
                op.pid = runtime_fork.fork_runtime(argv, fds)
            else:
                spawn = os.posix_spawn if "/" in self.runtime else os.posix_spawnp
                op.pid = spawn(self.runtime, argv, os.environ, file_actions=actions,
                               setsigdef=(_signal.SIGPIPE, _signal.SIGINT, _signal.SIGHUP, SIGCHLD,
                                          _signal.SIGTERM),
                               setsigmask=())
        except BaseException:
            for fd in (op.out, op.err):
                if fd >= 0:
                    os.close(fd)
            op.out = op.err = -1
            raise
        finally:
            if null >= 0:
                os.close(null)
        if op.after_spawn is not None:
            op.after_spawn()

    def _op_reaped(self, op: Op, wstatus: int) -> None:
        self.ops.pop(0)
        code = _exit_code(wstatus)
        out = b""
        errtext = ""
        if op.out >= 0:
            out = _read_all(op.out)
            errtext = _read_all(op.err).decode(errors="replace")
            os.close(op.out)
            os.close(op.err)
        msg = "" if code == 0 else self._runtime_error(op.log_pos, errtext, code)
        self._op_finished(op, code, msg, out)
        self._spawn_next()

    def _op_finished(self, op: Op, code: int, msg: str, out: bytes = b"") -> None:
        try:
            op.done(code, out, msg)
        except Exception as e:
            self.log_exception(f"finishing runtime {op.args[0]}")
            if op.req is not None:
                self.fail(op.req[0], op.req[1], P.INTERNAL, f"after runtime {op.args[0]}: {type(e).__name__}: {e}")

    def _runtime_error(self, pos: int, stderr: str, code: int) -> str:
        """The runtime's last error: the last ``{"level":"error"}`` line it appended to
        ``--log``, else the last line of its stderr, else its exit status."""
        try:
            with open(self.path("log.json"), "rb") as f:
                f.seek(pos)
                lines = f.read().splitlines()
        except OSError:
            lines = []
        for line in reversed(lines):
            try:
                rec = fastjson.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("level") == "error" and rec.get("msg"):
                return str(rec["msg"])
        tail = [ln for ln in stderr.splitlines() if ln.strip()]
        if tail:
            return tail[-1]
        return f"{os.path.basename(self.runtime)} exited with status {code}"

    # --- reaping --------------------------------------------------------------------------

    def _on_sigchld(self, fd: int, ev: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass
        self.reap()

    def reap(self) -> None:
        while True:
            try:
                pid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.ops and self.ops[0].pid == pid:
                self._op_reaped(self.ops[0], wstatus)
                continue
            code, at = _exit_code(wstatus), now_ns()
            proc = self.by_pid.get(pid)
            if proc is None:
                self.unknown_exits[pid] = (code, at)
                if len(self.unknown_exits) > MAX_UNKNOWN_EXITS:
                    del self.unknown_exits[next(iter(self.unknown_exits))]
                continue
            self._exited(proc, code, at)

    def _pid_known(self, proc: Proc) -> None:
        early = self.unknown_exits.pop(proc.pid, None)
        if early is not None:
            self._exited(proc, *early)
        elif not proc.reaped:
            self.by_pid[proc.pid] = proc

    def _exited(self, proc: Proc, code: int, at: int) -> None:
        self.by_pid.pop(proc.pid, None)
        proc.reaped = True
        proc.exit_status = code
        proc.exited_at = at
        if proc is self.init:
            self._poll_oom()  # an OOM kill is reported before the exit it caused
            if not self.own_pidns:
                # the init's death does not end the others without a pid namespace of its own
                self.runtime_op(["kill", "--all", self.id, str(SIGKILL)], self._killed_all)
        if not proc.starting:
            self._after_exit(proc)

    def _after_exit(self, proc: Proc) -> None:
        """Publish a recorded exit: now, or once its terminal is drained."""
        if proc.io.master >= 0 and not proc.master_done:
            proc.drain_timer = self.add_timer(TERMINAL_DRAIN, lambda: self._finish_exit(proc))
        else:
            self._finish_exit(proc)

    def _killed_all(self, code: int, out: bytes, msg: str) -> None:
        if code != 0 and "not running" not in msg and "does not exist" not in msg:
            self.log("error", f"kill --all after the init's exit: {msg}")

    def _finish_exit(self, proc: Proc) -> None:
        if proc.finished:
            return
        proc.finished = True
        if proc.drain_timer is not None and proc.drain_timer in self.timers:
            self.timers.remove(proc.drain_timer)
        proc.drain_timer = None
        if proc.status != "deleted":
            proc.status = "stopped"
        if proc.io.terminal:
            self._close_terminal_if_drained(proc)
        self.emit("exit", **proc.exit_json())
        waiters, proc.waiters = proc.waiters, []
        for conn, rid in waiters:
            self.reply(conn, rid, proc.exit_json())
        callbacks, proc.on_exit = proc.on_exit, []
        for cb in callbacks:
            cb()

    # --- events ---------------------------------------------------------------------------

    def emit(self, kind: str, **fields: object) -> None:
        self.seq += 1
        ev = {"seq": self.seq, "type": kind, "id": self.id, "time": now_ns()}
        ev.update(fields)
        self.events.append(ev)
        if len(self.events) > MAX_EVENTS:
            del self.events[0]
            self.dropped += 1
        waiters, self.ev_waiters = self.ev_waiters, []
        for conn, rid, after in waiters:
            self.reply(conn, rid, self._events_after(after))

    def _events_after(self, after: int) -> dict:
        return {"events": [e for e in self.events if e["seq"] > after], "seq": self.seq,
                "dropped": self.dropped}

    # --- OOM ------------------------------------------------------------------------------

    def _watch_oom(self, pid: int) -> None:
        from skiff.shim import oom

        try:
            self.oom = oom.watch(pid)
        except OSError as e:
            self.oom_error = f"OOM events unavailable: {e}"
            self.log("warning", self.oom_error)
            return
        self.register(self.oom.fd, self.oom.events, self._on_oom)

    def _on_oom(self, fd: int, ev: int) -> None:
        w = self.oom
        if w is None:
            return
        n = w.fired()
        if n is None:
            self.unregister(w.fd)
            w.close()
            self.oom = None
            return
        for _ in range(n):
            self.emit("oom")

    def _poll_oom(self) -> None:
        if self.oom is None:
            return
        ready = select.poll()
        ready.register(self.oom.fd, self.oom.events)
        if ready.poll(0):
            self._on_oom(self.oom.fd, 0)

    def _close_oom(self) -> None:
        if self.oom is not None:
            self.unregister(self.oom.fd)
            self.oom.close()
            self.oom = None

    # --- terminals ------------------------------------------------------------------------

    def _console_path(self) -> str:
        """A fresh path per terminal process: several may wait in the runtime queue."""
        self.file_seq += 1
        p = f"{self.cfg.socket}.console{self.file_seq}"
        if len(p.encode()) > 107:
            p = f"/tmp/.skiff-shim-{os.getpid()}.console{self.file_seq}"
        return p

    def _console_listen(self) -> tuple[_socket.socket, str]:
        path = self._console_path()
        _unlink(path)
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            s.bind(path)
            os.chmod(path, 0o600)
            s.listen(1)
        except OSError as e:
            s.close()
            _unlink(path)
            raise ShimError(P.INTERNAL, f"console socket {path}: {e.strerror}") from None
        return s, path

    def _console_receive(self, s: _socket.socket, path: str) -> int:
        """The pty master the runtime sent (it connected and sent before it exited)."""
        try:
            s.setblocking(False)
            try:
                cfd, _addr = s._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                raise OSError(errno.ENOTCONN, "the runtime did not connect") from None
            c = _socket.socket(fileno=cfd)
            try:
                c.setblocking(False)
                size = 4
                _msg, anc, _flags, _addr = c.recvmsg(4096, _socket.CMSG_SPACE(4 * size))
            finally:
                c.close()
            fds: list[int] = []
            for level, typ, data in anc:
                if level == _socket.SOL_SOCKET and typ == _socket.SCM_RIGHTS:
                    fds += [int.from_bytes(data[i:i + 4], "little", signed=True)
                            for i in range(0, len(data) - len(data) % 4, 4)]
            for extra in fds[1:]:
                os.close(extra)
            if not fds:
                raise OSError(errno.EBADMSG, "no file descriptor in the message")
            os.set_inheritable(fds[0], False)
            os.set_blocking(fds[0], False)
            return fds[0]
        except OSError as e:
            raise ShimError(P.UNKNOWN, f"console socket {path}: receiving the pty master: "
                                       f"{e.strerror or e}") from None
        finally:
            s.close()
            _unlink(path)

    def _attach_terminal(self, proc: Proc, master: int) -> None:
        io = proc.io
        io.master = master
        self._update_terminal(proc)

    def _update_terminal(self, proc: Proc) -> None:
        io = proc.io
        if io.master >= 0:
            mask = (0 if io.out_pending else POLLIN) | (POLLOUT if io.in_pending else 0)
            if mask:
                self.register(io.master, mask, lambda fd, ev: self._on_master(proc, ev))
            else:
                self.unregister(io.master)
        if io.stdin_reader >= 0:
            if io.in_pending or io.master < 0:
                self.unregister(io.stdin_reader)
            else:
                self.register(io.stdin_reader, POLLIN, lambda fd, ev: self._on_stdin(proc, ev))
        if io.stdout_writer >= 0:
            if io.out_pending:
                self.register(io.stdout_writer, POLLOUT, lambda fd, ev: self._on_stdout(proc, ev))
            else:
                self.unregister(io.stdout_writer)

    def _on_master(self, proc: Proc, ev: int) -> None:
        io = proc.io
        if ev & POLLOUT and io.in_pending:
            self._write_master(proc)
        if ev & (POLLIN | POLLHUP | POLLERR) and not io.out_pending:
            try:
                data = os.read(io.master, 65536)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""  # EIO: every slave fd is closed
            if data == b"":
                self._master_closed(proc)
                return
            if data:
                io.out_pending = data
                self._write_stdout(proc)
        elif ev & (POLLHUP | POLLERR) and io.in_pending:
            io.in_pending = b""  # nobody will read it: the terminal hung up
        self._update_terminal(proc)

    def _write_master(self, proc: Proc) -> None:
        io = proc.io
        try:
            n = os.write(io.master, io.in_pending)
            io.in_pending = io.in_pending[n:]
        except BlockingIOError:
            pass
        except OSError:
            io.in_pending = b""

    def _write_stdout(self, proc: Proc) -> None:
        io = proc.io
        if io.stdout_writer < 0:
            io.out_pending = b""
            return
        try:
            n = os.write(io.stdout_writer, io.out_pending)
            io.out_pending = io.out_pending[n:]
        except BlockingIOError:
            pass
        except OSError as e:
            self.log("error", f"process {proc.exec_id or 'init'}: write to {io.stdout}: {e.strerror}")
            io.out_pending = b""

    def _on_stdout(self, proc: Proc, ev: int) -> None:
        self._write_stdout(proc)
        self._update_terminal(proc)
        if proc.master_done:
            self._close_terminal_if_drained(proc)

    def _on_stdin(self, proc: Proc, ev: int) -> None:
        io = proc.io
        try:
            data = os.read(io.stdin_reader, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            io.in_pending += data
        else:
            # end of input: only once closeio dropped our own write end
            self.unregister(io.stdin_reader)
            os.close(io.stdin_reader)
            io.stdin_reader = -1
            io.stdin_eof = True
            if io.master >= 0:
                io.write_veof()
        if io.master >= 0 and io.in_pending:
            self._write_master(proc)
        self._update_terminal(proc)

    def _master_closed(self, proc: Proc) -> None:
        io = proc.io
        proc.master_done = True
        self.unregister(io.master)
        os.close(io.master)
        io.master = -1
        io.in_pending = b""
        self._update_terminal(proc)
        if proc.reaped:
            self._finish_exit(proc)
        self._close_terminal_if_drained(proc)

    def _close_terminal_if_drained(self, proc: Proc) -> None:
        """Once the master is closed and its output written: close our stdout write end, so
        the reader sees EOF."""
        io = proc.io
        if proc.master_done and not io.out_pending and io.stdout_writer >= 0:
            self.unregister(io.stdout_writer)
            os.close(io.stdout_writer)
            io.stdout_writer = -1

    # --- methods --------------------------------------------------------------------------

    def m_connect(self, conn: Conn, rid: object, params: dict) -> dict:
        return {"version": VERSION, "shim_pid": os.getpid(), "id": self.id,
                "namespace": self.cfg.namespace, "bundle": self.cfg.bundle,
                "state_dir": self.cfg.state_dir, "address": self.cfg.address,
                "runtime": self.runtime, "runtime_root": self.runtime_root,
                "deleted": self.deleted,
                "init": self.init.to_json() if self.init is not None else None,
                "execs": [p.to_json() for p in self.execs.values()],
                "events_seq": self.seq,
                "oom": (f"{self.oom.kind}:{self.oom.dir}" if self.oom is not None else self.oom_error)}

    def m_state(self, conn: Conn, rid: object, params: dict) -> dict:
        st = self._proc(params).to_json()
        st["id"] = self.id
        st["bundle"] = self.cfg.bundle
        return st

    def m_create(self, conn: Conn, rid: object, params: dict) -> None:
        if self.deleted:
            raise ShimError(P.FAILED_PRECONDITION,
                            f"container {self.id}: deleted; a new container needs a new shim")
        if self.init is not None:
            raise ShimError(P.ALREADY_EXISTS, f"container {self.id}: already created")
        bundle = _str(params, "bundle") or self.cfg.bundle
        if not os.path.isabs(bundle):
            raise ShimError(P.INVALID_ARGUMENT, f"bundle {bundle!r}: not an absolute path")
        try:
            config = fastjson.load_file(os.path.join(bundle, "config.json"))
        except OSError as e:
            raise ShimError(P.INVALID_ARGUMENT, f"bundle {bundle}: config.json: {e.strerror}") from None
        except ValueError as e:
            raise ShimError(P.INVALID_ARGUMENT, f"bundle {bundle}: config.json: {e}") from None
        runtime = _str(params, "runtime", required=True)
        runtime_args = params.get("runtime_args") or []
        if not isinstance(runtime_args, list) or not all(isinstance(a, str) for a in runtime_args):
            raise ShimError(P.INVALID_ARGUMENT, "runtime_args: expected a list of strings")
        terminal = _bool(params, "terminal")
        io = ProcIO(_str(params, "stdin"), _str(params, "stdout"), _str(params, "stderr"), terminal)
        try:
            io.open()
        except (OSError, ValueError) as e:
            raise ShimError(P.INVALID_ARGUMENT, f"container {self.id}: stdio: {e}") from None
        self.runtime, self.runtime_root, self.runtime_args = runtime, _str(params, "runtime_root"), runtime_args
        self.own_pidns = _own_pid_namespace(config)
        proc = Proc("", io)
        self.init = proc
        console = None
        args = ["create", "--bundle", bundle, "--pid-file", self.path("init.pid")]
        if terminal:
            try:
                console = self._console_listen()
            except ShimError:
                io.close()
                self.init = None
                raise
            args += ["--console-socket", console[1]]
        if _bool(params, "no_pivot"):
            args.append("--no-pivot")
        if _bool(params, "no_new_keyring"):
            args.append("--no-new-keyring")
        args.append(self.id)
        _unlink(self.path("init.pid"))

        def done(code: int, out: bytes, msg: str) -> None:
            err = ""
            if code != 0:
                err = f"OCI runtime create failed: {msg}"
            else:
                try:
                    proc.pid = _read_pid(self.path("init.pid"))
                    if console is not None:
                        self._attach_terminal(proc, self._console_receive(*console))
                except (OSError, ValueError, ShimError) as e:
                    err = f"container {self.id}: after create: {getattr(e, 'message', e)}"
                    self.runtime_op(["delete", "--force", self.id], self._log_failure("delete --force"))
            if err:
                if console is not None:
                    console[0].close()
                    _unlink(console[1])
                io.close()
                self.init = None
                self.fail(conn, rid, P.UNKNOWN, err)
                return
            proc.status = "created"
            self._watch_oom(proc.pid)
            self._pid_known(proc)
            self.emit("create", pid=proc.pid, bundle=bundle)
            self.reply(conn, rid, {"pid": proc.pid})

        self.runtime_op(args, done, stdio=io.child, capture=False, after_spawn=io.release_child,
                        req=(conn, rid))
        return None

    def _log_failure(self, what: str) -> Callable[[int, bytes, str], None]:
        def done(code: int, out: bytes, msg: str) -> None:
            if code != 0:
                self.log("error", f"runtime {what} {self.id}: {msg}")
        return done

    def m_start(self, conn: Conn, rid: object, params: dict) -> None:
        proc = self._proc(params)
        if proc.status != "created":
            raise ShimError(P.FAILED_PRECONDITION,
                            f"container {self.id}: {self._name(proc)} is {proc.status}, not created")
        if proc.exec_id:
            self._start_exec(conn, rid, proc)
            return None

        def done(code: int, out: bytes, msg: str) -> None:
            proc.starting = False
            if code != 0:
                self.fail(conn, rid, P.UNKNOWN, f"OCI runtime start failed: {msg}")
            else:
                if proc.status == "created":
                    proc.status = "running"
                self.emit("start", pid=proc.pid)
                self.reply(conn, rid, {"pid": proc.pid})
            if proc.reaped:
                self._after_exit(proc)

        proc.starting = True
        self.runtime_op(["start", self.id], done, req=(conn, rid))
        return None

    def _name(self, proc: Proc) -> str:
        return f"exec process {proc.exec_id!r}" if proc.exec_id else "its init"

    def m_exec(self, conn: Conn, rid: object, params: dict) -> dict:
        eid = _str(params, "exec_id", required=True)
        init = self._proc({})
        if init.finished or init.reaped or init.status not in ("created", "running", "paused"):
            raise ShimError(P.FAILED_PRECONDITION, f"container {self.id}: not running")
        if eid in self.execs:
            raise ShimError(P.ALREADY_EXISTS, f"container {self.id}: exec process {eid!r} already exists")
        spec = params.get("spec")
        if not isinstance(spec, dict):
            raise ShimError(P.INVALID_ARGUMENT, "spec: expected the OCI process object")
        terminal = _bool(params, "terminal")
        io = ProcIO(_str(params, "stdin"), _str(params, "stdout"), _str(params, "stderr"), terminal)
        proc = Proc(eid, io, dict(spec, terminal=terminal))
        proc.status = "created"
        self.execs[eid] = proc
        self.emit("exec_added", exec_id=eid)
        return {}

    def _start_exec(self, conn: Conn, rid: object, proc: Proc) -> None:
        init = self.init
        assert init is not None
        if init.reaped or init.status not in ("created", "running"):
            raise ShimError(P.FAILED_PRECONDITION,
                            f"container {self.id}: cannot exec in a {'stopped' if init.reaped else init.status} container")
        io = proc.io
        try:
            io.open()
        except (OSError, ValueError) as e:
            raise ShimError(P.INVALID_ARGUMENT, f"exec process {proc.exec_id!r}: stdio: {e}") from None
        self.file_seq += 1
        spec_path = self.path(f"exec-{self.file_seq}.json")
        pid_path = self.path(f"exec-{self.file_seq}.pid")
        console = None
        try:
            _write_atomic(spec_path, fastjson.dumps(proc.spec))
            if io.terminal:
                console = self._console_listen()
        except BaseException:
            io.close()
            _unlink(spec_path)
            raise
        args = ["exec", "--process", spec_path, "--detach", "--pid-file", pid_path]
        if console is not None:
            args += ["--console-socket", console[1]]
        args.append(self.id)

        def done(code: int, out: bytes, msg: str) -> None:
            proc.starting = False
            _unlink(spec_path)
            err = ""
            if code != 0:
                err = f"OCI runtime exec failed: {msg}"
            else:
                try:
                    proc.pid = _read_pid(pid_path)
                    if console is not None:
                        self._attach_terminal(proc, self._console_receive(*console))
                except (OSError, ValueError, ShimError) as e:
                    err = f"exec process {proc.exec_id!r}: after exec: {getattr(e, 'message', e)}"
                    if proc.pid:
                        try:
                            os.kill(proc.pid, SIGKILL)
                        except ProcessLookupError:
                            pass
            _unlink(pid_path)
            if err:
                if console is not None:
                    console[0].close()
                    _unlink(console[1])
                io.close()
                if proc.pid:
                    self._pid_known(proc)  # the kill above is reaped as its exit
                else:
                    proc.reaped, proc.exit_status, proc.exited_at = True, 255, now_ns()
                    proc.finished = True
                    proc.status = "stopped"
                    waiters, proc.waiters = proc.waiters, []
                    for c, r in waiters:
                        self.reply(c, r, proc.exit_json())
                self.fail(conn, rid, P.UNKNOWN, err)
                return
            if proc.status == "created":
                proc.status = "running"
            self.emit("exec_started", exec_id=proc.exec_id, pid=proc.pid)
            self.reply(conn, rid, {"pid": proc.pid})
            self._pid_known(proc)  # an exit reaped before the pid was known comes now

        self.runtime_op(args, done, stdio=io.child, capture=False, after_spawn=io.release_child,
                        req=(conn, rid))

    def m_kill(self, conn: Conn, rid: object, params: dict) -> None | dict:
        proc = self._proc(params)
        sig = _int(params, "signal", 15)
        if not 0 <= sig <= 64:
            raise ShimError(P.INVALID_ARGUMENT, f"signal: {sig} is not a signal number")
        kill_all = _bool(params, "all")
        if proc.status == "creating":
            raise ShimError(P.FAILED_PRECONDITION, f"container {self.id}: still being created")
        if proc.exec_id:
            if proc.reaped:
                raise ShimError(P.NOT_FOUND, f"exec process {proc.exec_id!r}: process already finished")
            if proc.status == "created":
                raise ShimError(P.FAILED_PRECONDITION, f"exec process {proc.exec_id!r}: not started")
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                raise ShimError(P.NOT_FOUND, f"exec process {proc.exec_id!r}: process already finished") from None
            return {}
        if proc.reaped and not kill_all:
            raise ShimError(P.NOT_FOUND, f"container {self.id}: process already finished")

        def done(code: int, out: bytes, msg: str) -> None:
            if code == 0:
                self.reply(conn, rid, {})
            elif proc.reaped and not kill_all:
                self.fail(conn, rid, P.NOT_FOUND, f"container {self.id}: process already finished")
            else:
                self.fail(conn, rid, P.UNKNOWN, f"OCI runtime kill failed: {msg}")

        self.runtime_op(["kill", *(["--all"] if kill_all else []), self.id, str(sig)], done, req=(conn, rid))
        return None

    def m_delete(self, conn: Conn, rid: object, params: dict) -> None | dict:
        proc = self._proc(params)
        if proc.exec_id:
            if proc.status != "created" and not proc.finished:
                raise ShimError(P.FAILED_PRECONDITION,
                                f"exec process {proc.exec_id!r}: cannot delete a running process")
            del self.execs[proc.exec_id]
            self._release_proc(proc)
            proc.status = "deleted"
            return proc.exit_json()
        if proc.status == "creating":
            raise ShimError(P.FAILED_PRECONDITION, f"container {self.id}: still being created")
        if proc.status in ("running", "paused") and not proc.finished:
            raise ShimError(P.FAILED_PRECONDITION,
                            f"container {self.id}: cannot delete a running process (kill it first)")
        force = proc.status == "created" and not proc.reaped

        def deleted() -> None:
            for e in list(self.execs.values()):
                self._release_proc(e)
            self.execs.clear()
            self._release_proc(proc)
            self._close_oom()
            proc.status = "deleted"
            self.deleted = True
            _unlink(self.path("init.pid"))
            self.emit("delete", **proc.exit_json())
            self.reply(conn, rid, proc.exit_json())

        def done(code: int, out: bytes, msg: str) -> None:
            if code != 0 and "does not exist" not in msg:
                self.fail(conn, rid, P.UNKNOWN, f"OCI runtime delete failed: {msg}")
                return
            if proc.finished:
                deleted()
            else:
                proc.on_exit.append(deleted)  # --force killed it; its exit comes next

        self.runtime_op(["delete", *(["--force"] if force else []), self.id], done, req=(conn, rid))
        return None

    def _release_proc(self, proc: Proc) -> None:
        for fd in (proc.io.master, proc.io.stdin_reader, proc.io.stdout_writer):
            if fd >= 0:
                self.unregister(fd)
        proc.io.close()
        self.by_pid.pop(proc.pid, None)
        if proc.drain_timer is not None and proc.drain_timer in self.timers:
            self.timers.remove(proc.drain_timer)

    def m_wait(self, conn: Conn, rid: object, params: dict) -> None | dict:
        proc = self._proc(params)
        if proc.finished:
            return proc.exit_json()
        proc.waiters.append((conn, rid))
        return None

    def m_events(self, conn: Conn, rid: object, params: dict) -> None | dict:
        after = _int(params, "after", 0)
        if after > 0:
            self.events = [e for e in self.events if e["seq"] > after]  # acknowledged
        res = self._events_after(after)
        if res["events"] or not _bool(params, "wait"):
            return res
        self.ev_waiters.append((conn, rid, after))
        return None

    def _running_init(self, what: str, want: tuple[str, ...] = ("running",)) -> Proc:
        proc = self._proc({})
        if proc.reaped or proc.status not in want:
            state = "stopped" if proc.reaped else proc.status
            raise ShimError(P.FAILED_PRECONDITION, f"container {self.id}: cannot {what} a {state} container")
        return proc

    def _simple(self, conn: Conn, rid: object, args: list[str], what: str,
                then: Callable[[bytes], dict] | None = None) -> None:
        def done(code: int, out: bytes, msg: str) -> None:
            if code != 0:
                self.fail(conn, rid, P.UNKNOWN, f"OCI runtime {what} failed: {msg}")
                return
            try:
                result = then(out) if then is not None else {}
            except ShimError as e:
                self.fail(conn, rid, e.code, e.message)
                return
            self.reply(conn, rid, result)
        self.runtime_op(args, done, req=(conn, rid))

    def m_pids(self, conn: Conn, rid: object, params: dict) -> None:
        self._running_init("list the processes of", ("created", "running", "paused"))

        def then(out: bytes) -> dict:
            try:
                pids = fastjson.loads(out or b"[]")
            except ValueError as e:
                raise ShimError(P.UNKNOWN, f"runtime ps: output is not JSON: {e}") from None
            if not isinstance(pids, list):
                raise ShimError(P.UNKNOWN, f"runtime ps: expected a list of pids, got {out[:100]!r}")
            execs = {p.pid: p.exec_id for p in self.execs.values() if p.pid}
            return {"pids": [{"pid": p, "exec_id": execs.get(p, "")} for p in pids]}

        self._simple(conn, rid, ["ps", "--format", "json", self.id], "ps", then)

    def m_pause(self, conn: Conn, rid: object, params: dict) -> None:
        proc = self._running_init("pause")

        def then(out: bytes) -> dict:
            if not proc.reaped:
                proc.status = "paused"
            self.emit("paused")
            return {}

        self._simple(conn, rid, ["pause", self.id], "pause", then)

    def m_resume(self, conn: Conn, rid: object, params: dict) -> None:
        proc = self._running_init("resume", ("paused",))

        def then(out: bytes) -> dict:
            if proc.status == "paused":
                proc.status = "running"
            self.emit("resumed")
            return {}

        self._simple(conn, rid, ["resume", self.id], "resume", then)

    def m_update(self, conn: Conn, rid: object, params: dict) -> None:
        resources = params.get("resources")
        if not isinstance(resources, dict):
            raise ShimError(P.INVALID_ARGUMENT, "resources: expected the OCI linux.resources object")
        self._running_init("update", ("created", "running", "paused"))
        self.file_seq += 1
        path = self.path(f"resources-{self.file_seq}.json")
        _write_atomic(path, fastjson.dumps(resources))

        def done(code: int, out: bytes, msg: str) -> None:
            _unlink(path)
            if code != 0:
                self.fail(conn, rid, P.UNKNOWN, f"OCI runtime update failed: {msg}")
            else:
                self.reply(conn, rid, {})

        self.runtime_op(["update", "--resources", path, self.id], done, req=(conn, rid))

    def m_stats(self, conn: Conn, rid: object, params: dict) -> None:
        self._running_init("get the statistics of", ("created", "running", "paused"))

        def then(out: bytes) -> dict:
            line = out.strip().split(b"\n", 1)[0]
            try:
                doc = fastjson.loads(line)
            except ValueError as e:
                raise ShimError(P.UNKNOWN, f"runtime events --stats: output is not JSON: {e}") from None
            data = doc.get("data") if isinstance(doc, dict) else None
            if not isinstance(data, dict):
                raise ShimError(P.UNKNOWN, f"runtime events --stats: no data in {line[:200]!r}")
            return {"stats": data}

        self._simple(conn, rid, ["events", "--stats", self.id], "events --stats", then)

    def m_resize(self, conn: Conn, rid: object, params: dict) -> dict:
        proc = self._proc(params)
        width, height = _int(params, "width", 0), _int(params, "height", 0)
        if not (0 <= width < 65536 and 0 <= height < 65536):
            raise ShimError(P.INVALID_ARGUMENT, f"window size {width}x{height}: out of range")
        if not proc.io.terminal:
            raise ShimError(P.FAILED_PRECONDITION, f"container {self.id}: {self._name(proc)} has no terminal")
        if proc.io.master < 0:
            raise ShimError(P.FAILED_PRECONDITION,
                            f"container {self.id}: {self._name(proc)} has no open terminal "
                            f"({'exited' if proc.reaped else 'not started'})")
        import fcntl
        import termios

        fcntl.ioctl(proc.io.master, termios.TIOCSWINSZ,
                    height.to_bytes(2, "little") + width.to_bytes(2, "little") + bytes(4))
        return {}

    def m_closeio(self, conn: Conn, rid: object, params: dict) -> dict:
        proc = self._proc(params)
        proc.io.close_stdin()
        return {}

    def m_shutdown(self, conn: Conn, rid: object, params: dict) -> dict:
        if self.init is not None and not self.deleted:
            raise ShimError(P.FAILED_PRECONDITION,
                            f"container {self.id}: not deleted (delete it before shutting its shim down)")
        self.stopping = True
        return {}


def _noop(signum: int, frame: object) -> None:
    return None


def _exit_code(wstatus: int) -> int:
    code = os.waitstatus_to_exitcode(wstatus)
    return code if code >= 0 else 128 - code


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks: list[bytes] = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _read_pid(path: str) -> int:
    with open(path, "rb") as f:
        data = f.read().strip()
    try:
        pid = int(data)
    except ValueError:
        raise ValueError(f"pid file {path}: {data[:40]!r} is not a pid") from None
    if pid <= 0:
        raise ValueError(f"pid file {path}: {pid} is not a pid")
    return pid


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _own_pid_namespace(config: dict) -> bool:
    """A pid namespace of the container's own (new, not joined by path)."""
    linux = config.get("linux") if isinstance(config, dict) else None
    for ns in (linux or {}).get("namespaces") or []:
        if isinstance(ns, dict) and ns.get("type") == "pid":
            return not ns.get("path")
    return False
