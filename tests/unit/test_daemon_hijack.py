"""Hijacked attach and streamed logs over a real aiohttp server on a Unix socket.

The server (skiffd's make_app with a small router calling serve_attach/serve_logs) runs in a
thread with its own event loop; the clients are plain blocking sockets that do what the docker
CLI does (POST with Upgrade: tcp, read the 101, CloseWrite, read frames until the daemon
closes), http.client for logs, and docker-py's attach_socket and logs.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from aiohttp import web

from skiff.daemon.api import hijack as hj
from skiff.daemon.api.errors import InvalidParameter, NotFound
from skiff.daemon.api.hijack import DetachMatcher, frame, parse_detach_keys, serve_attach, serve_logs
from skiff.daemon.api.server import Router, json_response, make_app
from skiff.daemon.logger import new_logger
from skiff.daemon.logger.jsonfile import JSONFileWriter
from skiff.daemon.streams import ContainerIO

T = TypeVar("T")

FAKE_SHIM = r"""
import os, subprocess, sys
from skiff.shim.stdio import ProcIO
stdin, stdout, stderr, *cmd = sys.argv[1:]
io = ProcIO(stdin, stdout, stderr, False)
io.open()
p = subprocess.Popen(cmd, stdin=io.child[0], stdout=io.child[1], stderr=io.child[2])
io.release_child()
io.close_stdin()
p.wait()
io.close()
"""

ATTACH_HEAD = ("POST {path} HTTP/1.1\r\nHost: api.moby.localhost\r\n"
               "User-Agent: Docker-Client/28.2.2 (linux)\r\nContent-Length: 0\r\n"
               "Connection: Upgrade\r\nContent-Type: text/plain\r\nUpgrade: tcp\r\n\r\n")
UPGRADED = ("HTTP/1.1 101 UPGRADED\r\nContent-Type: {ctype}\r\nConnection: Upgrade\r\n"
            "Upgrade: tcp\r\n\r\n")


@dataclass
class Ctr:
    io: ContainerIO | None
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    log_path: str | None = None
    done: asyncio.Future[None] | None = None
    stop: asyncio.Event | None = None
    detached: list[bool] = field(default_factory=list)
    attach_ended: asyncio.Event = field(default_factory=asyncio.Event)


class FakeRouter(Router):
    def __init__(self) -> None:
        self.ctrs: dict[str, Ctr] = {}

    def routes(self) -> list[tuple[str, str, Any]]:
        return [("POST", "/containers/{id}/attach", self.attach),
                ("GET", "/containers/{id}/logs", self.logs),
                ("GET", "/containers/{id}/json", self.inspect)]

    def get(self, request: web.Request) -> Ctr:
        c = self.ctrs.get(request.match_info["id"])
        if c is None:
            raise NotFound(f"No such container: {request.match_info['id']}")
        return c

    async def inspect(self, request: web.Request) -> web.StreamResponse:
        c = self.get(request)
        return json_response({"Id": request.match_info["id"], "Config": {"Tty": c.tty}})

    async def attach(self, request: web.Request) -> web.StreamResponse:
        c = self.get(request)
        try:
            return await serve_attach(
                request, c.io, tty=c.tty, open_stdin=c.open_stdin, stdin_once=c.stdin_once,
                log_path=c.log_path, done=c.done,
                close_stdin=c.io.close_stdin if c.io is not None else None,
                on_detach=lambda: c.detached.append(True))
        finally:
            c.attach_ended.set()

    async def logs(self, request: web.Request) -> web.StreamResponse:
        c = self.get(request)
        return await serve_logs(request, log_path=c.log_path, tty=c.tty, stop=c.stop)


class Server:
    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.path = os.path.join(tmp, "api.sock")
        self.router = FakeRouter()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(make_app([self.router]), handler_cancellation=True,
                                    access_log=None, shutdown_timeout=2.0)
        self.call(self._start())

    async def _start(self) -> None:
        await self.runner.setup()
        await web.UnixSite(self.runner, self.path).start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def run(self, fn: Callable[[], T]) -> T:
        async def wrap() -> T:
            return fn()
        return self.call(wrap())

    def close(self) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    def container(self, name: str, *, stdin: bool = False, tty: bool = False,
                  log: bool = True, limit: int = 8 << 20, **kw: Any) -> Ctr:
        async def make() -> Ctr:
            log_path = os.path.join(self.tmp, f"{name}-json.log") if log else None
            logger = new_logger("json-file", {}, log_path) if log_path else None
            io = ContainerIO(os.path.join(self.tmp, "fifos", name), "init", stdin=stdin, tty=tty,
                             logger=logger, subscriber_limit=limit)
            io.fifo_paths()
            await io.open()
            c = Ctr(io, tty=tty, open_stdin=stdin, log_path=log_path,
                    done=asyncio.get_running_loop().create_future(), **kw)
            self.router.ctrs[name] = c
            return c
        return self.call(make())


@pytest.fixture
def server() -> Iterator[Server]:
    tmp = tempfile.mkdtemp(prefix="skh-", dir="/tmp")
    s = Server(tmp)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(tmp)


def attach(server: Server, path: str, *, upgrade: bool = True) -> tuple[socket.socket, bytes, bytes]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(server.path)
    req = ATTACH_HEAD.format(path=path)
    if not upgrade:
        req = req.replace("Connection: Upgrade\r\n", "").replace("Upgrade: tcp\r\n", "")
    s.sendall(req.encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        assert chunk, f"connection closed before the head: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return s, head + b"\r\n\r\n", rest


def read_all(s: socket.socket, buf: bytes = b"") -> bytes:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return buf
        buf += chunk


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        stream, n = struct.unpack(">BxxxL", data[:8])
        assert n > 0, "zero-length frame"
        out.append((stream, data[8:8 + n]))
        assert len(data) >= 8 + n, "truncated frame"
        data = data[8 + n:]
    return out


def by_stream(frames: list[tuple[int, bytes]]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for st, d in frames:
        out[st] = out.get(st, b"") + d
    return out


def write_fifo(path: str, data: bytes, close: bool = True) -> int:
    fd = os.open(path, os.O_WRONLY)      # skiffd's read end is open: no wait
    os.write(fd, data)
    if close:
        os.close(fd)
        return -1
    return fd


# --- framing / detach keys -------------------------------------------------------------------

def test_frame() -> None:
    assert frame(1, b"hi\n") == b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"
    assert frame(2, b"x" * 300)[:8] == b"\x02\x00\x00\x00\x00\x00\x01\x2c"


def test_detach_keys() -> None:
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("a,ctrl-@,ctrl-\\") == b"a\x00\x1c"
    with pytest.raises(InvalidParameter, match=r"Invalid detach keys \(ctrl-1\) provided"):
        parse_detach_keys("ctrl-1")
    m = DetachMatcher(b"\x10\x11")
    assert m.feed(b"ab\x10") == (b"ab", False)        # a possible start is held back
    assert m.feed(b"c") == (b"\x10c", False)          # ... and released on a mismatch
    assert m.feed(b"\x10\x10") == (b"\x10", False)
    assert m.feed(b"\x11rest") == (b"", True)
    assert m.flush() == b""
    m2 = DetachMatcher(b"\x10\x11")
    assert m2.feed(b"x\x10") == (b"x", False) and m2.flush() == b"\x10"


# --- attach ------------------------------------------------------------------------------------

def test_attach_like_docker_run(server: Server) -> None:
    """101, CloseWrite at once, output frames, the daemon closes once the output ended."""
    c = server.container("c1")
    assert c.io is not None
    s, head, rest = attach(server, "/v1.47/containers/c1/attach?stderr=1&stdout=1&stream=1")
    assert head.decode() == UPGRADED.format(ctype="application/vnd.docker.multiplexed-stream")
    s.shutdown(socket.SHUT_WR)           # the CLI's CloseWrite: not a disconnect
    _, out, err = c.io.fifo_paths()
    write_fifo(out, b"hi\n")
    write_fifo(err, b"oops\n")
    data = read_all(s, rest)
    s.close()
    assert by_stream(parse_frames(data)) == {1: b"hi\n", 2: b"oops\n"}
    server.call(c.attach_ended.wait())
    # the hijacked connection was handed back to aiohttp's bookkeeping
    server.call(_until_no_connections(server))
    # the log got it too
    lines = [json.loads(x) for x in open(c.log_path or "", "rb").read().splitlines()]
    assert sorted((x["stream"], x["log"]) for x in lines) == [("stderr", "oops\n"), ("stdout", "hi\n")]


def test_attach_stdin_once_through_a_process(server: Server) -> None:
    """printf 'a\\nb\\n' | docker run -i: stdin right after the 101 and before start, then
    CloseWrite; StdinOnce closes the container's stdin; cat's output comes back framed."""
    c = server.container("c2", stdin=True, stdin_once=True)
    assert c.io is not None
    s, head, rest = attach(server, "/containers/c2/attach?stderr=1&stdin=1&stdout=1&stream=1")
    assert b"101 UPGRADED" in head
    s.sendall(b"a\nb\n")
    s.shutdown(socket.SHUT_WR)
    stdin, stdout, stderr = c.io.fifo_paths()
    shim = subprocess.Popen([sys.executable, "-c", FAKE_SHIM, stdin, stdout, stderr, "cat"])
    try:
        # "Tasks.Create" returned once the shim has its ends; ProcIO opens them in open()
        server.call(_until_shim_has(stdin))
        server.call(c.io.process_created())
        data = read_all(s, rest)
    finally:
        assert shim.wait() == 0
    s.close()
    assert by_stream(parse_frames(data)) == {1: b"a\nb\n"}


async def _until_shim_has(fifo: str) -> None:
    # the shim's stdin read end is open once a non-blocking write-only open succeeds...
    # skiffd itself holds an O_RDWR end, so look for another process's fd on the FIFO instead
    ino = os.stat(fifo).st_ino
    while True:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        st = os.stat(f"/proc/{pid}/fd/{fd}")
                    except OSError:
                        continue
                    if st.st_ino == ino:
                        return
            except OSError:
                continue
        await asyncio.sleep(0.01)


def test_attach_tty_raw_and_detach_keys(server: Server) -> None:
    c = server.container("c3", stdin=True, tty=True)
    assert c.io is not None
    s, head, rest = attach(server, "/containers/c3/attach?stdin=1&stdout=1&stderr=1&stream=1"
                                   "&detachKeys=ctrl-x")
    assert head.decode() == UPGRADED.format(ctype="application/vnd.docker.raw-stream")
    stdin, out, err = c.io.fifo_paths()
    assert err == ""
    rfd = os.open(stdin, os.O_RDONLY | os.O_NONBLOCK)
    try:
        w = write_fifo(out, b"prompt$ ", close=False)
        got = rest
        while len(got) < 8:
            got += s.recv(100)
        assert got == b"prompt$ "            # raw: no frame header
        s.sendall(b"hello\x18")             # ctrl-x
        assert read_all(s) == b""            # the daemon closed the attach
        server.call(c.attach_ended.wait())
        assert os.read(rfd, 100) == b"hello"
        assert c.detached == [True]
        assert not c.io.closed               # the container goes on
        os.close(w)
    finally:
        os.close(rfd)
        s.close()


def test_attach_without_upgrade_header_gets_200_and_old_api_gets_raw_type(server: Server) -> None:
    c = server.container("c4")
    assert c.io is not None
    s, head, _ = attach(server, "/v1.41/containers/c4/attach?stdout=1&stream=1", upgrade=False)
    assert head == b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"
    s2, head2, rest2 = attach(server, "/v1.41/containers/c4/attach?stdout=1&stream=1")
    assert head2.decode() == UPGRADED.format(ctype="application/vnd.docker.raw-stream")
    _, out, err = c.io.fifo_paths()
    write_fifo(out, b"x\n")
    write_fifo(err, b"")
    assert parse_frames(read_all(s)) == [(1, b"x\n")]      # still multiplexed (Tty=false)
    assert parse_frames(read_all(s2, rest2)) == [(1, b"x\n")]
    s.close()
    s2.close()


def test_attach_logs_replay_then_live_then_done(server: Server) -> None:
    c = server.container("c5")
    assert c.io is not None and c.log_path is not None
    _, out, err = c.io.fifo_paths()
    w1 = write_fifo(out, b"old1\nold2\n", close=False)
    server.call(_until_logged(c.log_path, 2))
    # logs only: replays and ends
    s, _, rest = attach(server, "/containers/c5/attach?logs=1&stdout=1&stderr=1")
    s.shutdown(socket.SHUT_WR)
    assert parse_frames(read_all(s, rest)) == [(1, b"old1\n"), (1, b"old2\n")]
    s.close()
    # logs and stream: the past, then live output; `done` (exit + output copied) closes it
    s, _, rest = attach(server, "/containers/c5/attach?logs=1&stream=1&stdout=1&stderr=1")
    s.shutdown(socket.SHUT_WR)
    got = rest
    while len(got) < 2 * 13:
        got += s.recv(100)
    assert parse_frames(got) == [(1, b"old1\n"), (1, b"old2\n")]
    os.write(w1, b"new\n")
    while len(got) < 3 * 12 + 2:
        got += s.recv(100)
    server.run(lambda: c.done.set_result(None) if c.done else None)
    got = read_all(s, got)
    assert parse_frames(got)[2:] == [(1, b"new\n")]
    s.close()
    os.close(w1)
    write_fifo(err, b"")


async def _until_no_connections(server: Server) -> None:
    assert server.runner.server is not None
    while server.runner.server.connections:
        await asyncio.sleep(0.01)


async def _until_logged(path: str, n: int) -> None:
    while not os.path.exists(path) or len(open(path, "rb").read().splitlines()) < n:
        await asyncio.sleep(0.01)


def test_attach_notices_a_client_that_hangs_up(server: Server, monkeypatch) -> None:
    monkeypatch.setattr(hj, "LIVENESS_INTERVAL", 0.02)
    c = server.container("c6")
    assert c.io is not None
    s, _, _ = attach(server, "/containers/c6/attach?stdout=1&stderr=1&stream=1")
    s.shutdown(socket.SHUT_WR)
    s.close()                             # gone, with no output to write
    server.call(c.attach_ended.wait())
    assert server.run(lambda: len(c.io._subs) if c.io else -1) == 0   # unsubscribed
    assert not c.io.closed
    # the container's done future is shared (logs -f, other attaches): a client leaving
    # must not cancel it
    assert server.run(lambda: c.done is not None and not c.done.done())


def test_a_stalled_attach_client_is_cut_off_and_holds_up_nobody(server: Server) -> None:
    """A client that stops reading falls behind by more than the subscriber limit and is
    disconnected; a client that keeps up and the log get everything."""
    chunk, rounds = 128 << 10, 16          # each round < the 256 KiB limit, 2 MiB in all
    c = server.container("c8", limit=256 << 10)
    assert c.io is not None and c.log_path is not None
    slow, _, slow_rest = attach(server, "/containers/c8/attach?stdout=1&stderr=1&stream=1")
    fast, _, fast_rest = attach(server, "/containers/c8/attach?stdout=1&stderr=1&stream=1")
    slow.shutdown(socket.SHUT_WR)
    fast.shutdown(socket.SHUT_WR)
    _, out, err = c.io.fifo_paths()
    w = os.open(out, os.O_WRONLY)
    buf, payload = fast_rest, b""
    for i in range(rounds):
        os.write(w, bytes([65 + i]) * chunk)          # blocking: the loop reads it
        while len(payload) < (i + 1) * chunk:        # the fast client keeps up each round
            data = fast.recv(1 << 16)
            assert data, "the fast client was disconnected"
            buf += data
            frames, buf = split_frames(buf)
            payload += b"".join(d for st, d in frames if st == 1)
    os.close(w)
    write_fifo(err, b"")
    assert read_all(fast, buf) == b""
    assert payload == b"".join(bytes([65 + i]) * chunk for i in range(rounds))
    server.call(c.io.wait_closed())
    # the stalled client was disconnected at once: the attach ended although the client has
    # not read a byte (a graceful close would wait for it to take what is buffered)
    server.call(c.attach_ended.wait())
    cut = read_all(slow, slow_rest)
    assert len(cut) < rounds * chunk
    slow.close()
    fast.close()
    logged = [json.loads(x) for x in open(c.log_path, "rb").read().splitlines()]
    assert sum(len(x["log"]) for x in logged) == rounds * chunk


def split_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete frames at the start of buf, and the rest."""
    out = []
    while len(buf) >= 8:
        stream, n = struct.unpack(">BxxxL", buf[:8])
        if len(buf) < 8 + n:
            break
        out.append((stream, buf[8:8 + n]))
        buf = buf[8 + n:]
    return out, buf


def test_attach_errors_before_the_hijack_are_json(server: Server) -> None:
    server.container("c7", log=False)
    conn = UnixHTTP(server.path)
    conn.request("POST", "/containers/c7/attach?logs=1&stdout=1", headers={
        "Connection": "Upgrade", "Upgrade": "tcp"})
    r = conn.getresponse()
    assert r.status == 501
    assert json.loads(r.read()) == {"message": "configured logging driver does not support reading"}
    conn.request("POST", "/containers/nope/attach?stdout=1&stream=1")
    r = conn.getresponse()
    assert (r.status, json.loads(r.read())) == (404, {"message": "No such container: nope"})
    conn.close()


# --- logs --------------------------------------------------------------------------------------

class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


T0 = 1_795_803_342_000_000_000


def make_log(path: str, entries: list[tuple[str, bytes]]) -> None:
    w = JSONFileWriter(path)
    for i, (st, line) in enumerate(entries):
        w.write(st, line, T0 + i * 1_000_000_000)
    w.close()


def test_logs_multiplexed_tail_timestamps_details(server: Server) -> None:
    c = server.container("l1")
    assert c.log_path is not None
    make_log(c.log_path, [("stdout", b"a\n"), ("stderr", b"b\n"), ("stdout", b"c\n")])
    c.stop = asyncio.Event()
    server.run(c.stop.set)
    conn = UnixHTTP(server.path)
    conn.request("GET", "/v1.47/containers/l1/logs?stderr=1&stdout=1&tail=all")
    r = conn.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Type") == "application/vnd.docker.multiplexed-stream"
    assert parse_frames(r.read()) == [(1, b"a\n"), (2, b"b\n"), (1, b"c\n")]
    conn.request("GET", "/containers/l1/logs?stdout=1&tail=2&timestamps=1")
    r = conn.getresponse()
    assert parse_frames(r.read()) == [(1, b"2026-11-27T18:15:44.000000000Z c\n")]
    conn.request("GET", "/containers/l1/logs?stdout=1&stderr=1&details=1&since=1795803343"
                        "&until=1795803343.5")
    r = conn.getresponse()
    assert parse_frames(r.read()) == [(2, b" b\n")]
    conn.request("GET", "/containers/l1/logs?stdout=0&stderr=0")
    r = conn.getresponse()
    assert (r.status, r.getheader("Content-Type"), json.loads(r.read())) == (
        400, "application/json", {"message": "Bad parameters: you must choose at least one stream"})
    conn.request("GET", "/containers/l1/logs?stdout=1&tail=x")
    r = conn.getresponse()
    assert r.status == 400 and b"tail" in r.read()
    conn.close()


def test_logs_tty_raw_and_none_driver(server: Server) -> None:
    c = server.container("l2", tty=True)
    assert c.log_path is not None
    make_log(c.log_path, [("stdout", b"a\r\n"), ("stdout", b"b\r\n")])
    server.container("l3", log=False)
    conn = UnixHTTP(server.path)
    conn.request("GET", "/containers/l2/logs?stdout=1&stderr=1")
    r = conn.getresponse()
    assert r.getheader("Content-Type") == "application/vnd.docker.raw-stream"
    assert r.read() == b"a\r\nb\r\n"
    conn.request("GET", "/containers/l3/logs?stdout=1")
    r = conn.getresponse()
    assert (r.status, json.loads(r.read())) == (
        501, {"message": "configured logging driver does not support reading"})
    conn.close()


def test_logs_follow_flushes_headers_and_ends_when_stopped(server: Server) -> None:
    c = server.container("l4")
    assert c.io is not None
    c.stop = server.call(_event())
    conn = UnixHTTP(server.path)
    conn.request("GET", "/containers/l4/logs?stdout=1&stderr=1&follow=1")
    r = conn.getresponse()               # returns with the log still empty: headers flushed
    assert r.status == 200
    _, out, err = c.io.fifo_paths()
    w = write_fifo(out, b"one\n", close=False)
    first = r.read1(65536)
    while len(first) < 12:
        first += r.read1(65536)
    assert parse_frames(first) == [(1, b"one\n")]
    os.write(w, b"two\n")
    os.close(w)
    write_fifo(err, b"three\n")
    server.call(c.io.wait_closed())      # the "container" exited, its output is logged
    server.run(c.stop.set)
    rest = r.read()                      # the chunked body ends
    assert by_stream(parse_frames(rest)) == {1: b"two\n", 2: b"three\n"}
    conn.close()


async def _event() -> asyncio.Event:
    return asyncio.Event()


# --- docker-py -----------------------------------------------------------------------------------

def test_docker_py_attach_socket_and_logs(server: Server) -> None:
    import docker
    from docker.utils.socket import consume_socket_output, frames_iter

    c = server.container("p1")
    assert c.io is not None
    api = docker.APIClient(base_url="unix://" + server.path, version="1.47")
    sock = api.attach_socket("p1", params={"stdout": 1, "stderr": 1, "stream": 1})
    _, out, err = c.io.fifo_paths()
    write_fifo(out, b"from py\n")
    write_fifo(err, b"err py\n")
    frames = list(frames_iter(sock, tty=False))
    sock.close()
    assert sorted(frames) == [(1, b"from py\n"), (2, b"err py\n")]
    server.call(c.io.wait_closed())
    assert consume_socket_output([b"x"]) == b"x"
    logs = api.logs("p1", stdout=True, stderr=True)
    assert sorted(logs.splitlines()) == [b"err py", b"from py"]
    assert api.logs("p1", stdout=True, stderr=False, timestamps=True).startswith(b"20")
    api.close()
