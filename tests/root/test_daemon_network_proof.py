"""Issue 8 proofs through a real skiffd and the real docker CLI: the embedded DNS server answering
over TCP as well as UDP (names, aliases, reverse lookups) and forwarding to a container's own ``--dns`` server (asked from inside
the container's namespace, as Docker does); ``--dns``/``--dns-search``/``--dns-option`` and
daemon.json ``dns``/``dns-search``/``dns-opts`` in resolv.conf as Docker writes it; daemon.json
``default-address-pools``; two containers on a user network talking by name over TCP and UDP;
published port ranges answering on the host's 127.0.0.1; ``--network none`` with only ``lo``.

Nothing here queries an outside address: the DNS upstreams are a fake server on 127.0.0.53 in a
container's own network namespace. Helper processes in a container's namespace (the fake DNS
server, the query client, a UDP listener) run with ``nsenter --net=<SandboxKey>`` and are stopped
by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from net_util import network_skiffd, ok, wait_http
from skiffd_util import Skiffd

RETRY = "ok=; for i in $(seq 50); do if {cmd}; then ok=1; break; fi; sleep 0.1; done; [ -n \"$ok\" ] || exit 1"

# A fake DNS server: answers every A query with 192.0.2.77 over UDP and TCP on ADDR:53, prints
# each query name it gets (with the transport) on stdout, one line each.
FAKE_DNS = r"""
import socket, struct, sys, threading
addr = sys.argv[1]
def reply(q):
    labels, k = [], 12
    while q[k]:
        labels.append(q[k + 1:k + 1 + q[k]].decode()); k += 1 + q[k]
    end = k + 5
    r = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + q[12:end]
    r += struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("192.0.2.77")
    return ".".join(labels), r
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((addr, 53))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind((addr, 53)); t.listen(8)
def tcp():
    while True:
        c, _ = t.accept()
        n = struct.unpack("!H", c.recv(2, socket.MSG_WAITALL))[0]
        name, r = reply(c.recv(n, socket.MSG_WAITALL))
        print("tcp", name, flush=True)
        c.sendall(struct.pack("!H", len(r)) + r); c.close()
threading.Thread(target=tcp, daemon=True).start()
print("ready", flush=True)
while True:
    q, a = u.recvfrom(512)
    name, r = reply(q)
    print("udp", name, flush=True)
    u.sendto(r, a)
"""

# A DNS client: one query (A, or the type given) for each name over the transport given, to
# 127.0.0.11:53; prints a JSON list of {name, transport, rcode, tc, addrs} (addrs: A addresses or
# PTR names).
DNS_CLIENT = r"""
import json, socket, struct, sys
def q(name, qid, qtype):
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"".join(
        bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", qtype, 1)
def rname(b):
    out, i = [], 0
    while b[i]:
        out.append(b[i + 1:i + 1 + b[i]].decode()); i += 1 + b[i]
    return ".".join(out)
def parse(r, qlen):
    flags, qd, an = struct.unpack("!HHH", r[2:8])
    out, i = [], qlen
    for _ in range(an):
        typ, _c, _t, ln = struct.unpack("!HHIH", r[i + 2:i + 12])
        if typ == 1:
            out.append(socket.inet_ntoa(r[i + 12:i + 12 + ln]))
        elif typ == 12:
            out.append(rname(r[i + 12:i + 12 + ln]))
        i += 12 + ln
    return {"rcode": flags & 0xF, "tc": bool(flags & 0x200), "addrs": out}
res = []
for k, (transport, name, *qtype) in enumerate(json.loads(sys.argv[1])):
    m = q(name, 100 + k, qtype[0] if qtype else 1)
    if transport == "tcp":
        s = socket.create_connection(("127.0.0.11", 53), timeout=10)
        s.sendall(struct.pack("!H", len(m)) + m)
        n = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))[0]
        r = s.recv(n, socket.MSG_WAITALL); s.close()
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(10)
        s.sendto(m, ("127.0.0.11", 53)); r = s.recv(4096); s.close()
    assert r[:2] == m[:2], "answer to another query"
    res.append({"name": name, "transport": transport, **parse(r, len(m))})
print(json.dumps(res))
"""

# A UDP listener on ADDR:53 that answers one DNS query (so busybox nslookup in another container
# is satisfied) and prints "<source address> <query name>".
UDP_LISTENER = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    q, a = s.recvfrom(512)
    labels, k = [], 12
    while q[k]:
        labels.append(q[k + 1:k + 1 + q[k]].decode()); k += 1 + q[k]
    print(a[0], ".".join(labels), flush=True)
    s.sendto(q[:2] + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + q[12:k + 5], a)
"""


@pytest.fixture
def skiffd(state_dirs):
    yield from network_skiffd(state_dirs)


def inspect(d: Skiffd, ref: str) -> dict:
    return json.loads(ok(d.docker("inspect", ref)))[0]


class InNetns:
    """A Python helper run in a container's network namespace (nsenter --net), stopped by PID."""

    def __init__(self, netns: str, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(["nsenter", f"--net={netns}", sys.executable, "-c", script, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise AssertionError(f"helper in {netns} did not start: {line}{self.stderr}")

    def lines(self, n: int) -> list[str]:
        assert self.proc.stdout is not None
        return [self.proc.stdout.readline().strip() for _ in range(n)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=10)
        self.stderr = self.proc.stderr.read() if self.proc.stderr else ""


def dns_queries(netns: str, queries: list[tuple]) -> list[dict]:
    r = subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", DNS_CLIENT, json.dumps(queries)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.root
def test_embedded_dns_over_tcp_and_udp_forwarding_to_the_containers_dns(skiffd):
    ok(skiffd.docker("network", "create", "pnet1"))
    ok(skiffd.docker("run", "-d", "--name", "target", "--network", "pnet1", "--network-alias", "tgt",
                     "busybox", "sleep", "300"))
    ok(skiffd.docker("run", "-d", "--name", "asker", "--network", "pnet1", "--dns", "127.0.0.53",
                     "--dns-search", "example.test", "--dns-option", "ndots:2", "--dns-option", "timeout:3",
                     "busybox", "sleep", "300"))
    # Docker's file for a user network: the embedded server only, the user's search and options
    # (an ndots given is kept), the --dns server becomes the embedded server's upstream
    assert ok(skiffd.docker("exec", "asker", "cat", "/etc/resolv.conf")) == \
        "search example.test\nnameserver 127.0.0.11\noptions ndots:2 timeout:3\n"
    ip = inspect(skiffd, "target")["NetworkSettings"]["Networks"]["pnet1"]["IPAddress"]
    key = inspect(skiffd, "asker")["NetworkSettings"]["SandboxKey"]
    assert key and os.path.exists(key)
    # the upstream: a fake server on 127.0.0.53 inside the asker's own namespace (--dns 127.0.0.x
    # is the container's loopback, as in Docker)
    fake = InNetns(key, FAKE_DNS, "127.0.0.53")
    rev = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    try:
        res = dns_queries(key, [("tcp", "target"), ("udp", "target"), ("tcp", "tgt.pnet1"),
                                ("udp", rev, 12), ("tcp", "outside.example"), ("udp", "other.example")])
        seen = fake.lines(2)
    finally:
        fake.stop()
    by = {(r["transport"], r["name"]): r for r in res}
    for k in (("tcp", "target"), ("udp", "target"), ("tcp", "tgt.pnet1")):
        assert by[k]["rcode"] == 0 and by[k]["addrs"] == [ip], by[k]
    assert by[("udp", rev)]["addrs"] == ["target.pnet1"]          # reverse lookup, as Docker
    assert by[("tcp", "outside.example")]["addrs"] == ["192.0.2.77"]
    assert by[("udp", "other.example")]["addrs"] == ["192.0.2.77"]
    # forwarded over the transport it came on
    assert seen == ["tcp outside.example", "udp other.example"]
    # the default bridge has no embedded server: nothing answers 127.0.0.11 there
    r = skiffd.docker("run", "--rm", "busybox", "nslookup", "target", "127.0.0.11")
    assert r.returncode != 0


@pytest.mark.root
def test_dns_options_on_the_default_bridge_and_add_host(skiffd):
    out = ok(skiffd.docker("run", "--rm", "--dns", "127.0.0.9", "--dns", "192.0.2.1", "--dns-search", "a.example",
                           "--dns-option", "ndots:3", "--add-host", "db.example:10.1.2.3", "busybox", "sh", "-c",
                           "cat /etc/resolv.conf; echo ---; cat /etc/hosts"))
    resolv, hosts = out.split("---\n")
    assert resolv == "search a.example\nnameserver 127.0.0.9\nnameserver 192.0.2.1\noptions ndots:3\n"
    assert "10.1.2.3\tdb.example\n" in hosts
    # the docker CLI checks --dns itself; the API refuses a bad one too
    r = subprocess.run(["curl", "-s", "--unix-socket", skiffd.sock, "-H", "Content-Type: application/json",
                        "-d", json.dumps({"Image": "busybox", "HostConfig": {"Dns": ["not-an-ip"]}}),
                        "-w", "\n%{http_code}", "http://localhost/v1.47/containers/create"],
                       capture_output=True, text=True, timeout=60)
    body, _, code = r.stdout.rpartition("\n")
    assert code == "400" and "HostConfig.Dns: 'not-an-ip' is not an IP address" in json.loads(body)["message"]
    cid = ok(skiffd.docker("create", "--dns", "192.0.2.1", "--dns-search", "a.example",
                           "--dns-option", "ndots:3", "busybox")).strip()
    hc = inspect(skiffd, cid)["HostConfig"]
    assert (hc["Dns"], hc["DnsSearch"], hc["DnsOptions"]) == (["192.0.2.1"], ["a.example"], ["ndots:3"])
    ok(skiffd.docker("rm", cid))
    # host-gateway is the default bridge's gateway, also for a container without networking
    hosts = ok(skiffd.docker("run", "--rm", "--network", "none", "--add-host", "host.docker.internal:host-gateway",
                             "busybox", "cat", "/etc/hosts"))
    gw = ok(skiffd.docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", "bridge")).strip()
    assert gw and f"{gw}\thost.docker.internal\n" in hosts


@pytest.mark.root
def test_daemon_json_dns_and_default_address_pools(state_dirs):
    conf = os.path.join(str(state_dirs.data), "daemon.json")
    os.makedirs(str(state_dirs.data), exist_ok=True)
    with open(conf, "w") as f:
        json.dump({"dns": ["127.0.0.54"], "dns-search": ["d.example"], "dns-opts": ["timeout:4"],
                   "default-address-pools": [{"base": "10.238.0.0/16", "size": 24}]}, f)
    d = Skiffd(str(state_dirs.run), str(state_dirs.data), "--config-file", conf)
    try:
        assert ok(d.docker("run", "--rm", "busybox", "cat", "/etc/resolv.conf")) == \
            "search d.example\nnameserver 127.0.0.54\noptions timeout:4\n"
        # a container's own --dns wins over the daemon's
        assert "nameserver 127.0.0.55\n" in ok(d.docker("run", "--rm", "--dns", "127.0.0.55", "busybox", "cat",
                                                         "/etc/resolv.conf"))
        bridge = json.loads(ok(d.docker("network", "inspect", "bridge")))[0]
        assert bridge["IPAM"]["Config"][0]["Subnet"].startswith("10.238.")
        ok(d.docker("network", "create", "pnet2"))
        user = json.loads(ok(d.docker("network", "inspect", "pnet2")))[0]
        sub = user["IPAM"]["Config"][0]["Subnet"]
        assert sub.startswith("10.238.") and sub.endswith("/24") and sub != bridge["IPAM"]["Config"][0]["Subnet"]
        assert ok(d.docker("run", "--rm", "--network", "pnet2", "busybox", "cat", "/etc/resolv.conf")) == \
            "search d.example\nnameserver 127.0.0.11\noptions timeout:4 ndots:0\n"
    finally:
        d.remove_all_containers()
        d.docker("network", "rm", "pnet2")
        d.stop()


@pytest.mark.root
def test_two_containers_talk_by_name_over_tcp_and_udp(skiffd):
    ok(skiffd.docker("network", "create", "pnet3"))
    ok(skiffd.docker("run", "-d", "--name", "srv", "--network", "pnet3", "busybox", "sh", "-c",
                     "nc -l -p 7000 > /tmp/got; sleep 300"))
    cli = ok(skiffd.docker("run", "-d", "--name", "cli", "--network", "pnet3", "busybox", "sleep", "300")).strip()
    # TCP: busybox nc from cli to srv by name
    ok(skiffd.docker("exec", "cli", "sh", "-c", RETRY.format(cmd="echo hello-tcp | nc srv 7000")))
    got = ""
    for _ in range(50):
        got = ok(skiffd.docker("exec", "srv", "cat", "/tmp/got"))
        if got:
            break
        subprocess.run(["sleep", "0.1"])
    assert got == "hello-tcp\n"
    # UDP: the image's busybox nc has no UDP mode; busybox nslookup sends a UDP datagram to the
    # server it is given, here by name: a listener in srv's namespace on srv's address receives it
    srv = inspect(skiffd, "srv")
    srv_ip = srv["NetworkSettings"]["Networks"]["pnet3"]["IPAddress"]
    cli_ip = inspect(skiffd, cli)["NetworkSettings"]["Networks"]["pnet3"]["IPAddress"]
    listener = InNetns(srv["NetworkSettings"]["SandboxKey"], UDP_LISTENER, srv_ip)
    try:
        r = skiffd.docker("exec", "cli", "nslookup", "hello-udp.test", "srv")
        line = listener.lines(1)[0]
    finally:
        listener.stop()
    assert line.split() == [cli_ip, "hello-udp.test"], (line, r.stdout, r.stderr)


@pytest.mark.root
def test_published_port_ranges_and_publish_all_with_exposed_ranges(skiffd):
    cid = ok(skiffd.docker("run", "-d", "-p", "127.0.0.1:18410-18411:80-81", "-p", "127.0.0.1:18412-18413:80/udp",
                           "busybox", "sh", "-c", "httpd -p 80 -h /etc; httpd -f -p 81 -h /etc")).strip()
    port = ok(skiffd.docker("port", cid))
    assert "80/tcp -> 127.0.0.1:18410" in port and "81/tcp -> 127.0.0.1:18411" in port
    assert "80/udp -> 127.0.0.1:18412" in port
    assert wait_http("http://127.0.0.1:18410/passwd").startswith("root:x:0:0:")
    assert wait_http("http://127.0.0.1:18411/passwd").startswith("root:x:0:0:")
    # the first port of the host range is taken now: the next container gets the second one
    cid2 = ok(skiffd.docker("run", "-d", "-p", "127.0.0.1:18412-18413:80/udp", "busybox", "sleep", "300")).strip()
    assert "80/udp -> 127.0.0.1:18413" in ok(skiffd.docker("port", cid2))
    r = skiffd.docker("run", "--rm", "-p", "127.0.0.1:18412-18413:80/udp", "busybox", "true")
    assert r.returncode != 0 and "all ports of the range are allocated" in r.stderr
    # mismatched ranges: refused by the client, with Docker's error
    r = skiffd.docker("run", "--rm", "-p", "18420-18422:80-81", "busybox", "true")
    assert r.returncode == 125 and \
        "invalid ranges specified for container and host Ports: 80-81 and 18420-18422" in r.stderr
    # -P with an exposed range: one ephemeral host port per container port
    cid3 = ok(skiffd.docker("run", "-d", "-P", "--expose", "7000-7001", "busybox", "sleep", "300")).strip()
    ports = inspect(skiffd, cid3)["NetworkSettings"]["Ports"]
    assert set(ports) == {"7000/tcp", "7001/tcp"} and all(int(b[0]["HostPort"]) > 0 for b in ports.values())


@pytest.mark.root
def test_network_none_has_only_lo(skiffd):
    out = ok(skiffd.docker("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                           "ls /sys/class/net; echo ---; ip -o addr; echo ---; ip route"))
    links, addrs, routes = out.split("---\n")
    assert links.split() == ["lo"]
    assert [a.split()[1] for a in addrs.splitlines()] == ["lo"] * len(addrs.splitlines())
    assert routes.strip() == ""
