"""network … and volume … commands."""

from __future__ import annotations

import sys

from skiff.cli.container import _each, _filters, _go_indent, _q
from skiff.cli.flags import Spec, parse
from skiff.cli.http import APIError, Client, CLIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _out(s: str) -> None:
    sys.stdout.write(s + "\n")


def _err(s: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(s + "\n")


def _kv(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        out[k] = v
    return out


def _inspect(cli: Client, kind: str, path: str, args: list[str]) -> int:
    o, names = parse(Spec("f|format:"), args, True, f"{kind} inspect")
    if not names:
        raise CLIError(f"\"docker {kind} inspect\" requires at least 1 argument.", 1)
    objs: list[Any] = []
    rc = 0
    missing = []
    for n in names:
        try:
            objs.append(cli.get_json(f"{path}/{_q(n)}"))
        except APIError as e:
            if e.status != 404:
                raise
            missing.append(n)
    if o["format"]:
        from skiff.cli.template import Template, TemplateError

        try:
            t = Template("{{json .}}" if o["format"] == "json" else o["format"])
            for obj in objs:
                _out(t.execute(obj))
        except TemplateError as e:
            raise CLIError(str(e), 1) from None
    else:
        _out(_go_indent(objs) if objs else "[]")
    for n in missing:
        _err(f"Error response from daemon: {kind} {n} not found")
        rc = 1
    return rc


def _list(cli: Client, rows: list[dict], fmt: str | None, default: str, quiet_key: str | None,
          quiet: bool) -> int:
    if quiet and quiet_key:
        sys.stdout.write("".join(r[quiet_key] + "\n" for r in rows))
        return 0
    from skiff.cli.fmt import render

    f = fmt or default
    if f == "json":
        f = "{{json .}}"
    text = render(f, rows, {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE"})
    if text or f.startswith("table"):
        _out(text)
    return 0


NET_CREATE = Spec("d|driver:", "o|opt=", "subnet=", "gateway=", "ip-range=", "internal", "attachable",
                  "ipv6", "label=", "scope:", "ingress", "aux-address=", "ipam-driver:", "config-only",
                  "config-from:")


def network(cli: Client, args: list[str]) -> int:
    if not args:
        raise CLIError("Usage:  skiff network COMMAND (create, ls, rm, inspect, connect, disconnect, prune)", 1)
    sub, rest = args[0], args[1:]
    if sub == "create":
        o, pos = parse(NET_CREATE, rest, True, "network create")
        if len(pos) != 1:
            raise CLIError("\"docker network create\" requires exactly 1 argument.", 1)
        if o["ingress"] or o["config_only"] or o["config_from"] or o["aux_address"]:
            raise CLIError("--ingress, --config-only, --config-from and --aux-address are not supported by skiff", 1)
        ipam = []
        for i, sn in enumerate(o["subnet"]):
            c = {"Subnet": sn}
            if i < len(o["gateway"]):
                c["Gateway"] = o["gateway"][i]
            if i < len(o["ip_range"]):
                c["IPRange"] = o["ip_range"][i]
            ipam.append(c)
        body: dict = {"Name": pos[0], "Driver": o["driver"] or "bridge", "Options": _kv(o["opt"]),
                "Internal": bool(o["internal"]), "Attachable": bool(o["attachable"]),
                "EnableIPv6": bool(o["ipv6"]) or None, "Labels": _kv(o["label"]),
                "IPAM": {"Driver": o["ipam_driver"] or "default", "Config": ipam, "Options": {}}}
        if o["scope"]:
            body["Scope"] = o["scope"]
        r = cli.post_json("/networks/create", None, body)
        for w in ([r.get("Warning")] if r.get("Warning") else []):
            _err(f"WARNING: {w}")
        _out(r["Id"])
        return 0
    if sub in ("ls", "list"):
        o, _ = parse(Spec("f|filter=", "format:", "q|quiet", "no-trunc"), rest, True, "network ls")
        f = _filters(o["filter"])
        nets = cli.get_json("/networks", {"filters": f} if f else None)
        trunc = not o["no_trunc"]
        rows = [{"ID": n["Id"][:12] if trunc else n["Id"], "Name": n.get("Name", ""),
                 "Driver": n.get("Driver", ""), "Scope": n.get("Scope", ""),
                 "IPv6": str(bool(n.get("EnableIPv6"))).lower(), "Internal": str(bool(n.get("Internal"))).lower(),
                 "Labels": ",".join(f"{k}={v}" for k, v in (n.get("Labels") or {}).items()),
                 "CreatedAt": n.get("Created", "")} for n in sorted(nets, key=lambda n: n.get("Name", ""))]
        return _list(cli, rows, o["format"], "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}", "ID", o["quiet"])
    if sub in ("rm", "remove"):
        o, names = parse(Spec("f|force"), rest, True, "network rm")
        return _each(cli, names, "network rm", lambda n: cli.request("DELETE", f"/networks/{_q(n)}"))
    if sub == "inspect":
        return _inspect(cli, "network", "/networks", rest)
    if sub == "connect":
        o, pos = parse(Spec("alias=", "ip:", "ip6:", "link=", "link-local-ip=", "driver-opt="), rest, True,
                       "network connect")
        if len(pos) != 2:
            raise CLIError("\"docker network connect\" requires exactly 2 arguments.", 1)
        ep: dict = {"Aliases": o["alias"] or None, "Links": o["link"] or None,
                    "DriverOpts": _kv(o["driver_opt"]) or None}
        if o["ip"] or o["ip6"] or o["link_local_ip"]:
            ep["IPAMConfig"] = {"IPv4Address": o["ip"] or "", "IPv6Address": o["ip6"] or "",
                                "LinkLocalIPs": o["link_local_ip"] or None}
        cli.request("POST", f"/networks/{_q(pos[0])}/connect", None, {"Container": pos[1], "EndpointConfig": ep})
        return 0
    if sub == "disconnect":
        o, pos = parse(Spec("f|force"), rest, True, "network disconnect")
        if len(pos) != 2:
            raise CLIError("\"docker network disconnect\" requires exactly 2 arguments.", 1)
        cli.request("POST", f"/networks/{_q(pos[0])}/disconnect", None,
                    {"Container": pos[1], "Force": bool(o["force"])})
        return 0
    if sub == "prune":
        o, _ = parse(Spec("f|force", "filter="), rest, True, "network prune")
        _confirm(o["force"], "WARNING! This will remove all custom networks not used by at least one container.")
        f = _filters(o["filter"])
        r = cli.post_json("/networks/prune", {"filters": f} if f else None)
        names = r.get("NetworksDeleted") or []
        if names:
            _out("Deleted Networks:\n" + "\n".join(names))
        return 0
    raise CLIError(f"skiff: 'network {sub}' is not a skiff command.\nSee 'skiff network --help'", 1)


def _confirm(force: bool, msg: str) -> None:
    if force:
        return
    sys.stdout.write(msg + "\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    ans = sys.stdin.readline().strip().lower()
    if ans not in ("y", "yes"):
        raise _Abort()


class _Abort(CLIError):
    def __init__(self) -> None:
        super().__init__("Total reclaimed space: 0B", 0)


def volume(cli: Client, args: list[str]) -> int:
    if not args:
        raise CLIError("Usage:  skiff volume COMMAND (create, ls, rm, inspect, prune)", 1)
    sub, rest = args[0], args[1:]
    if sub == "create":
        o, pos = parse(Spec("d|driver:", "o|opt=", "label=", "name:"), rest, True, "volume create")
        name = o["name"] or (pos[0] if pos else "")
        r = cli.post_json("/volumes/create", None, {"Name": name, "Driver": o["driver"] or "local",
                                                    "DriverOpts": _kv(o["opt"]), "Labels": _kv(o["label"])})
        _out(r["Name"])
        return 0
    if sub in ("ls", "list"):
        o, _ = parse(Spec("f|filter=", "format:", "q|quiet", "cluster"), rest, True, "volume ls")
        f = _filters(o["filter"])
        r = cli.get_json("/volumes", {"filters": f} if f else None)
        for w in r.get("Warnings") or []:
            _err(w)
        rows = [{"Name": v.get("Name", ""), "Driver": v.get("Driver", ""), "Scope": v.get("Scope", ""),
                 "Mountpoint": v.get("Mountpoint", ""), "Labels": ",".join(
                     f"{k}={x}" for k, x in (v.get("Labels") or {}).items())}
                for v in sorted(r.get("Volumes") or [], key=lambda v: v.get("Name", ""))]
        from skiff.cli.fmt import render

        if o["quiet"]:
            sys.stdout.write("".join(r_["Name"] + "\n" for r_ in rows))
            return 0
        fmt = o["format"] or "table {{.Driver}}\t{{.Name}}"
        text = render("{{json .}}" if fmt == "json" else fmt, rows, {"Name": "VOLUME NAME"})
        if text or fmt.startswith("table"):
            _out(text)
        return 0
    if sub in ("rm", "remove"):
        o, names = parse(Spec("f|force"), rest, True, "volume rm")
        return _each(cli, names, "volume rm", lambda n: cli.request(
            "DELETE", f"/volumes/{_q(n)}", {"force": "1" if o["force"] else None}))
    if sub == "inspect":
        return _inspect(cli, "volume", "/volumes", rest)
    if sub == "prune":
        o, _ = parse(Spec("f|force", "a|all", "filter="), rest, True, "volume prune")
        _confirm(o["force"], "WARNING! This will remove anonymous local volumes not used by at least one container.")
        f = _filters(o["filter"]) or {}
        if o["all"]:
            f["all"] = {"true": True}
        r = cli.post_json("/volumes/prune", {"filters": f} if f else None)
        names = r.get("VolumesDeleted") or []
        if names:
            _out("Deleted Volumes:\n" + "\n".join(names) + "\n")
        from skiff.cli.fmt import human_size

        _out(f"Total reclaimed space: {human_size(r.get('SpaceReclaimed') or 0)}")
        return 0
    raise CLIError(f"skiff: 'volume {sub}' is not a skiff command.\nSee 'skiff volume --help'", 1)
