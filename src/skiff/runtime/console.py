"""Terminals: a pty made inside the container, its master handed to the caller.

The caller (containerd's shim, ``skiff-shim``, or ``run`` itself) listens on a Unix socket and
passes its path as ``--console-socket``; the container process opens ``/dev/ptmx`` of its own
devpts instance, makes the slave its controlling terminal and stdio, and sends the master fd over
the socket with SCM_RIGHTS (message text: the pty's name), as runc does.

Imported only when a terminal is wanted, and before the fork: the container process runs this
code after pivot_root, where the host's Python library is no longer reachable.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import termios

from skiff.runtime.syscalls import MS_BIND, Syscalls


def connect(path: str):
    """Connect to the console socket (before pivot_root: the path is a host path)."""

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise OSError(e.errno, f"connect to console socket {path}: {e.strerror}") from None
    return s


def set_winsize(fd: int, rows: int, cols: int) -> None:

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def open_pty() -> tuple[int, int, str]:
    """(master, slave, slave path) from the devpts of the current mount namespace."""
    master, slave = os.openpty()
    return master, slave, os.ttyname(slave)


def setup_console(sys: Syscalls, sock, rows: int, cols: int,
                  bind_console: bool) -> None:
    """In the container process: new session, pty as controlling terminal and stdio, master sent."""

    master, slave, name = open_pty()
    if rows or cols:
        set_winsize(master, rows, cols)
    if bind_console and os.path.exists("/dev/console"):
        sys.mount(name, "/dev/console", None, MS_BIND, None)
    sock.sendmsg([name.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, master.to_bytes(4, "little"))])
    sock.close()
    os.close(master)
    os.setsid()

    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def receive_master(sock) -> int:
    """The other side: receive the master fd from a connected console socket."""

    fds = array.array("i")
    msg, anc, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if not fds:
        raise OSError("console socket: no file descriptor received")
    return fds[0]
