"""skiffd's network namespace maker: one long-lived, single-threaded process of its own
(``python -m skiff.daemon.network.nshelper``), started by :class:`skiff.daemon.network.netns.Maker`.

skiffd is threaded, so it never unshares; spawning util-linux ``unshare --net=FILE`` for every
container costs a fork and an exec (~3-4 ms here). This helper does the same work for each
request without a new process: ``unshare(CLONE_NEWNET)`` (it is single-threaded, so the whole
process moves), bind-mount ``/proc/self/ns/net`` onto the requested file (an empty file it creates;
the mount keeps the namespace alive), and ``setns`` back to the namespace it started in.

Protocol on stdin/stdout, one line each way per request: an absolute path in, ``ok`` or
``error <message>`` out. The helper exits at EOF on stdin (skiffd closed it, or died).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

    from skiff.runtime.syscalls import Syscalls

CLONE_NEWNET = 0x40000000
MS_BIND = 4096


def make(sc: Syscalls, path: str, own_fd: int) -> None:
    """A new network namespace bound to ``path`` (created, must not exist); the caller's
    namespace (``own_fd``) is joined again before this returns, also after a failure."""
    if not os.path.isabs(path):
        raise ValueError(f"{path!r}: not an absolute path")
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    try:
        sc.unshare(CLONE_NEWNET)
        try:
            sc.mount("/proc/self/ns/net", path, None, MS_BIND, None)
        finally:
            sc.setns(own_fd, CLONE_NEWNET)
    except BaseException:
        os.unlink(path)
        raise


def serve(sc: Syscalls, rfile: TextIO, wfile: TextIO, own_fd: int) -> None:
    for line in rfile:
        path = line.rstrip("\n")
        try:
            make(sc, path, own_fd)
            wfile.write("ok\n")
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            wfile.write("error " + f"network namespace {path}: {why}".replace("\n", " ") + "\n")
        wfile.flush()


def main() -> int:
    import signal

    from skiff.runtime.syscalls import LinuxSyscalls

    signal.signal(signal.SIGINT, signal.SIG_IGN)     # a terminal's ^C is skiffd's to handle

    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    serve(LinuxSyscalls(), sys.stdin, sys.stdout, own)
    return 0


if __name__ == "__main__":
    sys.exit(main())
