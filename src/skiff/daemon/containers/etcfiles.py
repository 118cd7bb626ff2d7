"""The files skiffd bind-mounts over a container's ``/etc/hostname``, ``/etc/hosts`` and
``/etc/resolv.conf`` (kept in ``<data-root>/containers/<id>/``).

resolv.conf: as dockerd writes it (:func:`resolv_conf`, :func:`embedded_dns_resolv_conf`), except
that skiffd never points a container at a resolver nobody gave: when the host's file has only
loopback nameservers (a container in its own network namespace cannot reach them), the file names
none and says why.
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


def uses_host_gateway(extra_hosts: list[str] | None) -> bool:
    """Whether an ``--add-host`` entry asks for Docker's ``host-gateway`` address."""
    return any(e.partition("=" if "=" in e else ":")[2] == "host-gateway" for e in extra_hosts or [])


def hosts_file(extra_hosts: list[str] | None, own: tuple[str, str] | None = None,
               host_gateway: str | None = None) -> str:
    """``/etc/hosts`` with Docker's base entries, ``--add-host host:ip`` lines (``host-gateway``
    standing for ``host_gateway``, the default bridge's address as in Docker) and, with ``own``
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
        if ip == "host-gateway":
            if not host_gateway:
                raise ValueError(f"HostConfig.ExtraHosts: {entry!r}: no host-gateway address: skiffd "
                                 "runs without its bridge network")
            ip = host_gateway
        try:
            ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            raise ValueError(f"HostConfig.ExtraHosts: {entry!r}: invalid IP address {ip!r}") from None
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


def _fields(text: str) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, search domains, options) of a resolv.conf text (the last search or
    domain line wins, options accumulate, as the resolver reads them)."""
    nameservers: list[str] = []
    searches: list[str] = []
    opts: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            nameservers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            searches = fields[1:]
        elif fields[0] == "options":
            opts.extend(fields[1:])
    return nameservers, searches, opts


def _build(nameservers: list[str], searches: list[str], opts: list[str], note: str = "") -> str:
    """A resolv.conf in dockerd's layout: search, nameservers, options (``search .`` = none)."""
    out = ""
    searches = [s for s in searches if s != "."]
    if searches:
        out += "search " + " ".join(searches) + "\n"
    if note:
        out += note
    for ns in nameservers:
        out += f"nameserver {ns}\n"
    if opts:
        out += "options " + " ".join(opts) + "\n"
    return out


def _none_left(dropped: list[str]) -> str:
    return ("# skiffd: the host's resolv.conf names no nameserver a container can reach"
            + (f" (only local ones: {', '.join(dropped)})" if dropped else "")
            + "; none is set here (use --dns to give one)\n")


def check_dns(dns: list[str] | None, options: list[str] | None = None) -> None:
    """``HostConfig.Dns`` must be IP addresses, an ``ndots`` option a number >= 0; ValueError."""
    for ip in dns or []:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"HostConfig.Dns: {ip!r} is not an IP address") from None
    for opt in options or []:
        if opt.startswith("ndots"):
            _k, _, n = opt.partition(":")
            if not n.isdigit():
                raise ValueError(f"HostConfig.DnsOptions: invalid ndots option {opt!r}: expected "
                                 "ndots:N with N >= 0")


def resolv_conf(host_text: str, dns: list[str] | None = None, search: list[str] | None = None,
                options: list[str] | None = None) -> str:
    """The container's resolv.conf from the host's (``host_text``) and ``--dns*`` options (or
    the daemon's ``dns``, ``dns-search``, ``dns-opts``), as dockerd writes it: with none of them,
    the host's file without its loopback nameservers; else a new file of the given values, the
    host's standing in for the ones not given. Loopback nameservers of the host are never copied
    (the container cannot reach them), and where none is left the file says so instead of naming
    a public resolver (dockerd puts Google's there)."""
    check_dns(dns, options)
    host_ns, host_search, host_opts = _fields(host_text)
    dropped = [n for n in host_ns if _is_local(n)]
    if not (dns or search or options):
        lines = []
        for line in host_text.splitlines():
            f = line.split()
            if len(f) > 1 and f[0] == "nameserver" and _is_local(f[1]):
                continue
            lines.append(line + "\n")
        kept = [n for n in host_ns if not _is_local(n)]
        return ("" if kept else _none_left(dropped)) + "".join(lines)
    nameservers = list(dns) if dns else [n for n in host_ns if not _is_local(n)]
    note = "" if nameservers else _none_left(dropped)
    return _build(nameservers, list(search) if search else host_search,
                  list(options) if options else host_opts, note)


def embedded_dns_resolv_conf(host_text: str, search: list[str] | None = None,
                             options: list[str] | None = None, dns: list[str] | None = None) -> str:
    """resolv.conf of a container on a user-defined network, as dockerd rebuilds it for its
    embedded DNS server: ``nameserver 127.0.0.11`` only (the ``--dns`` servers, given or the
    host's, become the server's upstreams), the search domains and options of the file
    :func:`resolv_conf` makes, and ``ndots:0`` appended unless an ndots option is set there."""
    _ns, searches, opts = _fields(resolv_conf(host_text, dns, search, options))
    if not any(o.startswith("ndots:") for o in opts):
        opts.append("ndots:0")
    return _build(["127.0.0.11"], searches, opts)


def write_file(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
