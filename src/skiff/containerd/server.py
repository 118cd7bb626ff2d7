"""The gRPC server: a thread pool serving containerd's services on a Unix socket.

Start-up: the API modules are loaded (generated first if needed), the stores opened, the
pid file written and locked (a second daemon on the same pid file fails at once), the socket
bound with mode 0660 (and the configured owner), then the services answer. SIGTERM or SIGINT
stop it gracefully: event subscriptions end, new RPCs are refused, running ones get a grace
period, then the stores are closed and the socket and pid file removed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import stat
import threading
from typing import Any

from skiff.containerd.config import Config
from skiff.containerd.pool import ElasticThreadPool

log = logging.getLogger("skiff.containerd")

STOP_GRACE_SECONDS = 10.0
SOCKET_MODE = 0o660


class ServerError(Exception):
    """The server cannot start: says what and why."""


def _prepare_socket_path(path: str) -> None:
    """Create the socket's directory; remove a stale socket, refuse a live one or a non-socket."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o711, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ServerError(f"socket {path}: exists and is not a socket; not removing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ServerError(f"socket {path}: cannot check whether it is in use: {e.strerror}") from e
        os.unlink(path)  # nobody listens: left by a daemon that died
        return
    finally:
        probe.close()
    raise ServerError(f"socket {path}: another server is listening on it")


class PidFile:
    """A locked pid file: held for the daemon's lifetime, removed at the end."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", mode=0o711, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self.fd, 32, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise ServerError(f"pid file {path}: locked by a running skiff-containerd (pid {other or '?'})") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(self.fd)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        finally:
            os.close(self.fd)


class Server:
    """skiff-containerd's server; ``start`` then ``wait`` (or ``stop``)."""

    def __init__(self, config: Config, *, pid_file: str | None = None) -> None:
        self.config = config
        self.pid_file_path = pid_file or config.pid_file
        self.core: Any = None
        self.api: Any = None
        self.grpc_server: Any = None
        self.services: dict[str, Any] = {}
        self._pid: PidFile | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False
        self._bound = False  # the socket file is ours to remove

    def start(self) -> None:
        import grpc

        from skiff.containerd import protos
        from skiff.containerd.core import Core
        from skiff.containerd.services import register_all

        cfg = self.config
        self.api = protos.load()
        self.api.load_all()  # every service is served; event filters find types by name
        self._pid = PidFile(self.pid_file_path)
        try:
            self.core = Core(cfg)
            self.core.set_event_decoder(self._decode_event)
            self.grpc_server = grpc.server(
                ElasticThreadPool(max_workers=cfg.max_workers, thread_name_prefix="grpc"),
                options=[("grpc.max_receive_message_length", cfg.max_recv_message_size),
                         ("grpc.max_send_message_length", cfg.max_send_message_size),
                         ("grpc.so_reuseport", 0)])
            self.services = register_all(self.grpc_server, self.core, self.api)
            _prepare_socket_path(cfg.address)
            old = os.umask(0o117)  # the socket is born 0660, never wider
            try:
                port = self.grpc_server.add_insecure_port(f"unix:{cfg.address}")
            except RuntimeError as e:
                raise ServerError(f"socket {cfg.address}: cannot listen: {e}") from e
            finally:
                os.umask(old)
            if port == 0:
                raise ServerError(f"socket {cfg.address}: cannot listen")
            self._bound = True
            os.chmod(cfg.address, SOCKET_MODE)
            if (cfg.uid, cfg.gid) != (os.geteuid(), os.getegid()):
                try:
                    os.chown(cfg.address, cfg.uid, cfg.gid)
                except OSError as e:
                    raise ServerError(f"socket {cfg.address}: cannot give it to uid {cfg.uid} gid {cfg.gid} "
                                      f"(grpc.uid, grpc.gid): {e.strerror}") from e
            try:  # before serving, as containerd collects after start: what a crash left behind
                self.core.gc.collect()
            except Exception as e:  # the daemon serves anyway; the next collection tries again
                log.error("gc at start: %s", e)
            self.grpc_server.start()
            self.core.gc.start()
        except BaseException:
            self._cleanup()
            raise
        log.info("serving containerd 1.6 API on unix:%s (root %s, state %s)", cfg.address, cfg.root, cfg.state)

    def _decode_event(self, any_pb: Any) -> Any:
        """An event's ``Any`` as its message (for subscription filters on event fields)."""
        if any_pb is None:
            return None
        from google.protobuf import symbol_database
        name = any_pb.type_url.rsplit("/", 1)[-1]
        try:
            cls = symbol_database.Default().GetSymbol(name)
        except KeyError:
            return None
        msg = cls()
        try:
            msg.ParseFromString(any_pb.value)
        except Exception as e:  # an undecodable event matches no event.* filter
            log.warning("event %s: cannot decode for filtering: %s", name, e)
            return None
        return msg

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: Any) -> None:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            threading.Thread(target=self.stop, name="shutdown", daemon=True).start()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def wait(self) -> None:
        while not self._stopped.wait(3600):
            pass

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
        try:
            health = self.services.get("Health")
            if health is not None:
                health.set_serving(False)
            if self.core is not None:
                self.core.exchange.close()  # event streams end: they would hold the grace period
            if self.grpc_server is not None:
                self.grpc_server.stop(grace).wait()
        finally:
            self._cleanup()
            log.info("stopped")
            self._stopped.set()

    def _cleanup(self) -> None:
        errors = []
        if self.core is not None:
            try:
                self.core.close()
            except Exception as e:
                errors.append(f"closing the stores: {e}")
            self.core = None
        try:
            st = os.lstat(self.config.address)
            if stat.S_ISSOCK(st.st_mode) and self._bound:
                os.unlink(self.config.address)
                self._bound = False
        except FileNotFoundError:
            pass
        except OSError as e:
            errors.append(f"removing socket {self.config.address}: {e.strerror}")
        if self._pid is not None:
            try:
                self._pid.remove()
            except OSError as e:
                errors.append(f"removing pid file {self.pid_file_path}: {e.strerror}")
            self._pid = None
        for err in errors:
            log.error("shutdown: %s", err)
