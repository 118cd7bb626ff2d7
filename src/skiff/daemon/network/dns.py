"""The embedded DNS server of containers on user-defined networks (Docker's 127.0.0.11).

Per container, a UDP socket and a listening TCP socket bound to 127.0.0.11:53 *inside its
network namespace*: they are created by a dedicated thread that joined the namespace
(:func:`netns.run_in`) and then served by skiffd's asyncio loop (a socket keeps the namespace it
was made in). A query for an A record of a container on a network the asker is on (name, short
id, alias, or ``name.<network>``) is answered from skiffd's endpoints; other names are forwarded
to the container's upstream resolvers (its ``--dns`` servers, or daemon.json's ``dns``, or the
host's) from skiffd's own namespace, so a resolver on the host's loopback works too, and the
answer relayed. Over UDP, an answer of ours longer than 512 bytes is sent truncated (TC bit,
no records) and a forwarded one is relayed as it came (with the upstream's TC bit); the
resolver then asks again over TCP, where queries are forwarded over TCP.
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

log = logging.getLogger("skiff.daemon.network.dns")

DNS_ADDR = "127.0.0.11"
TTL = 600
FORWARD_TIMEOUT = 5.0
TCP_IDLE_TIMEOUT = 10.0
UDP_MAX = 512           # RFC 1035 (an EDNS0 buffer size in the query is not honoured)


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


def answer_ptr(msg: bytes, names: list[str]) -> bytes:
    """A response to the PTR query ``msg`` with ``names`` as its records."""
    qid, flags, _name, _qtype, _qclass, end = parse_question(msg)
    rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080      # QR, AA, RD copied, RA
    out = struct.pack("!HHHHHH", qid, rflags, 1, len(names), 0, 0) + msg[12:end]
    for n in names:
        rdata = b"".join(bytes([len(p)]) + p.encode("ascii") for p in n.split(".") if p) + b"\0"
        out += struct.pack("!HHHIH", 0xC00C, 12, 1, TTL, len(rdata)) + rdata
    return out


def ptr_address(name: str) -> str | None:
    """``4.3.2.1.in-addr.arpa`` -> ``1.2.3.4``; None for other names."""
    labels = name.lower().rstrip(".").split(".")
    if len(labels) != 6 or labels[4:] != ["in-addr", "arpa"]:
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
    except ValueError:
        return None


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


def truncated(msg: bytes) -> bytes:
    """The header and question of the response ``msg`` with the TC bit and no records."""
    _qid, _flags, _name, _qtype, _qclass, end = parse_question(msg)
    qid, flags = struct.unpack("!HH", msg[:4])
    return struct.pack("!HHHHHH", qid, flags | 0x0200, 1, 0, 0, 0) + msg[12:end]


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, svc: DnsService, cid: str) -> None:
        self.svc = svc
        self.cid = cid
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.svc.spawn(self.svc.handle(self, data, addr))


class _Server:
    """The sockets serving one container: UDP transport, TCP server and its open connections."""

    def __init__(self, udp: Any, tcp: asyncio.Server) -> None:
        self.udp = udp
        self.tcp = tcp
        self.conns: set[asyncio.StreamWriter] = set()

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()
        for w in list(self.conns):
            w.close()


class DnsService:
    def __init__(self, resolve: Callable[[str, str], list[str]],
                 upstreams: list[str] | None = None,
                 reverse: Callable[[str, str], list[str]] | None = None) -> None:
        self.resolve = resolve
        self.reverse = reverse          # (container id, IPv4 address) -> names, for PTR queries
        self.upstreams = upstreams if upstreams is not None else host_nameservers()
        self.upstream_port = 53
        self.servers: dict[str, _Server] = {}      # container id -> its sockets
        # container id -> (its --dns servers, its namespace): those are asked from inside it
        self.container_upstreams: dict[str, tuple[list[str], str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def upstreams_of(self, cid: str) -> tuple[list[str], str | None]:
        """(servers, namespace to ask them from: None for skiffd's own)."""
        mine = self.container_upstreams.get(cid)
        if mine is not None:
            return mine[0], mine[1]
        return self.upstreams, None

    async def ensure(self, cid: str, ns_path: str, upstreams: list[str] | None = None) -> None:
        """Serve 127.0.0.11:53 (UDP and TCP) in the namespace of container ``cid`` (once).
        ``upstreams``: the container's own resolvers (``--dns``, or daemon.json ``dns``), asked
        from inside its namespace as Docker does (so ``127.0.0.x`` is the container's loopback);
        None or []: the host's, asked from skiffd's namespace."""
        if upstreams:
            self.container_upstreams[cid] = (list(upstreams), ns_path)
        else:
            self.container_upstreams.pop(cid, None)
        if cid in self.servers:
            return

        def make() -> tuple[socket.socket, socket.socket]:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                u.bind((DNS_ADDR, 53))
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                t.bind((DNS_ADDR, 53))
                t.listen(64)
            except OSError:
                u.close()
                t.close()
                raise
            u.setblocking(False)
            t.setblocking(False)
            return u, t

        usock, tsock = await asyncio.to_thread(netns_mod.run_in, ns_path, make)
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self, cid), sock=usock)
        except BaseException:
            usock.close()
            tsock.close()
            raise
        conns: set[asyncio.StreamWriter] = set()

        async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conns.add(writer)
            try:
                await self.serve_tcp(cid, reader, writer)
            finally:
                conns.discard(writer)
                writer.close()

        try:
            server = await asyncio.start_server(on_tcp, sock=tsock)
        except BaseException:
            transport.close()
            tsock.close()
            raise
        srv = _Server(transport, server)
        srv.conns = conns
        self.servers[cid] = srv

    def remove(self, cid: str) -> None:
        self.container_upstreams.pop(cid, None)
        srv = self.servers.pop(cid, None)
        if srv is not None:
            srv.close()

    def close(self) -> None:
        for cid in list(self.servers):
            self.remove(cid)
        for t in list(self._tasks):
            t.cancel()

    async def reply_to(self, cid: str, data: bytes, tcp: bool) -> bytes | None:
        """The response to query ``data`` of container ``cid``; None for a malformed query
        (dropped, as Docker's server does)."""
        try:
            _qid, _flags, name, qtype, _qclass, _end = parse_question(data)
        except ValueError:
            return None
        ptr = ptr_address(name) if qtype == 12 and self.reverse is not None else None
        names = self.reverse(cid, ptr) if ptr is not None and self.reverse is not None else []
        if names:
            return answer_ptr(data, names)
        addrs = [] if ptr is not None else self.resolve(cid, name)
        if addrs:
            reply = answer(data, addrs)
            if not tcp and len(reply) > UDP_MAX:
                reply = truncated(reply)
            return reply
        servers, ns_path = self.upstreams_of(cid)
        if tcp:
            return await self.forward_tcp(data, servers, ns_path)
        return await self.forward(data, servers, ns_path)

    async def handle(self, proto: _Proto, data: bytes, addr: Any) -> None:
        reply = await self.reply_to(proto.cid, data, tcp=False)
        if reply is not None and proto.transport is not None and not proto.transport.is_closing():
            proto.transport.sendto(reply, addr)

    async def serve_tcp(self, cid: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """DNS over TCP (RFC 7766): 2-byte length-prefixed messages, several per connection,
        answered in order; the connection ends when the client closes it or stays idle."""
        while True:
            try:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]),
                                              TCP_IDLE_TIMEOUT)
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            reply = await self.reply_to(cid, data, tcp=True)
            if reply is None:
                return
            writer.write(struct.pack("!H", len(reply)) + reply)
            try:
                await writer.drain()
            except ConnectionError:
                return

    async def _socket(self, kind: int, server: str, ns_path: str | None) -> socket.socket:
        """A non-blocking socket to ``server`` (UDP: connected) made in ``ns_path`` (None:
        skiffd's namespace)."""
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, kind)
            try:
                sock.setblocking(False)
                if kind == socket.SOCK_DGRAM:
                    sock.connect((server, self.upstream_port))
            except OSError:
                sock.close()
                raise
            return sock

        if ns_path is None:
            return make()
        return await asyncio.to_thread(netns_mod.run_in, ns_path, make)

    async def forward(self, data: bytes, upstreams: list[str] | None = None,
                      ns_path: str | None = None) -> bytes:
        """Relay a UDP query to the first upstream that answers; SERVFAIL when none does."""
        loop = asyncio.get_running_loop()
        for ns in self.upstreams if upstreams is None else upstreams:
            fut: asyncio.Future[bytes] = loop.create_future()
            try:
                sock = await self._socket(socket.SOCK_DGRAM, ns, ns_path)
                try:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda f=fut: _Forward(f, data[:2]), sock=sock)  # type: ignore[misc]
                except BaseException:
                    sock.close()
                    raise
                try:
                    transport.sendto(data)
                    return await asyncio.wait_for(fut, FORWARD_TIMEOUT)
                finally:
                    transport.close()
            except (OSError, TimeoutError) as e:
                log.debug("forwarding a query to %s: %s", ns, e)
        return servfail(data)

    async def forward_tcp(self, data: bytes, upstreams: list[str] | None = None,
                          ns_path: str | None = None) -> bytes:
        """Relay a query over TCP to the first upstream that answers; SERVFAIL when none does."""
        loop = asyncio.get_running_loop()
        for ns in self.upstreams if upstreams is None else upstreams:
            writer: asyncio.StreamWriter | None = None
            try:
                sock = await self._socket(socket.SOCK_STREAM, ns, ns_path)
                try:
                    await asyncio.wait_for(loop.sock_connect(sock, (ns, self.upstream_port)),
                                           FORWARD_TIMEOUT)
                    reader, w = await asyncio.open_connection(sock=sock)
                except BaseException:
                    sock.close()
                    raise
                writer = w
                w.write(struct.pack("!H", len(data)) + data)
                await w.drain()
                n = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), FORWARD_TIMEOUT))[0]
                reply = await asyncio.wait_for(reader.readexactly(n), FORWARD_TIMEOUT)
                if reply[:2] == data[:2]:
                    return reply
                log.debug("forwarding a query to %s over TCP: answer with another id", ns)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                log.debug("forwarding a query to %s over TCP: %s", ns, e)
            finally:
                if writer is not None:
                    writer.close()
        return servfail(data)


class _Forward(asyncio.DatagramProtocol):
    def __init__(self, fut: asyncio.Future[bytes], qid: bytes) -> None:
        self.fut = fut
        self.qid = qid

    def datagram_received(self, reply: bytes, _addr: Any) -> None:
        if not self.fut.done() and reply[:2] == self.qid:
            self.fut.set_result(reply)
