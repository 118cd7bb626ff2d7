"""The default ``bridge`` network: a Linux bridge of skiffd's own, veth pairs into container
network namespaces, and an nftables table of skiffd's own for outbound NAT.

All kernel work here is netlink through pyroute2 (no ``ip`` command) and is blocking: callers
run it in a worker thread. Configuring inside a container's namespace opens pyroute2's
netlink socket in a dedicated thread that joined the namespace (``netns.run_in``; pyroute2's own
netns helpers fork, which the gRPC library in skiffd does not survive). The nftables rules are loaded with
``nft -f -`` (one atomic transaction; nftables' netlink protocol is not covered by pyroute2).

Bridge ownership: each skiffd holds an exclusive ``flock`` on ``/run/skiffd-bridges/<name>.lock``
while it uses a bridge. With no ``bridge`` configured, skiffd takes ``skiff0``, or the next free
``skiffN`` when another skiffd on the host holds it (two daemons sharing a bridge would hand out
the same addresses). With no ``bip``, the subnet is the first /16 of 172.30, 172.31, 172.29 ...
172.24, then 10.200-10.227 that overlaps no route of the host (user networks without --subnet
take 172.18-172.23, then 10.228-10.255).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute

from skiff.daemon.network import netns as netns_mod
from skiff.daemon.network.ports import PortMap, nft_rules

LOCK_DIR = "/run/skiffd-bridges"
VETH_PREFIX = "sk"          # host side: sk<first 11 hex of the container id>


class NetworkError(Exception):
    pass


@dataclass
class Endpoint:
    container_id: str
    ip: str
    prefixlen: int
    gateway: str
    mac: str
    host_veth: str
    bridge: str
    subnet: str
    network_id: str = ""
    network: str = "bridge"
    ifname: str = "eth0"
    aliases: list[str] = field(default_factory=list)
    ports: list[dict[str, Any]] = field(default_factory=list)   # PortMap.to_json() each

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def host_veth_name(cid: str, ifname: str = "eth0") -> str:
    """sk<11 hex of the id> for eth0, sk<10 hex><n> for ethN (at most 15 characters)."""
    if ifname == "eth0":
        return VETH_PREFIX + cid[:11]
    return VETH_PREFIX + cid[:10] + ifname[3:]


def mac_for(ip: ipaddress.IPv4Address) -> str:
    """Docker's convention: 02:42 then the four address bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def candidate_subnets() -> list[ipaddress.IPv4Network]:
    """The default bridge's subnets, in order of preference (disjoint from the user networks')."""
    order = [30, 31, 29, 28, 27, 26, 25, 24]
    out = [ipaddress.IPv4Network(f"172.{n}.0.0/16") for n in order]
    out += [ipaddress.IPv4Network(f"10.{n}.0.0/16") for n in range(200, 228)]
    return out


def user_candidate_subnets() -> list[ipaddress.IPv4Network]:
    """Subnets for user-defined networks created without --subnet, in order."""
    out = [ipaddress.IPv4Network(f"172.{n}.0.0/16") for n in range(18, 24)]
    out += [ipaddress.IPv4Network(f"10.{n}.0.0/16") for n in range(228, 256)]
    return out


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def host_routes(ipr: IPRoute, ignore_ifindex: int | None = None) -> list[ipaddress.IPv4Network]:
    """The IPv4 destinations the host routes (default routes left out)."""
    out = []
    for r in ipr.get_routes(family=socket.AF_INET):
        plen = r["dst_len"]
        dst = _attr(r, "RTA_DST")
        if plen == 0 or not dst:
            continue
        if ignore_ifindex is not None and _attr(r, "RTA_OIF") == ignore_ifindex:
            continue
        out.append(ipaddress.IPv4Network(f"{dst}/{plen}", strict=False))
    return out


class Bridge:
    """One bridge owned by this skiffd (ownership by flock, see the module docstring)."""

    def __init__(self, name: str, cidr: str, gateway: str, mtu: int, lock_fd: int,
                 internal: bool = False) -> None:
        self.internal = internal
        self.name = name
        self.subnet = ipaddress.IPv4Network(cidr, strict=False)
        self.gateway = ipaddress.IPv4Address(gateway)
        self.mtu = mtu
        self._lock_fd = lock_fd
        self.forwards: dict[str, tuple[str, list[PortMap]]] = {}   # cid -> (its ip, published ports)
        self._nft_lock = threading.Lock()    # worker threads: change + render + load as one step

    @property
    def nft_table(self) -> str:
        return f"skiffd-{self.name}"

    # -- ownership -------------------------------------------------------------------------------
    @staticmethod
    def lock(name: str) -> int | None:
        """An exclusive lock on bridge ``name`` (its fd), or None when another skiffd holds it."""
        os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(LOCK_DIR, name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    @classmethod
    def acquire(cls, name: str, bip: str, mtu: int, previous_subnet: str = "",
                internal: bool = False, avoid: list[ipaddress.IPv4Network] | None = None) -> Bridge:
        """Lock and bring up a bridge. ``name``/``bip`` "" choose as the module docstring says;
        ``previous_subnet`` (from the state of an earlier run) is preferred when still free."""
        names = [name] if name else [f"skiff{i}" for i in range(64)]
        fd = None
        chosen = ""
        for n in names:
            fd = cls.lock(n)
            if fd is not None:
                chosen = n
                break
        if fd is None:
            if name:
                raise NetworkError(f"bridge {name}: in use by another skiffd on this host (its lock "
                                   f"{LOCK_DIR}/{name}.lock is held); configure another \"bridge\"")
            raise NetworkError("no free skiffN bridge name: 64 are held by other skiffd daemons")
        try:
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=chosen)
                own = idx[0] if idx else None
                routes = host_routes(ipr, ignore_ifindex=own)
                if bip:
                    try:
                        iface = ipaddress.IPv4Interface(bip)
                    except ValueError:
                        raise NetworkError(f"bip {bip!r}: expected an IPv4 address with a prefix "
                                           "length, like 172.30.0.1/16") from None
                    net = iface.network
                    clash = [r for r in routes if r.overlaps(net)]
                    if clash:
                        raise NetworkError(f"bip {bip}: subnet {net} overlaps the host's route to "
                                           f"{clash[0]}")
                    gw = iface.ip if iface.ip != net.network_address else net.network_address + 1
                else:
                    cands = candidate_subnets()
                    if previous_subnet:
                        cands.insert(0, ipaddress.IPv4Network(previous_subnet))
                    taken = routes + list(avoid or [])
                    free = [c for c in cands if not any(r.overlaps(c) for r in taken)]
                    if not free:
                        raise NetworkError("no free subnet for the default bridge: every candidate "
                                           "overlaps a route of the host; set \"bip\"")
                    net = free[0]
                    gw = net.network_address + 1
                b = cls(chosen, str(net), str(gw), mtu, fd, internal)
                b._ensure_link(ipr)
            b._load_nft()
            _enable_forwarding()
            return b
        except BaseException:
            os.close(fd)
            raise

    def _ensure_link(self, ipr: IPRoute) -> None:
        idx = ipr.link_lookup(ifname=self.name)
        if not idx:
            ipr.link("add", ifname=self.name, kind="bridge")
            idx = ipr.link_lookup(ifname=self.name)
        i = idx[0]
        want = (str(self.gateway), self.subnet.prefixlen)
        have = [(_attr(a, "IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=i, family=socket.AF_INET)]
        for addr, plen in have:
            if (addr, plen) != want:
                ipr.addr("del", index=i, address=addr, prefixlen=plen)
        if want not in have:
            ipr.addr("add", index=i, address=want[0], prefixlen=want[1])
        ipr.link("set", index=i, state="up")
        # published ports answer on the host's 127.0.0.1 (see skiff.daemon.network.ports)
        with open(f"/proc/sys/net/ipv4/conf/{self.name}/route_localnet", "w", encoding="ascii") as f:
            f.write("1\n")

    def nft_script(self) -> str:
        """The whole table, replaced in one transaction (the outbound NAT and every port)."""
        t = self.nft_table
        pre: list[str] = []
        out: list[str] = []
        for _cid, (ip, maps) in sorted(self.forwards.items()):
            p, o = nft_rules(maps, ip)
            pre += p
            out += o
        lines = [f"table ip {t} {{}}", f"delete table ip {t}", f"table ip {t} {{",
                 "  chain prerouting {", "    type nat hook prerouting priority dstnat; policy accept;",
                 *(f"    {r}" for r in pre), "  }",
                 "  chain output {", "    type nat hook output priority -100; policy accept;",
                 *(f"    {r}" for r in out), "  }",
                 "  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;",
                 *([] if self.internal else
                   [f"    ip saddr {self.subnet} oifname != \"{self.name}\" masquerade"]),
                 f"    ip saddr 127.0.0.0/8 oifname \"{self.name}\" masquerade", "  }", "}"]
        return "\n".join(lines) + "\n"

    def _load_nft(self) -> None:
        _nft(self.nft_script(), f"bridge {self.name}: load its NAT rules")

    def set_forwards(self, cid: str, ip: str, maps: list[PortMap]) -> None:
        """Publish ``maps`` of container ``cid`` (address ``ip``); [] removes its rules."""
        with self._nft_lock:
            self._set_forwards(cid, ip, maps)

    def _set_forwards(self, cid: str, ip: str, maps: list[PortMap]) -> None:
        old = self.forwards.get(cid)
        if maps:
            self.forwards[cid] = (ip, list(maps))
        else:
            self.forwards.pop(cid, None)
        if old is None and not maps:
            return
        try:
            self._load_nft()
        except NetworkError:
            if old is None:
                self.forwards.pop(cid, None)
            else:
                self.forwards[cid] = old
            raise

    # -- endpoints -------------------------------------------------------------------------------
    def attach(self, cid: str, ns_path: str, ip: ipaddress.IPv4Address, ifname: str = "eth0",
               default_route: bool = True) -> Endpoint:
        """veth pair: host side on the bridge, the other one ``ifname`` in ``ns_path`` with
        ``ip`` (and the default route through the bridge, unless ``default_route`` is false)."""
        host = host_veth_name(cid, ifname)
        tmp = "skt" + host[2:]
        mac = mac_for(ip)
        with IPRoute() as ipr:
            for stale in ipr.link_lookup(ifname=host) + ipr.link_lookup(ifname=tmp):
                ipr.link("del", index=stale)
            br = ipr.link_lookup(ifname=self.name)
            if not br:
                raise NetworkError(f"bridge {self.name} is gone (deleted outside skiffd?)")
            ipr.link("add", ifname=host, kind="veth", peer={"ifname": tmp})
            try:
                hi = ipr.link_lookup(ifname=host)[0]
                ti = ipr.link_lookup(ifname=tmp)[0]
                ipr.link("set", index=hi, master=br[0], mtu=self.mtu)
                fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    ipr.link("set", index=ti, net_ns_fd=fd)
                finally:
                    os.close(fd)
                ipr.link("set", index=hi, state="up")
            except BaseException:
                for stale in ipr.link_lookup(ifname=host):
                    ipr.link("del", index=stale)
                raise
        def inside() -> None:
            with IPRoute() as nsr:
                lo = nsr.link_lookup(ifname="lo")
                if lo:
                    nsr.link("set", index=lo[0], state="up")
                i = nsr.link_lookup(ifname=tmp)[0]
                nsr.link("set", index=i, ifname=ifname, address=mac, mtu=self.mtu)
                nsr.addr("add", index=i, address=str(ip), prefixlen=self.subnet.prefixlen)
                nsr.link("set", index=i, state="up")
                if default_route and not self.internal:
                    nsr.route("add", dst="0.0.0.0/0", gateway=str(self.gateway), oif=i)

        try:
            netns_mod.run_in(ns_path, inside)
        except BaseException:
            self.detach(cid, ifname)
            raise
        return Endpoint(container_id=cid, ip=str(ip), prefixlen=self.subnet.prefixlen,
                        gateway=str(self.gateway), mac=mac, host_veth=host, bridge=self.name,
                        subnet=str(self.subnet), ifname=ifname)

    def detach(self, cid: str, ifname: str = "eth0") -> None:
        self.delete_link(host_veth_name(cid, ifname))

    @staticmethod
    def delete_link(name: str) -> None:
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=name):
                ipr.link("del", index=idx)

    def ports(self) -> list[str]:
        """Names of the links enslaved to the bridge."""
        with IPRoute() as ipr:
            br = ipr.link_lookup(ifname=self.name)
            if not br:
                return []
            return [_attr(link, "IFLA_IFNAME") for link in ipr.get_links()
                    if _attr(link, "IFLA_MASTER") == br[0]]

    def destroy(self) -> None:
        """Delete the bridge, its veths and its nftables table; release the lock."""
        with IPRoute() as ipr:
            br = ipr.link_lookup(ifname=self.name)
            if br:
                for link in ipr.get_links():
                    if _attr(link, "IFLA_MASTER") == br[0]:
                        ipr.link("del", index=link["index"])
                ipr.link("del", index=br[0])
        t = self.nft_table
        _nft(f"table ip {t} {{}}\ndelete table ip {t}\n", f"bridge {self.name}: delete its NAT rules")
        if not self.name.startswith("skiff"):
            # a user network's name is never used again: its lock file goes (skiffN ones stay, so
            # that two daemons never hold locks on different files of the same name)
            try:
                os.unlink(os.path.join(LOCK_DIR, self.name + ".lock"))
            except FileNotFoundError:
                pass
        self.unlock()


def _nft(script: str, what: str) -> None:
    try:
        r = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NetworkError(f"{what}: the nft command (nftables) is not installed") from None
    if r.returncode != 0:
        raise NetworkError(f"{what}: nft failed: {r.stderr.strip()}")


def _enable_forwarding() -> None:
    """Outbound traffic of containers is routed by the host: IPv4 forwarding on (as dockerd)."""
    path = "/proc/sys/net/ipv4/ip_forward"
    with open(path, encoding="ascii") as f:
        if f.read().strip() == "1":
            return
    with open(path, "w", encoding="ascii") as f:
        f.write("1\n")


def remove_netns(path: str) -> None:
    netns_mod.remove(path)
