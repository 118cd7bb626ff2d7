"""NetworkManager: skiffd's networking for containers (issue 8), used by the containers backend
and the networks router.

Modes: ``none`` (loopback only), ``host``, ``container:<ref>`` (handled by the backend: the
other container's namespace goes into the spec), ``default``/``bridge`` (the default bridge
network, see :mod:`skiff.daemon.network.bridge`) and user-defined bridge networks (``docker
network create``; records in :mod:`skiff.daemon.network.store`).

A container with its own namespace gets ``<exec-root>/netns/<id>`` in its spec; :meth:`setup`
creates and wires it right before each start: ``eth0`` on its primary network, ``eth1``... on
the others it is connected to (``NetworkingConfig.EndpointsConfig``), addresses from each
network's IPAM pool (``<data-root>/network/ipam-<network id>.json``), published ports, and on
user networks the embedded DNS server (:mod:`skiff.daemon.network.dns`). :meth:`teardown`
removes it all once the container stopped. A bridge is brought up when its first endpoint
needs it; the default one is deleted when the daemon stops with no endpoint left, a user
network's when the network is removed or the daemon stops with no endpoint on it. At daemon
start, :meth:`reconcile` adopts the endpoints of running containers and removes every leftover
(namespace files, veths, addresses, endpoint files) of containers that do not run.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from skiff.daemon.api.errors import Conflict, InvalidParameter, NotFound
from skiff.daemon.network import netns as netns_mod
from skiff.daemon.network import ports as ports_mod
from skiff.daemon.network.bridge import (
    Bridge,
    Endpoint,
    IPRoute,
    NetworkError,
    delete_links,
    host_routes,
    is_netlink_error,
    pool_subnets,
    user_candidate_subnets,
)
from skiff.daemon.network.ipam import IpamError, Pool, parse_address_pools
from skiff.daemon.network.ports import PortError, PortMap
from skiff.daemon.network.store import NetRecord, NetStore, rfc3339

log = logging.getLogger("skiff.daemon.network")

BRIDGE_MODES = ("default", "bridge")


class NetworkManager:
    def __init__(self, data_root: str, exec_root: str, *, bridge: str = "", bip: str = "",
                 mtu: int = 1500, dns: list[str] | None = None,
                 address_pools: list[dict[str, Any]] | None = None) -> None:
        self.state_dir = os.path.join(data_root, "network")
        self.netns_dir = os.path.join(exec_root, "netns")
        self.bridge_name = bridge
        self.bip = bip
        self.mtu = mtu
        self.default_dns = list(dns or [])                 # daemon.json "dns"
        # daemon.json "default-address-pools": the subnets the default bridge (without bip)
        # and user networks (without --subnet) take, in order; [] = skiffd's built-in lists
        self.address_pools = parse_address_pools(address_pools or [])
        self.store = NetStore(self.state_dir)
        self.bridges: dict[str, Bridge] = {}              # network id -> its bridge, when up
        self.pools: dict[str, Pool] = {}
        self.eps: dict[str, dict[str, Endpoint]] = {}      # container id -> network id -> endpoint
        self._port_socks: dict[str, list[socket.socket]] = {}   # port reservations (see ports.py)
        self._lock = asyncio.Lock()
        self._dns_servers: dict[str, list[str]] = {}       # container id -> its --dns servers
        self._reaping: dict[str, asyncio.Task[None]] = {}   # container id -> deferred veth deletion
        self.dns: Any = None                               # dns.DnsService, when started
        # container id -> (name, its hostname) for the DNS; set by the daemon's wiring
        self.container_names: Callable[[str], list[str]] = lambda cid: [cid[:12]]

    def load(self) -> list[str]:
        return self.store.load()

    # -- paths and state ---------------------------------------------------------------------------
    def netns_path(self, cid: str) -> str:
        return os.path.join(self.netns_dir, cid)

    @property
    def default_net(self) -> NetRecord:
        return self.store.get("bridge")

    @property
    def _state_file(self) -> str:
        return os.path.join(self.state_dir, "bridge.json")

    def _read_state(self) -> dict[str, Any]:
        try:
            with open(self._state_file, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.error("network state %s unreadable (%s); starting afresh", self._state_file, e)
            return {}

    def _write_state(self, b: Bridge) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        tmp = self._state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"bridge": b.name, "subnet": str(b.subnet), "gateway": str(b.gateway)}, f)
        os.replace(tmp, self._state_file)

    def _ipam_file(self, netid: str) -> str:
        return os.path.join(self.state_dir, f"ipam-{netid}.json")

    @staticmethod
    def uses_bridge(host_config: dict[str, Any]) -> bool:
        """True when skiffd makes and wires the container's namespace (bridge or user network)."""
        mode = host_config.get("NetworkMode") or "default"
        return mode not in ("host", "none") and not mode.startswith("container:")

    def primary_network(self, host_config: dict[str, Any]) -> NetRecord:
        mode = host_config.get("NetworkMode") or "default"
        return self.store.get("bridge" if mode in BRIDGE_MODES else mode)

    # -- bridges -----------------------------------------------------------------------------------
    async def _ensure_bridge(self, net: NetRecord) -> Bridge:
        async with self._lock:
            have = self.bridges.get(net.id)
            if have is not None:
                return have
            b: Bridge
            try:
                if net.name == "bridge":
                    prev = self._read_state()
                    b = await asyncio.to_thread(
                        Bridge.acquire, self.bridge_name or "", self.bip, self.mtu,
                        prev.get("subnet", "") if not self.bip else "", False, self.store.user_subnets(),
                        pool_subnets(self.address_pools) if self.address_pools else None)
                else:
                    gw = ipaddress.IPv4Interface(f"{net.gateway}/{ipaddress.IPv4Network(net.subnet).prefixlen}")
                    b = await asyncio.to_thread(Bridge.acquire, net.bridge_name, str(gw), self.mtu, "",
                                                net.internal)
            except (NetworkError, OSError) as e:
                raise NetworkError(f"network {net.name}: {e}") from None
            try:
                self.pools[net.id] = Pool(self._ipam_file(net.id), str(b.subnet), str(b.gateway))
            except IpamError as e:
                b.unlock()
                raise NetworkError(f"network {net.name}: {e}") from None
            self.bridges[net.id] = b
            if net.name == "bridge":
                self._write_state(b)
            log.info("network %s: bridge %s up: %s, gateway %s", net.name, b.name, b.subnet, b.gateway)
            return b

    async def host_gateway_ip(self) -> str:
        """The default bridge's gateway address (``--add-host NAME:host-gateway``), making the
        bridge if it is not up yet."""
        b = await self._ensure_bridge(self.default_net)
        return str(b.gateway)

    async def _release_bridge(self, netid: str, destroy: bool) -> None:
        b = self.bridges.pop(netid, None)
        self.pools.pop(netid, None)
        if b is None:
            return
        if not destroy:
            b.unlock()
            return
        try:
            await asyncio.to_thread(b.destroy)
        except Exception as e:
            b.unlock()
            log.error("bridge %s: could not delete it: %s", b.name, e)
            return
        for path in (self._ipam_file(netid),) + ((self._state_file,) if netid == self.default_net.id else ()):
            _unlink(path)

    # -- per container -----------------------------------------------------------------------------
    def wanted_networks(self, host_config: dict[str, Any],
                        networking_config: dict[str, Any] | None) -> list[tuple[NetRecord, dict[str, Any]]]:
        """(network, endpoint config) for each network the container is on, the primary first."""
        primary = self.primary_network(host_config)
        epc = dict((networking_config or {}).get("EndpointsConfig") or {})
        out = [(primary, dict(epc.get(primary.name) or epc.get(host_config.get("NetworkMode") or "") or {}))]
        for name, cfg in epc.items():
            if name in (primary.name, host_config.get("NetworkMode"), "default"):
                continue
            net = self.store.get(name)
            if net.predefined:
                raise InvalidParameter(f"container cannot be connected to network {name} besides "
                                       f"{primary.name}")
            if all(n.id != net.id for n, _ in out):
                out.append((net, dict(cfg or {})))
        return out

    async def setup(self, cid: str, host_config: dict[str, Any] | None = None,
                    exposed: dict[str, Any] | None = None,
                    networking_config: dict[str, Any] | None = None) -> Endpoint:
        """The container's namespace, interfaces, addresses, published ports and DNS server,
        before its task is created. Returns the primary endpoint."""
        host_config = host_config or {}
        try:
            maps = ports_mod.parse(host_config, exposed)
        except PortError as e:
            raise NetworkError(f"container {cid}: {e}") from None
        nets = self.wanted_networks(host_config, networking_config)
        path = self.netns_path(cid)
        t0 = time.perf_counter()
        await self.teardown(cid)          # leftovers of an earlier run
        await self._links_deleted(cid)    # its veth names are free again
        try:
            await asyncio.to_thread(netns_mod.create, path)
            t1 = time.perf_counter()
            first: Endpoint | None = None
            dns_servers = [str(x) for x in host_config.get("Dns") or self.default_dns]
            for i, (net, cfg) in enumerate(nets):
                ep = await self._attach(cid, net, f"eth{i}", cfg)
                if first is None:
                    first = ep
                    ep.dns = dns_servers
                    if maps:
                        await self._publish(cid, net, ep, maps)
                    self._save_endpoint(ep)
            assert first is not None
            self._dns_servers[cid] = dns_servers
            await self._dns_update(cid)
            log.debug("container %s: network set up in %.1f ms (namespace %.1f ms)", cid,
                      (time.perf_counter() - t0) * 1000, (t1 - t0) * 1000)
            return first
        except BaseException as e:
            await self.teardown(cid)
            if isinstance(e, (OSError, netns_mod.NetnsError, PortError)) or is_netlink_error(e):
                raise NetworkError(f"container {cid}: network setup failed: {e}") from None
            raise

    async def _attach(self, cid: str, net: NetRecord, ifname: str, cfg: dict[str, Any]) -> Endpoint:
        b = await self._ensure_bridge(net)
        pool = self.pools[net.id]
        want = ((cfg.get("IPAMConfig") or {}).get("IPv4Address") or "")
        try:
            if want:
                if net.name == "bridge":
                    raise NetworkError("user specified IP address is supported on user defined "
                                       "networks only")
                ip = pool.allocate_exact(cid, want)
            else:
                ip = pool.allocate(cid)
        except IpamError as e:
            raise NetworkError(f"container {cid}: network {net.name}: {e}") from None
        try:
            ep = await asyncio.to_thread(b.attach, cid, self.netns_path(cid), ip, ifname, ifname == "eth0")
        except BaseException:
            pool.release(cid)
            raise
        ep.network_id, ep.network = net.id, net.name
        ep.aliases = [str(a) for a in cfg.get("Aliases") or []]
        self.eps.setdefault(cid, {})[net.id] = ep
        self._save_endpoint(ep)
        return ep

    async def _publish(self, cid: str, net: NetRecord, ep: Endpoint, maps: list[PortMap]) -> None:
        b = self.bridges[net.id]
        socks = self._port_socks.setdefault(cid, [])
        for m in maps:
            socks.append(ports_mod.reserve(m))
        ep.ports = [m.to_json() for m in maps]
        await asyncio.to_thread(b.set_forwards, cid, ep.ip, maps)

    def _endpoint_file(self, cid: str, netid: str) -> str:
        return os.path.join(self.state_dir, "endpoints", f"{cid}@{netid}.json")

    def _save_endpoint(self, ep: Endpoint) -> None:
        path = self._endpoint_file(ep.container_id, ep.network_id)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(ep.to_json(), f)
        os.replace(path + ".tmp", path)

    async def _detach(self, cid: str, netid: str, deferred: list[str] | None = None) -> list[str]:
        """Take container ``cid`` off network ``netid``: its ports, veth, address. With
        ``deferred``, the host veth's name is added to it instead of deleting the link here."""
        errors: list[str] = []
        ep = self.eps.get(cid, {}).pop(netid, None)
        _unlink(self._endpoint_file(cid, netid))
        b = self.bridges.get(netid)
        if b is not None:
            if ep is not None and ep.ports or cid in b.forwards:
                try:
                    await asyncio.to_thread(b.set_forwards, cid, "", [])
                except Exception as e:
                    errors.append(f"remove its published ports: {e}")
            if ep is not None:
                if deferred is not None:
                    deferred.append(ep.host_veth)
                else:
                    try:
                        await asyncio.to_thread(b.detach, cid, ep.ifname)
                    except Exception as e:
                        errors.append(f"delete veth {ep.host_veth}: {e}")
        pool = self.pools.get(netid)
        if pool is not None:
            pool.release(cid)
        return errors

    async def teardown(self, cid: str) -> None:
        """Undo :meth:`setup` (each part that exists); safe to call more than once.

        Deleting a veth waits for an RCU grace period in the kernel (~20 ms): that part runs
        after this returns (the container is reported stopped or removed without waiting for
        it). The namespace is unmounted first, so the kernel usually deletes the pair itself
        with the namespace; the deferred deletion catches a namespace another process still
        holds. :meth:`setup` and :meth:`connect` of the same container, and :meth:`shutdown`,
        wait for it."""
        t0 = time.perf_counter()
        errors: list[str] = []
        for sock in self._port_socks.pop(cid, []):
            sock.close()
        if self.dns is not None:
            self.dns.remove(cid)
        self._dns_servers.pop(cid, None)
        links: list[str] = []
        for netid in list(self.eps.get(cid, {})) + [n for n in self.bridges if n not in self.eps.get(cid, {})]:
            errors += await self._detach(cid, netid, links)
        self.eps.pop(cid, None)
        path = self.netns_path(cid)
        if os.path.lexists(path):
            try:
                await asyncio.to_thread(netns_mod.remove, path)
            except Exception as e:
                errors.append(str(e))
        if links:
            self._delete_links_later(cid, links)
            log.debug("container %s: network torn down in %.1f ms", cid, (time.perf_counter() - t0) * 1000)
        if errors:
            raise NetworkError(f"container {cid}: network teardown: {'; '.join(errors)}")

    def _delete_links_later(self, cid: str, names: list[str]) -> None:
        prev = self._reaping.get(cid)

        async def run() -> None:
            if prev is not None:
                await asyncio.wait([prev])
            t0 = time.perf_counter()
            try:
                await asyncio.to_thread(delete_links, names)
                log.debug("container %s: veth %s deleted in %.1f ms", cid, ", ".join(names),
                          (time.perf_counter() - t0) * 1000)
            except Exception as e:
                log.error("container %s: delete its veth %s: %s", cid, ", ".join(names), e)

        task = asyncio.get_running_loop().create_task(run(), name=f"veth-delete-{cid[:12]}")
        self._reaping[cid] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._reaping.get(cid) is t:
                del self._reaping[cid]

        task.add_done_callback(done)

    async def _links_deleted(self, cid: str) -> None:
        """Wait for the deferred veth deletion of container ``cid`` (see :meth:`teardown`)."""
        task = self._reaping.get(cid)
        if task is not None:
            await asyncio.wait([task])

    def endpoint(self, cid: str) -> Endpoint | None:
        eps = self.eps.get(cid) or {}
        return next((e for e in eps.values() if e.ifname == "eth0"), None)

    # -- live connect / disconnect -----------------------------------------------------------------
    async def connect(self, cid: str, net: NetRecord, cfg: dict[str, Any]) -> Endpoint:
        """Attach a running container (its namespace exists) to ``net`` as the next ethN."""
        if not os.path.exists(self.netns_path(cid)):
            raise Conflict(f"container {cid}: it has no network namespace of skiffd's (network mode "
                           "host, none or container:), it cannot be connected")
        eps = self.eps.setdefault(cid, {})
        if net.id in eps:
            raise Conflict(f"endpoint with name {self.container_names(cid)[0]} already exists in "
                           f"network {net.name}")
        await self._links_deleted(cid)
        used = {e.ifname for e in eps.values()}
        ifname = next(f"eth{i}" for i in range(64) if f"eth{i}" not in used)
        ep = await self._attach(cid, net, ifname, cfg)
        await self._dns_update(cid)
        return ep

    async def disconnect(self, cid: str, net: NetRecord) -> None:
        if net.id not in self.eps.get(cid, {}):
            raise Conflict(f"container {cid} is not connected to network {net.name}")
        errors = await self._detach(cid, net.id)
        await self._dns_update(cid)
        if errors:
            raise NetworkError(f"container {cid}: disconnect from {net.name}: {'; '.join(errors)}")

    # -- DNS ---------------------------------------------------------------------------------------
    async def _dns_update(self, cid: str) -> None:
        if self.dns is None:
            return
        on_user = any(not e.network == "bridge" for e in (self.eps.get(cid) or {}).values())
        if on_user:
            await self.dns.ensure(cid, self.netns_path(cid), self._dns_servers.get(cid))
        else:
            self.dns.remove(cid)

    def resolve(self, cid: str, name: str) -> list[str]:
        """Addresses of ``name`` for container ``cid``: containers on a user network it shares,
        by name, short id, hostname or alias (Docker's embedded DNS)."""
        name = name.rstrip(".").lower()
        mine = {nid for nid, e in (self.eps.get(cid) or {}).items() if e.network != "bridge"}
        out: list[str] = []
        for other, eps in self.eps.items():
            for nid, ep in eps.items():
                if nid not in mine:
                    continue
                names = {n.lower() for n in self.container_names(other)} | {a.lower() for a in ep.aliases}
                names.add(other[:12])
                net = self.store.nets.get(nid)
                if name in names or (net is not None and name.endswith("." + net.name.lower())
                                     and name[: -len(net.name) - 1] in names):
                    out.append(ep.ip)
        return out

    def resolve_ptr(self, cid: str, ip: str) -> list[str]:
        """``<name>.<network>`` of the container with address ``ip`` on a user network that
        container ``cid`` is on (Docker's reverse lookup); [] when none."""
        mine = {nid for nid, e in (self.eps.get(cid) or {}).items() if e.network != "bridge"}
        for other, eps in self.eps.items():
            for nid, ep in eps.items():
                if nid in mine and ep.ip == ip:
                    return [f"{self.container_names(other)[0]}.{ep.network}"]
        return []

    # -- networks API ------------------------------------------------------------------------------
    async def create_network(self, body: dict[str, Any]) -> NetRecord:
        known = {"Name", "CheckDuplicate", "Driver", "Scope", "Internal", "Attachable", "Ingress",
                 "IPAM", "EnableIPv6", "EnableIPv4", "Options", "Labels", "ConfigOnly", "ConfigFrom"}
        unknown = sorted(k for k in body if k not in known and body[k] not in (None, "", {}, [], False))
        if unknown:
            raise InvalidParameter(f"network create: unsupported field(s): {', '.join(unknown)}")
        driver = body.get("Driver") or "bridge"
        if driver != "bridge":
            raise InvalidParameter(f"network driver {driver!r} is not supported by skiffd (bridge only)")
        for k in ("EnableIPv6", "Ingress", "ConfigOnly"):
            if body.get(k):
                raise InvalidParameter(f"network create: {k} is not supported by skiffd")
        if body.get("ConfigFrom"):
            raise InvalidParameter("network create: ConfigFrom is not supported by skiffd")
        if body.get("Scope") not in (None, "", "local"):
            raise InvalidParameter(f"network create: scope {body['Scope']!r} is not supported (local)")
        options = {str(k): str(v) for k, v in (body.get("Options") or {}).items()}
        if options:
            raise InvalidParameter(f"network create: driver options are not supported by skiffd: "
                                   f"{', '.join(sorted(options))}")
        ipam = body.get("IPAM") or {}
        if (ipam.get("Driver") or "default") != "default":
            raise InvalidParameter(f"IPAM driver {ipam['Driver']!r} is not supported (default)")
        if ipam.get("Options"):
            raise InvalidParameter("IPAM options are not supported by skiffd")
        confs = ipam.get("Config") or []
        if len(confs) > 1:
            raise InvalidParameter("only one IPAM config (one IPv4 subnet) per network is supported")
        name = str(body.get("Name") or "")
        if name in ("bridge", "host", "none", "default"):
            raise Conflict(f"network with name {name} already exists" if name != "default" else
                           "default is a reserved network name")
        if self.store.find(name) is not None and self.store.get(name).name == name:
            raise Conflict(f"network with name {name} already exists")
        routes = await asyncio.to_thread(_routes)
        others = self.store.user_subnets() + [b.subnet for b in self.bridges.values()]
        if confs:
            c = confs[0]
            for k in ("IPRange", "AuxiliaryAddresses"):
                if c.get(k):
                    raise InvalidParameter(f"IPAM {k} is not supported by skiffd")
            try:
                subnet = ipaddress.IPv4Network(str(c.get("Subnet") or ""), strict=False)
            except ValueError:
                raise InvalidParameter(f"invalid subnet {c.get('Subnet')!r}: expected an IPv4 CIDR") from None
            if subnet.prefixlen > 30:
                raise InvalidParameter(f"subnet {subnet} is too small")
            clash = [o for o in others if o.overlaps(subnet)]
            if clash:
                raise Conflict(f"Pool overlaps with other one on this address space ({clash[0]})")
            clash = [r for r in routes if r.overlaps(subnet)]
            if clash:
                raise Conflict(f"subnet {subnet} overlaps the host's route to {clash[0]}")
            gw = str(c.get("Gateway") or (subnet.network_address + 1))
            try:
                if ipaddress.IPv4Address(gw) not in subnet:
                    raise InvalidParameter(f"gateway {gw} is not in subnet {subnet}")
            except ValueError:
                raise InvalidParameter(f"invalid gateway {gw!r}") from None
        else:
            taken = routes + others + [ipaddress.IPv4Network(self._read_state().get("subnet") or "0.0.0.0/32")]
            cands = pool_subnets(self.address_pools) if self.address_pools else user_candidate_subnets()
            found = next((s for s in cands if not any(t.overlaps(s) for t in taken)), None)
            if found is None:
                raise Conflict("no free address pool left for a new network: give --subnet"
                               + (" or more default-address-pools" if self.address_pools else ""))
            subnet = found
            gw = str(subnet.network_address + 1)
        net = self.store.create(name, driver="bridge", subnet=str(subnet), gateway=gw,
                                internal=bool(body.get("Internal")),
                                labels={str(k): str(v) for k, v in (body.get("Labels") or {}).items()},
                                options=options)
        try:
            await self._ensure_bridge(net)      # up at once: its route claims the subnet on the host
        except NetworkError:
            self.store.delete(net)
            raise
        return net

    def network_containers(self, netid: str) -> list[str]:
        return [cid for cid, eps in self.eps.items() if netid in eps]

    async def remove_network(self, ref: str) -> NetRecord:
        net = self.store.get(ref)
        if net.predefined:
            raise Conflict(f"{net.name} is a pre-defined network and cannot be removed")
        users = self.network_containers(net.id)
        if users:
            raise Conflict(f"error while removing network: network {net.name} id {net.id} has active "
                           f"endpoints (containers {', '.join(c[:12] for c in users)})")
        await self._release_bridge(net.id, destroy=True)
        _unlink(self._ipam_file(net.id))
        self.store.delete(net)
        return net

    def inspect_network(self, net: NetRecord, names: Callable[[str], str]) -> dict[str, Any]:
        subnet, gw = net.subnet, net.gateway
        b = self.bridges.get(net.id)
        if net.name == "bridge":
            if b is not None:
                subnet, gw = str(b.subnet), str(b.gateway)
            else:
                st = self._read_state()
                subnet, gw = st.get("subnet", ""), st.get("gateway", "")
        containers = {}
        for cid in self.network_containers(net.id):
            ep = self.eps[cid][net.id]
            containers[cid] = {"Name": names(cid), "EndpointID": cid[:32] + net.id[:32],
                               "MacAddress": ep.mac, "IPv4Address": f"{ep.ip}/{ep.prefixlen}",
                               "IPv6Address": ""}
        opts: dict[str, str] = dict(net.options)
        if net.name == "bridge":
            opts.setdefault("com.docker.network.bridge.name", b.name if b else (self.bridge_name or "skiff0"))
        elif not net.predefined:
            opts.setdefault("com.docker.network.bridge.name", net.bridge_name)
        return {
            "Name": net.name, "Id": net.id, "Created": rfc3339(net.created_ns), "Scope": "local",
            "Driver": net.driver, "EnableIPv4": True, "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None,
                     "Config": [{"Subnet": subnet, "Gateway": gw}] if subnet else []},
            "Internal": net.internal, "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": containers,
            "Options": opts, "Labels": dict(net.labels),
        }

    # -- daemon lifecycle --------------------------------------------------------------------------
    async def reconcile(self, running: set[str]) -> None:
        """At daemon start, after :meth:`load`, before the containers' live restore:
        ``running`` are the ids of the containers whose task runs. Adopt their endpoints;
        remove everything else."""
        await asyncio.to_thread(netns_mod.maker.start)
        prev = self._read_state()
        ep_dir = os.path.join(self.state_dir, "endpoints")
        files = sorted(os.listdir(ep_dir)) if os.path.isdir(ep_dir) else []
        for fn in files:
            cid, _, netid = fn.removesuffix(".json").partition("@")
            keep = cid in running and os.path.exists(self.netns_path(cid)) and netid in self.store.nets
            ep = _load_endpoint(os.path.join(ep_dir, fn)) if keep else None
            if ep is None:
                _unlink(os.path.join(ep_dir, fn))
                continue
            net = self.store.nets[netid]
            if net.name == "bridge" and prev.get("bridge"):
                self.bridge_name = prev["bridge"]
            try:
                await self._ensure_bridge(net)
            except NetworkError as e:
                log.error("container %s: restoring its endpoint on %s: %s", cid, net.name, e)
                continue
            if self.pools[netid].owner_of(cid) != ep.ip:
                log.error("container %s: its address %s on %s is not in the IPAM state; dropped",
                          cid, ep.ip, net.name)
                continue
            self.eps.setdefault(cid, {})[netid] = ep
            if ep.ifname == "eth0":
                self._dns_servers[cid] = list(ep.dns)
            maps = [PortMap(**m) for m in ep.ports]
            if maps:
                try:
                    await self._publish(cid, net, ep, maps)
                except (PortError, NetworkError) as e:
                    log.error("container %s: restoring its published ports: %s", cid, e)
        for cid in list(self.eps):
            try:
                await self._dns_update(cid)
            except Exception as e:
                log.error("container %s: embedded DNS: %s", cid, e)
        # leftovers of containers that do not run
        if os.path.isdir(self.netns_dir):
            for name in os.listdir(self.netns_dir):
                if name not in self.eps:
                    path = os.path.join(self.netns_dir, name)
                    try:
                        await asyncio.to_thread(netns_mod.remove, path)
                        log.info("removed leftover network namespace %s", path)
                    except Exception as e:
                        log.error("leftover network namespace %s: %s", path, e)
        for netid, b in list(self.bridges.items()):
            self.pools[netid].retain_only({c for c, eps in self.eps.items() if netid in eps})
            veths = {e.host_veth for eps in self.eps.values() for e in eps.values()}
            for port in await asyncio.to_thread(b.ports):
                if port not in veths:
                    try:
                        await asyncio.to_thread(Bridge.delete_link, port)
                    except Exception as e:
                        log.error("leftover veth %s: %s", port, e)
        # bridges of an earlier run with nothing on them any more: delete them if ours
        leftovers = [(self.default_net.id, prev.get("bridge") or "")] + [
            (n.id, n.bridge_name) for n in self.store.nets.values() if not n.predefined]
        for netid, name in leftovers:
            if not name or netid in self.bridges:
                continue
            fd = Bridge.lock(name)
            if fd is None:
                continue
            b = Bridge(name, "0.0.0.0/0", "0.0.0.0", self.mtu, fd)
            try:
                exists = await asyncio.to_thread(_link_exists, name)
                if exists or netid == self.default_net.id:
                    await asyncio.to_thread(b.destroy)
                    log.info("removed leftover bridge %s", name)
                else:
                    b.unlock()
            except Exception as e:
                b.unlock()
                log.error("leftover bridge %s: %s", name, e)
            if netid == self.default_net.id:
                _unlink(self._state_file)
            _unlink(self._ipam_file(netid))

    async def shutdown(self) -> None:
        """Daemon stop: bridges with no endpoint left go with their rules; the others stay
        (their containers keep running for live restore) and their locks are released."""
        if self.dns is not None:
            self.dns.close()
        if self._reaping:
            await asyncio.wait(list(self._reaping.values()))
        await asyncio.to_thread(netns_mod.maker.close)
        for netid in list(self.bridges):
            used = any(netid in eps for eps in self.eps.values())
            await self._release_bridge(netid, destroy=not used)

    # -- inspect -----------------------------------------------------------------------------------
    def network_settings(self, cid: str, host_config: dict[str, Any], base: dict[str, Any],
                         exposed: dict[str, Any] | None = None,
                         networking_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """``NetworkSettings`` of container inspect, filled from the container's endpoints."""
        out = dict(base)
        mode = host_config.get("NetworkMode") or "default"
        eps = self.eps.get(cid) or {}
        nets: dict[str, Any] = {}
        if mode in ("host", "none"):
            nets[mode] = _endpoint_json(None, self.store.find(mode), [])
        elif not mode.startswith("container:"):
            try:
                wanted = self.wanted_networks(host_config, networking_config)
            except (NotFound, InvalidParameter):
                wanted = []
            for net, cfg in wanted:
                ep = eps.get(net.id)
                nets[net.name] = _endpoint_json(ep, net, cfg.get("Aliases") or [])
            for nid, ep in eps.items():       # connected live
                if ep.network not in nets:
                    nets[ep.network] = _endpoint_json(ep, self.store.nets.get(nid), ep.aliases)
            prim = self.endpoint(cid)
            if prim is not None:
                out["Ports"] = ports_mod.settings([PortMap(**m) for m in prim.ports], exposed)
                out.update({"SandboxID": cid, "SandboxKey": self.netns_path(cid)})
                if prim.network == "bridge":
                    out.update({"Bridge": prim.bridge, "EndpointID": cid, "Gateway": prim.gateway,
                                "IPAddress": prim.ip, "IPPrefixLen": prim.prefixlen,
                                "MacAddress": prim.mac})
        out["Networks"] = nets
        return out


    def summary(self, cid: str, host_config: dict[str, Any], exposed: dict[str, Any] | None,
                networking_config: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """``Ports`` and ``NetworkSettings`` of a ``GET /containers/json`` entry."""
        ns = self.network_settings(cid, host_config, {}, exposed, networking_config)
        ports: list[dict[str, Any]] = []
        for key, binds in sorted((ns.get("Ports") or {}).items()):
            port, _, proto = key.partition("/")
            if not binds:
                ports.append({"PrivatePort": int(port), "Type": proto})
            for b in binds or []:
                ports.append({"IP": b["HostIp"], "PrivatePort": int(port), "PublicPort": int(b["HostPort"]),
                              "Type": proto})
        return ports, {"Networks": ns["Networks"]}


def _endpoint_json(ep: Endpoint | None, net: NetRecord | None, aliases: list[str]) -> dict[str, Any]:
    return {"IPAMConfig": None, "Links": None, "Aliases": list(aliases) or None,
            "MacAddress": ep.mac if ep else "", "DriverOpts": None,
            "NetworkID": net.id if net else "", "EndpointID": ep.container_id if ep else "",
            "Gateway": ep.gateway if ep else "", "IPAddress": ep.ip if ep else "",
            "IPPrefixLen": ep.prefixlen if ep else 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0, "DNSNames": None}


def _load_endpoint(path: str) -> Endpoint | None:
    try:
        with open(path, encoding="utf-8") as f:
            return Endpoint(**json.load(f))
    except (OSError, ValueError, TypeError) as e:
        log.error("endpoint state %s unreadable: %s", path, e)
        return None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _routes() -> list[ipaddress.IPv4Network]:
    with IPRoute() as ipr:
        return host_routes(ipr)


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")
