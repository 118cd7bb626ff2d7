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
the same addresses); a ``skiffN`` that is not locked but has links on it belongs to a stopped
skiffd whose containers still run (live restore) and is skipped too. With no ``bip``, the subnet
is the first /16 of 172.30, 172.31, 172.29 ... 172.24, then 10.200-10.227 that overlaps no route
of the host (user networks without --subnet take 172.18-172.23, then 10.228-10.255), or the first
free one of daemon.json's ``default-address-pools``.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skiff.daemon.network import netns as netns_mod
from skiff.daemon.network.ports import PortMap, nft_rules

if TYPE_CHECKING:
    from pyroute2 import IPRoute
else:
    def IPRoute() -> Any:
        """pyroute2 is imported on first use: its package imports every netlink family (and
        unittest, difflib, multiprocessing), ~8 MiB that a daemon with no bridged container
        never needs (docs/memory.md)."""
        from pyroute2 import IPRoute as cls
        return cls()


def netlink_error() -> Any:
    """pyroute2's NetlinkError class (importing pyroute2)."""
    from pyroute2.netlink.exceptions import NetlinkError
    return NetlinkError


def is_netlink_error(e: BaseException) -> bool:
    """Whether ``e`` is a pyroute2 NetlinkError, without importing pyroute2 (if it is not
    loaded, nothing raised one)."""
    mod = sys.modules.get("pyroute2.netlink.exceptions")
    return mod is not None and isinstance(e, mod.NetlinkError)


def netlink_code(e: BaseException) -> int:
    """The errno of a NetlinkError (0 if it has none)."""
    return int(getattr(e, "code", 0) or 0)

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
    dns: list[str] = field(default_factory=list)   # primary endpoint: the container's --dns servers

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


def pool_subnets(pools: list[tuple[ipaddress.IPv4Network, int]]) -> Iterator[ipaddress.IPv4Network]:
    """The subnets of daemon.json's ``default-address-pools`` ((base, size) each), in order."""
    for base, size in pools:
        yield from base.subnets(new_prefix=size)


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
                internal: bool = False, avoid: list[ipaddress.IPv4Network] | None = None,
                candidates: Iterable[ipaddress.IPv4Network] | None = None) -> Bridge:
        """Lock and bring up a bridge. ``name``/``bip`` "" choose as the module docstring says;
        ``previous_subnet`` (from the state of an earlier run) is preferred when still free;
        ``candidates`` replace :func:`candidate_subnets` (daemon.json default-address-pools)."""
        names = [name] if name else [f"skiff{i}" for i in range(64)]
        fd = None
        chosen = ""
        for n in names:
            fd = cls.lock(n)
            if fd is not None and not name and _has_ports(n):
                # a stopped skiffd's bridge with its containers still on it (live restore): that
                # skiffd takes it back by name when it starts again
                os.close(fd)
                fd = None
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
                    cands = itertools.chain(
                        [ipaddress.IPv4Network(previous_subnet)] if previous_subnet else [],
                        candidate_subnets() if candidates is None else candidates)
                    taken = routes + list(avoid or [])
                    found = next((c for c in cands if not any(r.overlaps(c) for r in taken)), None)
                    if found is None:
                        raise NetworkError("no free subnet for the default bridge: every candidate "
                                           "overlaps a route of the host or a network; set \"bip\" "
                                           "or \"default-address-pools\"")
                    net = found
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
        ``ip`` (and the default route through the bridge, unless ``default_route`` is false).

        The pair is made in one netlink request with the container side created directly in
        the namespace under its final name, MAC and MTU, and the host side enslaved and up:
        moving a link between namespaces afterwards (what ``ip link set netns`` does) waits for
        an RCU grace period in the kernel, ~20 ms here."""
        host = host_veth_name(cid, ifname)
        mac = mac_for(ip)
        with IPRoute() as ipr:
            for stale in ipr.link_lookup(ifname=host):
                _del_link(ipr, stale)
            br = ipr.link_lookup(ifname=self.name)
            if not br:
                raise NetworkError(f"bridge {self.name} is gone (deleted outside skiffd?)")
            fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ipr.link("add", ifname=host, kind="veth", master=br[0], mtu=self.mtu, state="up",
                         peer={"ifname": ifname, "net_ns_fd": fd, "address": mac, "mtu": self.mtu})
            except netlink_error() as e:
                raise NetworkError(f"veth {host} (container side {ifname} in {ns_path}): "
                                   f"{os.strerror(e.code) if e.code > 0 else e}") from None
            finally:
                os.close(fd)

        def inside() -> None:
            with IPRoute() as nsr:
                lo = nsr.link_lookup(ifname="lo")
                if lo:
                    nsr.link("set", index=lo[0], state="up")
                i = nsr.link_lookup(ifname=ifname)[0]
                nsr.addr("add", index=i, address=str(ip), prefixlen=self.subnet.prefixlen)
                nsr.link("set", index=i, state="up")
                if default_route and not self.internal:
                    nsr.route("add", dst="0.0.0.0/0", gateway=str(self.gateway), oif=i)

        try:
            netns_mod.run_in(ns_path, inside)
        except BaseException as e:
            self.detach(cid, ifname)
            if is_netlink_error(e):
                code = netlink_code(e)
                raise NetworkError(f"configure {ifname} in {ns_path} ({ip}/{self.subnet.prefixlen}, "
                                   f"gateway {self.gateway}): {os.strerror(code) if code > 0 else e}"
                                   ) from None
            raise
        return Endpoint(container_id=cid, ip=str(ip), prefixlen=self.subnet.prefixlen,
                        gateway=str(self.gateway), mac=mac, host_veth=host, bridge=self.name,
                        subnet=str(self.subnet), ifname=ifname)

    def detach(self, cid: str, ifname: str = "eth0") -> None:
        self.delete_link(host_veth_name(cid, ifname))

    @staticmethod
    def delete_link(name: str) -> None:
        delete_links([name])

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
                        _del_link(ipr, link["index"])
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


def _has_ports(bridge: str) -> bool:
    """True when links are enslaved to ``bridge`` (sysfs lists them under brif/)."""
    try:
        return bool(os.listdir(f"/sys/class/net/{bridge}/brif"))
    except (FileNotFoundError, NotADirectoryError):
        return False


def _del_link(ipr: IPRoute, index: int) -> None:
    """Delete link ``index``; one that is already gone (ENODEV) is fine: a veth goes with its
    peer, and with the namespace of its peer when the kernel destroys that namespace."""
    try:
        ipr.link("del", index=index)
    except netlink_error() as e:
        if e.code != errno.ENODEV:
            raise


def delete_links(names: list[str], timeout: float = 10.0) -> None:
    """Delete the links named ``names`` (the missing ones are fine) and return once they are
    gone: a veth whose peer's namespace the kernel is destroying goes away asynchronously
    (ENODEV for us, but still listed for a while)."""
    deadline = time.monotonic() + timeout
    with IPRoute() as ipr:
        for name in names:
            for idx in ipr.link_lookup(ifname=name):
                _del_link(ipr, idx)
        left = list(names)
        while left:
            left = [n for n in left if ipr.link_lookup(ifname=n)]
            if not left:
                break
            if time.monotonic() > deadline:
                raise NetworkError(f"links {', '.join(left)} still exist {timeout:.0f} s after their "
                                   "deletion")
            time.sleep(0.005)


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
