"""Issue 8 networking through a real skiffd and the real docker CLI: the default bridge network
(eth0, address, gateway, /etc/hosts, inspect), published ports answering on the host's
127.0.0.1 and ``docker port``, ``container:`` and ``none`` modes, rules and links removed when a
container stops, endpoints kept across a skiffd restart (live restore), nothing left after the
daemon stops."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from net_util import links, ok, wait_http
from skiffd_util import Skiffd


@pytest.fixture
def skiffd(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    yield d
    d.stop()


def bridge_state(d: Skiffd) -> dict:
    with open(os.path.join(d.data_dir, "network", "bridge.json")) as f:
        return json.load(f)


def nft_table(name: str) -> str:
    r = subprocess.run(["nft", "list", "table", "ip", f"skiffd-{name}"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


@pytest.mark.root
def test_default_bridge_eth0_address_hosts_and_inspect(skiffd):
    cid = ok(skiffd.docker("run", "-d", "busybox", "sleep", "300")).strip()
    info = json.loads(ok(skiffd.docker("inspect", cid)))[0]
    ns = info["NetworkSettings"]
    br = bridge_state(skiffd)
    ip = ns["IPAddress"]
    assert ip and ns["Gateway"] == br["gateway"] and ns["Networks"]["bridge"]["IPAddress"] == ip
    assert ns["MacAddress"] == "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
    assert ns["Bridge"] == br["bridge"] and ns["SandboxKey"].endswith("/netns/" + cid)
    addr = ok(skiffd.docker("exec", cid, "ip", "-o", "-4", "addr", "show", "eth0"))
    assert f"inet {ip}/{ns['IPPrefixLen']}" in addr
    route = ok(skiffd.docker("exec", cid, "ip", "route"))
    assert f"default via {ns['Gateway']} dev eth0" in route
    hosts = ok(skiffd.docker("exec", cid, "cat", "/etc/hosts"))
    assert hosts.splitlines()[-1] == f"{ip}\t{cid[:12]}"
    ok(skiffd.docker("exec", cid, "ping", "-c", "1", "-W", "5", ns["Gateway"]))
    veth = "sk" + cid[:11]
    assert veth in links()
    ok(skiffd.docker("stop", "-t", "0", cid))
    assert veth not in links()
    assert not os.path.exists(os.path.join(skiffd.run_dir, "netns", cid))
    stopped = json.loads(ok(skiffd.docker("inspect", cid)))[0]["NetworkSettings"]
    assert stopped["IPAddress"] == "" and stopped["Networks"]["bridge"]["IPAddress"] == ""
    ok(skiffd.docker("start", cid))       # a new endpoint at start
    assert json.loads(ok(skiffd.docker("inspect", cid)))[0]["NetworkSettings"]["IPAddress"]
    ok(skiffd.docker("rm", "-f", cid))
    assert veth not in links()


@pytest.mark.root
def test_two_containers_talk_over_the_bridge(skiffd):
    a = ok(skiffd.docker("run", "-d", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")).strip()
    ip = json.loads(ok(skiffd.docker("inspect", a)))[0]["NetworkSettings"]["IPAddress"]
    out = ok(skiffd.docker("run", "--rm", "busybox", "sh", "-c",
                           f"for i in $(seq 50); do wget -qO- http://{ip}/passwd && break; sleep 0.1; done"))
    assert out.startswith("root:x:0:0:")


@pytest.mark.root
def test_published_port_from_host_loopback_and_docker_port(skiffd):
    cid = ok(skiffd.docker("run", "-d", "-p", "127.0.0.1:18391:80", "-p", "18392:80/udp", "busybox",
                           "httpd", "-f", "-p", "80", "-h", "/etc")).strip()
    assert wait_http("http://127.0.0.1:18391/passwd").startswith("root:x:0:0:")
    port = ok(skiffd.docker("port", cid))
    assert "80/tcp -> 127.0.0.1:18391" in port and "80/udp -> 0.0.0.0:18392" in port
    info = json.loads(ok(skiffd.docker("inspect", cid)))[0]
    assert info["HostConfig"]["PortBindings"]["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "18391"}]
    assert info["NetworkSettings"]["Ports"]["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "18391"}]
    table = nft_table(bridge_state(skiffd)["bridge"])
    assert "dport 18391" in table and "dport 18392" in table
    ps = ok(skiffd.docker("ps", "--filter", f"id={cid}", "--format", "{{.Ports}}"))
    assert "127.0.0.1:18391->80/tcp" in ps and "0.0.0.0:18392->80/udp" in ps
    # the host port is taken while the mapping exists
    r = skiffd.docker("run", "--rm", "-p", "127.0.0.1:18391:80", "busybox", "true")
    assert r.returncode != 0 and "port is already allocated" in r.stderr
    ok(skiffd.docker("stop", "-t", "0", cid))
    table = nft_table(bridge_state(skiffd)["bridge"])
    assert "18391" not in table and "18392" not in table


@pytest.mark.root
def test_publish_all_ephemeral_ports(skiffd):
    cid = ok(skiffd.docker("run", "-d", "-P", "--expose", "80", "busybox",
                           "httpd", "-f", "-p", "80", "-h", "/etc")).strip()
    ports = json.loads(ok(skiffd.docker("inspect", cid)))[0]["NetworkSettings"]["Ports"]["80/tcp"]
    hp = int(ports[0]["HostPort"])
    assert hp > 0
    assert wait_http(f"http://127.0.0.1:{hp}/passwd").startswith("root:x:0:0:")


@pytest.mark.root
def test_none_host_and_container_modes(skiffd):
    assert ok(skiffd.docker("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                            "ls /sys/class/net")).split() == ["lo"]
    assert ok(skiffd.docker("run", "--rm", "--network", "host", "busybox", "hostname")).strip() == \
        os.uname().nodename
    a = ok(skiffd.docker("run", "-d", "--name", "netowner", "busybox",
                         "httpd", "-f", "-p", "80", "-h", "/etc")).strip()
    ip = json.loads(ok(skiffd.docker("inspect", a)))[0]["NetworkSettings"]["IPAddress"]
    out = ok(skiffd.docker("run", "--rm", "--network", "container:netowner", "busybox", "sh", "-c",
                           "ip -o -4 addr show eth0; for i in $(seq 50); do "
                           "wget -qO- http://127.0.0.1/passwd && break; sleep 0.1; done"))
    assert f"inet {ip}/" in out and "root:x:0:0:" in out
    r = skiffd.docker("run", "--rm", "-p", "18393:80", "--network", "none", "busybox", "true")
    assert r.returncode == 125 and "port publishing" in r.stderr
    ok(skiffd.docker("stop", "-t", "0", "netowner"))
    r = skiffd.docker("run", "--rm", "--network", "container:netowner", "busybox", "true")
    assert r.returncode != 0 and "non running container" in r.stderr


@pytest.mark.root
def test_restart_keeps_endpoints_and_stop_leaves_nothing(skiffd):
    before = links()
    cid = ok(skiffd.docker("run", "-d", "-p", "127.0.0.1:18394:80", "busybox",
                           "httpd", "-f", "-p", "80", "-h", "/etc")).strip()
    ip = json.loads(ok(skiffd.docker("inspect", cid)))[0]["NetworkSettings"]["IPAddress"]
    br = bridge_state(skiffd)["bridge"]
    skiffd.stop_daemon()                     # containers keep running (live restore)
    assert br in links() and "sk" + cid[:11] in links()
    skiffd.start()
    ns = json.loads(ok(skiffd.docker("inspect", cid)))[0]["NetworkSettings"]
    assert ns["IPAddress"] == ip and ns["Ports"]["80/tcp"][0]["HostPort"] == "18394"
    assert wait_http("http://127.0.0.1:18394/passwd").startswith("root:x:0:0:")
    # a new container does not get the address of the restored one
    other = ok(skiffd.docker("run", "-d", "busybox", "sleep", "300")).strip()
    assert json.loads(ok(skiffd.docker("inspect", other)))[0]["NetworkSettings"]["IPAddress"] != ip
    ok(skiffd.docker("rm", "-f", cid, other))
    skiffd.stop_daemon()
    assert links() - before == set() and br not in links()
    assert nft_table(br) == ""
    assert os.listdir(os.path.join(skiffd.run_dir, "netns")) == []
    skiffd.start()


@pytest.mark.root
def test_crash_leftovers_reconciled_at_start(skiffd):
    import signal
    import time

    cid = ok(skiffd.docker("run", "-d", "-p", "127.0.0.1:18395:80", "busybox",
                           "httpd", "-f", "-p", "80", "-h", "/etc")).strip()
    pid = json.loads(ok(skiffd.docker("inspect", cid)))[0]["State"]["Pid"]
    br = bridge_state(skiffd)["bridge"]
    proc = skiffd.proc
    assert proc is not None
    proc.send_signal(signal.SIGKILL)          # skiffd crashes ...
    proc.wait()
    skiffd.proc = None
    os.kill(pid, signal.SIGKILL)              # ... and its container dies while it is away
    for _ in range(200):
        if not os.path.exists(f"/proc/{pid}"):
            break
        time.sleep(0.05)
    assert os.path.exists(os.path.join(skiffd.run_dir, "netns", cid))
    skiffd.start()
    assert json.loads(ok(skiffd.docker("inspect", cid)))[0]["State"]["Status"] == "exited"
    assert not os.path.exists(os.path.join(skiffd.run_dir, "netns", cid))
    assert "sk" + cid[:11] not in links()
    assert "18395" not in nft_table(br)
    # nothing runs on the bridge any more: it went, with its address state
    assert br not in links()
    assert not os.path.exists(os.path.join(skiffd.data_dir, "network", f"ipam-{_default_id(skiffd)}.json"))
    ok(skiffd.docker("start", cid))           # the port is free again for its next run
    assert wait_http("http://127.0.0.1:18395/passwd").startswith("root:x:0:0:")


def _default_id(d: Skiffd) -> str:
    return json.loads(ok(d.docker("network", "inspect", "bridge")))[0]["Id"]
