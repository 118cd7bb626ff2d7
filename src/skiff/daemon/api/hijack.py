"""Hijacked connections (attach, exec start), stdcopy framing, and the attach/logs handlers'
streaming parts.

Hijacking with aiohttp: the handler has parsed the request (and read its body); ``hijack``
then swaps the connection's asyncio protocol for its own (``transport.set_protocol``), takes the
bytes aiohttp buffered after the request (an upgraded connection's tail), writes the
``101 UPGRADED`` head itself, and from then on the handler owns a raw byte stream. aiohttp's
own protocol would close the socket on the client's half-close (its ``eof_received`` does not
keep the transport open); ours keeps it open, because a read EOF on a hijacked connection is
the client's ``CloseWrite`` (stdin done, or no stdin at all), not a disconnect. A real
disconnect shows as ``connection_lost`` (a write failed, or the socket was reset) or, on a Unix
socket, as a hang-up that ``Hijacked.peer_gone`` polls for. The handler returns
``Hijacked.response``, a response object that writes nothing; when the handler task ends the
connection is closed and handed back to aiohttp's bookkeeping (never reused: keep-alive off).
Errors after the hijack can only go into the stream (``frame(SYSTEMERR, ...)`` or plain text).

stdcopy framing (Tty=false): ``[stream, 0, 0, 0, uint32 BE length] + payload``, stream 1 =
stdout, 2 = stderr, 3 = systemerr. With a terminal the stream is raw bytes.
"""

from __future__ import annotations

import asyncio
import logging
import select
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from skiff.daemon.api.errors import ApiError, InvalidParameter
from skiff.daemon.api.httputils import bool_value, parse_timestamp
from skiff.daemon.api.server import api_version, version_tuple
from skiff.daemon.logger import READ_NOT_SUPPORTED, format_time, read_logs
from skiff.daemon.streams import ContainerIO, SlowSubscriber, Subscription

log = logging.getLogger("skiff.daemon.api.hijack")

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW_STREAM = "application/vnd.docker.raw-stream"

STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3
STREAM_IDS = {"stdout": STDOUT, "stderr": STDERR}

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
LIVENESS_INTERVAL = 1.0           # seconds between hang-up checks of a half-closed client
CLOSE_GRACE = 30.0                # seconds a closing client has to read what is left
_READ_HIGH_WATER = 1 << 18        # stop reading the client beyond this much unread input


class ReadNotSupported(ApiError):
    """dockerd's ErrReadLogsNotSupported."""

    status = 501


def frame(stream: int, data: bytes) -> bytes:
    """One stdcopy frame (never call it with empty data: a zero-length frame is not sent)."""
    return struct.pack(">BxxxL", stream, len(data)) + data


def stream_content_type(request: web.Request, tty: bool) -> str:
    """moby: multiplexed only for Tty=false at API >= 1.42, raw-stream otherwise (the payload
    is multiplexed for Tty=false either way)."""
    if not tty and version_tuple(api_version(request)) >= (1, 42):
        return MULTIPLEXED
    return RAW_STREAM


# --- the hijacked connection -------------------------------------------------------------------

class _HijackProtocol(asyncio.Protocol):
    def __init__(self, hj: Hijacked) -> None:
        self.hj = hj

    def data_received(self, data: bytes) -> None:
        self.hj._feed(data)

    def eof_received(self) -> bool:
        self.hj._feed_eof()
        return True                   # a half-close: keep writing

    def connection_lost(self, exc: Exception | None) -> None:
        self.hj._connection_lost(exc)

    def pause_writing(self) -> None:
        self.hj._write_paused = True

    def resume_writing(self) -> None:
        self.hj._write_paused = False
        self.hj._wake_drainers()


class HijackedResponse(web.StreamResponse):
    """What a handler returns after hijacking: the head was written by ``hijack``."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class Hijacked:
    """The raw connection after the ``101``."""

    def __init__(self, transport: asyncio.Transport, tail: bytes) -> None:
        self.transport = transport
        self.response = HijackedResponse(status=101)
        self.response.force_close()
        self._buf = bytearray(tail)
        self.peer_eof = False            # the client half-closed (or went away)
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drainers: list[asyncio.Future[None]] = []
        self.lost_exc: Exception | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # protocol callbacks
    def _feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > _READ_HIGH_WATER and not self.transport.is_closing():
            self.transport.pause_reading()
        self._wake_reader()

    def _feed_eof(self) -> None:
        self.peer_eof = True
        self._wake_reader()

    def _connection_lost(self, exc: Exception | None) -> None:
        self.lost_exc = exc
        self.peer_eof = True
        if not self.lost.done():
            self.lost.set_result(None)
        self._wake_reader()
        self._wake_drainers()

    def _wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    def _wake_drainers(self) -> None:
        for f in self._drainers:
            if not f.done():
                f.set_result(None)
        self._drainers.clear()

    @property
    def is_lost(self) -> bool:
        return self.lost.done()

    async def read(self, n: int = 1 << 16) -> bytes:
        """Up to ``n`` bytes from the client; b"" at its half-close (or when it went away)."""
        while not self._buf:
            if self.peer_eof:
                return b""
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        data = bytes(self._buf[:n])
        del self._buf[:n]
        if len(self._buf) <= _READ_HIGH_WATER // 2 and not self.transport.is_closing() \
                and not self.transport.is_reading():
            self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        if self.is_lost or self.transport.is_closing():
            raise ConnectionResetError("attach client: connection lost")
        self.transport.write(data)

    async def drain(self) -> None:
        while self._write_paused and not self.is_lost:
            f = asyncio.get_running_loop().create_future()
            self._drainers.append(f)
            await f
        if self.is_lost:
            raise ConnectionResetError("attach client: connection lost")

    async def send(self, data: bytes) -> None:
        self.write(data)
        await self.drain()

    def peer_gone(self) -> bool:
        """The client hung up completely (Unix sockets report it; over TCP a write finds it)."""
        if self.is_lost:
            return True
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        p = select.poll()
        p.register(sock.fileno(), select.POLLOUT)
        for _fd, ev in p.poll(0):
            if ev & (select.POLLHUP | select.POLLERR):
                return True
        return False

    async def close(self, abort: bool = False) -> None:
        """End the stream as moby does: flush, CloseWrite, close; wait until it is closed. A
        client that does not take the rest within ``CLOSE_GRACE`` seconds (or ``abort``: one
        that was cut off) is disconnected at once, dropping what is buffered for it."""
        if abort and not self.is_lost:
            self.transport.abort()
        elif not self.is_lost and not self.transport.is_closing():
            try:
                if self.transport.can_write_eof():
                    self.transport.write_eof()
            except OSError as e:
                log.debug("hijacked connection: write_eof: %s", e)
            self.transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_GRACE)
        except TimeoutError:
            log.debug("hijacked connection: the client does not read the end: aborted")
            self.transport.abort()
            await asyncio.shield(self.lost)


async def hijack(request: web.Request, content_type: str) -> Hijacked:
    """Take over the connection of ``request`` and write the head: ``101 UPGRADED`` when the
    request asked for ``Upgrade``, else ``200 OK`` (moby does that for old clients); then raw.
    Raise ConnectionResetError if the client is already gone."""
    transport = request.transport
    proto = request.protocol
    if transport is None or transport.is_closing() or not isinstance(transport, asyncio.Transport):
        raise ConnectionResetError(f"{request.method} {request.path}: the client went away "
                                   "before the stream was hijacked")
    tail = getattr(proto, "_message_tail", b"") or b""
    if tail:
        setattr(proto, "_message_tail", b"")   # noqa: B010 (aiohttp keeps it in a slot)
    proto.keep_alive(False)
    hj = Hijacked(transport, bytes(tail))
    transport.set_protocol(_HijackProtocol(hj))
    if not transport.is_reading():
        transport.resume_reading()
    task = asyncio.current_task()
    if task is not None:
        task.add_done_callback(lambda _t: _release(hj, proto))
    if "Upgrade" in request.headers:
        head = (f"HTTP/1.1 101 UPGRADED\r\nContent-Type: {content_type}\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
    else:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\r\n"
    transport.write(head.encode())
    return hj


def _release(hj: Hijacked, proto: Any) -> None:
    """The handler is done: close the connection and let aiohttp forget it."""
    def forward(_f: object = None) -> None:
        try:
            proto.connection_lost(hj.lost_exc)
        except Exception:
            log.exception("hijacked connection: handing the closed connection back to aiohttp")
    if hj.is_lost:
        forward()
    else:
        hj.lost.add_done_callback(forward)
        if not hj.transport.is_closing():
            hj.transport.close()


# --- detach keys -------------------------------------------------------------------------------

def parse_detach_keys(value: str) -> bytes:
    """moby's term.ToBytes: comma-separated ``ctrl-<x>`` or single characters."""
    out = bytearray()
    for key in value.split(","):
        k = key.strip()
        low = k.lower()
        if len(k) > 1 and low.startswith("ctrl-") and len(low) == 6:
            c = low[5]
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
                continue
            special = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}
            if c in special:
                out.append(special[c])
                continue
        elif len(k) == 1:
            out.append(ord(k))
            continue
        raise InvalidParameter(f"Invalid detach keys ({value}) provided")
    if not out:
        raise InvalidParameter(f"Invalid detach keys ({value}) provided")
    return bytes(out)


class DetachMatcher:
    """Finds the detach sequence in stdin; bytes of a possible prefix are held back until it is
    known whether they complete the sequence."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to pass on, detach requested)."""
        out = bytearray()
        for b in data:
            self.held += bytes([b])
            if self.keys.startswith(self.held):
                if len(self.held) == len(self.keys):
                    self.held = b""
                    return bytes(out), True
                continue
            # mismatch: release the first held byte, retry the rest as a new prefix
            while self.held and not self.keys.startswith(self.held):
                out.append(self.held[0])
                self.held = self.held[1:]
        return bytes(out), False

    def flush(self) -> bytes:
        held, self.held = self.held, b""
        return held


# --- attach ------------------------------------------------------------------------------------

async def serve_attach(request: web.Request, io: ContainerIO | None, *, tty: bool,
                       open_stdin: bool, stdin_once: bool, log_path: str | None,
                       done: Awaitable[Any] | None = None,
                       close_stdin: Callable[[], Awaitable[None]] | None = None,
                       on_detach: Callable[[], None] | None = None,
                       default_detach_keys: str = "") -> web.StreamResponse:
    """``POST /containers/{id}/attach`` after the container was looked up.

    Query: ``stream``, ``stdin``, ``stdout``, ``stderr``, ``logs``, ``detachKeys``. ``io``: the
    container's current ContainerIO (None when it has none, e.g. stopped); ``log_path``: its
    json-file log (None with the ``none`` driver); ``done``: resolves when the container's
    process has exited and its output was copied, after which the connection is closed (it is
    also closed when ``io``'s output ends, on detach and when the client goes away);
    ``close_stdin``: called at the client's half-close when ``stdin_once`` (default
    ``io.close_stdin``, which closes skiffd's end and calls the ContainerIO's
    ``on_stdin_closed``, i.e. Tasks.CloseIO, deferred until the task exists); ``on_detach``: called when the client typed the
    detach keys (moby then publishes a ``detach`` event)."""
    q = request.query
    if close_stdin is None and io is not None:
        close_stdin = io.close_stdin
    stream = bool_value(q.get("stream"))
    logs = bool_value(q.get("logs"))
    want_stdout = bool_value(q.get("stdout"))
    want_stderr = bool_value(q.get("stderr"))
    want_stdin = bool_value(q.get("stdin")) and open_stdin and io is not None and io.stdin
    keys_raw = q.get("detachKeys") or default_detach_keys or DEFAULT_DETACH_KEYS
    keys = parse_detach_keys(keys_raw)
    if logs and log_path is None:
        raise ReadNotSupported(READ_NOT_SUPPORTED)
    if tty:
        want_stdout = want_stderr = want_stdout or want_stderr   # one pty stream
    sub: Subscription | None = None
    if stream and io is not None and (want_stdout or want_stderr or want_stdin):
        sub = io.subscribe(stdout=want_stdout, stderr=want_stderr)
    try:
        hj = await hijack(request, stream_content_type(request, tty))
    except BaseException:
        if sub is not None:
            sub.close()
        raise
    abort = False
    try:
        await attach_streams(hj, io, sub, tty=tty, logs=logs, log_path=log_path,
                             stdout=want_stdout, stderr=want_stderr, stdin=want_stdin,
                             stdin_once=stdin_once, keys=keys, done=done,
                             close_stdin=close_stdin, on_detach=on_detach)
    except SlowSubscriber as e:
        log.warning("attach %s: %s: disconnected", request.path, e)
        abort = True
    except ConnectionError as e:
        log.debug("attach %s: %s", request.path, e)
    except Exception as e:
        # after the hijack an error can only go into the stream
        log.exception("attach %s: failed", request.path)
        msg = f"Error attaching: {e}\n".encode()
        try:
            hj.write(msg if tty else frame(SYSTEMERR, msg))
        except ConnectionError:
            pass                         # the client is gone: nobody to tell
    finally:
        if sub is not None:
            sub.close()
        await hj.close(abort=abort)
    return hj.response


def _chunk(tty: bool, stream: str, data: bytes) -> bytes:
    return data if tty else frame(STREAM_IDS[stream], data)


async def attach_streams(hj: Hijacked, io: ContainerIO | None, sub: Subscription | None, *,
                         tty: bool, logs: bool = False, log_path: str | None = None,
                         stdout: bool = True, stderr: bool = True, stdin: bool,
                         stdin_once: bool, keys: bytes = b"\x10\x11",
                         done: Awaitable[Any] | None = None,
                         close_stdin: Callable[[], Awaitable[None]] | None = None,
                         on_detach: Callable[[], None] | None = None) -> None:
    """Pump a hijacked connection: replay the log (``logs``), then live output from ``sub``
    (framed unless ``tty``) and the client's input into ``io``'s stdin (``stdin``) with
    detach-key matching, until the output ends, ``done`` resolves (queued output is sent
    first), the client detaches or goes away. At the client's half-close ``close_stdin`` is
    called when ``stdin_once``. The caller closes ``sub`` and ``hj`` (exec start uses this after
    hijacking and starting the process; errors go in as ``frame(STDOUT, msg)``)."""
    if logs and log_path is not None and (stdout or stderr):
        until = sub.since_ns - 1 if sub is not None else None
        async for e in read_logs(log_path, stdout=stdout, stderr=stderr, until_ns=until):
            if e.line:
                await hj.send(_chunk(tty, e.stream, e.line))
    if sub is None:
        return
    detached = asyncio.Event()

    async def pump_stdin() -> None:
        assert io is not None
        matcher = DetachMatcher(keys)
        while True:
            data = await hj.read()
            if not data:
                break
            out, detach = matcher.feed(data)
            if out:
                await io.write_stdin(out)
            if detach:
                detached.set()
                return
        rest = matcher.flush()
        if rest:
            await io.write_stdin(rest)
        if hj.is_lost:
            return
        if stdin_once and close_stdin is not None:
            await close_stdin()

    async def pump_output() -> None:
        assert sub is not None
        async for stream, data in sub:
            await hj.send(_chunk(tty, stream, data))

    async def watch_done() -> None:
        assert done is not None
        # shielded: cancelling this watcher when the client leaves must not cancel the
        # caller's future (the container's run-done, shared with logs -f and other attaches)
        await asyncio.shield(done)
        # the process is gone and its output copied: send what is queued, then end
        while (item := sub.get_nowait()) is not None:
            await hj.send(_chunk(tty, *item))

    async def watch_peer() -> None:
        while True:
            await asyncio.sleep(LIVENESS_INTERVAL)
            if hj.peer_eof and hj.peer_gone():
                return

    tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(pump_output()),
                                        asyncio.ensure_future(detached.wait()),
                                        asyncio.ensure_future(watch_peer()), hj.lost]
    stdin_task = asyncio.ensure_future(pump_stdin()) if stdin else None
    if done is not None:
        tasks.append(asyncio.ensure_future(watch_done()))
    try:
        while True:
            finished, _ = await asyncio.wait(tasks + ([stdin_task] if stdin_task else []),
                                              return_when=asyncio.FIRST_COMPLETED)
            if stdin_task is not None and stdin_task in finished:
                exc = stdin_task.exception()
                if exc is not None and not isinstance(exc, (ConnectionError, OSError)):
                    raise exc
                if exc is not None:
                    log.debug("attach: stdin: %s", exc)
                stdin_task = None
                if not detached.is_set():
                    continue            # stdin ended (half-close): output goes on
            break
        if detached.is_set() and on_detach is not None:
            on_detach()
        for t in finished:
            if t is not hj.lost and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        for t in tasks + ([stdin_task] if stdin_task else []):
            if t is not hj.lost and not t.done():
                t.cancel()
        await asyncio.gather(*[t for t in tasks if t is not hj.lost], return_exceptions=True)
        if stdin_task is not None:
            await asyncio.gather(stdin_task, return_exceptions=True)


# --- logs --------------------------------------------------------------------------------------

async def serve_logs(request: web.Request, *, log_path: str | None, tty: bool,
                     stop: asyncio.Event | None) -> web.StreamResponse:
    """``GET /containers/{id}/logs`` after the container was looked up.

    Query: ``follow``, ``since``, ``until``, ``tail``, ``timestamps``, ``stdout``, ``stderr``,
    ``details``. ``log_path``: the json-file log (None with the ``none`` driver: 501);
    ``stop``: set when the container is not running and its output is in the log (already set
    for a stopped container): a follow then ends once everything is sent."""
    q = request.query
    stdout = bool_value(q.get("stdout"))
    stderr = bool_value(q.get("stderr"))
    if not (stdout or stderr):
        raise InvalidParameter("Bad parameters: you must choose at least one stream")
    if log_path is None:
        raise ReadNotSupported(READ_NOT_SUPPORTED)
    follow = bool_value(q.get("follow"))
    timestamps = bool_value(q.get("timestamps"))
    details = bool_value(q.get("details"))
    since = parse_timestamp("since", q["since"]) if q.get("since") else 0
    until = parse_timestamp("until", q["until"]) if q.get("until") else 0
    tail = parse_tail(q.get("tail", "all"))
    resp = web.StreamResponse(status=200, headers={
        "Content-Type": stream_content_type(request, tty)})
    await resp.prepare(request)          # headers go out at once (logs -f)
    buf = bytearray()
    async for e in read_logs(log_path, stdout=stdout, stderr=stderr, since_ns=since,
                             until_ns=until or None, tail=tail, follow=follow, stop=stop):
        line = e.line
        if details:
            line = b" " + line           # no log attributes: an empty attrs prefix
        if timestamps:
            line = format_time(e.time_ns).encode() + b" " + line
        if not line:
            continue
        buf += _chunk(tty, e.stream, line)
        if len(buf) >= 1 << 15:
            await resp.write(bytes(buf))
            buf.clear()
        elif follow:
            await resp.write(bytes(buf))
            buf.clear()
    if buf:
        await resp.write(bytes(buf))
    await resp.write_eof()
    return resp


def parse_tail(value: str) -> int | None:
    """``tail``: "all" (or empty, or negative) = everything, else a count."""
    v = value.strip()
    if v in ("", "all"):
        return None
    try:
        n = int(v)
    except ValueError:
        raise InvalidParameter(f"tail: {value!r} is not a number or \"all\"") from None
    return None if n < 0 else n
