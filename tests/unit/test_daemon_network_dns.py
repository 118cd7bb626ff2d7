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
    async def main() -> bytes:
        loop = asyncio.get_running_loop()

        class Upstream(asyncio.DatagramProtocol):
            def connection_made(self, t):  # type: ignore[no-untyped-def]
                self.t = t

            def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
                self.t.sendto(dns.answer(data, ["192.0.2.9"]), addr)

        t, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
        port = t.get_extra_info("sockname")[1]
        svc = dns.DnsService(lambda cid, name: [], upstreams=["127.0.0.1"])
        orig = loop.create_datagram_endpoint

        async def redirect(factory, remote_addr=None, **kw):  # type: ignore[no-untyped-def]
            return await orig(factory, remote_addr=(remote_addr[0], port), **kw)

        loop.create_datagram_endpoint = redirect  # type: ignore[method-assign]
        try:
            return await svc.forward(query("example.org"))
        finally:
            loop.create_datagram_endpoint = orig  # type: ignore[method-assign]
            t.close()

    r = asyncio.run(main())
    assert r.endswith(socket.inet_aton("192.0.2.9"))


def test_host_nameservers(tmp_path):
    p = tmp_path / "resolv.conf"
    p.write_text("# c\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nsearch x\n")
    assert dns.host_nameservers(str(p)) == ["127.0.0.53", "10.0.0.1"]
    assert dns.host_nameservers(str(tmp_path / "none")) == []


def test_embedded_dns_resolv_conf():
    text = etcfiles.embedded_dns_resolv_conf("nameserver 1.1.1.1\nsearch a.example\noptions ndots:5 rotate\n")
    assert text == "nameserver 127.0.0.11\nsearch a.example\noptions ndots:0 rotate\n"
    assert etcfiles.embedded_dns_resolv_conf("", ["b.example"], ["timeout:1"]) == \
        "nameserver 127.0.0.11\nsearch b.example\noptions ndots:0 timeout:1\n"


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
