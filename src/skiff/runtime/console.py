"""Terminals: a pty made inside the container, its master handed to the caller.

The caller (containerd's shim, ``skiff-shim``) listens on a Unix socket and passes its path as
``--console-socket``; the container process opens ``/dev/ptmx`` of its own devpts instance,
makes the slave its controlling terminal and stdio, and sends the master fd over the socket with
SCM_RIGHTS (message text: the pty's name), as runc does.

``run`` and ``exec`` in the foreground with a terminal and no ``--console-socket`` keep the
master themselves: the container process gets one end of a socketpair instead of a socket path
(``socketpair``), the runtime receives the master on the other end and ``proxy`` copies it to
and from the runtime's own stdin/stdout until the process exits (stdin in raw mode when it is a
terminal; its window size copied to the pty at start and on SIGWINCH).

Imported only when a terminal is wanted, and before the fork: the container process runs this
code after pivot_root, where the host's Python library is no longer reachable.
"""

from __future__ import annotations

import _socket
import fcntl
import os
import struct
import termios

from skiff.runtime.syscalls import MS_BIND, Syscalls


def connect(path: str):
    """Connect to the console socket (before pivot_root: the path is a host path)."""

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
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
    sock.sendmsg([name.encode()], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", master))])
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

    size = struct.calcsize("i")
    fds: list[int] = []
    msg, anc, _flags, _addr = sock.recvmsg(4096, _socket.CMSG_SPACE(4 * size))
    for level, typ, data in anc:
        if level == _socket.SOL_SOCKET and typ == _socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(data) // size}i", data[: len(data) - len(data) % size]))
    for extra in fds[1:]:
        os.close(extra)
    if not fds:
        raise OSError("console socket: no file descriptor received")
    return fds[0]


# --- the runtime's own console (foreground run/exec without --console-socket) ----------------

def socketpair():
    """(the runtime's end, the container process's end), both close-on-exec."""
    return _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)


def copy_window_size(src: int, dst: int) -> bool:
    """Give the pty ``dst`` the window size of the terminal ``src``; False if ``src`` is none."""
    try:
        ws = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return False
    fcntl.ioctl(dst, termios.TIOCSWINSZ, ws)
    return True


def make_raw(fd: int) -> list:
    """Put the terminal ``fd`` in raw mode (as cfmakeraw does); return its previous attributes."""
    old = termios.tcgetattr(fd)
    new = list(old)
    new[0] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
                | termios.IGNCR | termios.ICRNL | termios.IXON)
    new[1] &= ~termios.OPOST
    new[2] = (new[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    new[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    new[6] = list(new[6])
    new[6][termios.VMIN] = 1
    new[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, new)
    return old


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        view = view[n:]


def _read(fd: int) -> bytes | None:
    """What the pty has for us: bytes (maybe none yet), or None once no process holds the slave."""
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return b""
    except OSError:  # EIO: the slave side is closed
        return None
    return data or None


def _reap(pid: int) -> int | None:
    """Reap every exited child without blocking; ``pid``'s exit status once it exited."""
    code = None
    while True:
        try:
            wpid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 255 if code is None else code
        if wpid == 0:
            return code
        if wpid == pid:
            c = os.waitstatus_to_exitcode(status)
            code = c if c >= 0 else 128 - c


def _drain(master: int, stdout: int, quiet: float = 0.1) -> None:
    """After the process exited: copy what is left in the pty, until the slave is closed by
    every process or nothing came for ``quiet`` seconds (a background process may hold it)."""
    import select

    poller = select.poll()
    poller.register(master, select.POLLIN)
    while poller.poll(int(quiet * 1000)):
        data = _read(master)
        if data is None:
            return
        if data:
            _write_all(stdout, data)


STDIN_BUFFER = 1 << 16  # bytes read from stdin that the container has not taken: stop reading


def proxy(master: int, pid: int, forward: tuple[int, ...], stdin: int = 0, stdout: int = 1) -> int:
    """Copy ``stdin`` to the pty ``master`` and the master to ``stdout`` until ``pid`` (our
    child, or re-parented to us as subreaper) exits; forward the signals ``forward`` to it,
    except SIGWINCH, which resizes the pty from ``stdin``. Reaps orphans meanwhile. Restores
    ``stdin``'s terminal attributes and the signal handlers on the way out. Returns the exit
    status in the shell's convention (128+N for a signal). The end of ``stdin`` is not passed on
    (as runc does not: the pty has no end-of-file but a ^D typed in cooked mode)."""
    import _signal
    import select

    SIGWINCH, SIGCHLD = 28, 17
    stdin_tty = os.isatty(stdin)
    saved_attrs = None
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_handlers: dict[int, object] = {}
    old_wakeup: int | None = None

    def on_signal(signum: int, _frame: object) -> None:
        if signum == SIGWINCH and stdin_tty:
            try:
                copy_window_size(stdin, master)
            except OSError:
                pass  # the pty is going away with the process
        elif signum != SIGCHLD:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    os.set_blocking(master, False)
    try:
        for s in (*forward, SIGWINCH, SIGCHLD):
            old_handlers[s] = _signal.signal(s, on_signal)
        old_wakeup = _signal.set_wakeup_fd(wake_w)  # a signal wakes poll() up
        if stdin_tty:
            copy_window_size(stdin, master)
            saved_attrs = make_raw(stdin)
        poller = select.poll()
        poller.register(master, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        try:
            os.fstat(stdin)
            stdin_state = "reading"
            poller.register(stdin, select.POLLIN)
        except OSError:
            stdin_state = "eof"  # no stdin at all
        pending = b""  # read from stdin, not yet taken by the pty
        master_open = True
        code = None
        while code is None:
            for fd, ev in poller.poll():
                if fd == wake_r:
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                elif fd == stdin:
                    try:
                        data = os.read(stdin, 65536)
                    except OSError:
                        data = b""
                    if data:
                        pending += data
                    else:
                        poller.unregister(stdin)
                        stdin_state = "eof"
                elif fd == master:
                    if ev & select.POLLOUT and pending:
                        try:
                            pending = pending[os.write(master, pending):]
                        except BlockingIOError:
                            pass
                        except OSError:
                            pending = b""  # EIO: nobody holds the slave any more
                    if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        out = _read(master)
                        if out is None:
                            master_open = False
                            poller.unregister(master)
                        elif out:
                            _write_all(stdout, out)
            if master_open:
                poller.modify(master, select.POLLIN | (select.POLLOUT if pending else 0))
            else:
                pending = b""
            if stdin_state == "reading" and len(pending) >= STDIN_BUFFER:
                poller.unregister(stdin)
                stdin_state = "paused"
            elif stdin_state == "paused" and len(pending) < STDIN_BUFFER:
                poller.register(stdin, select.POLLIN)
                stdin_state = "reading"
            code = _reap(pid)
        if master_open:
            _drain(master, stdout)
        return code
    finally:
        if saved_attrs is not None:
            try:
                termios.tcsetattr(stdin, termios.TCSAFLUSH, saved_attrs)
            except termios.error:
                pass  # stdin is gone: nothing to restore
        if old_wakeup is not None:
            _signal.set_wakeup_fd(old_wakeup)
        for s, h in old_handlers.items():
            _signal.signal(s, h)
        os.close(wake_r)
        os.close(wake_w)
