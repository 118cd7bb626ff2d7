"""Unit tests of the embedded DNS server's message handling, the network records store, the
user-network resolv.conf, and the networks API create checks (issue 8)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from skiff.daemon.api.errors import Conflict, InvalidParameter, NotFound
from skiff.daemon.containers import etcfiles
from skiff.daemon.network import dns
from skiff.daemon.network.manager import NetworkManager
from skiff.daemon.network.store import NetStore


def query(name: str, qtype: int = 1, qid: int = 0x1234) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def test_parse_and_answer_a_record():
    msg = query("srv.unet")
    qid, flags, name, qtype, qclass, end = dns.parse_question(msg)
    assert (qid, flags, name, qtype, qclass, end) == (0x1234, 0x0100, "srv.unet", 1, 1, len(msg))
    r = dns.answer(msg, ["10.1.2.3", "10.1.2.4"])
    rid, rflags, qd, an, ns, ar = struct.unpack("!HHHHHH", r[:12])
    assert (rid, qd, an, ns, ar) == (0x1234, 1, 2, 0, 0)
    assert rflags & 0x8000 and rflags & 0x0100 and rflags & 0x000F == 0
    assert r[12:len(msg)] == msg[12:]
    assert r.endswith(socket.inet_aton("10.1.2.4"))
    assert struct.unpack("!HHHIH", r[len(msg):len(msg) + 12]) == (0xC00C, 1, 1, dns.TTL, 4)


def test_aaaa_for_known_name_is_empty_noerror_and_servfail():
    r = dns.answer(query("srv", qtype=28), ["10.1.2.3"])
    assert struct.unpack("!HHHHHH", r[:12])[3] == 0 and struct.unpack("!H", r[2:4])[0] & 0xF == 0
    assert struct.unpack("!H", dns.servfail(query("x"))[2:4])[0] & 0xF == 2


@pytest.mark.parametrize("bad", [b"", b"\0" * 11, struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0),
                                 struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x05ab"])
def test_malformed_queries(bad):
    with pytest.raises(ValueError):
        dns.parse_question(bad)


def test_forward_relays_the_upstream_answer():
    async def main() -> tuple[bytes, bytes]:
        loop = asyncio.get_running_loop()

        class Upstream(asyncio.DatagramProtocol):
            def connection_made(self, t):  # type: ignore[no-untyped-def]
                self.t = t

            def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
                self.t.sendto(dns.answer(data, ["192.0.2.9"]), addr)

        t, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
        svc = dns.DnsService(lambda cid, name: [], upstreams=["127.0.0.1"])
        svc.upstream_port = t.get_extra_info("sockname")[1]
        try:
            ok = await svc.forward(query("example.org"))
            # the first upstream does not answer (nothing on 127.0.0.2 at that port): the next one does
            svc.upstreams = ["127.0.0.2", "127.0.0.1"]
            return ok, await svc.forward(query("example.org"))
        finally:
            t.close()

    for r in asyncio.run(main()):
        assert r.endswith(socket.inet_aton("192.0.2.9"))


async def _tcp_exchange(port: int, *msgs: bytes) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    try:
        for m in msgs:
            writer.write(struct.pack("!H", len(m)) + m)
        await writer.drain()
        for _ in msgs:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
            out.append(await reader.readexactly(n))
    finally:
        writer.close()
    return out


def test_tcp_answers_local_names_and_forwards_others_over_tcp():
    """One TCP connection, two queries: a container's name answered by skiffd, another name
    relayed to the upstream over TCP (a fake upstream on 127.0.0.1)."""
    async def main() -> list[bytes]:
        async def upstream(reader, writer):  # type: ignore[no-untyped-def]
            n = struct.unpack("!H", await reader.readexactly(2))[0]
            q = await reader.readexactly(n)
            r = dns.answer(q, ["192.0.2.10"])
            writer.write(struct.pack("!H", len(r)) + r)
            await writer.drain()
            writer.close()

        up = await asyncio.start_server(upstream, "127.0.0.1", 0)
        svc = dns.DnsService(lambda cid, name: ["10.9.0.5"] if name == "srv" else [],
                             upstreams=["127.0.0.1"])
        svc.upstream_port = up.sockets[0].getsockname()[1]

        async def served(reader, writer):  # type: ignore[no-untyped-def]
            await svc.serve_tcp("c1", reader, writer)
            writer.close()

        front = await asyncio.start_server(served, "127.0.0.1", 0)
        try:
            return await _tcp_exchange(front.sockets[0].getsockname()[1], query("srv", qid=7),
                                       query("example.org", qid=8))
        finally:
            front.close()
            up.close()

    local, fwd = asyncio.run(main())
    assert local[:2] == b"\0\x07" and local.endswith(socket.inet_aton("10.9.0.5"))
    assert fwd[:2] == b"\0\x08" and fwd.endswith(socket.inet_aton("192.0.2.10"))


def test_udp_answer_over_512_bytes_is_truncated_tcp_is_not():
    addrs = [f"10.9.{i // 250}.{i % 250 + 1}" for i in range(40)]     # 40 x 16 bytes of records
    svc = dns.DnsService(lambda cid, name: addrs, upstreams=[])
    msg = query("many")
    udp = asyncio.run(svc.reply_to("c1", msg, tcp=False))
    tcp = asyncio.run(svc.reply_to("c1", msg, tcp=True))
    assert udp is not None and tcp is not None
    flags, qd, an = struct.unpack("!HHH", udp[2:8])
    assert flags & 0x0200 and qd == 1 and an == 0 and len(udp) == len(msg)
    assert struct.unpack("!H", tcp[6:8])[0] == 40 and not struct.unpack("!H", tcp[2:4])[0] & 0x0200
    assert asyncio.run(svc.reply_to("c1", b"junk", tcp=False)) is None


def test_container_upstreams_and_servfail_without_any():
    svc = dns.DnsService(lambda cid, name: [], upstreams=["10.0.0.53"])
    svc.container_upstreams["c1"] = (["127.0.0.53"], "/run/x/netns/c1")
    assert svc.upstreams_of("c1") == (["127.0.0.53"], "/run/x/netns/c1")
    assert svc.upstreams_of("c2") == (["10.0.0.53"], None)
    r = asyncio.run(dns.DnsService(lambda cid, name: [], upstreams=[]).forward(query("x")))
    assert struct.unpack("!H", r[2:4])[0] & 0xF == 2


def test_host_nameservers(tmp_path):
    p = tmp_path / "resolv.conf"
    p.write_text("# c\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nsearch x\n")
    assert dns.host_nameservers(str(p)) == ["127.0.0.53", "10.0.0.1"]
    assert dns.host_nameservers(str(tmp_path / "none")) == []


def test_embedded_dns_resolv_conf():
    # as dockerd: the host's (or given) search and options, an ndots option set there is kept,
    # else ndots:0 is appended; the nameservers become the embedded server's upstreams
    text = etcfiles.embedded_dns_resolv_conf("nameserver 1.1.1.1\nsearch a.example\noptions ndots:5 rotate\n")
    assert text == "search a.example\nnameserver 127.0.0.11\noptions ndots:5 rotate\n"
    assert etcfiles.embedded_dns_resolv_conf("search h.example\n", ["b.example"], ["timeout:1"]) == \
        "search b.example\nnameserver 127.0.0.11\noptions timeout:1 ndots:0\n"
    assert etcfiles.embedded_dns_resolv_conf("nameserver 127.0.0.53\nsearch h.example\n", ["."], None,
                                             ["192.0.2.1"]) == "nameserver 127.0.0.11\noptions ndots:0\n"
    with pytest.raises(ValueError, match="invalid ndots option 'ndots:x'"):
        etcfiles.embedded_dns_resolv_conf("", None, ["ndots:x"])


def test_resolv_conf_as_dockerd_writes_it():
    host = "# host\nnameserver 10.0.0.2\nnameserver 127.0.0.53\nsearch h.example\noptions edns0\n"
    # nothing given: the host's file without its loopback nameservers
    assert etcfiles.resolv_conf(host) == "# host\nnameserver 10.0.0.2\nsearch h.example\noptions edns0\n"
    # one thing given: a new file, the host's values for the others
    assert etcfiles.resolv_conf(host, search=["s.example"]) == \
        "search s.example\nnameserver 10.0.0.2\noptions edns0\n"
    assert etcfiles.resolv_conf(host, dns=["127.0.0.9", "192.0.2.1"], options=["ndots:3", "timeout:2"]) == \
        "search h.example\nnameserver 127.0.0.9\nnameserver 192.0.2.1\noptions ndots:3 timeout:2\n"
    # --dns-search . : no search line
    assert etcfiles.resolv_conf(host, search=["."]) == "nameserver 10.0.0.2\noptions edns0\n"
    only_local = etcfiles.resolv_conf("nameserver 127.0.0.53\n", search=["s.example"])
    assert only_local.startswith("search s.example\n# skiffd: the host's resolv.conf names no nameserver")
    assert "\nnameserver" not in only_local


def test_store_predefined_create_lookup_delete(tmp_path):
    s = NetStore(str(tmp_path))
    assert s.load() == []
    ids = {r.name: r.id for r in s.nets.values()}
    assert set(ids) == {"bridge", "host", "none"}
    s2 = NetStore(str(tmp_path))
    s2.load()
    assert {r.name: r.id for r in s2.nets.values()} == ids          # stable ids
    r = s.create("n1", driver="bridge", subnet="10.5.0.0/24", gateway="10.5.0.1", internal=True,
                 labels={"a": "b"}, options={})
    assert s.get("n1") is r and s.get(r.id[:10]) is r and r.bridge_name == "br-" + r.id[:12]
    with pytest.raises(Conflict, match="already exists"):
        s.create("n1", driver="bridge", subnet="", gateway="", internal=False, labels={}, options={})
    with pytest.raises(InvalidParameter, match="invalid network name"):
        s.create("bad name", driver="bridge", subnet="", gateway="", internal=False, labels={}, options={})
    s3 = NetStore(str(tmp_path))
    s3.load()
    assert s3.get("n1").internal and s3.get("n1").labels == {"a": "b"}
    s.delete(r)
    with pytest.raises(NotFound, match="network n1 not found"):
        s.get("n1")


@pytest.mark.parametrize("body, err, msg", [
    ({"Name": "x", "Driver": "overlay"}, InvalidParameter, "not supported"),
    ({"Name": "x", "EnableIPv6": True}, InvalidParameter, "EnableIPv6"),
    ({"Name": "x", "Options": {"com.docker.network.bridge.name": "b"}}, InvalidParameter, "driver options"),
    ({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}, {"Subnet": "10.2.0.0/24"}]}},
     InvalidParameter, "only one IPAM config"),
    ({"Name": "x", "IPAM": {"Config": [{"Subnet": "nope"}]}}, InvalidParameter, "invalid subnet"),
    ({"Name": "bridge"}, Conflict, "already exists"),
    ({"Name": "x", "Bogus": 1}, InvalidParameter, "unsupported field"),
])
def test_network_create_refusals(tmp_path, body, err, msg):
    m = NetworkManager(str(tmp_path / "d"), str(tmp_path / "r"))
    m.load()
    with pytest.raises(err, match=msg):
        asyncio.run(m.create_network(body))


def test_ptr_queries_answered_for_containers_and_forwarded_otherwise():
    assert dns.ptr_address("5.0.9.10.in-addr.arpa") == "10.9.0.5"
    assert dns.ptr_address("5.0.9.in-addr.arpa") is None and dns.ptr_address("x.0.9.10.in-addr.arpa") is None
    seen: list[tuple[str, str]] = []

    def reverse(cid: str, ip: str) -> list[str]:
        seen.append((cid, ip))
        return ["srv.unet"] if ip == "10.9.0.5" else []

    svc = dns.DnsService(lambda cid, name: [], upstreams=[], reverse=reverse)
    msg = query("5.0.9.10.in-addr.arpa", qtype=12)
    r = asyncio.run(svc.reply_to("c1", msg, tcp=False))
    assert r is not None and struct.unpack("!H", r[6:8])[0] == 1
    assert struct.unpack("!HHHIH", r[len(msg):len(msg) + 12])[:2] == (0xC00C, 12)
    assert r[len(msg) + 12:] == b"\x03srv\x04unet\x00"
    # an address of no container: forwarded (no upstream here: SERVFAIL)
    r = asyncio.run(svc.reply_to("c1", query("9.0.9.10.in-addr.arpa", qtype=12), tcp=True))
    assert r is not None and struct.unpack("!H", r[2:4])[0] & 0xF == 2
    assert seen == [("c1", "10.9.0.5"), ("c1", "10.9.0.9")]
