"""A process's stdio as the shim holds it.

Paths come from the manager: named pipes (containerd's model: it, or its client, creates
``stdin``/``stdout``/``stderr`` FIFOs in a per-task directory and reads/writes the other ends),
regular files (``file://PATH`` or a path that is not a FIFO: output appended, created 0640), or
empty (``/dev/null``).

Without a terminal the FIFOs themselves become the process's fds 0, 1 and 2 (passed to the
runtime, which passes them on): output never goes through the shim, so the shim costs no CPU
per byte and nothing is buffered in it. The shim keeps one extra end of each FIFO:

- a read end of stdout/stderr. A writer then never gets EPIPE/SIGPIPE when the manager's
  reader goes away (a restart): output waits in the pipe (64 KiB), then the process blocks
  on write until a reader opens the FIFO again and takes it. Nothing is lost; a process whose
  output nobody ever reads stops. The layer above always keeps a reader (skiffd's log driver).
  The reader sees EOF when the process tree's last write end closes (the shim holds none).
- a write end of stdin, so the process does not see EOF before the client attaches, nor when
  a client goes away. ``closeio`` closes it: the process sees EOF when the client's own write
  end is closed too (containerd's clients call CloseIO when their input ends).

With a terminal the runtime sends the pty master over the console socket; the shim copies
master -> stdout FIFO and stdin FIFO -> master in its event loop (the same keeper ends, so the
copy never sees EPIPE or a spurious EOF). Backpressure: while the stdout FIFO is full the shim
stops reading the master. After ``closeio`` and the end of stdin the shim writes the terminal's
VEOF character (^D) to the master, which is what end of input is on a terminal. stderr is
unused with a terminal (the pty carries both).
"""

from __future__ import annotations

import os
import stat

FIFO_FLAGS = os.O_CLOEXEC | os.O_NONBLOCK


def _path(p: str) -> str:
    if p.startswith("file://"):
        return p[len("file://"):]
    if "://" in p:
        scheme = p.split("://", 1)[0]
        raise ValueError(f"stdio {p!r}: the {scheme}:// scheme is not supported (FIFO or file paths)")
    return p


def _is_fifo(p: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(p).st_mode)
    except FileNotFoundError:
        return False


def _set_blocking(fd: int) -> None:
    os.set_blocking(fd, True)


class ProcIO:
    """The fds of one process. ``child`` (0, 1, 2) go to the runtime and are closed by the
    shim once the runtime has them (``release_child``); the rest live until ``close``."""

    __slots__ = ("stdin", "stdout", "stderr", "terminal", "child", "keep", "stdin_keeper",
                 "stdin_reader", "stdout_writer", "master", "out_pending", "in_pending",
                 "stdin_closed", "stdin_eof")

    def __init__(self, stdin: str, stdout: str, stderr: str, terminal: bool) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = terminal
        self.child: list[int] = []
        self.keep: list[int] = []        # keeper ends, closed with the process
        self.stdin_keeper = -1           # write end of the stdin FIFO held until closeio
        self.stdin_reader = -1           # terminal: stdin FIFO read end, copied to the master
        self.stdout_writer = -1          # terminal: stdout FIFO write end, fed from the master
        self.master = -1                 # terminal: the pty master
        self.out_pending = b""           # master -> stdout waiting for room in the FIFO
        self.in_pending = b""            # stdin -> master waiting for room in the pty
        self.stdin_closed = False        # closeio was called
        self.stdin_eof = False

    # --- opening --------------------------------------------------------------------------

    def open(self) -> None:
        """Open everything; on error close what was opened and raise OSError/ValueError naming
        the path."""
        try:
            null = -1
            if self.terminal:
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                self.child = [null, null, null]
                if self.stdin:
                    self.stdin_reader = self._open_stdin(keep_reader=True)
                if self.stdout:
                    self.stdout_writer = self._open_output(self.stdout, for_copy=True)
                return
            self.child = [self._open_stdin(keep_reader=False) if self.stdin else -1]
            out = self._open_output(self.stdout, for_copy=False) if self.stdout else -1
            if self.stderr and self.stderr == self.stdout:
                err = out
            else:
                err = self._open_output(self.stderr, for_copy=False) if self.stderr else -1
            self.child += [out, err]
            if -1 in self.child:
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                self.child = [null if fd == -1 else fd for fd in self.child]
        except BaseException:
            self.close()
            raise

    def _open_stdin(self, keep_reader: bool) -> int:
        p = _path(self.stdin)
        try:
            if not _is_fifo(p):
                return os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            r = os.open(p, os.O_RDONLY | FIFO_FLAGS)  # does not wait for a writer
            if not self.stdin_closed:  # closeio may come before the process starts
                try:
                    self.stdin_keeper = os.open(p, os.O_WRONLY | FIFO_FLAGS)  # a reader exists: no ENXIO
                except BaseException:
                    os.close(r)
                    raise
        except OSError as e:
            raise OSError(e.errno, f"open stdin {p}: {e.strerror}") from None
        if not keep_reader:
            _set_blocking(r)  # the process reads it: blocking, as any stdin
        return r

    def _open_output(self, path: str, for_copy: bool) -> int:
        p = _path(path)
        try:
            if not _is_fifo(p):
                fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
                if for_copy:
                    os.set_blocking(fd, False)
                return fd
            keeper = os.open(p, os.O_RDONLY | FIFO_FLAGS)
            self.keep.append(keeper)
            w = os.open(p, os.O_WRONLY | FIFO_FLAGS)
        except OSError as e:
            raise OSError(e.errno, f"open {p}: {e.strerror}") from None
        if not for_copy:
            _set_blocking(w)
        return w

    def release_child(self) -> None:
        """The runtime has been started with ``child``: the shim's copies go."""
        for fd in set(self.child):
            if fd >= 0:
                os.close(fd)
        self.child = []

    # --- terminal copying -----------------------------------------------------------------

    def write_veof(self) -> None:
        """End of input on the terminal: its VEOF character (^D by default)."""
        import termios

        try:
            veof = termios.tcgetattr(self.master)[6][termios.VEOF]
        except (OSError, termios.error):
            veof = b"\x04"
        self.in_pending += veof if isinstance(veof, bytes) else bytes([veof])

    def close_stdin(self) -> None:
        self.stdin_closed = True
        if self.stdin_keeper >= 0:
            os.close(self.stdin_keeper)
            self.stdin_keeper = -1

    def close(self) -> None:
        self.release_child()
        for fd in self.keep:
            os.close(fd)
        self.keep = []
        for name in ("stdin_keeper", "stdin_reader", "stdout_writer", "master"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
