#!/usr/bin/env python3
"""Where the memory of skiffd and skiff-containerd goes (docs/memory.md has the results).

    .venv/bin/python bench/memory.py imports [skiffd|containerd]
    .venv/bin/python bench/memory.py process PID [PID...]
    .venv/bin/python bench/memory.py options

``imports``: a fresh interpreter imports the daemon's start-up modules one step at a time, in
the order the daemon does, and prints after each step (after ``gc.collect`` and
``malloc_trim``) the growth of its anonymous memory (the heap, Python's object arenas: private
to the process) and of its RSS (anonymous + pages of mapped files, shared or not), and the
number of modules and threads. The process settings of the daemon's start-up are applied first
(one malloc arena; for skiff-containerd, ``asyncio`` and ``grpc.aio`` deferred).

``process``: a live process from /proc: smaps_rollup (private/shared, anonymous/file), the
mappings that hold the most (by PSS), the anonymous memory by kind (the brk heap, glibc's
per-thread arenas, other anonymous mappings: Python's 1 MiB object arenas and large blocks),
and its threads by name.

``options``: prototypes of the two architecture changes, each measured in a fresh process that
first imports what skiffd has anyway (asyncio, aiohttp or not, protobuf and containerd's API
modules):
1. skiffd's containerd client: ``grpc.aio`` against a minimal gRPC client over HTTP/2 written
   here (asyncio streams, frames by hand, HPACK from the ``hpack`` package: ``pip install
   hpack``; skipped without it), both making 600 unary calls and opening an events stream to a
   skiff-containerd started in a temporary directory (stopped by PID at the end);
2. the HTTP layer: ``aiohttp.web`` with skiffd's route table (every spec route, versioned and
   not) against a minimal asyncio HTTP/1.1 server written here with the same routes, each
   serving 200 ``GET /_ping`` on a Unix socket.
The prototypes are measuring devices, not replacements: no TLS, no chunked bodies, no hijack,
no flow control beyond window updates.

Standard library only, except ``hpack`` for the HTTP/2 prototype. Nothing is asserted; exit
status 0 when every measurement ran.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable

# -- measuring this process ----------------------------------------------------------------------

_libc: Any = None


def rollup(pid: int | str = "self") -> dict[str, int]:
    """/proc/PID/smaps_rollup in kB (Rss, Pss, Private_Dirty, Anonymous, ...)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            p = line.split()
            if len(p) >= 3 and p[0].endswith(":"):
                out[p[0][:-1]] = int(p[1])
    return out


def settled() -> dict[str, int]:
    """This process's rollup after a full collection and malloc_trim, with its thread count."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None)
    gc.collect()
    _libc.malloc_trim(0)
    r = rollup()
    r["threads"] = len(os.listdir("/proc/self/task"))
    r["modules"] = len(sys.modules)
    return r


class Steps:
    """Prints one line per step: anon and RSS (kB) and their growth since the previous step."""

    def __init__(self, title: str) -> None:
        self.prev: dict[str, int] | None = None
        print(f"{title:<46}{'+anon':>7}{'+rss':>7}{'anon':>8}{'rss':>8}{'mods':>6}{'thr':>4}", flush=True)

    def step(self, label: str) -> None:
        r = settled()
        p = self.prev or {"Anonymous": r["Anonymous"], "Rss": r["Rss"]}
        print(f"{label[:45]:<46}{r['Anonymous'] - p['Anonymous']:>7}{r['Rss'] - p['Rss']:>7}"
              f"{r['Anonymous']:>8}{r['Rss']:>8}{r['modules']:>6}{r['threads']:>4}", flush=True)
        self.prev = r


# -- imports -------------------------------------------------------------------------------------

SKIFFD_STEPS = [
    "logging", "asyncio", "aiohttp", "aiohttp.web", "grpc", "grpc.aio",
    "google.protobuf.descriptor_pool",
    "=containerd API modules skiffd uses",
    "skiff.daemon.server", "skiff.daemon.containerd.client", "skiff.daemon.containers.backend",
    "skiff.images.unpack", "skiff.daemon.images.service", "skiff.daemon.volumes.service",
    "skiff.daemon.network.manager", "skiff.daemon.containers.exec",
    "skiff.daemon.api.images", "skiff.daemon.api.containers", "skiff.daemon.api.exec",
    "skiff.daemon.api.networks", "skiff.daemon.api.volumes", "skiff.daemon.api.df",
]
CONTAINERD_STEPS = [
    "logging", "argparse", "grpc", "google.protobuf.descriptor_pool",
    "=containerd API modules (all)",
    "skiff.containerd.config", "skiff.containerd.server", "skiff.containerd.core",
    "skiff.containerd.tasks_core", "skiff.containerd.services",
]
CLIENT_SERVICES = ("version", "containers", "tasks", "snapshots", "images", "content", "diff", "leases",
                   "events")  # the services skiffd's client makes stubs for


# The child of ``imports``: a program of its own (``python -c``), so that nothing but the
# interpreter, ctypes and skiff.memtrim is loaded before the first step.
IMPORTS_CHILD = r"""
import ctypes, gc, os, sys
which, steps = sys.argv[1], sys.argv[2:]
from skiff import memtrim
memtrim.limit_arenas(1)
if which == "containerd":
    from skiff.containerd.main import UNUSED_MODULES
    for name in UNUSED_MODULES:
        memtrim.defer_import(name)
libc = ctypes.CDLL(None)
prev = None
print(f"{which + ': import step':<46}{'+anon':>7}{'+rss':>7}{'anon':>8}{'rss':>8}{'mods':>6}{'thr':>4}")
for name in ["(interpreter, skiff.memtrim)"] + steps:
    if name.startswith("="):
        from skiff.containerd.protos import load
        api = load()
        if which == "skiffd":
            for svc in ("version", "containers", "tasks", "snapshots", "images", "content", "diff",
                        "leases", "events"):
                getattr(api, svc + "_grpc")
            list(api.event_modules())
        else:
            api.load_all()
        name = name[1:]
    elif not name.startswith("("):
        __import__(name)
    gc.collect()
    libc.malloc_trim(0)
    r = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            p = line.split()
            if len(p) >= 3 and p[0].endswith(":"):
                r[p[0][:-1]] = int(p[1])
    p = prev or r
    print(f"{name[:45]:<46}{r['Anonymous'] - p['Anonymous']:>7}{r['Rss'] - p['Rss']:>7}{r['Anonymous']:>8}"
          f"{r['Rss']:>8}{len(sys.modules):>6}{len(os.listdir('/proc/self/task')):>4}", flush=True)
    prev = r
if which == "containerd":
    print(f"asyncio still deferred: {memtrim.is_deferred('asyncio')}; ssl loaded: {'ssl' in sys.modules}")
"""


# -- process -------------------------------------------------------------------------------------

HEAP_MAX = 64 << 20   # glibc's per-thread arenas are 64 MiB-aligned reservations


def smaps(pid: int) -> list[dict[str, Any]]:
    maps: list[dict[str, Any]] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if re.match(r"^[0-9a-f]+-[0-9a-f]+$", first):
                parts = line.split(None, 5)
                lo, hi = (int(x, 16) for x in first.split("-"))
                maps.append({"lo": lo, "hi": hi, "perm": parts[1],
                             "path": parts[5].strip() if len(parts) > 5 else "", "kb": {}})
            else:
                p = line.split()
                if len(p) >= 2 and p[1].isdigit():
                    maps[-1]["kb"][p[0][:-1]] = int(p[1])
    return maps


def process_report(pid: int, top: int = 14) -> None:
    with open(f"/proc/{pid}/comm") as f:
        comm = f.read().strip()
    r = rollup(pid)
    print(f"== {pid} {comm}: Rss {r['Rss']} kB, Pss {r['Pss']} (anon {r.get('Pss_Anon', 0)}, "
          f"file {r.get('Pss_File', 0)}), private {r['Private_Clean'] + r['Private_Dirty']} "
          f"(dirty {r['Private_Dirty']}), shared {r['Shared_Clean'] + r['Shared_Dirty']}, "
          f"anonymous {r['Anonymous']}")
    maps = smaps(pid)
    groups: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for m in maps:
        name = m["path"] if m["path"].startswith("[") else os.path.basename(m["path"]) or "[anon]"
        for k in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
            groups[name][k] += m["kb"].get(k, 0)
    print(f"   {'mapping':<44}{'rss':>7}{'pss':>7}{'private':>9}")
    for name, c in sorted(groups.items(), key=lambda kv: -kv[1]["Pss"])[:top]:
        print(f"   {name[:43]:<44}{c['Rss']:>7}{c['Pss']:>7}{c['Private_Clean'] + c['Private_Dirty']:>9}")
    heap = sum(m["kb"].get("Rss", 0) for m in maps if m["path"] == "[heap]")
    arenas = arena_rss = 0
    in_arena: set[int] = set()
    for i, m in enumerate(maps):
        if m["path"] or m["lo"] % HEAP_MAX:
            continue
        end, j, rss = m["hi"], i + 1, m["kb"].get("Rss", 0)
        while j < len(maps) and maps[j]["lo"] == end and not maps[j]["path"] and end - m["lo"] < HEAP_MAX:
            end, rss = maps[j]["hi"], rss + maps[j]["kb"].get("Rss", 0)
            j += 1
        if end - m["lo"] == HEAP_MAX:
            arenas += 1
            arena_rss += rss
            in_arena.update(range(i, j))
    other = [m for i, m in enumerate(maps) if not m["path"] and i not in in_arena]
    other_rss = sum(m["kb"].get("Rss", 0) for m in other)
    stacks = sum(1 for m in other if m["kb"].get("Size", 0) in (8192, 8196))
    print(f"   anonymous: [heap] {heap} kB; {arenas} thread arenas of malloc, {arena_rss} kB; other "
          f"anonymous mappings {other_rss} kB ({len(other)} mappings, {stacks} of them 8 MiB thread stacks)")
    names: collections.Counter[str] = collections.Counter()
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                names[f.read().strip()] += 1
        except OSError:
            pass
    print(f"   threads {sum(names.values())}: " + ", ".join(f"{n} x{c}" for n, c in names.most_common()))


# -- options: a minimal gRPC client over HTTP/2 ---------------------------------------------------

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST, _SETTINGS, _PING, _GOAWAY, _WINDOW, _CONT = 0, 1, 3, 4, 6, 7, 8, 9
_END_STREAM, _END_HEADERS, _ACK, _PADDED, _PRIORITY = 0x1, 0x4, 0x1, 0x8, 0x20
_WINDOW_SIZE = 1 << 24


class GrpcH2Error(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"grpc status {code}: {message}")
        self.code = code


class _Call:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.buf = b""
        self.headers: dict[str, str] = {}


class GrpcH2Channel:
    """Unary calls and server streams over one h2c connection to a Unix socket."""

    def __init__(self, path: str) -> None:
        import hpack

        self.path = path
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.calls: dict[int, _Call] = {}
        self.next_id = 1
        self.pending_headers: dict[int, bytes] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    @staticmethod
    def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        n = len(payload)
        return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, kind, flags, stream) + payload

    async def connect(self) -> None:
        reader, self.writer = await asyncio.open_unix_connection(self.path)
        settings = struct.pack(">HI", 2, 0) + struct.pack(">HI", 4, _WINDOW_SIZE)  # no push; window
        self.writer.write(_PREFACE + self.frame(_SETTINGS, 0, 0, settings)
                          + self.frame(_WINDOW, 0, 0, struct.pack(">I", _WINDOW_SIZE)))
        self.task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        assert self.writer is not None
        try:
            while True:
                hi, lo, kind, flags, sid = struct.unpack(">BHBBI", await reader.readexactly(9))
                sid &= 0x7FFFFFFF
                payload = await reader.readexactly((hi << 16) | lo)
                if kind in (_HEADERS, _DATA) and flags & _PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                call = self.calls.get(sid)
                if kind == _SETTINGS and not flags & _ACK:
                    self.writer.write(self.frame(_SETTINGS, _ACK, 0, b""))
                elif kind == _PING and not flags & _ACK:
                    self.writer.write(self.frame(_PING, _ACK, 0, payload))
                elif kind in (_HEADERS, _CONT):
                    if kind == _HEADERS and flags & _PRIORITY:
                        payload = payload[5:]
                    block = self.pending_headers.pop(sid, b"") + payload
                    if not flags & _END_HEADERS:
                        self.pending_headers[sid] = block
                        continue
                    for k, v in self.decoder.decode(block):
                        if call is not None:
                            call.headers[str(k)] = str(v)
                    if call is not None and flags & _END_STREAM:
                        call.queue.put_nowait(None)
                elif kind == _DATA:
                    if payload:
                        inc = struct.pack(">I", len(payload))
                        self.writer.write(self.frame(_WINDOW, 0, 0, inc) + self.frame(_WINDOW, 0, sid, inc))
                    if call is not None:
                        call.buf += payload
                        while len(call.buf) >= 5:
                            n = struct.unpack(">I", call.buf[1:5])[0]
                            if len(call.buf) < 5 + n:
                                break
                            call.queue.put_nowait(call.buf[5:5 + n])
                            call.buf = call.buf[5 + n:]
                        if flags & _END_STREAM:
                            call.queue.put_nowait(None)
                elif kind == _RST and call is not None:
                    call.headers.setdefault("grpc-status", "14")
                    call.queue.put_nowait(None)
                elif kind == _GOAWAY:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        for call in self.calls.values():
            call.headers.setdefault("grpc-status", "14")
            call.queue.put_nowait(None)

    def _start(self, method: str, message: bytes, metadata: tuple[tuple[str, str], ...]) -> tuple[int, _Call]:
        assert self.writer is not None
        sid, self.next_id = self.next_id, self.next_id + 2
        call = self.calls[sid] = _Call()
        block = self.encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", method),
                                     (":authority", "localhost"), ("te", "trailers"),
                                     ("content-type", "application/grpc"), *metadata])
        self.writer.write(self.frame(_HEADERS, _END_HEADERS, sid, block) + self.frame(
            _DATA, _END_STREAM, sid, b"\0" + struct.pack(">I", len(message)) + message))
        return sid, call

    @staticmethod
    def _check(call: _Call) -> None:
        code = int(call.headers.get("grpc-status", "2"))
        if code:
            raise GrpcH2Error(code, call.headers.get("grpc-message", ""))

    async def unary(self, method: str, message: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
        sid, call = self._start(method, message, metadata)
        try:
            reply = None
            while (item := await call.queue.get()) is not None:
                reply = item
            self._check(call)
            if reply is None:
                raise GrpcH2Error(13, "no reply message")
            return reply
        finally:
            self.calls.pop(sid, None)

    async def stream(self, method: str, message: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        sid, call = self._start(method, message, metadata)
        try:
            while (item := await call.queue.get()) is not None:
                yield item
            self._check(call)
        finally:
            if self.calls.pop(sid, None) is not None and self.writer is not None:
                self.writer.write(self.frame(_RST, 0, sid, struct.pack(">I", 8)))  # CANCEL

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


def child_client(mode: str, address: str) -> int:
    from skiff import memtrim

    memtrim.limit_arenas(1)
    import aiohttp.web  # noqa: F401  (skiffd has it anyway)
    from google.protobuf import empty_pb2

    from skiff.containerd.protos import load

    api = load()
    for svc in CLIENT_SERVICES:
        getattr(api, svc)
    s = Steps(f"client {mode}")
    s.step("asyncio, aiohttp, protobuf, API modules")
    if mode == "grpc":
        import grpc.aio
        for svc in CLIENT_SERVICES:
            getattr(api, svc + "_grpc")
    else:
        import hpack  # noqa: F401
    s.step("the client's imports")
    md = (("containerd-namespace", "skiff"),)
    sub = api.events.SubscribeRequest(filters=['namespace=="skiff"'])

    async def run() -> float:
        if mode == "grpc":
            channel = grpc.aio.insecure_channel("unix:" + address)
            version = api.version_grpc.VersionStub(channel).Version
            tasks = api.tasks_grpc.TasksStub(channel).List

            async def v() -> Any:
                return await version(empty_pb2.Empty(), metadata=md)

            async def t() -> Any:
                return await tasks(api.tasks.ListTasksRequest(), metadata=md)
            events = api.events_grpc.EventsStub(channel).Subscribe(sub, metadata=md)
        else:
            h2 = GrpcH2Channel(address)
            await h2.connect()

            async def v() -> Any:
                return api.version.VersionResponse.FromString(await h2.unary(
                    "/containerd.services.version.v1.Version/Version", empty_pb2.Empty().SerializeToString(), md))

            async def t() -> Any:
                return api.tasks.ListTasksResponse.FromString(await h2.unary(
                    "/containerd.services.tasks.v1.Tasks/List", api.tasks.ListTasksRequest().SerializeToString(), md))
            events = h2.stream("/containerd.services.events.v1.Events/Subscribe", sub.SerializeToString(), md)
        await v()
        s.step("connected, one call")
        t0 = time.perf_counter()
        for _ in range(300):
            await v()
            await t()
        per_call = (time.perf_counter() - t0) / 600
        s.step("600 unary calls")
        nxt = asyncio.ensure_future(events.__aiter__().__anext__())
        await asyncio.sleep(0.5)
        s.step("+ an events stream open")
        nxt.cancel()
        if mode == "grpc":
            events.cancel()
            await channel.close()
        else:
            await h2.close()
        return per_call
    per_call = asyncio.run(run())
    print(f"client {mode}: {per_call * 1e6:.0f} us per unary call (Version, Tasks.List alternating)")
    return 0


# -- options: a minimal HTTP/1.1 server ----------------------------------------------------------

def child_http(mode: str) -> int:
    from skiff import memtrim

    memtrim.limit_arenas(1)
    import json  # noqa: F401
    import logging  # noqa: F401

    from skiff.daemon.api.spec_routes import SPEC_ROUTES
    s = Steps(f"http {mode}")
    s.step("asyncio, json, logging, the spec's routes")
    if mode == "aiohttp":
        from aiohttp import web
    s.step("the server's imports")
    body = b"OK"

    async def run() -> None:
        d = tempfile.mkdtemp(prefix="skmem-")
        path = os.path.join(d, "sock")
        if mode == "aiohttp":
            async def ping(request: web.Request) -> web.Response:
                return web.Response(body=body, headers={"Api-Version": "1.47"})
            app = web.Application()
            for method, p in SPEC_ROUTES:
                app.router.add_route(method, "/v{version:[0-9.]+}" + p, ping)
                app.router.add_route(method, p, ping)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(path)
            await web.SockSite(runner, sock).start()
        else:
            routes = [(m, re.compile(r"(?:/v[0-9.]+)?" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", p) + "$"))
                      for m, p in SPEC_ROUTES]

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    while line := await reader.readline():
                        method, target, _ = line.decode("latin-1").split(" ", 2)
                        headers = {}
                        while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                            k, _, val = h.decode("latin-1").partition(":")
                            headers[k.strip().lower()] = val.strip()
                        if n := int(headers.get("content-length") or 0):
                            await reader.readexactly(n)
                        found = any(m == method and rx.match(target.split("?", 1)[0]) for m, rx in routes)
                        out = body if found else b'{"message":"page not found"}'
                        writer.write(b"HTTP/1.1 %d %s\r\nApi-Version: 1.47\r\nContent-Length: %d\r\n\r\n%s" % (
                            200 if found else 404, b"OK" if found else b"Not Found", len(out), out))
                        await writer.drain()
                finally:
                    writer.close()
            server = await asyncio.start_unix_server(handle, path)
        s.step("serving, routes added")
        reader, writer = await asyncio.open_unix_connection(path)
        t0 = time.perf_counter()
        for _ in range(200):
            writer.write(b"GET /v1.47/_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(len(body))
        per = (time.perf_counter() - t0) / 200
        writer.close()
        s.step("200 requests served")
        print(f"http {mode}: {per * 1e6:.0f} us per GET /_ping")
        if mode == "aiohttp":
            await runner.cleanup()
        else:
            server.close()
        shutil.rmtree(d, ignore_errors=True)
    asyncio.run(run())
    return 0


def options() -> int:
    ok = True
    base = tempfile.mkdtemp(prefix="skmem-", dir="/tmp")
    address = os.path.join(base, "containerd.sock")
    binary = os.path.join(os.path.dirname(PY), "skiff-containerd")
    r, w = os.pipe()
    proc = subprocess.Popen([binary, "--root", f"{base}/root", "--state", f"{base}/state", "--address", address,
                             "--ready-fd", str(w)], pass_fds=(w,), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            if f.readline() != b"ready\n":
                raise RuntimeError(f"skiff-containerd did not start (status {proc.poll()})")
        try:
            import hpack  # noqa: F401
            modes = ["grpc", "h2"]
        except ImportError:
            print("hpack is not installed (pip install hpack): the HTTP/2 prototype is skipped")
            modes = ["grpc"]
        for mode in modes:
            ok &= subprocess.run([PY, __file__, "_client", mode, address]).returncode == 0
        for mode in ("aiohttp", "minimal"):
            ok &= subprocess.run([PY, __file__, "_http", mode]).returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "imports":
        ok = True
        for which in rest or ["skiffd", "containerd"]:
            steps = SKIFFD_STEPS if which == "skiffd" else CONTAINERD_STEPS
            ok &= subprocess.run([PY, "-c", IMPORTS_CHILD, which, *steps]).returncode == 0
        return 0 if ok else 1
    if cmd == "process":
        for pid in rest:
            process_report(int(pid))
        return 0
    if cmd == "options":
        return options()
    if cmd == "_client":
        return child_client(rest[0], rest[1])
    if cmd == "_http":
        return child_http(rest[0])
    print(f"bench/memory.py: unknown command {cmd!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
