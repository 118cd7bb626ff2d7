"""The files skiffd bind-mounts over a container's ``/etc/hostname``, ``/etc/hosts`` and
``/etc/resolv.conf`` (kept in ``<data-root>/containers/<id>/``).

resolv.conf: the host's, without nameservers on the loopback (a container in its own network
namespace cannot reach them). When none is left, the file names no nameserver and says why:
skiffd never points a container at a resolver the user did not give.
"""

from __future__ import annotations

import ipaddress
import os

HOSTS_BASE = ("127.0.0.1\tlocalhost\n"
              "::1\tlocalhost ip6-localhost ip6-loopback\n"
              "fe00::0\tip6-localnet\n"
              "ff00::0\tip6-mcastprefix\n"
              "ff02::1\tip6-allnodes\n"
              "ff02::2\tip6-allrouters\n")


def hosts_file(extra_hosts: list[str] | None, own: tuple[str, str] | None = None) -> str:
    """``/etc/hosts`` with Docker's base entries, ``--add-host host:ip`` lines and, with ``own``
    = (address, hostname), the container's own address on its network last (as Docker)."""
    out = HOSTS_BASE
    for entry in extra_hosts or []:
        # "name:ip" (ip may be IPv6 with colons) or, since API 1.44, "name=ip"
        if "=" in entry:
            name, _, ip = entry.partition("=")
        else:
            name, _, ip = entry.partition(":")
        if not name or not ip:
            raise ValueError(f"HostConfig.ExtraHosts: invalid entry {entry!r}: expected HOST:IP")
        if ip != "host-gateway":
            try:
                ipaddress.ip_address(ip.strip("[]"))
            except ValueError:
                raise ValueError(f"HostConfig.ExtraHosts: {entry!r}: invalid IP address {ip!r}") from None
        else:
            raise ValueError(f"HostConfig.ExtraHosts: {entry!r}: the host-gateway address is not "
                             "supported by skiffd yet (give the bridge gateway's IP)")
        out += f"{ip.strip('[]')}\t{name}\n"
    if own is not None:
        out += f"{own[0]}\t{own[1]}\n"
    return out


def _is_local(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    return ip.is_loopback


def resolv_conf(host_text: str, dns: list[str] | None = None, search: list[str] | None = None,
                options: list[str] | None = None) -> str:
    """The container's resolv.conf from the host's (``host_text``) and ``--dns*`` options."""
    nameservers: list[str] = []
    searches: list[str] = []
    opts: list[str] = []
    dropped: list[str] = []
    for line in host_text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            if _is_local(fields[1]):
                dropped.append(fields[1])
            else:
                nameservers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            searches = fields[1:]
        elif fields[0] == "options":
            opts.extend(fields[1:])
    if dns:
        for ip in dns:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ValueError(f"HostConfig.Dns: {ip!r} is not an IP address") from None
        nameservers, dropped = list(dns), []
    if search:
        searches = [s for s in search if s != "."]
    if options:
        opts = list(options)
    out = ""
    if not nameservers:
        out += ("# skiffd: the host's resolv.conf names no nameserver a container can reach"
                + (f" (only local ones: {', '.join(dropped)})" if dropped else "")
                + "; none is set here (use --dns to give one)\n")
    for ns in nameservers:
        out += f"nameserver {ns}\n"
    if searches:
        out += "search " + " ".join(searches) + "\n"
    if opts:
        out += "options " + " ".join(opts) + "\n"
    return out


def embedded_dns_resolv_conf(host_text: str, search: list[str] | None = None,
                              options: list[str] | None = None) -> str:
    """resolv.conf of a container on a user-defined network: skiffd's embedded DNS server
    (127.0.0.11), with the host's (or the given) search domains and options, ndots:0 first."""
    searches: list[str] = []
    opts: list[str] = []
    for line in host_text.splitlines():
        fields = line.split()
        if fields and fields[0] in ("search", "domain"):
            searches = fields[1:]
        elif fields and fields[0] == "options":
            opts.extend(fields[1:])
    if search:
        searches = [s for s in search if s != "."]
    if options:
        opts = list(options)
    out = "nameserver 127.0.0.11\n"
    if searches:
        out += "search " + " ".join(searches) + "\n"
    out += "options " + " ".join(["ndots:0", *[o for o in opts if not o.startswith("ndots:")]]) + "\n"
    return out


def write_file(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
