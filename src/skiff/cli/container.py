"""Container commands: run, create, start, stop, restart, kill, rm, ps, logs, exec, attach,
inspect, top, stats, wait, pause, unpause, rename, update, port."""

from __future__ import annotations

import os
import sys
import time

from skiff import fastjson
from skiff.cli.flags import Spec, parse
from skiff.cli.http import APIError, Client, CLIError, copy_raw, demux, quote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


def _out(s: str) -> None:
    sys.stdout.write(s + "\n")


def _err(s: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(s + "\n")


def _filters(items: list[str]) -> dict | None:
    if not items:
        return None
    f: dict[str, dict[str, bool]] = {}
    for it in items:
        k, eq, v = it.partition("=")
        if not eq:
            raise CLIError(f"bad format of filter (expected name=value): {it}", 1)
        f.setdefault(k.strip().lower(), {})[v] = True
    return f


def _each(cli: Client, names: list[str], what: str, fn: Any) -> int:
    if not names:
        raise CLIError(f"\"docker {what}\" requires at least 1 argument.\nSee 'docker {what} --help'.", 1)
    rc = 0
    for n in names:
        try:
            fn(n)
            _out(n)
        except APIError as e:
            _err(e.msg)
            rc = 1
    return rc


# ---------------------------------------------------------------- ps
PS_SPEC = Spec("a|all", "q|quiet", "no-trunc", "format:", "f|filter=", "n|last#", "l|latest", "s|size")


def _ports(ports: list) -> str:
    """docker ps's PORTS: ports not remapped (unpublished, or host port == container port) are
    merged into ranges per (IP, protocol) and come first; remapped ones follow, one by one."""
    ordered = sorted(ports or [], key=lambda p: (p.get("PrivatePort", 0), p.get("IP", ""),
                                                  p.get("PublicPort", 0), p.get("Type", "")))
    groups: dict[str, list[int]] = {}
    keys: list[str] = []
    done: list[str] = []
    remapped: list[str] = []

    def form(key: str, first: int, last: int) -> str:
        ip, _, proto = key.rpartition("/")
        rng = str(first) if first == last else f"{first}-{last}"
        return f"{ip}:{rng}->{rng}/{proto}" if ip else f"{rng}/{proto}"

    for p in ordered:
        priv = p.get("PrivatePort", 0)
        proto = p.get("Type", "tcp")
        key = proto
        ip = p.get("IP", "")
        if ip:
            if p.get("PublicPort") != priv:
                host = f"[{ip}]" if ":" in ip else ip
                remapped.append(f"{host}:{p.get('PublicPort')}->{priv}/{proto}")
                continue
            key = f"{ip}/{proto}"
        g = groups.get(key)
        if g is None:
            groups[key] = [priv, priv]
            keys.append(key)
        elif priv == g[1] + 1:
            g[1] = priv
        else:
            done.append(form(key, g[0], g[1]))
            groups[key] = [priv, priv]
    done += [form(k, *groups[k]) for k in keys]
    return ", ".join(done + remapped)


def _ps_row(c: dict, trunc: bool) -> dict:
    from skiff.cli.fmt import ellipsis, human_size, since

    names = [n[1:] if n.startswith("/") else n for n in (c.get("Names") or [])]
    if trunc:
        names = [n for n in names if "/" not in n] or names[:1]
    cmd = c.get("Command", "")
    if trunc:
        cmd = ellipsis(cmd, 20)
    cmd = '"' + cmd.replace("\\", "\\\\").replace('"', '\\"') + '"'
    cid = c.get("Id", "")
    created = c.get("Created", 0)
    size = human_size(c.get("SizeRw") or 0)
    if "SizeRw" in c or "SizeRootFs" in c:
        if c.get("SizeRootFs"):
            size += f" (virtual {human_size(c['SizeRootFs'])})"
    labels = c.get("Labels") or {}
    nets = (c.get("NetworkSettings") or {}).get("Networks") or {}
    mounts = [m.get("Name") or m.get("Source", "") for m in (c.get("Mounts") or [])]
    return {
        "ID": cid[:12] if trunc else cid, "Image": c.get("Image", ""), "Command": cmd,
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(created)),
        "RunningFor": since(created), "Ports": _ports(c.get("Ports") or []),
        "Status": c.get("Status", ""), "State": c.get("State", ""), "Size": size,
        "Names": ",".join(names), "Labels": ",".join(f"{k}={v}" for k, v in labels.items()),
        "Mounts": ",".join(mounts), "Networks": ",".join(sorted(nets)),
        "LocalVolumes": str(sum(1 for m in (c.get("Mounts") or []) if m.get("Driver") == "local")),
        "Platform": None,
    }


def ps(cli: Client, args: list[str]) -> int:
    o, pos = parse(PS_SPEC, args, True, "ps")
    if pos:
        raise CLIError("\"docker ps\" accepts no arguments.\nSee 'docker ps --help'.", 1)
    q: dict = {}
    if o["all"]:
        q["all"] = "1"
    if o["last"] is not None and o["last"] != -1:
        q["limit"] = o["last"]
    if o["latest"]:
        q["limit"] = 1
    if o["size"] or (o["format"] and ".Size" in o["format"]):
        q["size"] = "1"     # docker asks for sizes when the format shows them
    f = _filters(o["filter"])
    if f:
        q["filters"] = f
    cs = cli.get_json("/containers/json", q)
    trunc = not o["no_trunc"]
    fmt = o["format"]
    if o["quiet"] and not fmt:
        sys.stdout.write("".join((c["Id"][:12] if trunc else c["Id"]) + "\n" for c in cs))
        return 0
    if not fmt or fmt == "table":
        fmt = PS_TABLE + ("\t{{.Size}}" if o["size"] else "")
    if fmt == "json":
        fmt = "{{json .}}"
    from skiff.cli.fmt import render

    rows = [_ps_row(c, trunc) for c in cs]
    if fmt == "{{json .}}":     # docker marshals a map here: keys sorted
        rows = [dict(sorted(r.items())) for r in rows]
    text = render(fmt, rows)
    if text or fmt.startswith("table"):
        _out(text)
    return 0


# ---------------------------------------------------------------- inspect
INSPECT_SPEC = Spec("f|format:", "s|size", "type:")


def _go_indent(obj: Any) -> str:
    s = fastjson.dumps(obj, indent=4)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def inspect(cli: Client, args: list[str]) -> int:
    o, names = parse(INSPECT_SPEC, args, True, "inspect")
    if not names:
        raise CLIError("\"docker inspect\" requires at least 1 argument.\nSee 'docker inspect --help'.", 1)
    kind = o["type"]
    if kind not in (None, "container", "image"):
        raise CLIError(f"\"{kind}\" is not a valid value for --type (skiff inspects containers and images)", 1)
    objs: list[Any] = []
    missing: list[str] = []
    for n in names:
        obj = None
        if kind in (None, "container"):
            try:
                obj = cli.get_json(f"/containers/{_q(n)}/json", {"size": "1"} if o["size"] else None)
            except APIError as e:
                if e.status != 404:
                    raise
        if obj is None and kind in (None, "image"):
            try:
                obj = cli.get_json(f"/images/{_q(n)}/json")
            except APIError as e:
                if e.status != 404:
                    raise
        if obj is None:
            missing.append(n)
        else:
            objs.append(obj)
    rc = 0
    if o["format"]:
        from skiff.cli.template import Template, TemplateError

        fmt = o["format"]
        if fmt == "json":
            from skiff.cli.template import _json

            _out(_json(objs))
            fmt = ""
        try:
            t = Template(fmt)
            for obj in objs if fmt else ():
                _out(t.execute(obj))
        except TemplateError as e:
            raise CLIError(f"template parsing error: {e.msg}", 1) from None
    else:
        _out(_go_indent(objs) if objs else "[]")
    for n in missing:
        if kind:
            _err(f"Error response from daemon: No such {kind}: {n}")
        else:
            _err(f"Error: No such object: {n}")
        rc = 1
    return rc


def _q(s: str) -> str:
    return quote(s, safe=":@")


# ---------------------------------------------------------------- simple verbs
STOP_SPEC = Spec("t|time#", "timeout#", "s|signal:")


def stop(cli: Client, args: list[str]) -> int:
    o, names = parse(STOP_SPEC, args, True, "stop")
    q: dict = {}
    t = o["time"] if o["time"] is not None else o["timeout"]
    if t is not None:
        q["t"] = t
    if o["signal"]:
        q["signal"] = o["signal"]
    return _each(cli, names, "stop", lambda n: cli.request("POST", f"/containers/{_q(n)}/stop", q))


def restart(cli: Client, args: list[str]) -> int:
    o, names = parse(STOP_SPEC, args, True, "restart")
    q: dict = {}
    t = o["time"] if o["time"] is not None else o["timeout"]
    if t is not None:
        q["t"] = t
    if o["signal"]:
        q["signal"] = o["signal"]
    return _each(cli, names, "restart", lambda n: cli.request("POST", f"/containers/{_q(n)}/restart", q))


KILL_SPEC = Spec("s|signal:")


def kill(cli: Client, args: list[str]) -> int:
    o, names = parse(KILL_SPEC, args, True, "kill")
    q = {"signal": o["signal"]} if o["signal"] else None
    return _each(cli, names, "kill", lambda n: cli.request("POST", f"/containers/{_q(n)}/kill", q))


def pause(cli: Client, args: list[str]) -> int:
    _, names = parse(Spec(), args, True, "pause")
    return _each(cli, names, "pause", lambda n: cli.request("POST", f"/containers/{_q(n)}/pause"))


def unpause(cli: Client, args: list[str]) -> int:
    _, names = parse(Spec(), args, True, "unpause")
    return _each(cli, names, "unpause", lambda n: cli.request("POST", f"/containers/{_q(n)}/unpause"))


RM_SPEC = Spec("f|force", "v|volumes", "l|link")


def rm(cli: Client, args: list[str]) -> int:
    o, names = parse(RM_SPEC, args, True, "rm")
    q = {"force": o["force"] or None, "v": o["volumes"] or None, "link": o["link"] or None}
    return _each(cli, names, "rm", lambda n: cli.request("DELETE", f"/containers/{_q(n)}", q))


def rename(cli: Client, args: list[str]) -> int:
    _, pos = parse(Spec(), args, True, "rename")
    if len(pos) != 2:
        raise CLIError("\"docker rename\" requires exactly 2 arguments.\nSee 'docker rename --help'.", 1)
    try:
        cli.request("POST", f"/containers/{_q(pos[0])}/rename", {"name": pos[1]})
    except APIError as e:
        raise CLIError(f"{e.msg}\nError: failed to rename container named {pos[0]}", 1) from None
    return 0


def wait(cli: Client, args: list[str]) -> int:
    _, names = parse(Spec(), args, True, "wait")
    if not names:
        raise CLIError("\"docker wait\" requires at least 1 argument.\nSee 'docker wait --help'.", 1)
    rc = 0
    for n in names:
        try:
            r = cli.post_json(f"/containers/{_q(n)}/wait")
            err = (r.get("Error") or {}).get("Message") if isinstance(r.get("Error"), dict) else None
            if err:
                _err(f"Error response from daemon: {err}")
                rc = 1
            _out(str(r.get("StatusCode", 0)))
        except APIError as e:
            _err(e.msg)
            rc = 1
    return rc


UPDATE_SPEC = Spec("m|memory:", "memory-swap:", "memory-reservation:", "cpus:", "c|cpu-shares#",
                   "cpuset-cpus:", "cpuset-mems:", "pids-limit#", "restart:", "kernel-memory:",
                   "cpu-period#", "cpu-quota#", "blkio-weight#")


def update(cli: Client, args: list[str]) -> int:
    o, names = parse(UPDATE_SPEC, args, True, "update")
    body: dict = {}
    if o["memory"]:
        body["Memory"] = ram_bytes(o["memory"])
    if o["memory_swap"]:
        body["MemorySwap"] = -1 if o["memory_swap"] == "-1" else ram_bytes(o["memory_swap"])
    if o["memory_reservation"]:
        body["MemoryReservation"] = ram_bytes(o["memory_reservation"])
    if o["cpus"]:
        body["NanoCpus"] = int(float(o["cpus"]) * 1e9)
    for flag, key in (("cpu_shares", "CpuShares"), ("pids_limit", "PidsLimit"), ("cpu_period", "CpuPeriod"),
                      ("cpu_quota", "CpuQuota"), ("blkio_weight", "BlkioWeight")):
        if o[flag] is not None:
            body[key] = o[flag]
    if o["cpuset_cpus"]:
        body["CpusetCpus"] = o["cpuset_cpus"]
    if o["cpuset_mems"]:
        body["CpusetMems"] = o["cpuset_mems"]
    if o["restart"]:
        body["RestartPolicy"] = restart_policy(o["restart"])
    if o["kernel_memory"]:
        raise CLIError("--kernel-memory is not supported (removed from the Engine API)", 1)
    if not body:
        raise CLIError("you must provide one or more flags when using this command", 1)

    def one(n: str) -> None:
        r = cli.post_json(f"/containers/{_q(n)}/update", None, body)
        for w in (r or {}).get("Warnings") or []:
            _err(w)
    return _each(cli, names, "update", one)


def port(cli: Client, args: list[str]) -> int:
    _, pos = parse(Spec(), args, True, "port")
    if not pos:
        raise CLIError("\"docker port\" requires at least 1 argument.\nSee 'docker port --help'.", 1)
    c = cli.get_json(f"/containers/{_q(pos[0])}/json")
    ports = (c.get("NetworkSettings") or {}).get("Ports") or {}
    want = pos[1] if len(pos) > 1 else None
    if want and "/" not in want:
        want += "/tcp"
    for k in sorted(ports):
        if want and k != want:
            continue
        for b in ports[k] or []:
            hp = f"{b.get('HostIp', '')}:{b.get('HostPort')}"
            _out(hp if want else f"{k} -> {hp}")
    return 0


# ---------------------------------------------------------------- top / stats
def top(cli: Client, args: list[str]) -> int:
    _, pos = parse(Spec(), args, False, "top")
    if not pos:
        raise CLIError("\"docker top\" requires at least 1 argument.\nSee 'docker top --help'.", 1)
    q = {"ps_args": " ".join(pos[1:])} if len(pos) > 1 else None
    r = cli.get_json(f"/containers/{_q(pos[0])}/top", q)
    from skiff.cli.fmt import tabwrite

    lines = ["\t".join(r.get("Titles") or [])]
    lines += ["\t".join(p) for p in r.get("Processes") or []]
    _out(tabwrite(lines, minwidth=20, padding=3))
    return 0


STATS_SPEC = Spec("a|all", "no-stream", "no-trunc", "format:")


def stats(cli: Client, args: list[str]) -> int:
    from skiff.cli.stats import stats as run_stats

    return run_stats(cli, args)


# ---------------------------------------------------------------- logs
LOGS_SPEC = Spec("f|follow", "t|timestamps", "n|tail:", "since:", "until:", "details")


def _time_arg(v: str) -> str:
    """docker's --since/--until: unix time, RFC 3339 date, or a Go duration (relative to now)."""
    if not v:
        return v
    if v.replace(".", "", 1).isdigit():
        return v
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    total, num, i = 0.0, "", 0
    ok = True
    while i < len(v):
        c = v[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        u = v[i:i + 2] if v[i:i + 2] in units else v[i]
        if u not in units or not num:
            ok = False
            break
        total += float(num) * units[u]
        num = ""
        i += len(u)
    if ok and not num and total:
        return f"{time.time() - total:.9f}"
    from skiff.cli.fmt import parse_rfc3339

    try:
        if "T" not in v:
            v = v + "T00:00:00Z"
        elif not (v.endswith("Z") or v[-6] in "+-"):
            v += "Z"
        return f"{parse_rfc3339(v):.9f}"
    except (ValueError, IndexError):
        raise CLIError(f"invalid value for \"since\"/\"until\": {v}", 1) from None


def logs(cli: Client, args: list[str]) -> int:
    o, pos = parse(LOGS_SPEC, args, True, "logs")
    if len(pos) != 1:
        raise CLIError("\"docker logs\" requires exactly 1 argument.\nSee 'docker logs --help'.", 1)
    c = cli.get_json(f"/containers/{_q(pos[0])}/json")
    q = {"stdout": "1", "stderr": "1", "follow": o["follow"] or None, "timestamps": o["timestamps"] or None,
         "tail": o["tail"] or "all", "details": o["details"] or None}
    if o["since"]:
        q["since"] = _time_arg(o["since"])
    if o["until"]:
        q["until"] = _time_arg(o["until"])
    r = cli.request("GET", f"/containers/{c['Id']}/logs", q, stream=True)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    try:
        if (c.get("Config") or {}).get("Tty"):
            copy_raw(r.body, out)
        else:
            demux(r.body, out, err)
    finally:
        r.body.close()
    return 0


# ---------------------------------------------------------------- create / run
RUN_SPEC = Spec(
    "a|attach=", "d|detach", "rm", "i|interactive", "t|tty", "e|env=", "env-file=", "w|workdir:",
    "u|user:", "name:", "entrypoint:", "m|memory:", "memory-swap:", "memory-reservation:",
    "memory-swappiness#", "cap-add=", "cap-drop=", "read-only", "tmpfs=", "restart:", "network|net:",
    "network-alias|net-alias=", "privileged", "init", "security-opt=", "pids-limit#", "v|volume=",
    "mount=", "h|hostname:", "domainname:", "l|label=", "label-file=", "p|publish=", "P|publish-all",
    "expose=", "cpus:", "c|cpu-shares#", "cpuset-cpus:", "cpuset-mems:", "cpu-period#", "cpu-quota#",
    "dns=", "dns-search=", "dns-option=", "add-host=", "ulimit=", "device=", "stop-signal:",
    "stop-timeout#", "log-driver:", "log-opt=", "pull:", "platform:", "sig-proxy:", "detach-keys:",
    "group-add=", "ipc:", "pid:", "uts:", "userns:", "shm-size:", "sysctl=", "oom-kill-disable",
    "oom-score-adj#", "volumes-from=", "q|quiet", "cgroupns:", "cgroup-parent:", "runtime:",
    "ip:", "ip6:", "mac-address:", "link=", "health-cmd:", "no-healthcheck", "blkio-weight#",
    "volume-driver:", "init-path:", "isolation:", "use-api-socket",
)

_RAM = {"b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4, "p": 1024 ** 5}


def ram_bytes(v: str) -> int:
    s = v.strip().lower()
    if s.endswith("b") and len(s) > 1 and s[-2] in _RAM:
        s = s[:-1]
    mult = 1
    if s and s[-1] in _RAM:
        mult = _RAM[s[-1]]
        s = s[:-1]
    try:
        return int(float(s) * mult)
    except ValueError:
        raise CLIError(f"invalid size: '{v}'", 125) from None


def restart_policy(v: str) -> dict:
    name, _, count = v.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure"):
        raise CLIError(f"invalid restart policy: {v}", 125)
    pol: dict = {"Name": name, "MaximumRetryCount": 0}
    if count:
        if name != "on-failure":
            raise CLIError(f"invalid restart policy format: maximum retry count cannot be used with restart policy '{name}'", 125)
        pol["MaximumRetryCount"] = int(count)
    return pol


def _env_list(items: list[str], files: list[str]) -> list[str]:
    out = []
    for f in files:
        with open(f) as fh:
            for ln in fh:
                ln = ln.strip()
                if ln and not ln.startswith("#"):
                    out.append(ln if "=" in ln else (f"{ln}={os.environ[ln]}" if ln in os.environ else None))
    for e in items:
        if "=" in e:
            out.append(e)
        elif e in os.environ:
            out.append(f"{e}={os.environ[e]}")
    return [e for e in out if e]


def _caps(items: list[str]) -> list[str] | None:
    out = []
    for c in items:
        for x in c.split(","):
            x = x.strip().upper()
            if x and x != "ALL" and not x.startswith("CAP_"):
                x = "CAP_" + x
            if x:
                out.append(x)
    return out or None


def _port_range(text: str) -> tuple[int, int] | None:
    """``80`` or ``8000-8010`` -> (first, last); None when invalid."""
    a, sep, b = text.partition("-")
    if not a.isdigit() or (sep and not b.isdigit()):
        return None
    first, last = int(a), int(b) if sep else int(a)
    if first > 65535 or last > 65535 or last < first:
        return None
    return first, last


def _port_specs(items: list[str], expose: list[str]) -> tuple[dict, dict]:
    """--expose and -p/--publish as docker's CLI parses them (ranges expanded to one key per
    container port; a host range with one container port stays a range for the daemon)."""
    exposed: dict = {}
    bindings: dict = {}
    for e in expose:
        p, _, proto = e.partition("/")
        proto = (proto or "tcp").lower()
        rng = _port_range(p)
        if rng is None:
            raise CLIError(f"invalid range format for --expose: {e}", 125)
        if proto not in ("tcp", "udp", "sctp"):
            raise CLIError(f"invalid proto: {proto}", 125)
        for n in range(rng[0], rng[1] + 1):
            exposed[f"{n}/{proto}"] = {}
    for spec in items:
        main, _, proto = spec.partition("/")
        proto = (proto or "tcp").lower()
        if main.startswith("["):
            ip, _, rest = main[1:].partition("]")
            hp, _, cp = rest.lstrip(":").rpartition(":")
            parts = [ip, hp, cp]
        else:
            parts = main.split(":")
        if len(parts) == 1:
            ip, hp, cp = "", "", parts[0]
        elif len(parts) == 2:
            ip, (hp, cp) = "", parts
        elif len(parts) == 3:
            ip, hp, cp = parts
        else:
            raise CLIError(f"invalid port format: {spec}", 125)
        if ip:
            import ipaddress
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise CLIError(f"invalid IP address: {ip}", 125) from None
        crange = _port_range(cp)
        if crange is None:
            raise CLIError(f"invalid containerPort: {cp}", 125)
        hrange = _port_range(hp) if hp else (0, 0)
        if hrange is None:
            raise CLIError(f"invalid hostPort: {hp}", 125)
        if hp and crange[1] - crange[0] != hrange[1] - hrange[0] and crange[0] != crange[1]:
            raise CLIError(f"invalid ranges specified for container and host Ports: {cp} and {hp}", 125)
        if proto not in ("tcp", "udp", "sctp"):
            raise CLIError(f"invalid proto: {proto}", 125)
        for i in range(crange[1] - crange[0] + 1):
            key = f"{crange[0] + i}/{proto}"
            if not hp:
                host = ""
            elif crange[0] == crange[1] and hrange[0] != hrange[1]:
                host = f"{hrange[0]}-{hrange[1]}"
            else:
                host = str(hrange[0] + i)
            exposed[key] = {}
            bindings.setdefault(key, []).append({"HostIp": ip, "HostPort": host})
    return exposed, bindings


def _mounts(items: list[str]) -> list[dict]:
    out = []
    for spec in items:
        m: dict = {}
        for kv in spec.split(","):
            k, eq, v = kv.partition("=")
            k = k.strip().lower()
            if k == "type":
                m["Type"] = v
            elif k in ("source", "src"):
                m["Source"] = v
            elif k in ("target", "dst", "destination"):
                m["Target"] = v
            elif k in ("readonly", "ro"):
                m["ReadOnly"] = (not eq) or v.lower() in ("1", "true")
            elif k == "bind-propagation":
                m.setdefault("BindOptions", {})["Propagation"] = v
            elif k == "volume-nocopy":
                m.setdefault("VolumeOptions", {})["NoCopy"] = (not eq) or v.lower() in ("1", "true")
            elif k == "tmpfs-size":
                m.setdefault("TmpfsOptions", {})["SizeBytes"] = ram_bytes(v)
            elif k == "tmpfs-mode":
                m.setdefault("TmpfsOptions", {})["Mode"] = int(v, 8)
            elif k == "consistency":
                m["Consistency"] = v
            else:
                raise CLIError(f"invalid argument \"{spec}\" for \"--mount\" flag: unexpected key '{k}' in '{kv}'", 125)
        m.setdefault("Type", "volume")
        if "Target" not in m:
            raise CLIError(f"invalid argument \"{spec}\" for \"--mount\" flag: target is required", 125)
        out.append(m)
    return out


def build_create(o: dict, image: str, cmd: list[str]) -> dict:
    """The create body the docker CLI sends for these flags."""
    tty = bool(o["tty"])
    stdin = bool(o["interactive"])
    detach = bool(o["detach"])
    attach = [a.lower() for a in o["attach"]]
    if detach and attach:
        raise CLIError("Conflicting options: -a and -d", 125)
    a_in = not detach and (stdin if not attach else "stdin" in attach)
    a_out = not detach and (not attach or "stdout" in attach)
    a_err = not detach and (not attach or "stderr" in attach)
    labels: dict = {}
    for lab in o["label"]:
        k, _, v = lab.partition("=")
        labels[k] = v
    exposed, bindings = _port_specs(o["publish"], o["expose"])
    tmpfs = {}
    for t in o["tmpfs"]:
        p, _, opts = t.partition(":")
        tmpfs[p] = opts
    secopts = []
    for s in o["security_opt"]:
        if s.startswith("seccomp=") and s[8:] not in ("unconfined", "builtin"):
            with open(s[8:]) as f:
                secopts.append("seccomp=" + f.read())
        elif s.startswith("seccomp:"):
            secopts.append("seccomp=" + s[8:])
        else:
            secopts.append(s)
    ulimits = []
    for u in o["ulimit"]:
        name, _, vals = u.partition("=")
        soft, _, hard = vals.partition(":")
        ulimits.append({"Name": name, "Soft": int(soft), "Hard": int(hard or soft)})
    devices = []
    for d in o["device"]:
        parts = d.split(":")
        devices.append({"PathOnHost": parts[0], "PathInContainer": parts[1] if len(parts) > 1 else parts[0],
                        "CgroupPermissions": parts[2] if len(parts) > 2 else "rwm"})
    sysctls = {}
    for s in o["sysctl"]:
        k, _, v = s.partition("=")
        sysctls[k] = v
    logcfg = {}
    for lo in o["log_opt"]:
        k, _, v = lo.partition("=")
        logcfg[k] = v
    net = o["network"] or "default"
    entrypoint = None
    if o["entrypoint"] is not None:
        entrypoint = [o["entrypoint"]] if o["entrypoint"] else [""]
    console = None
    if tty and sys.stdout.isatty():
        sz = os.get_terminal_size(sys.stdout.fileno())
        if sz.lines and sz.columns:
            console = [sz.lines, sz.columns]
    healthcheck = None
    if o["no_healthcheck"]:
        healthcheck = {"Test": ["NONE"]}
    elif o["health_cmd"]:
        healthcheck = {"Test": ["CMD-SHELL", o["health_cmd"]]}
    config = {
        "Hostname": o["hostname"] or "", "Domainname": o["domainname"] or "", "User": o["user"] or "",
        "AttachStdin": a_in, "AttachStdout": a_out, "AttachStderr": a_err,
        "ExposedPorts": exposed or None, "Tty": tty, "OpenStdin": stdin, "StdinOnce": stdin and a_in,
        "Env": _env_list(o["env"], o["env_file"]) or None, "Cmd": cmd or None, "Image": image,
        "Volumes": None, "WorkingDir": o["workdir"] or "", "Entrypoint": entrypoint,
        "Labels": labels, "StopSignal": o["stop_signal"] or None, "StopTimeout": o["stop_timeout"],
        "Healthcheck": healthcheck,
    }
    if o["mac_address"]:
        config["MacAddress"] = o["mac_address"]
    binds = []
    for v in o["volume"]:
        binds.append(v)
    host: dict = {
        "Binds": binds or None, "Mounts": _mounts(o["mount"]) or None, "AutoRemove": bool(o["rm"]),
        "NetworkMode": net, "PortBindings": bindings or None, "PublishAllPorts": bool(o["publish_all"]),
        "RestartPolicy": restart_policy(o["restart"]) if o["restart"] else {"Name": "no", "MaximumRetryCount": 0},
        "Privileged": bool(o["privileged"]), "ReadonlyRootfs": bool(o["read_only"]),
        "CapAdd": _caps(o["cap_add"]), "CapDrop": _caps(o["cap_drop"]),
        "SecurityOpt": secopts or None, "Tmpfs": tmpfs or None, "Init": True if o["init"] else None,
        "Dns": o["dns"], "DnsSearch": o["dns_search"], "DnsOptions": o["dns_option"],
        "ExtraHosts": o["add_host"] or None, "VolumesFrom": o["volumes_from"] or None,
        "GroupAdd": o["group_add"] or None, "IpcMode": o["ipc"] or "", "PidMode": o["pid"] or "",
        "UTSMode": o["uts"] or "", "UsernsMode": o["userns"] or "", "CgroupnsMode": o["cgroupns"] or "",
        "CgroupParent": o["cgroup_parent"] or "", "Runtime": o["runtime"] or "",
        "Sysctls": sysctls or None, "Ulimits": ulimits or None, "Devices": devices or None,
        "LogConfig": {"Type": o["log_driver"] or "", "Config": logcfg},
        "ConsoleSize": console or [0, 0], "Links": o["link"] or None,
        "Memory": ram_bytes(o["memory"]) if o["memory"] else 0,
        "MemorySwap": (-1 if o["memory_swap"] == "-1" else ram_bytes(o["memory_swap"])) if o["memory_swap"] else 0,
        "MemoryReservation": ram_bytes(o["memory_reservation"]) if o["memory_reservation"] else 0,
        "MemorySwappiness": o["memory_swappiness"] if o["memory_swappiness"] is not None else None,
        "NanoCpus": int(float(o["cpus"]) * 1e9) if o["cpus"] else 0,
        "CpuShares": o["cpu_shares"] or 0, "CpusetCpus": o["cpuset_cpus"] or "",
        "CpusetMems": o["cpuset_mems"] or "", "CpuPeriod": o["cpu_period"] or 0, "CpuQuota": o["cpu_quota"] or 0,
        "PidsLimit": o["pids_limit"], "OomKillDisable": True if o["oom_kill_disable"] else None,
        "OomScoreAdj": o["oom_score_adj"] or 0, "BlkioWeight": o["blkio_weight"] or 0,
        "ShmSize": ram_bytes(o["shm_size"]) if o["shm_size"] else 0, "VolumeDriver": o["volume_driver"] or "",
    }
    if o["init_path"] or o["isolation"] or o["use_api_socket"]:
        raise CLIError("--init-path, --isolation and --use-api-socket are not supported by skiff", 125)
    ep: dict = {}
    if o["network_alias"]:
        ep["Aliases"] = o["network_alias"]
    if o["ip"] or o["ip6"]:
        ep["IPAMConfig"] = {"IPv4Address": o["ip"] or "", "IPv6Address": o["ip6"] or ""}
    config["HostConfig"] = host
    config["NetworkingConfig"] = {"EndpointsConfig": {net: ep}}
    return config


def _split_ref(image: str) -> tuple[str, str]:
    if "@" in image:
        name, _, dg = image.partition("@")
        return name, dg
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1:]
    return image, "latest"


def _full_ref(image: str) -> str:
    name, tag = _split_ref(image)
    first = name.split("/", 1)[0]
    if "/" not in name or ("." not in first and ":" not in first and first != "localhost"):
        name = "docker.io/" + (name if "/" in name else "library/" + name)
    return f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"


def _create(cli: Client, o: dict, body: dict, image: str) -> dict:
    q: dict = {"name": o["name"]}
    if o["platform"]:
        q["platform"] = o["platform"]
    pull = o["pull"] or "missing"
    if pull not in ("missing", "always", "never"):
        raise CLIError(f"invalid pull option: '{pull}': must be one of \"always\", \"missing\" or \"never\"", 125)
    if pull == "always":
        from skiff.cli.image import pull_image

        pull_image(cli, image, sys.stderr, o["quiet"], o["platform"])
    try:
        return cli.post_json("/containers/create", q, body)
    except APIError as e:
        if e.status != 404 or pull != "missing" or "image" not in e.message.lower():
            raise
        _err(f"Unable to find image '{_short_ref(image)}' locally")
        from skiff.cli.image import pull_image

        pull_image(cli, image, sys.stderr, o["quiet"], o["platform"])
        return cli.post_json("/containers/create", q, body)


def _short_ref(image: str) -> str:
    name, tag = _split_ref(image)
    return f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag}"


def create(cli: Client, args: list[str]) -> int:
    o, pos = parse(RUN_SPEC, args, False, "create")
    if not pos:
        raise CLIError("\"docker create\" requires at least 1 argument.\nSee 'docker create --help'.", 125)
    o["detach"] = True
    body = build_create(o, pos[0], pos[1:])
    try:
        r = _create(cli, o, body, pos[0])
    except APIError as e:
        raise CLIError(f"skiff: {e.msg}\n\nRun 'skiff create --help' for more information", 125) from None
    for w in r.get("Warnings") or []:
        _err(f"WARNING: {w}")
    _out(r["Id"])
    return 0


def _start_exit_code(msg: str) -> int:
    low = msg.lower()
    if "executable file not found" in low or "no such file or directory" in low or "not found" in low and "exec" in low:
        return 127
    if "permission denied" in low or "is a directory" in low:
        return 126
    return 125


DETACH_GRACE = 3.0    # seconds the daemon gets to close the attach after the detach keys


class _Session:
    """One attached container or exec session on a hijacked connection: stdin pump (thread),
    output copy (this thread), raw tty, resize on SIGWINCH, detach keys, signal proxy."""

    def __init__(self, cli: Client, stream: Any, tty: bool, stdin: bool, resize: Any,
                 detach_keys: bytes | None, on_signal: Any = None) -> None:
        self.cli = cli
        self.stream = stream
        self.tty = tty
        self.stdin = stdin
        self.resize = resize
        self.detach_keys = detach_keys if detach_keys is not None else b"\x10\x11"
        self.on_signal = on_signal
        self.detached = False
        self.saved: Any = None

    def _pump_stdin(self) -> None:
        sock = self.stream.sock
        keys = self.detach_keys
        held = b""
        try:
            while True:
                try:
                    data = os.read(0, 32768)
                except OSError:
                    data = b""
                if not data:
                    break
                if self.tty and keys:
                    buf = held + data
                    held = b""
                    k = buf.find(keys)
                    if k >= 0:
                        # pass the sequence on: the daemon matches it too and detaches without
                        # closing the container's stdin (a half-close here would close it)
                        self.detached = True
                        sock.sendall(buf[:k + len(keys)])
                        time.sleep(DETACH_GRACE)
                        try:
                            sock.shutdown(2)     # a daemon that did not detach: leave anyway
                        except OSError:
                            pass
                        return
                    # keep a trailing prefix of the detach sequence for the next read
                    for n in range(len(keys) - 1, 0, -1):
                        if buf.endswith(keys[:n]):
                            held, buf = buf[-n:], buf[:-n]
                            break
                    data = buf
                if data:
                    sock.sendall(data)
            if held:
                sock.sendall(held)
            if not self.tty:
                sock.shutdown(1)   # SHUT_WR: the container's stdin reaches EOF
        except OSError:
            pass

    def run(self) -> None:
        import signal

        if self.tty and sys.stdin.isatty() and self.stdin:
            import termios
            import tty as ttymod

            self.saved = termios.tcgetattr(0)
            ttymod.setraw(0)
        if self.tty and self.resize and sys.stdout.isatty():
            def winch(*_: Any) -> None:
                try:
                    sz = os.get_terminal_size(sys.stdout.fileno())
                    self.resize(sz.lines, sz.columns)
                except (OSError, CLIError):
                    pass
            signal.signal(signal.SIGWINCH, winch)
            winch()
        if not self.tty and self.on_signal:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(sig, lambda s, _f: self.on_signal(signal.Signals(s).name[3:]))
        try:
            if self.stdin:
                import threading

                threading.Thread(target=self._pump_stdin, daemon=True).start()
            else:
                try:
                    self.stream.sock.shutdown(1)
                except OSError:
                    pass
            out = sys.stdout.buffer
            try:
                if self.tty:
                    copy_raw(self.stream, out)
                else:
                    demux(self.stream, out, sys.stderr.buffer)
            except OSError:
                pass
        finally:
            if self.saved is not None:
                import termios

                termios.tcsetattr(0, termios.TCSADRAIN, self.saved)
            self.stream.close()


def run(cli: Client, args: list[str]) -> int:
    o, pos = parse(RUN_SPEC, args, False, "run")
    if not pos:
        raise CLIError("\"docker run\" requires at least 1 argument.\nSee 'docker run --help'.", 125)
    if o["tty"] and o["interactive"] and not o["detach"] and not sys.stdin.isatty():
        raise CLIError("the input device is not a TTY", 1)
    image, cmd = pos[0], pos[1:]
    body = build_create(o, image, cmd)
    try:
        r = _create(cli, o, body, image)
    except APIError as e:
        raise CLIError(f"skiff: {e.msg}\n\nRun 'skiff run --help' for more information", 125) from None
    for w in r.get("Warnings") or []:
        _err(f"WARNING: {w}")
    cid = r["Id"]
    if o["detach"]:
        try:
            cli.request("POST", f"/containers/{cid}/start")
        except APIError as e:
            raise CLIError(f"skiff: {e.msg}", _start_exit_code(e.message)) from None
        _out(cid)
        return 0
    tty = body["Tty"]
    a_in, a_out, a_err = body["AttachStdin"], body["AttachStdout"], body["AttachStderr"]
    q = {"stream": "1", "stdin": a_in or None, "stdout": a_out or None, "stderr": a_err or None}
    if o["detach_keys"]:
        q["detachKeys"] = o["detach_keys"]
    att = cli.hijack(f"/containers/{cid}/attach", q)
    cond = "removed" if o["rm"] else "next-exit"
    waiter = cli.do_versioned("POST", f"/containers/{cid}/wait", {"condition": cond})
    try:
        cli.request("POST", f"/containers/{cid}/start")
    except APIError as e:
        att.body.close()
        code = _start_exit_code(e.message)
        _err(f"skiff: {e.msg}")
        if o["rm"]:
            try:
                waiter.json()
            except CLIError:
                pass
        return code

    def resize(h: int, w: int) -> None:
        Client(cli.host, cli.tls).request("POST", f"/containers/{cid}/resize", {"h": h, "w": w})

    def proxy(sig: str) -> None:
        try:
            Client(cli.host, cli.tls).request("POST", f"/containers/{cid}/kill", {"signal": sig})
        except CLIError:
            pass
    sig_proxy = (o["sig_proxy"] or "true").lower() in ("1", "true")
    keys = _detach_keys(o["detach_keys"])
    sess = _Session(cli, att.body, tty, a_in, resize, keys, proxy if sig_proxy else None)
    sess.run()
    if sess.detached:
        return 0
    res = waiter.json() or {}
    waiter.body.close()
    err = res.get("Error")
    if isinstance(err, dict) and err.get("Message"):
        _err(f"Error waiting for container: {err['Message']}")
        return 125
    return int(res.get("StatusCode", 0))


def _detach_keys(spec: str | None) -> bytes | None:
    if not spec:
        return None
    out = bytearray()
    for part in spec.split(","):
        part = part.strip()
        if part.startswith("ctrl-") and len(part) == 6:
            c = part[5]
            if c == "@":
                out.append(0)
            elif c.isalpha():
                out.append(ord(c.lower()) - ord("a") + 1)
            elif c in "[\\]^_":
                out.append(ord(c) - 64)
            else:
                raise CLIError(f"Invalid detach keys ({spec}) provided", 1)
        elif len(part) == 1:
            out.append(ord(part))
        else:
            raise CLIError(f"Invalid detach keys ({spec}) provided", 1)
    return bytes(out)


START_SPEC = Spec("a|attach", "i|interactive", "detach-keys:", "checkpoint:", "checkpoint-dir:")


def start(cli: Client, args: list[str]) -> int:
    o, names = parse(START_SPEC, args, True, "start")
    if not names:
        raise CLIError("\"docker start\" requires at least 1 argument.\nSee 'docker start --help'.", 1)
    if o["checkpoint"] or o["checkpoint_dir"]:
        raise CLIError("checkpoints are not supported by skiff", 1)
    if o["attach"] or o["interactive"]:
        if len(names) > 1:
            raise CLIError("you cannot start and attach multiple containers at once", 1)
        c = cli.get_json(f"/containers/{_q(names[0])}/json")
        cid = c["Id"]
        tty = bool(c["Config"].get("Tty"))
        stdin = bool(o["interactive"] and c["Config"].get("OpenStdin"))
        q = {"stream": "1", "stdin": stdin or None, "stdout": "1", "stderr": "1"}
        att = cli.hijack(f"/containers/{cid}/attach", q)
        waiter = cli.do_versioned("POST", f"/containers/{cid}/wait", {"condition": "next-exit"})
        try:
            cli.request("POST", f"/containers/{cid}/start")
        except APIError as e:
            att.body.close()
            raise CLIError(e.msg, 1) from None
        sess = _Session(cli, att.body, tty, stdin, lambda h, w: Client(cli.host, cli.tls).request(
            "POST", f"/containers/{cid}/resize", {"h": h, "w": w}), _detach_keys(o["detach_keys"]))
        sess.run()
        if sess.detached:
            return 0
        res = waiter.json() or {}
        return int(res.get("StatusCode", 0))
    rc = 0
    for n in names:
        try:
            cli.request("POST", f"/containers/{_q(n)}/start")
            _out(n)
        except APIError as e:
            _err(e.msg)
            rc = 1
    if rc:
        _err("Error: failed to start containers: " + ", ".join(names))
    return rc


ATTACH_SPEC = Spec("no-stdin", "sig-proxy:", "detach-keys:")


def attach(cli: Client, args: list[str]) -> int:
    o, pos = parse(ATTACH_SPEC, args, True, "attach")
    if len(pos) != 1:
        raise CLIError("\"docker attach\" requires exactly 1 argument.\nSee 'docker attach --help'.", 1)
    c = cli.get_json(f"/containers/{_q(pos[0])}/json")
    cid = c["Id"]
    st = c.get("State") or {}
    if not st.get("Running"):
        raise CLIError("You cannot attach to a stopped container, start it first", 1)
    if st.get("Paused"):
        raise CLIError("You cannot attach to a paused container, unpause it first", 1)
    tty = bool(c["Config"].get("Tty"))
    stdin = not o["no_stdin"] and bool(c["Config"].get("OpenStdin"))
    if tty and stdin and not sys.stdin.isatty():
        raise CLIError("the input device is not a TTY", 1)
    q = {"stream": "1", "stdin": stdin or None, "stdout": "1", "stderr": "1", "detachKeys": o["detach_keys"]}
    att = cli.hijack(f"/containers/{cid}/attach", q)
    waiter = cli.do_versioned("POST", f"/containers/{cid}/wait", {"condition": "next-exit"})

    def proxy(sig: str) -> None:
        try:
            Client(cli.host, cli.tls).request("POST", f"/containers/{cid}/kill", {"signal": sig})
        except CLIError:
            pass
    sess = _Session(cli, att.body, tty, stdin, lambda h, w: Client(cli.host, cli.tls).request(
        "POST", f"/containers/{cid}/resize", {"h": h, "w": w}), _detach_keys(o["detach_keys"]),
        proxy if (o["sig_proxy"] or "true").lower() in ("1", "true") else None)
    sess.run()
    if sess.detached:
        waiter.body.close()
        return 0
    res = waiter.json() or {}
    return int(res.get("StatusCode", 0))


EXEC_SPEC = Spec("d|detach", "i|interactive", "t|tty", "e|env=", "env-file=", "u|user:", "w|workdir:",
                 "privileged", "detach-keys:")


def exec_(cli: Client, args: list[str]) -> int:
    o, pos = parse(EXEC_SPEC, args, False, "exec")
    if len(pos) < 2:
        raise CLIError("\"docker exec\" requires at least 2 arguments.\nSee 'docker exec --help'.", 1)
    if o["tty"] and o["interactive"] and not o["detach"] and not sys.stdin.isatty():
        raise CLIError("the input device is not a TTY", 1)
    tty = bool(o["tty"])
    stdin = bool(o["interactive"]) and not o["detach"]
    console = None
    if tty and sys.stdout.isatty():
        sz = os.get_terminal_size(sys.stdout.fileno())
        console = [sz.lines, sz.columns]
    body = {"User": o["user"] or "", "Privileged": bool(o["privileged"]), "Tty": tty,
            "AttachStdin": stdin, "AttachStdout": not o["detach"], "AttachStderr": not o["detach"],
            "Detach": bool(o["detach"]), "DetachKeys": o["detach_keys"] or "",
            "Env": _env_list(o["env"], o["env_file"]) or None, "WorkingDir": o["workdir"] or "",
            "Cmd": pos[1:]}
    if console:
        body["ConsoleSize"] = console
    r = cli.post_json(f"/containers/{_q(pos[0])}/exec", None, body)
    eid = r["Id"]
    if o["detach"]:
        cli.request("POST", f"/exec/{eid}/start", None, {"Detach": True, "Tty": tty})
        return 0
    sb: dict = {"Detach": False, "Tty": tty}
    if console:
        sb["ConsoleSize"] = console
    att = cli.hijack(f"/exec/{eid}/start", None, sb)
    sess = _Session(cli, att.body, tty, stdin, lambda h, w: Client(cli.host, cli.tls).request(
        "POST", f"/exec/{eid}/resize", {"h": h, "w": w}), _detach_keys(o["detach_keys"]))
    sess.run()
    if sess.detached:
        return 0
    info = cli.get_json(f"/exec/{eid}/json")
    for _ in range(50):         # the stream can end a moment before the daemon records the exit
        if not info.get("Running"):
            break
        time.sleep(0.02)
        info = cli.get_json(f"/exec/{eid}/json")
    return int(info.get("ExitCode") or 0)


COMMIT_SPEC = Spec("a|author:", "c|change=", "m|message:", "p|pause:")


def commit(cli: Client, args: list[str]) -> int:
    o, pos = parse(COMMIT_SPEC, args, True, "commit")
    if len(pos) not in (1, 2):
        raise CLIError("\"docker commit\" requires at least 1 and at most 2 arguments.\nSee 'docker commit --help'.", 1)
    q: dict = {"container": pos[0], "author": o["author"], "comment": o["message"],
               "pause": "0" if (o["pause"] or "true").lower() in ("0", "false") else "1"}
    if len(pos) == 2:
        repo, tag = _split_ref(pos[1])
        q["repo"] = repo
        q["tag"] = tag
    if o["change"]:
        q["changes"] = o["change"]
    r = cli.post_json("/commit", _multi(q))
    _out(r.get("Id", ""))
    return 0


def _multi(q: dict) -> dict:
    """Lists in a query become repeated keys; ``Client.url`` takes them as a pre-joined value."""
    out = {}
    for k, v in q.items():
        if isinstance(v, list):
            out[k] = _Repeated(v)
        else:
            out[k] = v
    return out


class _Repeated(list):
    pass


def diff(cli: Client, args: list[str]) -> int:
    _, pos = parse(Spec(), args, True, "diff")
    if len(pos) != 1:
        raise CLIError("\"docker diff\" requires exactly 1 argument.\nSee 'docker diff --help'.", 1)
    changes = cli.get_json(f"/containers/{_q(pos[0])}/changes") or []
    kinds = {0: "C", 1: "A", 2: "D"}
    sys.stdout.write("".join(f"{kinds.get(c.get('Kind'), '?')} {c.get('Path')}\n" for c in changes))
    return 0


CP_SPEC = Spec("a|archive", "L|follow-link", "q|quiet")


def _split_cp(arg: str) -> tuple[str | None, str]:
    """'ctr:/path' -> ('ctr', '/path'); a local path (absolute, ./, or without ':') -> (None, path)."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    c, _, p = arg.partition(":")
    return c, p


def _safe_members(tf: Any, rename: tuple[str, str] | None) -> list:
    out = []
    for m in tf.getmembers():
        name = m.name
        if rename:
            old, new = rename
            if name == old or name.startswith(old + "/"):
                name = new + name[len(old):]
        parts = name.split("/")
        if name.startswith("/") or ".." in parts:
            raise CLIError(f"refusing to extract {m.name!r}: it points outside the destination", 1)
        if m.islnk() and (m.linkname.startswith("/") or ".." in m.linkname.split("/")):
            raise CLIError(f"refusing to extract hard link {m.name!r} -> {m.linkname!r}", 1)
        m.name = name
        out.append(m)
    return out


def cp(cli: Client, args: list[str]) -> int:
    o, pos = parse(CP_SPEC, args, True, "cp")
    if len(pos) != 2:
        raise CLIError("\"docker cp\" requires exactly 2 arguments.\nSee 'docker cp --help'.", 1)
    (sc, sp), (dc, dp) = _split_cp(pos[0]), _split_cp(pos[1])
    if sc and dc:
        raise CLIError("copying between containers is not supported", 1)
    if not sc and not dc:
        raise CLIError("must specify at least one container source", 1)
    import tarfile

    if sc:
        r = cli.request("GET", f"/containers/{_q(sc)}/archive", {"path": sp}, stream=True)
        try:
            if dp == "-":
                while True:
                    b = r.body.read()
                    if not b:
                        break
                    sys.stdout.buffer.write(b)
                sys.stdout.buffer.flush()
                return 0
            base = os.path.basename(sp.rstrip("/")) or "/"
            with tarfile.open(fileobj=_StreamFile(r.body), mode="r|") as tf:  # type: ignore[call-overload]
                if os.path.isdir(dp):
                    dest, rename = dp, None
                else:
                    parent = os.path.dirname(os.path.abspath(dp))
                    if not os.path.isdir(parent):
                        raise CLIError(f"invalid output path: directory {parent!r} does not exist", 1)
                    dest, rename = parent, (base, os.path.basename(dp.rstrip("/")))
                for m in tf:
                    members = _safe_members(_One(m), rename)
                    if hasattr(tarfile, "tar_filter"):    # Python >= 3.11.4: no writes outside dest
                        tf.extract(members[0], dest, set_attrs=True, numeric_owner=bool(o["archive"]),
                                   filter="tar")
                    else:
                        tf.extract(members[0], dest, set_attrs=True, numeric_owner=bool(o["archive"]))
        finally:
            r.body.close()
        if not o["quiet"] and sys.stderr.isatty():
            sys.stderr.write(f"Successfully copied to {dp}\n")
        return 0
    # local -> container
    from skiff.cli.upload import copy_file, file_size

    assert dc is not None
    size: int | None = None
    if sp == "-":
        produce = copy_file(sys.stdin.buffer)
        size = file_size(sys.stdin.buffer)
        target = dp
    else:
        if not os.path.lexists(sp):
            raise CLIError(f"lstat {os.path.abspath(sp)}: no such file or directory", 1)
        is_dir = False
        try:
            r = cli.request("HEAD", f"/containers/{_q(dc)}/archive", {"path": dp})
            st = r.headers.get("x-docker-container-path-stat")
            if st:
                import base64

                mode = fastjson.loads(base64.b64decode(st)).get("mode", 0)
                is_dir = bool(mode & (1 << 31))
        except APIError as e:
            if e.status != 404:
                raise
        if is_dir:
            target, arc = dp, os.path.basename(os.path.abspath(sp))
        else:
            target, arc = os.path.dirname(dp.rstrip("/")) or "/", os.path.basename(dp.rstrip("/"))
        def produce(write: Any) -> None:
            # stream mode ("w|"): tarfile hands over each 10 KiB record as it is filled
            try:
                with tarfile.open(fileobj=_WriteFile(write), mode="w|") as tf:  # type: ignore[call-overload]
                    tf.add(sp, arcname=arc, recursive=True)
            except (BrokenPipeError, ConnectionResetError):
                raise
            except OSError as e:
                raise CLIError(f"copying {sp} into {dc}:{dp}: {e.strerror or e}"
                               + (f": {e.filename}" if e.filename else ""), 1) from None
    r = cli.upload("PUT", f"/containers/{_q(dc)}/archive", {"path": target, "noOverwriteDirNonDir": "true",
                   "copyUIDGID": "true" if o["archive"] else None}, produce, "application/x-tar", size)
    r.body.read_all()
    r.body.close()
    return 0


class _WriteFile:
    """A write-only file that passes each write on (to ``Client.upload``'s writer)."""

    def __init__(self, write: Any) -> None:
        self.write = write


class _One:
    def __init__(self, m: Any) -> None:
        self.m = m

    def getmembers(self) -> list:
        return [self.m]


class _StreamFile:
    """A read-only file over a response body, for tarfile's stream mode."""

    def __init__(self, body: Any) -> None:
        self.body = body

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.body.read_all()
        return self.body.read_exact(n)


EXPORT_SPEC = Spec("o|output:")


def export(cli: Client, args: list[str]) -> int:
    o, pos = parse(EXPORT_SPEC, args, True, "export")
    if len(pos) != 1:
        raise CLIError("\"docker export\" requires exactly 1 argument.\nSee 'docker export --help'.", 1)
    if not o["output"] and sys.stdout.isatty():
        raise CLIError("cowardly refusing to save to a terminal. Use the -o flag or redirect", 1)
    r = cli.request("GET", f"/containers/{_q(pos[0])}/export", stream=True)
    f: Any = open(o["output"] + ".skiff-tmp", "wb") if o["output"] else sys.stdout.buffer
    try:
        while True:
            b = r.body.read()
            if not b:
                break
            f.write(b)
    except BaseException:
        if o["output"]:
            f.close()
            os.unlink(o["output"] + ".skiff-tmp")
        raise
    finally:
        r.body.close()
    if o["output"]:
        f.close()
        os.rename(o["output"] + ".skiff-tmp", o["output"])
    else:
        f.flush()
    return 0
