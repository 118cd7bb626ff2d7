"""Issue 8 user-defined bridge networks through a real skiffd and the real docker CLI:
network create/ls/inspect/rm (409 in use)/prune, containers resolving each other by name and
alias through the embedded DNS server (127.0.0.11, UDP) and talking over TCP, --ip, live
connect/disconnect (eth1), internal networks, endpoints kept across a skiffd restart, nothing
left behind."""

from __future__ import annotations

import json
import subprocess

import pytest
from net_util import links, network_skiffd, ok


@pytest.fixture
def skiffd(state_dirs):
    yield from network_skiffd(state_dirs)


RETRY = "ok=; for i in $(seq 50); do if {cmd}; then ok=1; break; fi; sleep 0.1; done; [ -n \"$ok\" ] || exit 1"


@pytest.mark.root
def test_network_create_inspect_ls_rm_prune(skiffd):
    nid = ok(skiffd.docker("network", "create", "--subnet", "10.231.0.0/24", "--gateway", "10.231.0.254",
                           "--label", "k=v", "unet1")).strip()
    info = json.loads(ok(skiffd.docker("network", "inspect", "unet1")))[0]
    assert info["Id"] == nid and info["Driver"] == "bridge" and info["Labels"] == {"k": "v"}
    assert info["IPAM"]["Config"] == [{"Subnet": "10.231.0.0/24", "Gateway": "10.231.0.254"}]
    names = ok(skiffd.docker("network", "ls", "--format", "{{.Name}}")).split()
    assert {"bridge", "host", "none", "unet1"} <= set(names)
    r = skiffd.docker("network", "create", "unet1")
    assert r.returncode != 0 and "already exists" in r.stderr
    r = skiffd.docker("network", "create", "--subnet", "10.231.0.128/25", "unet2")
    assert r.returncode != 0 and "overlaps" in r.stderr
    r = skiffd.docker("network", "create", "-d", "overlay", "unet3")
    assert r.returncode != 0 and "not supported" in r.stderr
    auto = json.loads(ok(skiffd.docker("network", "inspect", ok(skiffd.docker("network", "create", "unet4")).strip())))[0]
    assert auto["IPAM"]["Config"][0]["Subnet"] and auto["IPAM"]["Config"][0]["Subnet"] != "10.231.0.0/24"
    cid = ok(skiffd.docker("run", "-d", "--network", "unet1", "--ip", "10.231.0.7", "busybox",
                           "sleep", "300")).strip()
    ns = json.loads(ok(skiffd.docker("inspect", cid)))[0]["NetworkSettings"]["Networks"]["unet1"]
    assert (ns["IPAddress"], ns["Gateway"], ns["NetworkID"]) == ("10.231.0.7", "10.231.0.254", nid)
    assert cid in json.loads(ok(skiffd.docker("network", "inspect", "unet1")))[0]["Containers"]
    r = skiffd.docker("network", "rm", "unet1")
    assert r.returncode != 0 and "active endpoints" in r.stderr
    r = skiffd.docker("network", "rm", "bridge")
    assert r.returncode != 0 and "pre-defined" in r.stderr
    r = skiffd.docker("run", "--rm", "--network", "nosuchnet", "busybox", "true")
    assert r.returncode == 125 and "network nosuchnet not found" in r.stderr
    ok(skiffd.docker("rm", "-f", cid))
    pruned = ok(skiffd.docker("network", "prune", "-f"))
    assert "unet1" in pruned and "unet4" in pruned
    assert "br-" + nid[:12] not in links()
    names = ok(skiffd.docker("network", "ls", "--format", "{{.Name}}")).split()
    assert "unet1" not in names and "bridge" in names


@pytest.mark.root
def test_dns_by_name_and_alias(skiffd):
    # the names are resolved over UDP (127.0.0.11:53); the container-to-container traffic is
    # TCP (the image's busybox nc has no UDP mode)
    ok(skiffd.docker("network", "create", "unet5"))
    ok(skiffd.docker("run", "-d", "--name", "srv", "--network", "unet5", "--network-alias", "web",
                     "busybox", "httpd", "-f", "-p", "80", "-h", "/etc"))
    out = ok(skiffd.docker("run", "--rm", "--network", "unet5", "busybox", "sh", "-c",
                           "cat /etc/resolv.conf; " + RETRY.format(cmd="wget -qO /tmp/o http://srv/passwd") + "; head -1 /tmp/o"))
    assert "nameserver 127.0.0.11" in out and "root:x:0:0:root:/root:/bin/sh" in out
    out = ok(skiffd.docker("run", "--rm", "--network", "unet5", "busybox", "sh", "-c",
                           RETRY.format(cmd="wget -qO /tmp/o http://web.unet5/passwd") + "; head -1 /tmp/o"))
    assert "root:x:0:0:" in out
    # not on a shared network: the name is not resolved
    r = skiffd.docker("run", "--rm", "busybox", "nslookup", "srv", "127.0.0.11")
    assert r.returncode != 0


@pytest.mark.root
def test_live_connect_disconnect_and_internal(skiffd):
    ok(skiffd.docker("network", "create", "--internal", "unet6"))
    cid = ok(skiffd.docker("run", "-d", "--name", "multi", "busybox", "sleep", "300")).strip()
    ok(skiffd.docker("network", "connect", "--alias", "m2", "unet6", "multi"))
    lk = ok(skiffd.docker("exec", "multi", "ip", "-o", "link"))
    assert "eth0" in lk and "eth1" in lk, lk
    route = ok(skiffd.docker("exec", "multi", "ip", "route"))
    assert route.count("default") == 1 and "eth0" in route.split("default")[1].splitlines()[0]
    nets = json.loads(ok(skiffd.docker("inspect", cid)))[0]["NetworkSettings"]["Networks"]
    assert set(nets) == {"bridge", "unet6"} and nets["unet6"]["IPAddress"]
    out = ok(skiffd.docker("run", "--rm", "--network", "unet6", "busybox", "sh", "-c",
                           RETRY.format(cmd="ping -c1 -W2 m2 >/dev/null")))
    assert out == ""
    r = skiffd.docker("network", "connect", "unet6", "multi")
    assert r.returncode != 0 and "already exists" in r.stderr
    ok(skiffd.docker("network", "disconnect", "unet6", "multi"))
    assert "eth1" not in ok(skiffd.docker("exec", "multi", "ip", "-o", "link"))
    assert "sk" + cid[:10] + "1" not in links()
    # connected while stopped: attached at the next start
    ok(skiffd.docker("stop", "-t", "0", "multi"))
    ok(skiffd.docker("network", "connect", "unet6", "multi"))
    ok(skiffd.docker("start", "multi"))
    assert "eth1" in ok(skiffd.docker("exec", "multi", "ip", "-o", "link"))


@pytest.mark.root
def test_user_network_survives_restart_and_cleans_up(skiffd):
    before = links()
    nid = ok(skiffd.docker("network", "create", "unet7")).strip()
    ok(skiffd.docker("run", "-d", "--name", "keep", "--network", "unet7", "busybox",
                     "httpd", "-f", "-p", "80", "-h", "/etc"))
    ip = json.loads(ok(skiffd.docker("inspect", "keep")))[0]["NetworkSettings"]["Networks"]["unet7"]["IPAddress"]
    skiffd.stop_daemon()
    assert "br-" + nid[:12] in links()
    skiffd.start()
    nets = json.loads(ok(skiffd.docker("inspect", "keep")))[0]["NetworkSettings"]["Networks"]
    assert nets["unet7"]["IPAddress"] == ip
    out = ok(skiffd.docker("run", "--rm", "--network", "unet7", "busybox", "sh", "-c",
                           RETRY.format(cmd="wget -qO /tmp/o http://keep/passwd") + "; head -1 /tmp/o"))
    assert "root:x:0:0:" in out
    ok(skiffd.docker("rm", "-f", "keep"))
    ok(skiffd.docker("network", "rm", "unet7"))
    skiffd.stop_daemon()
    assert links() - before == set()
    r = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True)
    assert f"br-{nid[:12]}" not in r.stdout
    skiffd.start()
