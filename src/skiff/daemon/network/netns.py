"""Persistent network namespaces for containers: ``<exec-root>/netns/<container id>``.

skiffd is multi-threaded, so it never calls unshare itself. The namespace lives on
through the bind mount until :func:`remove` unmounts it (and the container's processes leave it).
It never forks itself (the gRPC library skiffd uses aborts in a forked child): the new namespace
is made by a long-lived single-threaded helper process (:mod:`skiff.daemon.network.nshelper`,
spawned once) or, when that cannot run, by util-linux ``unshare --net=<file>``, and work
inside one (netlink sockets) is done by :func:`run_in` in a dedicated thread that joins it with
``setns`` (per-thread for network namespaces) and leaves it again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("skiff.daemon.network")
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"

CLONE_NEWNET = 0x40000000
MNT_DETACH = 0x2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_setns = _libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_umount2 = _libc.umount2
_umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


class NetnsError(Exception):
    pass


def is_mounted(path: str) -> bool:
    """True when ``path`` is a bind-mounted network namespace (nsfs)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] == path:
                    return True
    except OSError:
        return False
    return False


def create(path: str) -> None:
    """Create a new network namespace bound to ``path``: by the namespace helper process
    (:data:`maker`), or util-linux ``unshare`` when the helper cannot run."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    if maker.create(path):
        return
    create_with_unshare(path)


def create_with_unshare(path: str) -> None:
    """``unshare --net=<path> true``: a new process per namespace (an empty file first)."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    try:
        r = subprocess.run([UNSHARE, f"--net={path}", "true"], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
    except BaseException:
        os.unlink(path)
        raise
    if r.returncode != 0:
        os.unlink(path)
        raise NetnsError(f"network namespace {path}: unshare failed: {r.stderr.strip()}")


class Maker:
    """The client of :mod:`skiff.daemon.network.nshelper`: a long-lived single-threaded process
    that makes namespaces without a fork and exec each. Started at the first request; one request
    at a time (worker threads share it); ended by :meth:`close` (or by skiffd's death: EOF)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._broken = ""          # why the helper cannot be used (then: unshare)

    def _start(self) -> subprocess.Popen[str] | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            log.error("network namespace helper (pid %d) exited with status %s; starting another",
                      self._proc.pid, self._proc.returncode)
            self._proc = None
        if self._broken:
            return None
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "skiff.daemon.network.nshelper"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1, close_fds=True)
        except OSError as e:
            self._broken = str(e)
            log.error("network namespace helper: cannot start it (%s); using %s", e, UNSHARE)
            return None
        return self._proc

    def start(self) -> None:
        """Start the helper now (at daemon start), so that the first container does not wait."""
        with self._lock:
            self._start()

    def create(self, path: str) -> bool:
        """True when the helper made the namespace; False when it cannot be used (the caller
        falls back to unshare). A refusal of the helper is raised as NetnsError."""
        with self._lock:
            proc = self._start()
            if proc is None:
                return False
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(path + "\n")
                proc.stdin.flush()
                answer = proc.stdout.readline().rstrip("\n")
            except OSError as e:
                answer = ""
                log.error("network namespace helper (pid %d): %s", proc.pid, e)
            if not answer:            # it died: the next request starts another one
                proc.wait()
                return False
        if answer == "ok":
            return True
        raise NetnsError(answer.removeprefix("error "))

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            log.error("network namespace helper (pid %d) did not exit at EOF; killed", proc.pid)
        if proc.stdout is not None:
            proc.stdout.close()


maker = Maker()


def run_in(path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new dedicated thread that has joined the network namespace ``path``
    (setns CLONE_NEWNET is per thread); sockets ``fn`` opens belong to that namespace. The
    thread goes back to skiffd's namespace before it ends, and is never reused."""
    result: list[Any] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _setns(target, CLONE_NEWNET) != 0:
                        e = ctypes.get_errno()
                        raise NetnsError(f"network namespace {path}: setns failed: {os.strerror(e)}")
                finally:
                    os.close(target)
                try:
                    result.append(fn())
                finally:
                    if _setns(own, CLONE_NEWNET) != 0:
                        log.critical("could not return a thread to skiffd's network namespace")
            finally:
                os.close(own)
        except BaseException as e:
            error.append(e)

    t = threading.Thread(target=body, name="netns-" + os.path.basename(path)[:12], daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def remove(path: str) -> None:
    """Unmount and delete a namespace file made by :func:`create`; a missing one is fine."""
    if is_mounted(path) and _umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"network namespace {path}: unmount failed: {os.strerror(err)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
