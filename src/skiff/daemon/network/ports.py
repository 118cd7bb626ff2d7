"""Published ports: ``HostConfig.PortBindings`` / ``PublishAllPorts`` -> port mappings.

How a published port is reached (nftables, no userland proxy): DNAT rules in skiffd's own table,
in the ``prerouting`` hook for traffic from other hosts and containers and in the ``output`` hook
for connections made on the host itself, including to 127.0.0.1 (the bridge gets
``route_localnet`` so such packets may leave through it, and their 127.0.0.1 source is
masqueraded to the bridge address). Chosen over Docker's userland proxy because the kernel does
the forwarding: no process or thread per port, no copying through skiffd, container-side sources
stay visible, and the forwarding keeps working while skiffd restarts (live restore). To keep
Docker's "port is already allocated" behaviour and to pick ephemeral ports for ``-P``, skiffd
holds a bound (not listening) socket on each host address/port while the mapping exists.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any


class PortError(ValueError):
    pass


@dataclass
class PortMap:
    proto: str          # "tcp" or "udp"
    container_port: int
    host_ip: str        # "" = every address of the host
    host_port: int      # 0 = ephemeral (chosen by the kernel when reserved)
    host_port_end: int = 0   # HostPort "A-B": host_port..host_port_end, the first free one is taken

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"


def _port_key(k: str) -> tuple[int, str]:
    port, _, proto = str(k).partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise PortError(f"port {k}: protocol {proto!r} is not supported (tcp, udp)")
    if not port.isdigit():
        raise PortError(f'invalid port specification: "{port}"')
    n = int(port)
    if not 1 <= n <= 65535:
        raise PortError(f"invalid port {k!r}: out of range 1-65535")
    return n, proto


def _exposed_keys(k: str) -> list[tuple[int, str]]:
    """An ExposedPorts key: ``80/tcp``, or a range ``8000-8002/udp`` (one entry per port)."""
    port, _, proto = str(k).partition("/")
    if "-" not in port:
        return [_port_key(k)]
    a, _, b = port.partition("-")
    first, _ = _port_key(f"{a}/{proto or 'tcp'}")
    last, proto = _port_key(f"{b}/{proto or 'tcp'}")
    if last < first:
        raise PortError(f"invalid port range {port!r}: its end is below its start")
    return [(n, proto) for n in range(first, last + 1)]


def _host_port(k: str, hp: str) -> tuple[int, int]:
    """HostPort: "" (ephemeral), "8080", or a range "8000-8010" to take a free one from."""
    a, sep, b = hp.partition("-")
    try:
        first = int(a) if a else 0
        last = int(b) if sep else 0
    except ValueError:
        raise PortError(f'invalid port specification: "{hp}"') from None
    if not 0 <= first <= 65535 or (sep and not (1 <= first <= last <= 65535)):
        raise PortError(f"port {k}: invalid host port {hp!r} (1-65535, a range's end not below "
                        "its start)")
    return first, last


def parse(host: dict[str, Any], exposed: dict[str, Any] | None) -> list[PortMap]:
    """The port mappings a container asks for; raises PortError for invalid ones.

    Clients send one key per container port (the docker CLI expands ``-p 8000-8001:80-81``
    into 80/tcp -> 8000 and 81/tcp -> 8001); a host port range with one container port
    (``-p 8000-8010:80``) stays a range here and takes its first free port when reserved."""
    out: list[PortMap] = []
    pb = host.get("PortBindings") or {}
    if not isinstance(pb, dict):
        raise PortError("HostConfig.PortBindings: expected an object")
    for k, bindings in pb.items():
        cport, proto = _port_key(k)
        for b in bindings or [{}]:
            if not isinstance(b, dict):
                raise PortError(f"HostConfig.PortBindings[{k!r}]: expected objects")
            hip = str(b.get("HostIp") or "")
            if hip in ("0.0.0.0",):
                hip = ""
            if hip:
                try:
                    a = ipaddress.ip_address(hip)
                except ValueError:
                    raise PortError(f"port {k}: invalid host IP {hip!r}") from None
                if a.version != 4:
                    raise PortError(f"port {k}: IPv6 host address {hip} is not supported by skiffd")
            hport, hend = _host_port(k, str(b.get("HostPort") or ""))
            out.append(PortMap(proto, cport, hip, hport, hend))
    if host.get("PublishAllPorts"):
        have = {m.key for m in out}
        for k in sorted(exposed or {}):
            for cport, proto in _exposed_keys(k):
                if f"{cport}/{proto}" not in have:
                    out.append(PortMap(proto, cport, "", 0))
    return out


def reserve(m: PortMap) -> socket.socket:
    """Bind (without listening) the host address/port of ``m``; fills in an ephemeral port, or
    the first free one of a host port range."""
    if m.host_port_end:
        for port in range(m.host_port, m.host_port_end + 1):
            try:
                return _bind(m, port)
            except PortError:
                continue
        raise PortError(f"Bind for {m.host_ip or '0.0.0.0'}:{m.host_port}-{m.host_port_end} failed: "
                        "all ports of the range are allocated")
    return _bind(m, m.host_port)


def _bind(m: PortMap, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if m.proto == "tcp" else socket.SOCK_DGRAM)
    try:
        s.bind((m.host_ip or "0.0.0.0", port))
    except OSError as e:
        s.close()
        raise PortError(f"Bind for {m.host_ip or '0.0.0.0'}:{port} failed: "
                        + ("port is already allocated" if e.errno == 98 else str(e.strerror))) from None
    m.host_port = s.getsockname()[1]
    return s


def settings(maps: list[PortMap], exposed: dict[str, Any] | None) -> dict[str, Any]:
    """``NetworkSettings.Ports``: each exposed or published port -> its host bindings (or null)."""
    out: dict[str, Any] = {}
    for k in exposed or {}:
        for cport, proto in _exposed_keys(k):
            out[f"{cport}/{proto}"] = None
    for m in maps:
        lst = out.get(m.key) or []
        lst.append({"HostIp": m.host_ip or "0.0.0.0", "HostPort": str(m.host_port)})
        out[m.key] = lst
    return out


def nft_rules(maps: list[PortMap], container_ip: str) -> tuple[list[str], list[str]]:
    """(prerouting rules, output rules) DNATing ``maps`` to ``container_ip``."""
    pre: list[str] = []
    outr: list[str] = []
    for m in maps:
        match = f"ip daddr {m.host_ip}" if m.host_ip else "fib daddr type local"
        rule = f"{match} {m.proto} dport {m.host_port} dnat to {container_ip}:{m.container_port}"
        pre.append(rule)
        outr.append(rule)
    return pre, outr
