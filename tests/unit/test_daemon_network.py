"""Unit tests of skiffd's networking pieces (issue 8): IPAM, port mappings, the nftables table
skiffd renders, subnet choice helpers, /etc/hosts with the container's address, config keys and
the create-time checks of published ports / network modes."""

from __future__ import annotations

import ipaddress
import json

import pytest

from skiff.daemon import config as config_mod
from skiff.daemon import specgen
from skiff.daemon.api.errors import InvalidParameter
from skiff.daemon.containers import etcfiles
from skiff.daemon.network import bridge as bridge_mod
from skiff.daemon.network import ports
from skiff.daemon.network.ipam import IpamError, Pool
from skiff.daemon.network.manager import NetworkManager


def test_ipam_allocates_skips_gateway_and_persists(tmp_path):
    path = str(tmp_path / "ipam.json")
    p = Pool(path, "10.9.0.0/29")
    assert str(p.gateway) == "10.9.0.1"
    a = p.allocate("a")
    b = p.allocate("b")
    assert (str(a), str(b)) == ("10.9.0.2", "10.9.0.3")
    assert p.allocate("a") == a                    # same owner, same address
    p2 = Pool(path, "10.9.0.0/29")                 # reloaded from disk
    assert p2.allocated == {"10.9.0.2": "a", "10.9.0.3": "b"}
    p2.release("a")
    assert str(p2.allocate("c")) == "10.9.0.4"     # not the just-released one
    assert str(p2.allocate("d")) == "10.9.0.5"
    assert str(p2.allocate("e")) == "10.9.0.6"
    assert str(p2.allocate("f")) == "10.9.0.2"     # wraps around to the free one
    with pytest.raises(IpamError, match="no free address left in 10.9.0.0/29"):
        p2.allocate("g")
    assert sorted(p2.retain_only({"b", "c"})) == ["10.9.0.2", "10.9.0.5", "10.9.0.6"]
    assert Pool(path, "10.9.0.0/29").allocated == {"10.9.0.3": "b", "10.9.0.4": "c"}


def test_ipam_subnet_change_and_bad_gateway(tmp_path):
    path = str(tmp_path / "ipam.json")
    Pool(path, "10.9.0.0/24").allocate("a")
    assert Pool(path, "10.8.0.0/24").allocated == {}
    with pytest.raises(IpamError, match="gateway 10.7.0.1 is not in subnet 10.8.0.0/24"):
        Pool(path, "10.8.0.0/24", "10.7.0.1")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(IpamError, match="unreadable"):
        Pool(str(tmp_path / "bad.json"), "10.8.0.0/24")


def test_port_bindings_parse():
    host = {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                             "53/udp": [{"HostIp": "", "HostPort": ""}]}}
    maps = ports.parse(host, {"80/tcp": {}, "53/udp": {}})
    assert [m.to_json() for m in maps] == [
        {"proto": "tcp", "container_port": 80, "host_ip": "127.0.0.1", "host_port": 8080, "host_port_end": 0},
        {"proto": "udp", "container_port": 53, "host_ip": "", "host_port": 0, "host_port_end": 0}]
    allp = ports.parse({"PublishAllPorts": True, **host}, {"80/tcp": {}, "443/tcp": {}})
    assert [(m.key, m.host_port) for m in allp] == [("80/tcp", 8080), ("53/udp", 0), ("443/tcp", 0)]


@pytest.mark.parametrize("bindings, msg", [
    ({"80/sctp": [{}]}, "protocol 'sctp' is not supported"),
    ({"80-81/tcp": [{}]}, 'invalid port specification: "80-81"'),
    ({"x/tcp": [{}]}, 'invalid port specification: "x"'),
    ({"80/tcp": [{"HostPort": "8010-8000"}]}, "invalid host port '8010-8000'"),
    ({"80/tcp": [{"HostPort": "80-x"}]}, 'invalid port specification: "80-x"'),
    ({"80/tcp": [{"HostIp": "::1", "HostPort": "1"}]}, "IPv6 host address"),
    ({"80/tcp": [{"HostIp": "nope", "HostPort": "1"}]}, "invalid host IP"),
    ({"80/tcp": [{"HostPort": "70000"}]}, "invalid host port"),
])
def test_port_bindings_refused(bindings, msg):
    with pytest.raises(ports.PortError, match=msg):
        ports.parse({"PortBindings": bindings}, None)


def test_port_ranges_host_range_and_publish_all_with_exposed_ranges():
    maps = ports.parse({"PortBindings": {"80/tcp": [{"HostPort": "18500-18502"}]},
                        "PublishAllPorts": True}, {"80/tcp": {}, "7000-7001/udp": {}})
    assert [(m.key, m.host_port, m.host_port_end) for m in maps] == [
        ("80/tcp", 18500, 18502), ("7000/udp", 0, 0), ("7001/udp", 0, 0)]
    assert ports.settings([], {"7000-7001/udp": {}}) == {"7000/udp": None, "7001/udp": None}
    with pytest.raises(ports.PortError, match="end is below its start"):
        ports.parse({"PublishAllPorts": True}, {"7001-7000/tcp": {}})


def test_port_reserve_takes_the_first_free_port_of_a_range():
    busy = ports.reserve(ports.PortMap("tcp", 80, "127.0.0.1", 0))
    try:
        p = busy.getsockname()[1]
        m = ports.PortMap("tcp", 80, "127.0.0.1", p, p + 1)
        try:
            s = ports.reserve(m)
        except ports.PortError:      # p + 1 taken by something else on the host: both refused
            assert True
        else:
            s.close()
            assert m.host_port == p + 1
        with pytest.raises(ports.PortError, match=f"127.0.0.1:{p}-{p} failed: all ports of the range"):
            ports.reserve(ports.PortMap("tcp", 80, "127.0.0.1", p, p))
    finally:
        busy.close()


def test_port_settings_and_rules():
    maps = [ports.PortMap("tcp", 80, "127.0.0.1", 8080), ports.PortMap("udp", 53, "", 5353)]
    assert ports.settings(maps, {"80/tcp": {}, "9000/tcp": {}}) == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "9000/tcp": None,
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}]}
    pre, out = ports.nft_rules(maps, "172.30.0.2")
    assert pre == out == ["ip daddr 127.0.0.1 tcp dport 8080 dnat to 172.30.0.2:80",
                          "fib daddr type local udp dport 5353 dnat to 172.30.0.2:53"]


def test_port_reserve_takes_the_port():
    m = ports.PortMap("tcp", 80, "127.0.0.1", 0)
    s = ports.reserve(m)
    try:
        assert m.host_port > 0
        with pytest.raises(ports.PortError, match=f"127.0.0.1:{m.host_port} failed: port is already allocated"):
            ports.reserve(ports.PortMap("tcp", 80, "127.0.0.1", m.host_port))
    finally:
        s.close()


def test_bridge_nft_script():
    b = bridge_mod.Bridge("skiff7", "172.30.0.0/16", "172.30.0.1", 1500, -1)
    b.forwards["c1"] = ("172.30.0.2", [ports.PortMap("tcp", 80, "", 8080)])
    script = b.nft_script()
    assert script.startswith("table ip skiffd-skiff7 {}\ndelete table ip skiffd-skiff7\n")
    assert '    ip saddr 172.30.0.0/16 oifname != "skiff7" masquerade\n' in script
    assert '    ip saddr 127.0.0.0/8 oifname "skiff7" masquerade\n' in script
    assert script.count("fib daddr type local tcp dport 8080 dnat to 172.30.0.2:80") == 2


def test_naming_mac_and_subnets():
    assert bridge_mod.host_veth_name("0123456789abcdef") == "sk0123456789a"
    assert len(bridge_mod.host_veth_name("f" * 64)) <= 15
    assert bridge_mod.mac_for(ipaddress.IPv4Address("172.30.0.2")) == "02:42:ac:1e:00:02"
    cands = bridge_mod.candidate_subnets()
    assert cands[0] == ipaddress.IPv4Network("172.30.0.0/16") and len(set(cands)) == len(cands)


def test_hosts_file_with_own_address():
    text = etcfiles.hosts_file(["db:10.0.0.5"], own=("172.30.0.2", "abc"))
    assert text.endswith("10.0.0.5\tdb\n172.30.0.2\tabc\n")
    assert etcfiles.hosts_file(None) == etcfiles.HOSTS_BASE


def test_manager_settings_without_endpoint(tmp_path):
    nm = NetworkManager(str(tmp_path / "d"), str(tmp_path / "r"))
    assert nm.load() == []
    assert nm.netns_path("abc") == str(tmp_path / "r" / "netns" / "abc")
    assert nm.uses_bridge({}) and nm.uses_bridge({"NetworkMode": "bridge"})
    assert not nm.uses_bridge({"NetworkMode": "none"})
    assert not nm.uses_bridge({"NetworkMode": "container:x"}) and nm.uses_bridge({"NetworkMode": "mynet"})
    s = nm.network_settings("abc", {"NetworkMode": "default"}, {"IPAddress": ""})
    assert s["IPAddress"] == "" and s["Networks"]["bridge"]["IPAddress"] == ""
    assert list(nm.network_settings("abc", {"NetworkMode": "host"}, {})["Networks"]) == ["host"]


def test_config_keys(tmp_path):
    f = tmp_path / "daemon.json"
    f.write_text(json.dumps({"bip": "172.29.0.1/16", "mtu": 1400, "bridge": "br9"}))
    cfg = config_mod.merge(config_mod.read_file(str(f)), {})
    assert (cfg.bip, cfg.mtu, cfg.bridge) == ("172.29.0.1/16", 1400, "br9")
    f.write_text(json.dumps({"mtu": 20}))
    with pytest.raises(config_mod.ConfigError, match="mtu: 20 is out of range"):
        config_mod.read_file(str(f))


def test_create_checks_ports_and_modes():
    pb = {"80/tcp": [{"HostPort": "8080"}]}
    specgen.validate_create({"Image": "busybox"}, {"PortBindings": pb})
    specgen.validate_create({"Image": "busybox"}, {"NetworkMode": "container:abc"})
    with pytest.raises(InvalidParameter, match="port publishing and the container type network mode"):
        specgen.validate_create({"Image": "busybox"}, {"NetworkMode": "none", "PortBindings": pb})
    with pytest.raises(InvalidParameter, match="port publishing"):
        specgen.validate_create({"Image": "busybox"}, {"NetworkMode": "container:x", "PortBindings": pb})
    with pytest.raises(InvalidParameter, match="hostname and the network mode"):
        specgen.validate_create({"Image": "busybox", "Hostname": "h"}, {"NetworkMode": "container:x"})
    with pytest.raises(InvalidParameter, match='invalid port specification: "1-2"'):
        specgen.validate_create({"Image": "busybox"}, {"PortBindings": {"1-2/tcp": [{}]}})
    specgen.validate_create({"Image": "busybox"}, {"PortBindings": {"80/tcp": [{"HostPort": "8000-8010"}]}})
    specgen.validate_create({"Image": "busybox"}, {"NetworkMode": "mynet"})
    with pytest.raises(InvalidParameter, match="invalid network mode"):
        specgen.validate_create({"Image": "busybox"}, {"NetworkMode": "my net!"})


def test_config_dns_keys_and_address_pools(tmp_path):
    from skiff.daemon.config import ConfigError, merge, read_file
    p = tmp_path / "daemon.json"
    p.write_text(json.dumps({"dns": ["192.0.2.53"], "dns-search": ["a.example"], "dns-opts": ["ndots:2"],
                             "default-address-pools": [{"base": "10.240.0.0/16", "size": 24}]}))
    cfg = merge(read_file(str(p)), {})
    assert (cfg.dns, cfg.dns_search, cfg.dns_opts) == (["192.0.2.53"], ["a.example"], ["ndots:2"])
    assert cfg.default_address_pools == [{"base": "10.240.0.0/16", "size": 24}]
    for bad, msg in (({"dns": ["nope"]}, "dns: 'nope' is not an IP address"),
                     ({"default-address-pools": [{"base": "10.0.0.0/8", "size": 4}]}, "size: 4"),
                     ({"default-address-pools": [{"base": "10.0.0.1/8", "size": 24}]}, "not an IPv4 network"),
                     ({"default-address-pools": [{"base": "10.0.0.0/8"}]}, "expected")):
        p.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=msg):
            read_file(str(p))


def test_pool_subnets_in_order():
    from skiff.daemon.network.bridge import pool_subnets
    from skiff.daemon.network.ipam import parse_address_pools
    pools = parse_address_pools([{"base": "10.240.0.0/23", "size": 24}, {"base": "10.250.0.0/16", "size": 16}])
    assert [str(s) for s in pool_subnets(pools)] == ["10.240.0.0/24", "10.240.1.0/24", "10.250.0.0/16"]


def test_teardown_defers_veth_deletion_and_setup_waits_for_it(tmp_path, monkeypatch):
    """teardown returns before the host veth is deleted; a later wait (setup, connect, shutdown)
    sees the deletion done; a failed deletion is logged, not raised."""
    import asyncio
    import threading

    from skiff.daemon.network import manager as manager_mod

    gate = threading.Event()
    deleted: list[list[str]] = []

    def fake_delete(names: list[str]) -> None:
        gate.wait(5)
        if names == ["skfail"]:
            raise OSError("boom")
        deleted.append(list(names))

    monkeypatch.setattr(manager_mod, "delete_links", fake_delete)
    m = NetworkManager(str(tmp_path / "data"), str(tmp_path / "exec"))

    async def main() -> None:
        m._delete_links_later("c1", ["skc1"])
        m._delete_links_later("c1", ["skc1b"])       # queued behind the first one
        m._delete_links_later("c2", ["skfail"])
        assert deleted == [] and set(m._reaping) == {"c1", "c2"}
        gate.set()
        await m._links_deleted("c1")
        assert deleted == [["skc1"], ["skc1b"]]
        await m._links_deleted("c2")
        await asyncio.sleep(0)
        assert m._reaping == {}

    asyncio.run(main())
