"""The json-file log driver: Docker's format, rotation, and the reader behind ``docker logs``.

One JSON object per line, in the order and format dockerd writes::

    {"log":"hi\\n","stream":"stdout","time":"2026-11-27T18:26:45.009341393Z"}

``log`` is the message: a line with its newline, or a partial line without one (the copier in
``skiff.daemon.streams`` cuts lines longer than 16 KiB, and the last line before EOF may lack a
newline); readers concatenate messages as they are. Invalid UTF-8 becomes U+FFFD, as with Go's
JSON encoder. ``time`` is the time the copier read the output, UTC, RFC 3339 with nine fraction
digits.

Rotation (``max-size``): when the next message would take the file past ``max-size``, the file
becomes ``<path>.1``, ``.1`` becomes ``.2`` and so on up to ``max-file - 1`` files kept besides the
current one; with ``max-file`` 1 the file is truncated instead. Followers survive both: a
follower reads the file it has open to its end, then notices the new inode (or the truncation)
and carries on with the new file.

Followers wake up when a writer in this process flushes (writers and readers share a notifier
per path), and also check the file every ``FOLLOW_POLL`` seconds (for a writer in another
process).
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import os
import re
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

log = logging.getLogger("skiff.daemon.logger")

FOLLOW_POLL = 0.25          # seconds between checks of a followed file without notifications
_READ_BLOCK = 1 << 16
_WRITE_BUFFER = 1 << 18     # flush on its own once this much is buffered


class LogEntry(NamedTuple):
    stream: str             # "stdout" or "stderr"
    time_ns: int            # read time, ns since the epoch
    line: bytes             # the message (with its newline unless partial)


# --- formats -------------------------------------------------------------------------------

_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNIT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(value: str) -> int:
    """A size as dockerd's ``max-size`` (go-units RAMInBytes): bytes, or a number with a k, m,
    g (t, p) unit, binary multiples, an optional ``b``/``ib`` suffix: ``10m``, ``512k``, ``1.5g``."""
    m = _SIZE.match(value.strip())
    if not m:
        raise ValueError(f"invalid size: {value!r} (bytes, or a number with a k, m or g unit)")
    return int(float(m.group(1)) * _UNIT[(m.group(2) or "").lower()])


def format_time(time_ns: int) -> str:
    """RFC 3339 in UTC with nine fraction digits (Go's RFC3339NanoFixed)."""
    sec, frac = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                   r"(Z|[+-]\d\d:\d\d)$")


def parse_time(value: str) -> int:
    """An RFC 3339 time (as written by dockerd or skiffd) in ns since the epoch."""
    m = _TIME.match(value)
    if not m:
        raise ValueError(f"invalid time {value!r}")
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    sec = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    zone = m.group(8)
    if zone != "Z":
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        sec -= offset if zone[0] == "+" else -offset
    return sec * 1_000_000_000 + int((m.group(7) or "").ljust(9, "0") or 0)


def encode_entry(stream: str, line: bytes, time_ns: int) -> bytes:
    return (json.dumps({"log": line.decode("utf-8", "replace"), "stream": stream,
                        "time": format_time(time_ns)}, ensure_ascii=False,
                       separators=(",", ":")) + "\n").encode()


def decode_entry(raw: bytes) -> LogEntry:
    d = json.loads(raw)
    return LogEntry(str(d.get("stream", "")), parse_time(d["time"]),
                    str(d.get("log", "")).encode("utf-8", "surrogateescape"))


# --- writer/follower notification ------------------------------------------------------------

class _Notifier:
    """Wakes followers of one path; ``generation`` counts rotations."""

    def __init__(self) -> None:
        self.waiters: set[asyncio.Future[None]] = set()
        self.generation = 0

    def notify(self) -> None:
        for f in self.waiters:
            if not f.done():
                f.set_result(None)
        self.waiters.clear()


_notifiers: weakref.WeakValueDictionary[str, _Notifier] = weakref.WeakValueDictionary()


def _notifier(path: str) -> _Notifier:
    key = os.path.abspath(path)
    n = _notifiers.get(key)
    if n is None:
        n = _Notifier()
        _notifiers[key] = n
    return n


def rotated_paths(path: str) -> list[str]:
    """The rotated files of ``path`` that exist, oldest first."""
    out = []
    i = 1
    while os.path.exists(f"{path}.{i}"):
        out.append(f"{path}.{i}")
        i += 1
    return out[::-1]


# --- writer --------------------------------------------------------------------------------

class JSONFileWriter:
    """Appends messages to ``path``; ``max_size`` -1 means no rotation."""

    def __init__(self, path: str, *, max_size: int = -1, max_file: int = 1) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max_file
        self._buf = bytearray()
        self._notifier = _notifier(path)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            raise OSError(e.errno, f"json-file log {self.path}: open: {e.strerror}") from None

    def write(self, stream: str, line: bytes, time_ns: int) -> None:
        if self._fd < 0:
            raise ValueError(f"json-file log {self.path}: write after close")
        entry = encode_entry(stream, line, time_ns)
        pending = self._size + len(self._buf)
        if 0 < self.max_size < pending + len(entry) and pending > 0:
            self._write_out()
            self._rotate()
        self._buf += entry
        if len(self._buf) >= _WRITE_BUFFER:
            self._write_out()
            self._notifier.notify()

    def flush(self) -> None:
        if self._buf:
            self._write_out()
            self._notifier.notify()

    def _write_out(self) -> None:
        view = memoryview(self._buf)
        try:
            while view:
                n = os.write(self._fd, view)
                self._size += n
                view = view[n:]
        except OSError as e:
            lost = len(view)
            view.release()
            self._buf.clear()
            raise OSError(e.errno, f"json-file log {self.path}: write: {e.strerror} "
                                   f"({lost} bytes of log messages lost)") from None
        view.release()
        self._buf.clear()

    def _rotate(self) -> None:
        try:
            if self.max_file < 2:
                os.ftruncate(self._fd, 0)
            else:
                for i in range(self.max_file - 1, 1, -1):
                    older = f"{self.path}.{i - 1}"
                    if os.path.exists(older):
                        os.replace(older, f"{self.path}.{i}")
                os.replace(self.path, f"{self.path}.1")
                os.close(self._fd)
                self._fd = -1
                self._fd = self._open()
        except OSError as e:
            raise OSError(e.errno, f"json-file log {self.path}: rotate: {e.strerror}") from None
        self._size = 0
        self._notifier.generation += 1
        self._notifier.notify()

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = -1
            self._notifier.notify()


# --- reader --------------------------------------------------------------------------------

def _last_lines(fd: int, end: int, n: int) -> tuple[list[bytes], int]:
    """The last ``n`` complete lines of ``fd`` before ``end`` (without newlines), and the end
    of the last complete line."""
    chunks: list[bytes] = []
    pos = end
    count = 0
    while pos > 0 and count <= n:
        size = min(_READ_BLOCK, pos)
        pos -= size
        block = os.pread(fd, size, pos)
        chunks.append(block)
        count += block.count(b"\n")
    data = b"".join(reversed(chunks))
    last_nl = data.rfind(b"\n")
    complete_end = pos + last_nl + 1
    lines = data[:last_nl + 1].split(b"\n")[:-1]
    if pos > 0:
        lines = lines[1:]          # the first one may be cut
    return (lines[-n:] if n else []), complete_end


def _read_all(path: str) -> list[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read().split(b"\n")[:-1]
    except FileNotFoundError:
        return []                  # rotated away meanwhile


class _Filter:
    def __init__(self, stdout: bool, stderr: bool, since_ns: int, until_ns: int | None) -> None:
        self.streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
        self.since_ns = since_ns
        self.until_ns = until_ns
        self.done = False          # an entry after ``until`` was seen

    def __call__(self, path: str, raw: bytes) -> LogEntry | None:
        if not raw:
            return None
        try:
            e = decode_entry(raw)
        except (ValueError, KeyError, TypeError) as err:
            log.warning("json-file log %s: skipping a malformed entry: %s", path, err)
            return None
        if self.until_ns is not None and e.time_ns > self.until_ns:
            self.done = True
            return None
        if e.stream not in self.streams or e.time_ns < self.since_ns:
            return None
        return e


async def read_logs(path: str, *, stdout: bool = True, stderr: bool = True, since_ns: int = 0,
                    until_ns: int | None = None, tail: int | None = None, follow: bool = False,
                    stop: asyncio.Event | None = None) -> AsyncIterator[LogEntry]:
    """The entries of the json-file log at ``path`` (rotated files included), oldest first.

    ``tail``: only the last N entries (counted before the stream and time filters, as dockerd
    does); ``since_ns``/``until_ns``: inclusive bounds on the entry time; ``follow``: then wait
    for new entries until ``stop`` is set (and everything written before it was read) or an
    entry after ``until_ns`` appears."""
    filt = _Filter(stdout, stderr, since_ns, until_ns)
    if until_ns is not None and until_ns < time.time_ns():
        follow = False
    notifier = _notifier(path)
    fd = -1
    stop_task: asyncio.Task[bool] | None = None
    try:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not follow:
                return
        ino = os.fstat(fd).st_ino if fd >= 0 else -1
        generation = notifier.generation
        older = [p for p in rotated_paths(path) if _ino(p) != ino]
        pos = 0
        if fd >= 0:
            end = os.fstat(fd).st_size
            if tail is not None:
                lines, pos = _last_lines(fd, end, tail)
                for p in reversed(older):
                    if len(lines) >= tail:
                        break
                    lines = _read_all(p)[-(tail - len(lines)):] + lines
                for raw in lines:
                    e = filt(path, raw)
                    if filt.done:
                        return
                    if e is not None:
                        yield e
            else:
                for p in older:
                    for raw in _read_all(p):
                        e = filt(p, raw)
                        if filt.done:
                            return
                        if e is not None:
                            yield e
        if tail is None:
            pos = 0
        # Follow: read fd from pos to its end; with ``follow`` keep going across rotations.
        loop = asyncio.get_running_loop()
        rest = b""
        while True:
            stopping = stop is not None and stop.is_set()
            if fd >= 0:
                while True:
                    data = os.pread(fd, _READ_BLOCK, pos)
                    if not data:
                        break
                    pos += len(data)
                    lines = (rest + data).split(b"\n")
                    rest = lines.pop()
                    for raw in lines:
                        e = filt(path, raw)
                        if filt.done:
                            return
                        if e is not None:
                            yield e
            if not follow:
                return
            cur = _ino(path)
            if cur not in (ino, -2):             # rotated: a new file at path
                if fd >= 0:
                    os.close(fd)
                    fd = -1
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                ino, pos, rest = os.fstat(fd).st_ino, 0, b""
                generation = notifier.generation
                continue
            if fd >= 0 and (notifier.generation != generation or os.fstat(fd).st_size < pos):
                generation = notifier.generation  # truncated (max-file 1)
                pos, rest = 0, b""
                continue
            if stopping:
                return
            waiter: asyncio.Future[None] = loop.create_future()
            notifier.waiters.add(waiter)
            waits: set[asyncio.Future[Any]] = {waiter}
            if stop is not None:
                if stop_task is None:
                    stop_task = asyncio.ensure_future(stop.wait())
                waits.add(stop_task)
            try:
                await asyncio.wait(waits, timeout=FOLLOW_POLL, return_when=asyncio.FIRST_COMPLETED)
            finally:
                notifier.waiters.discard(waiter)
                waiter.cancel()
    finally:
        if stop_task is not None and not stop_task.done():
            stop_task.cancel()
        if fd >= 0:
            os.close(fd)


def _ino(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return -2
