"""Starting shims: detaching, the subreaper bit, and the zygote.

``daemonize(body)``: the caller forks A; A starts a new session and forks S, then exits; the
caller reaps A (so S is re-parented away from it, to init or the nearest subreaper) and reads
one JSON line S writes on a pipe when it is ready or failed. S never holds the caller's stdio:
its fds 0 and 1 are /dev/null and 2 its log file before it reports.

The zygote (``run_zygote``) is a long-lived, single-threaded process that has imported
everything a shim runs (and froze those objects out of the garbage collector's reach, so the
collector of a child never writes to the pages it shares). For each ``spawn`` request it
double-forks the same way; the shim S answers the request on the connection itself. A shim
forked so shares the zygote's pages copy-on-write and costs only what it dirties (see
``bench/shim_pss.py``). The zygote keeps no record of its shims: they are orphans of init as
soon as they exist, and outlive the zygote and the manager.

Zygote protocol (same framing as the shim API, one request per connection):
``{"method": "spawn", "params": {ShimConfig fields}}`` -> ``{"pid", "socket"}`` or
``{"error": {"code", "message"}}``; ``{"method": "ping"}`` -> ``{"pid"}``;
``{"method": "stop"}`` -> ``{}`` and the zygote exits.
"""

from __future__ import annotations

import os
import sys

from skiff import fastjson
from skiff.shim import protocol as P
from skiff.shim.config import ConfigError, ShimConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
_libc = None


def _prctl(option: int, arg: int | bytes) -> None:
    global _libc
    import ctypes

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl({option}): {os.strerror(e)}")


def become_subreaper() -> None:
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_name(name: str) -> None:
    _prctl(PR_SET_NAME, name.encode()[:15])


def redirect_stdio(log_path: str) -> None:
    """fds 0 and 1 to /dev/null, 2 appended to ``log_path`` (/dev/null if it cannot be opened)."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        log = os.dup(null)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log, 2)
    for fd in (null, log):
        if fd > 2:
            os.close(fd)


def run_shim(cfg: ShimConfig, report: Callable[[dict], None]) -> int:
    """Become the shim of ``cfg`` (in a process of its own, already in its own session) and
    serve until shut down. ``report`` is called once: ready or the error."""
    from skiff.shim.server import Shim

    redirect_stdio(os.path.join(cfg.state_dir, "shim.log"))
    try:
        become_subreaper()
        os.chdir(cfg.state_dir)
        shim = Shim(cfg)
        shim.setup()
    except P.ShimError as e:
        report({"error": {"code": e.code, "message": e.message}})
        return 1
    except OSError as e:
        report({"error": {"code": P.INTERNAL, "message": f"shim {cfg.id}: {e.strerror or e}"}})
        return 1
    report({"pid": os.getpid(), "socket": cfg.socket})
    try:
        shim.run()
    finally:
        shim.teardown()
    return 0


def _write_line(fd: int, msg: dict) -> None:
    data = P.encode(msg)
    while data:
        data = data[os.write(fd, data):]


def daemonize(body: Callable[[Callable[[dict], None]], int]) -> dict:
    """Run ``body(report)`` in a detached grandchild; return what it reported."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)

            def report(msg: dict) -> None:
                _write_line(w, msg)
                os.close(w)

            code = body(report)
        except BaseException as e:
            try:
                _write_line(w, {"error": {"code": P.INTERNAL, "message": f"{type(e).__name__}: {e}"}})
            except OSError:
                pass  # already reported; the traceback goes to the log below
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    chunks: list[bytes] = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    line = b"".join(chunks).split(b"\n", 1)[0]
    if not line:
        return {"error": {"code": P.INTERNAL, "message": "the shim exited before it was ready"}}
    return P.decode(line)


# --- the zygote -------------------------------------------------------------------------------

def _preload() -> None:
    """Everything a forked shim will run, imported (and the libc handle made) once."""
    import ctypes
    import fcntl  # noqa: F401
    import termios  # noqa: F401
    import traceback  # noqa: F401

    from skiff.shim import oom, runtime_fork, server, stdio  # noqa: F401

    missing = runtime_fork.preload()  # skiff-runc's modules: shims run it in a fork, not an exec
    if missing:
        sys.stderr.write(f"skiff-shim zygote: runtime modules not preloaded: {', '.join(missing)}\n")

    global _libc
    _libc = ctypes.CDLL(None, use_errno=True)


def run_zygote(socket_path: str, pid_file: str, report: Callable[[dict], None]) -> int:
    import _socket
    import gc

    redirect_stdio(os.path.splitext(pid_file)[0] + ".log" if pid_file else os.devnull)
    _preload()
    ls = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        if os.path.exists(socket_path):
            probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
            try:
                probe.connect(socket_path)
            except OSError:
                os.unlink(socket_path)
            else:
                raise OSError(f"zygote socket {socket_path}: another process listens on it")
            finally:
                probe.close()
        ls.bind(socket_path)
        os.chmod(socket_path, 0o600)
        ls.listen(64)
        if pid_file:
            with open(pid_file, "w") as f:
                f.write(str(os.getpid()))
    except OSError as e:
        ls.close()
        report({"error": {"code": P.INTERNAL, "message": f"zygote on {socket_path}: {e.strerror or e}"}})
        return 1
    report({"pid": os.getpid(), "socket": socket_path})
    try:
        while True:
            cfd, _addr = ls._accept()  # type: ignore[attr-defined]
            conn = _socket.socket(fileno=cfd)
            try:
                if not _serve_zygote_request(ls, conn, gc):
                    return 0
            except Exception as e:
                sys.stderr.write(f"skiff-shim zygote: request failed: {type(e).__name__}: {e}\n")
            finally:
                conn.close()
    finally:
        ls.close()
        for p in (socket_path, pid_file):
            if p:
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass


def _serve_zygote_request(ls, conn, gc) -> bool:
    """Answer one request; False when told to stop."""
    conn.settimeout(10)
    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return True
        buf += chunk
    try:
        req = P.decode(buf.split(b"\n", 1)[0])
    except ValueError as e:
        conn.sendall(P.encode({"error": {"code": P.INVALID_ARGUMENT, "message": f"not JSON: {e}"}}))
        return True
    method = req.get("method")
    if method == "ping":
        conn.sendall(P.encode({"pid": os.getpid()}))
        return True
    if method == "stop":
        conn.sendall(P.encode({}))
        return False
    if method != "spawn":
        conn.sendall(P.encode({"error": {"code": P.UNIMPLEMENTED, "message": f"zygote: no method {method!r}"}}))
        return True
    try:
        cfg = ShimConfig.from_dict(req.get("params") or {})
    except ConfigError as e:
        conn.sendall(P.encode({"error": {"code": P.INVALID_ARGUMENT, "message": str(e)}}))
        return True
    gc.collect()
    gc.freeze()  # the child's collector leaves the shared objects (and their pages) alone
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ls.close()
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            conn.settimeout(None)
            set_name("skiff-shim")

            def report(msg: dict) -> None:
                conn.sendall(P.encode(msg))
                conn.close()

            code = run_shim(cfg, report)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.waitpid(pid, 0)
    return True


def zygote_request(socket_path: str, msg: dict, timeout: float = 30.0) -> dict:
    """Send one request to a zygote and return its answer (for the command line and tests;
    ShimClient has its own)."""
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        s.connect(socket_path)
        s.sendall(P.encode(msg))
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    if not buf:
        raise OSError(f"zygote {socket_path}: closed the connection without an answer")
    return fastjson.loads(buf.split(b"\n", 1)[0])
