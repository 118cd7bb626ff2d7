"""Address management for one IPv4 subnet, persisted as JSON (atomic tmp + rename).

The gateway (first host address) is reserved; the others go to containers in order, skipping
the ones in use, starting after the last one handed out (so a just-released address is not
reused at once, as libnetwork does).
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any


class IpamError(Exception):
    pass


class Pool:
    def __init__(self, path: str, subnet: str, gateway: str = "") -> None:
        self.path = path
        self.subnet = ipaddress.IPv4Network(subnet, strict=False)
        gw = ipaddress.IPv4Address(gateway) if gateway else self.subnet.network_address + 1
        if gw not in self.subnet:
            raise IpamError(f"gateway {gw} is not in subnet {self.subnet}")
        self.gateway = gw
        self.allocated: dict[str, str] = {}      # ip -> owner (container id)
        self.last = int(gw)
        self._load()

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise IpamError(f"IPAM state {self.path}: unreadable: {e}") from None
        if data.get("subnet") != str(self.subnet):
            return      # the subnet changed (bip): old allocations do not apply
        self.allocated = {str(k): str(v) for k, v in (data.get("allocated") or {}).items()}
        self.last = int(data.get("last") or int(self.gateway))

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"subnet": str(self.subnet), "gateway": str(self.gateway),
                       "allocated": self.allocated, "last": self.last}, f)
        # no fsync: the state only matters while containers run, i.e. without a reboot in
        # between, and a crash of skiffd loses nothing written; rename keeps it whole
        os.replace(tmp, self.path)

    def owner_of(self, owner: str) -> str | None:
        for ip, o in self.allocated.items():
            if o == owner:
                return ip
        return None

    def allocate(self, owner: str) -> ipaddress.IPv4Address:
        """An address for ``owner`` (the same one when it has one already)."""
        have = self.owner_of(owner)
        if have:
            return ipaddress.IPv4Address(have)
        first = int(self.subnet.network_address) + 1
        last = int(self.subnet.broadcast_address) - 1
        span = last - first + 1
        for i in range(span):
            cand = first + (self.last - first + 1 + i) % span
            ip = ipaddress.IPv4Address(cand)
            if ip == self.gateway or str(ip) in self.allocated:
                continue
            self.allocated[str(ip)] = owner
            self.last = cand
            self.save()
            return ip
        raise IpamError(f"no free address left in {self.subnet}")

    def allocate_exact(self, owner: str, want: str) -> ipaddress.IPv4Address:
        """``--ip``: that address for ``owner``; refused when taken or outside the subnet."""
        try:
            ip = ipaddress.IPv4Address(want)
        except ValueError:
            raise IpamError(f"invalid IPv4 address {want!r}") from None
        if ip not in self.subnet or ip in (self.subnet.network_address, self.subnet.broadcast_address):
            raise IpamError(f"address {ip} is not a host address of subnet {self.subnet}")
        if ip == self.gateway:
            raise IpamError(f"address {ip} is the gateway of {self.subnet}")
        holder = self.allocated.get(str(ip))
        if holder is not None and holder != owner:
            raise IpamError(f"address {ip} is already in use")
        self.release(owner)
        self.allocated[str(ip)] = owner
        self.save()
        return ip

    def release(self, owner: str) -> None:
        ip = self.owner_of(owner)
        if ip is not None:
            del self.allocated[ip]
            self.save()

    def retain_only(self, owners: set[str]) -> list[str]:
        """Release every allocation whose owner is not in ``owners``; returns the released."""
        gone = [ip for ip, o in self.allocated.items() if o not in owners]
        for ip in gone:
            del self.allocated[ip]
        if gone:
            self.save()
        return gone


def parse_address_pools(pools: list[dict[str, Any]]) -> list[tuple[ipaddress.IPv4Network, int]]:
    """daemon.json ``default-address-pools`` ([{"base": CIDR, "size": N}, ...]) checked;
    ValueError names the bad entry."""
    out = []
    for i, p in enumerate(pools):
        where = f"default-address-pools[{i}]"
        if not isinstance(p, dict) or set(p) - {"base", "size"} or "base" not in p or "size" not in p:
            raise ValueError(f"{where}: expected {{\"base\": CIDR, \"size\": prefix length}}")
        try:
            base = ipaddress.IPv4Network(str(p["base"]))
        except ValueError as e:
            raise ValueError(f"{where}.base: {p['base']!r}: not an IPv4 network ({e})") from None
        size = p["size"]
        if isinstance(size, bool) or not isinstance(size, int) or not base.prefixlen <= size <= 30:
            raise ValueError(f"{where}.size: {size!r}: expected a prefix length from "
                             f"{base.prefixlen} (the base's) to 30")
        out.append((base, size))
    return out
