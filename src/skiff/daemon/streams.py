"""A container process's stdio as skiffd holds it: FIFOs, the log copy, live subscribers, stdin.

skiffd creates the FIFOs (``<fifo_dir>/<name>-stdin``, ``-stdout``, ``-stderr``) and gives their
paths to containerd (``Tasks.Create``/``Exec``); the shim opens the other ends (see
``skiff.shim.stdio``: at task create it opens the output FIFOs for writing, keeping a read end of
its own, and the stdin FIFO for reading, keeping a write end until ``CloseIO``). The process's
output goes straight into the FIFOs.

Read side (``open``): each output FIFO is opened ``O_RDONLY|O_NONBLOCK`` before the task is
created (the open does not wait for a writer) and watched with the event loop. Linux reports a
FIFO reader opened before any writer neither readable nor hung up until a writer has come (and,
for the hang-up, gone), so nothing is read before the shim opens its end, and EOF arrives once
the last write end is closed: the process tree has exited (or, with a terminal, the shim has
drained the pty and closed its copy end). ``reopen`` (live restore after a skiffd restart)
opens the FIFOs again while the shim still holds them; it reads once at once, so a process that
exited while skiffd was away gives its remaining output and EOF.

Each chunk read is timestamped, cut into log messages per stream (lines; a line longer than
``MAX_MESSAGE`` without a newline is logged in partial messages of that size, as dockerd's
copier does; a last line without newline is logged at EOF) for the log driver, and handed as is
to every live subscriber (attach).

Slow subscribers: a subscriber's queue is bounded (``SUBSCRIBER_LIMIT`` bytes). Output is never
held up for a subscriber: one that falls that far behind is cut off (its iterator raises
:class:`SlowSubscriber`, and the attach connection is closed), so a stalled attach client never
blocks the container, its log or the other clients.

Stdin (``stdin=True``): skiffd opens the stdin FIFO ``O_RDWR`` (it never reads it), so writes
made before the shim opens its read end (stdin sent right after attach, before start) wait in
the pipe. ``close_stdin`` closes skiffd's end and then calls ``on_stdin_closed`` (the owner's
``Tasks.CloseIO``, so that the shim closes its keeper end too: the process sees EOF). Before
the task exists a close is only recorded: closing the last end of a FIFO nobody else has open
would throw away what was written to it. ``process_created`` (called by the owner once
``Tasks.Create``/``Exec`` returned: the shim holds its ends) carries it out.

With a terminal only the stdout FIFO exists (the pty carries both streams).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skiff.daemon.logger import LogWriter

log = logging.getLogger("skiff.daemon.streams")

MAX_MESSAGE = 16 * 1024           # dockerd's copier buffer: longer lines become partial messages
SUBSCRIBER_LIMIT = 8 * 1024 * 1024
_READ_SIZE = 1 << 16
HELD_LIMIT = 64 * 1024           # output held until the process is created (a runtime's error)


class SlowSubscriber(Exception):
    """A subscriber fell more than ``SUBSCRIBER_LIMIT`` bytes behind and was cut off."""


class Subscription:
    """Live output for one client: ``async for stream, data in sub``; ends when all output of
    the process has been read (EOF on its FIFOs) or ``ContainerIO.close``."""

    def __init__(self, io: ContainerIO, streams: set[str], limit: int) -> None:
        self._io = io
        self.streams = streams
        self.since_ns = time.time_ns()   # chunks read from now on come here
        self._queue: deque[tuple[str, bytes]] = deque()
        self._queued = 0
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None
        self.ended = False
        self.overflowed = False

    def _push(self, stream: str, data: bytes) -> None:
        if self.ended or stream not in self.streams:
            return
        if self._queued + len(data) > self._limit:
            self.overflowed = True
            log.warning("%s: a live output subscriber fell %d bytes behind: cut off",
                        self._io.describe(), self._queued + len(data))
            self._queue.clear()
            self._queued = 0
            self._end()
            return
        self._queue.append((stream, data))
        self._queued += len(data)
        self._wake()

    def _end(self) -> None:
        self.ended = True
        self._io._subs.discard(self)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def pending(self) -> int:
        """Bytes queued and not yet taken."""
        return self._queued

    def get_nowait(self) -> tuple[str, bytes] | None:
        if not self._queue:
            return None
        item = self._queue.popleft()
        self._queued -= len(item[1])
        return item

    def close(self) -> None:
        """Unsubscribe."""
        self._queue.clear()
        self._queued = 0
        self._end()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[str, bytes]:
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            if self.overflowed:
                raise SlowSubscriber(f"{self._io.describe()}: live output subscriber fell more "
                                     f"than {self._limit} bytes behind and was cut off")
            if self.ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class _Output:
    __slots__ = ("stream", "path", "fd", "partial", "eof", "held")

    def __init__(self, stream: str, path: str) -> None:
        self.stream = stream
        self.path = path
        self.fd = -1
        self.partial = bytearray()
        self.eof = False
        self.held = bytearray()      # read before the process was created (see _readable)


class ContainerIO:
    """The stdio of one process (``name`` "init" for a container's main process, or an exec
    id). It takes ownership of ``logger`` (flushed and closed when the output ends)."""

    def __init__(self, fifo_dir: str, name: str = "init", *, stdin: bool, tty: bool,
                 logger: LogWriter | None, subscriber_limit: int = SUBSCRIBER_LIMIT,
                 on_stdin_closed: Callable[[], Awaitable[None]] | None = None,
                 hold_until_created: bool = False) -> None:
        self.fifo_dir = fifo_dir
        # output read before process_created() is held (dropped if the process never is): see
        # _readable
        self.hold_until_created = hold_until_created
        self.name = name
        self.stdin = stdin
        self.tty = tty
        self.logger = logger
        self.subscriber_limit = subscriber_limit
        self.stdin_path = os.path.join(fifo_dir, f"{name}-stdin") if stdin else ""
        self._outputs = [_Output("stdout", os.path.join(fifo_dir, f"{name}-stdout"))]
        if not tty:
            self._outputs.append(_Output("stderr", os.path.join(fifo_dir, f"{name}-stderr")))
        self._subs: set[Subscription] = set()
        self._stdin_fd = -1
        self._stdin_lock = asyncio.Lock()
        self._stdin_closed = False        # close_stdin was called
        self._created = False             # the shim holds the FIFOs (process_created/reopen)
        self.on_stdin_closed = on_stdin_closed
        self._opened = False
        self._closed = False
        self._waiters: list[asyncio.Future[None]] = []   # wait_closed / writes before open
        self._loop: asyncio.AbstractEventLoop | None = None
        self.log_errors = 0                  # failed log writes (each one logged)

    def describe(self) -> str:
        return f"stdio {self.fifo_dir}/{self.name}"

    # --- set-up ----------------------------------------------------------------------------

    def fifo_paths(self) -> tuple[str, str, str]:
        """Create the FIFOs (and the directory, 0700); ``(stdin or "", stdout, stderr or "")``
        for Tasks.Create/Exec."""
        os.makedirs(self.fifo_dir, mode=0o700, exist_ok=True)
        for path in [self.stdin_path] + [o.path for o in self._outputs]:
            if not path:
                continue
            try:
                os.mkfifo(path, 0o600)
            except FileExistsError:
                if not stat.S_ISFIFO(os.lstat(path).st_mode):
                    raise OSError(errno.EEXIST, f"{self.describe()}: {path} exists and is not "
                                                "a FIFO") from None
            except OSError as e:
                raise OSError(e.errno, f"{self.describe()}: mkfifo {path}: {e.strerror}") from None
        stderr = self._outputs[1].path if len(self._outputs) > 1 else ""
        return self.stdin_path, self._outputs[0].path, stderr

    async def open(self) -> None:
        """Open skiffd's ends (before Tasks.Create) and start copying."""
        self._open(restore=False)

    async def reopen(self) -> None:
        """Open the FIFOs of a process that the shim still runs (after a skiffd restart)."""
        self._created = True
        self._open(restore=True)

    async def process_created(self) -> None:
        """The task (or exec) was created: the shim holds its ends of the FIFOs. Passes on the
        output held until now and carries out a ``close_stdin`` that came before."""
        self._created = True
        now = time.time_ns()
        for o in self._outputs:
            if o.held:
                data = bytes(o.held)
                o.held.clear()
                self._deliver(o, data, now)
        if self._stdin_closed:
            await self._do_close_stdin()

    def _open(self, restore: bool) -> None:
        if self._opened or self._closed:
            raise RuntimeError(f"{self.describe()}: already "
                               f"{'open' if self._opened else 'closed'}")
        self._loop = asyncio.get_running_loop()
        self._opened = True
        try:
            if self.stdin_path:
                self._stdin_fd = self._open_fifo(self.stdin_path, os.O_RDWR)
            for o in self._outputs:
                o.fd = self._open_fifo(o.path, os.O_RDONLY)
        except BaseException:
            self._close_fds()
            self._finish()
            raise
        self._wake()
        for o in self._outputs:
            self._loop.add_reader(o.fd, self._readable, o)
        if restore:
            for o in self._outputs:
                self._readable(o)

    def _open_fifo(self, path: str, mode: int) -> int:
        try:
            fd = os.open(path, mode | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise OSError(e.errno, f"{self.describe()}: open {path}: {e.strerror}") from None
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, f"{self.describe()}: {path} is not a FIFO")
        return fd

    # --- output ----------------------------------------------------------------------------

    def _readable(self, o: _Output) -> None:
        if o.fd < 0:
            return
        try:
            data = os.read(o.fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            log.error("%s: read %s: %s", self.describe(), o.path, e.strerror)
            data = b""
        if not data:
            self._eof(o)
            return
        if self.hold_until_created and not self._created:
            # Until the process exists only the OCI runtime writes here: a shim gives it the
            # FIFOs as its stdio, and runc, crun print their create error on stderr. That error
            # is the API's answer, not the container's output: held, dropped if create fails.
            if len(o.held) + len(data) > HELD_LIMIT:
                log.warning("%s: %s: more than %d bytes before the process was created: the "
                            "rest dropped", self.describe(), o.stream, HELD_LIMIT)
            o.held += data[:max(0, HELD_LIMIT - len(o.held))]
            return
        self._deliver(o, data, time.time_ns())

    def _deliver(self, o: _Output, data: bytes, now: int) -> None:
        if self.logger is not None:
            self._log(o, data, now)
        for sub in list(self._subs):
            sub._push(o.stream, data)

    def _log(self, o: _Output, data: bytes, now: int) -> None:
        assert self.logger is not None
        buf = o.partial
        buf += data
        start = 0
        try:
            while True:
                nl = buf.find(b"\n", start, start + MAX_MESSAGE)
                if nl >= 0:
                    self.logger.write(o.stream, bytes(buf[start:nl + 1]), now)
                    start = nl + 1
                elif len(buf) - start >= MAX_MESSAGE:
                    self.logger.write(o.stream, bytes(buf[start:start + MAX_MESSAGE]), now)
                    start += MAX_MESSAGE
                else:
                    break
            self.logger.flush()
        except (OSError, ValueError) as e:
            self._log_failed(e)
        del buf[:start]

    def _log_failed(self, e: Exception) -> None:
        self.log_errors += 1
        log.error("%s: writing the container log: %s", self.describe(), e)

    def _eof(self, o: _Output) -> None:
        assert self._loop is not None
        if o.held and not self._created:
            log.info("%s: %s: dropped what the runtime wrote before the process existed: %r",
                     self.describe(), o.stream, bytes(o.held[:500]))
            o.held.clear()
        self._loop.remove_reader(o.fd)
        os.close(o.fd)
        o.fd = -1
        o.eof = True
        self._flush_partial(o)
        if all(x.eof for x in self._outputs):
            self._finish()

    def _flush_partial(self, o: _Output) -> None:
        if o.partial and self.logger is not None:
            try:
                self.logger.write(o.stream, bytes(o.partial), time.time_ns())
                self.logger.flush()
            except (OSError, ValueError) as e:
                self._log_failed(e)
        o.partial.clear()

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.logger is not None:
            try:
                self.logger.close()
            except OSError as e:
                self._log_failed(e)
        for sub in list(self._subs):
            sub._end()
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    async def _wait_change(self) -> None:
        f = asyncio.get_running_loop().create_future()
        self._waiters.append(f)
        await f

    @property
    def closed(self) -> bool:
        """All output has been read (or ``close`` was called)."""
        return self._closed

    def subscribe(self, stdout: bool = True, stderr: bool = True) -> Subscription:
        """Live output from now on (an attach). With a terminal everything is "stdout"."""
        streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
        sub = Subscription(self, streams, self.subscriber_limit)
        if self._closed:
            sub.ended = True
        else:
            self._subs.add(sub)
        return sub

    async def wait_closed(self) -> None:
        """Until all output was copied (EOF on every output FIFO) or ``close`` (also before
        ``open``)."""
        while not self._closed:
            await self._wait_change()

    # --- stdin -----------------------------------------------------------------------------

    @property
    def stdin_open(self) -> bool:
        return self._stdin_fd >= 0

    async def write_stdin(self, data: bytes) -> None:
        """Write all of ``data`` to the process's stdin (waits while the pipe is full, and
        until ``open`` when called before it: input sent between attach and start)."""
        while not self._opened and not self._closed:
            await self._wait_change()
        async with self._stdin_lock:
            view = memoryview(data)
            while view:
                if self._stdin_fd < 0 or self._stdin_closed:
                    raise BrokenPipeError(errno.EPIPE, f"{self.describe()}: stdin is closed")
                try:
                    n = os.write(self._stdin_fd, view)
                    view = view[n:]
                except BlockingIOError:
                    await self._writable(self._stdin_fd)
                except OSError as e:
                    raise OSError(e.errno, f"{self.describe()}: write stdin: {e.strerror}") from None

    async def _writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        def ready() -> None:
            if not fut.done():
                fut.set_result(None)
        loop.add_writer(fd, ready)
        try:
            await fut
        finally:
            loop.remove_writer(fd)

    async def close_stdin(self) -> None:
        """End the process's input: once pending writes are done, close skiffd's end and call
        ``on_stdin_closed`` (Tasks.CloseIO). Before ``process_created`` this is deferred to it.
        Further writes raise BrokenPipeError."""
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self._created:
            await self._do_close_stdin()

    async def _do_close_stdin(self) -> None:
        async with self._stdin_lock:
            if self._stdin_fd < 0:
                return
            os.close(self._stdin_fd)
            self._stdin_fd = -1
        if self.on_stdin_closed is not None:
            await self.on_stdin_closed()

    # --- teardown --------------------------------------------------------------------------

    def _close_fds(self) -> None:
        for o in self._outputs:
            if o.fd >= 0:
                if self._loop is not None:
                    self._loop.remove_reader(o.fd)
                os.close(o.fd)
                o.fd = -1
        if self._stdin_fd >= 0:
            os.close(self._stdin_fd)
            self._stdin_fd = -1

    async def close(self) -> None:
        """Stop copying now (output not read yet stays in the FIFOs), log partial lines, end
        the subscriptions, close the logger. Idempotent."""
        if self._closed and self._stdin_fd < 0 and all(o.fd < 0 for o in self._outputs):
            return
        for o in self._outputs:
            # what is already in the pipe is still the process's output
            left = _pending(o.fd) if o.fd >= 0 else 0
            while left > 0 and o.fd >= 0:
                self._readable(o)
                left -= _READ_SIZE
        self._close_fds()
        for o in self._outputs:
            self._flush_partial(o)
            o.eof = True
        self._finish()

    def remove(self) -> None:
        """Remove the FIFOs (after ``close``) and the directory when it is empty."""
        for path in [self.stdin_path] + [o.path for o in self._outputs]:
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        try:
            os.rmdir(self.fifo_dir)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise OSError(e.errno, f"{self.describe()}: rmdir {self.fifo_dir}: "
                                       f"{e.strerror}") from None


def _pending(fd: int) -> int:
    """Bytes waiting in a pipe."""
    import fcntl
    import termios
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")
