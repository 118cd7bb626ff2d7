"""Find the containerd skiffd talks to, or start skiff-containerd.

With ``containerd`` configured (daemon.json / ``--containerd``), skiffd only uses that socket:
nothing answering there is an error, as with dockerd. Without it, skiffd uses the
skiff-containerd answering on ``<exec-root>/containerd.sock``, and starts one when none does::

    skiff-containerd --root <data-root>/containerd --state <exec-root>/containerd
                     --address <exec-root>/containerd.sock --ready-fd N

in its own session (stdin /dev/null, output appended to ``<exec-root>/containerd.log``), so that
it outlives skiffd: a skiffd killed with SIGKILL leaves containerd and the containers' shims
running, and the next skiffd finds them there. It is never stopped by skiffd.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import time

from skiff.daemon.api.errors import Unavailable
from skiff.daemon.config import DaemonConfig

log = logging.getLogger("skiff.daemon.containerd")

START_TIMEOUT = 60.0   # seconds for skiff-containerd to answer (it compiles nothing; recovery of many shims)

# skiff-containerd processes this process started (reaped when they exit, never stopped)
_spawned: dict[str, subprocess.Popen[bytes]] = {}


class ContainerdError(Unavailable):
    """containerd cannot be reached or started; says where and why."""


def answers(address: str) -> bool:
    """Whether something accepts connections on the unix socket ``address``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(5)
        s.connect(address)
        return True
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
            return False
        raise ContainerdError(f"containerd socket {address}: cannot connect: {e.strerror}") from None
    finally:
        s.close()


def containerd_binary() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "skiff-containerd")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("skiff-containerd")
    if not found:
        raise ContainerdError("skiff-containerd: not found beside skiffd's Python nor in PATH")
    return found


def paths(cfg: DaemonConfig) -> dict[str, str]:
    """Where the supervised skiff-containerd keeps its things."""
    state = os.path.join(cfg.exec_root, "containerd")
    return {
        "root": os.path.join(cfg.data_root, "containerd"),
        "state": state,
        "address": cfg.containerd_address(),
        "log": os.path.join(cfg.exec_root, "containerd.log"),
        "pidfile": os.path.join(state, "containerd.pid"),
    }


def containerd_pid(cfg: DaemonConfig) -> int | None:
    """The pid of the supervised skiff-containerd from its pid file (None without one)."""
    try:
        with open(paths(cfg)["pidfile"]) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _tail(path: str, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace").strip()
    except OSError as e:
        return f"(cannot read {path}: {e.strerror})"


def spawn(cfg: DaemonConfig) -> int:
    """Start skiff-containerd detached; returns its pid once it serves (ready fd)."""
    p = paths(cfg)
    os.makedirs(cfg.exec_root, mode=0o711, exist_ok=True)
    os.makedirs(cfg.data_root, mode=0o711, exist_ok=True)
    argv = [containerd_binary(), "--root", p["root"], "--state", p["state"], "--address", p["address"]]
    r, w = os.pipe()
    try:
        logf = open(p["log"], "ab")
        try:
            proc = subprocess.Popen([*argv, "--ready-fd", str(w)], stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, pass_fds=(w,), start_new_session=True,
                                    close_fds=True, cwd="/")
        finally:
            logf.close()
    except OSError as e:
        os.close(r)
        raise ContainerdError(f"start skiff-containerd ({argv[0]}): {e.strerror}") from None
    finally:
        os.close(w)
    _spawned[p["address"]] = proc
    line = b""
    try:
        deadline = time.monotonic() + START_TIMEOUT
        with os.fdopen(r, "rb", buffering=0) as f:
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([f], [], [], left)[0]:
                    break
                chunk = f.read(64)
                if not chunk:
                    break
                line += chunk
    except OSError as e:
        raise ContainerdError(f"skiff-containerd (pid {proc.pid}): reading its ready fd: {e.strerror}") from None
    if line != b"ready\n":
        code = proc.poll()
        state = f"exited with status {code}" if code is not None else \
            f"did not become ready within {START_TIMEOUT:.0f}s (pid {proc.pid} left running)"
        raise ContainerdError(f"skiff-containerd {state}; its log {p['log']} ends with: {_tail(p['log'])}")
    log.info("started skiff-containerd (pid %d) on %s", proc.pid, p["address"])
    return proc.pid


def ensure_containerd_sync(cfg: DaemonConfig) -> str:
    """The address of a containerd that answers (see the module doc)."""
    for key, old in list(_spawned.items()):
        if old.poll() is not None:       # reap one that exited
            log.warning("skiff-containerd (pid %d) on %s exited with status %s", old.pid, key, old.returncode)
            del _spawned[key]
    address = cfg.containerd_address()
    if answers(address):
        log.info("using the containerd answering on %s", address)
        return address
    if cfg.containerd:
        raise ContainerdError(f"containerd at {address}: nothing answers there (the configured containerd "
                              "is not started by skiffd)")
    spawn(cfg)
    return address


async def ensure_containerd(cfg: DaemonConfig) -> str:
    """``ensure_containerd_sync`` off the event loop (starting one takes a moment)."""
    return await asyncio.to_thread(ensure_containerd_sync, cfg)
