"""The embedded DNS server of containers on user-defined networks (Docker's 127.0.0.11).

Per container, a UDP socket bound to 127.0.0.11:53 *inside its network namespace*: the socket
is created by a dedicated thread that joined the namespace (:func:`netns.run_in`) and then served
by skiffd's asyncio loop (a socket keeps the namespace it was made in). A query for an A record
of a container on a network the asker is on (name, short id, alias, or ``name.<network>``) is
answered from skiffd's endpoints; other names are forwarded to the host's resolvers (from
skiffd's own namespace, so a resolver on the host's loopback works too) and the answer relayed.
TCP (answers over 512 bytes) is not served: the container's resolv.conf keeps the host's search
and options, and a truncated forwarded answer reaches the client with its TC bit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from skiff.daemon.network import netns as netns_mod

log = logging.getLogger("skiffd.network.dns")

DNS_ADDR = "127.0.0.11"
TTL = 600
FORWARD_TIMEOUT = 5.0


def parse_question(msg: bytes) -> tuple[int, int, str, int, int, int]:
    """(id, flags, qname, qtype, qclass, end offset of the question); ValueError when malformed."""
    if len(msg) < 12:
        raise ValueError("short message")
    qid, flags, qd = struct.unpack("!HHH", msg[:6])
    if qd != 1:
        raise ValueError("exactly one question expected")
    i = 12
    labels: list[str] = []
    while True:
        if i >= len(msg):
            raise ValueError("truncated name")
        n = msg[i]
        i += 1
        if n == 0:
            break
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(msg[i:i + n].decode("ascii", "replace"))
        i += n
    if i + 4 > len(msg):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack("!HH", msg[i:i + 4])
    return qid, flags, ".".join(labels), qtype, qclass, i + 4


def answer(msg: bytes, addrs: list[str]) -> bytes:
    """A response to ``msg`` (an A/AAAA/other query for a known name) with ``addrs`` as A records
    when it asks for A; NOERROR with no records for other types of a known name."""
    qid, flags, _name, qtype, _qclass, end = parse_question(msg)
    recs = [a for a in addrs if qtype in (1, 255)]
    rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080      # QR, AA, RD copied, RA
    out = struct.pack("!HHHHHH", qid, rflags, 1, len(recs), 0, 0) + msg[12:end]
    for a in recs:
        out += struct.pack("!HHHIH", 0xC00C, 1, 1, TTL, 4) + ipaddress.IPv4Address(a).packed
    return out


def servfail(msg: bytes) -> bytes:
    qid, flags = struct.unpack("!HH", msg[:4])
    return struct.pack("!HHHHHH", qid, 0x8000 | (flags & 0x0100) | 0x0080 | 2, 0, 0, 0, 0)


def host_nameservers(resolv_conf: str = "/etc/resolv.conf") -> list[str]:
    out = []
    try:
        with open(resolv_conf, encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 1 and fields[0] == "nameserver":
                    out.append(fields[1])
    except OSError:
        pass
    return out


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, svc: DnsService, cid: str) -> None:
        self.svc = svc
        self.cid = cid
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.svc.spawn(self.svc.handle(self, data, addr))


class DnsService:
    def __init__(self, resolve: Callable[[str, str], list[str]],
                 upstreams: list[str] | None = None) -> None:
        self.resolve = resolve
        self.upstreams = upstreams if upstreams is not None else host_nameservers()
        self.servers: dict[str, Any] = {}     # container id -> transport
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def ensure(self, cid: str, ns_path: str) -> None:
        """Serve 127.0.0.11:53 in the namespace of container ``cid`` (once)."""
        if cid in self.servers:
            return

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((DNS_ADDR, 53))
            except OSError:
                s.close()
                raise
            s.setblocking(False)
            return s

        sock = await asyncio.to_thread(netns_mod.run_in, ns_path, make)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self, cid), sock=sock)
        self.servers[cid] = transport

    def remove(self, cid: str) -> None:
        t = self.servers.pop(cid, None)
        if t is not None:
            t.close()

    def close(self) -> None:
        for cid in list(self.servers):
            self.remove(cid)
        for t in list(self._tasks):
            t.cancel()

    async def handle(self, proto: _Proto, data: bytes, addr: Any) -> None:
        try:
            _qid, _flags, name, qtype, _qclass, _end = parse_question(data)
        except ValueError:
            return
        addrs = self.resolve(proto.cid, name)
        if addrs:
            reply = answer(data, addrs)
        else:
            reply = await self.forward(data)
        if proto.transport is not None and not proto.transport.is_closing():
            proto.transport.sendto(reply, addr)

    async def forward(self, data: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        for ns in self.upstreams:
            fut: asyncio.Future[bytes] = loop.create_future()
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda f=fut: _Forward(f, data[:2]), remote_addr=(ns, 53))  # type: ignore[misc]
                try:
                    transport.sendto(data)
                    return await asyncio.wait_for(fut, FORWARD_TIMEOUT)
                finally:
                    transport.close()
            except (OSError, TimeoutError) as e:
                log.debug("forwarding a query to %s: %s", ns, e)
        return servfail(data)


class _Forward(asyncio.DatagramProtocol):
    def __init__(self, fut: asyncio.Future[bytes], qid: bytes) -> None:
        self.fut = fut
        self.qid = qid

    def datagram_received(self, reply: bytes, _addr: Any) -> None:
        if not self.fut.done() and reply[:2] == self.qid:
            self.fut.set_result(reply)
