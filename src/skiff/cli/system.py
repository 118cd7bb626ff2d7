"""version, info, events."""

from __future__ import annotations

import os
import sys
import time

from skiff import fastjson
from skiff.cli.flags import Spec, parse
from skiff.cli.http import Client, CLIError, ConnectError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CLIENT_VERSION = "28.2.2-skiff"


def _out(s: str) -> None:
    sys.stdout.write(s + "\n")


def _fmt(fmt: str, data: Any) -> str:
    from skiff.cli.template import Template, TemplateError

    if fmt == "json":
        fmt = "{{json .}}"
    try:
        return Template(fmt).execute(data)
    except TemplateError as e:
        raise CLIError(str(e), 1) from None


VERSION_SPEC = Spec("f|format:")


def version(cli: Client, args: list[str]) -> int:
    o, _ = parse(VERSION_SPEC, args, True, "version")
    import platform

    client = {"Platform": {"Name": ""}, "Version": CLIENT_VERSION, "ApiVersion": cli._negotiate(),
              "DefaultAPIVersion": "1.47", "GitCommit": "", "GoVersion": "python" + platform.python_version(),
              "Os": "linux", "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
              "BuildTime": "", "Context": "default"}
    server = None
    err = None
    try:
        server = cli.get_json("/version")
    except ConnectError as e:
        err = e
    data = {"Client": client, "Server": server}
    if o["format"]:
        _out(_fmt(o["format"], data))
        if err:
            raise err
        return 0
    lines = ["Client:", f" Version:           {client['Version']}", f" API version:       {client['ApiVersion']}",
             f" Go version:        {client['GoVersion']}", f" OS/Arch:           linux/{client['Arch']}",
             " Context:           default"]
    if server:
        lines += ["", f"Server: {(server.get('Platform') or {}).get('Name', '')}".rstrip()]
        for comp in server.get("Components") or [{"Name": "Engine", "Version": server.get("Version"), "Details": {}}]:
            lines.append(f" {comp.get('Name')}:")
            lines.append(f"  Version:          {comp.get('Version')}")
            det = comp.get("Details") or {}
            if comp.get("Name") == "Engine":
                lines.append(f"  API version:      {server.get('ApiVersion')} (minimum version {server.get('MinAPIVersion')})")
                lines.append(f"  OS/Arch:          {server.get('Os')}/{server.get('Arch')}")
            else:
                for k, v in det.items():
                    lines.append(f"  {k}:{' ' * max(1, 17 - len(k))}{v}")
    _out("\n".join(lines))
    if err:
        raise err
    return 0


INFO_SPEC = Spec("f|format:")


def info(cli: Client, args: list[str]) -> int:
    o, _ = parse(INFO_SPEC, args, True, "info")
    data = cli.get_json("/info")
    if o["format"]:
        _out(_fmt(o["format"], data))
        return 0
    from skiff.cli.fmt import bytes_size

    g = data.get
    lines = ["Client:", f" Version:    {CLIENT_VERSION}", " Context:    default", "", "Server:",
             f" Containers: {g('Containers', 0)}", f"  Running: {g('ContainersRunning', 0)}",
             f"  Paused: {g('ContainersPaused', 0)}", f"  Stopped: {g('ContainersStopped', 0)}",
             f" Images: {g('Images', 0)}", f" Server Version: {g('ServerVersion', '')}",
             f" Storage Driver: {g('Driver', '')}", f" Logging Driver: {g('LoggingDriver', '')}",
             f" Cgroup Driver: {g('CgroupDriver', '')}", f" Cgroup Version: {g('CgroupVersion', '')}",
             f" Default Runtime: {g('DefaultRuntime', '')}",
             f" Runtimes: {' '.join(sorted((g('Runtimes') or {}).keys()))}",
             " Security Options:"] + [f"  {s}" for s in g("SecurityOptions") or []] + [
             f" Kernel Version: {g('KernelVersion', '')}", f" Operating System: {g('OperatingSystem', '')}",
             f" OSType: {g('OSType', '')}", f" Architecture: {g('Architecture', '')}",
             f" CPUs: {g('NCPU', 0)}", f" Total Memory: {bytes_size(g('MemTotal', 0))}",
             f" Name: {g('Name', '')}", f" ID: {g('ID', '')}", f" Docker Root Dir: {g('DockerRootDir', '')}",
             f" Debug Mode: {str(bool(g('Debug'))).lower()}", f" Live Restore Enabled: {str(bool(g('LiveRestoreEnabled'))).lower()}"]
    _out("\n".join(lines))
    for w in g("Warnings") or []:
        sys.stderr.write(w + "\n")
    return 0


EVENTS_SPEC = Spec("since:", "until:", "f|filter=", "format:")


def events(cli: Client, args: list[str]) -> int:
    o, pos = parse(EVENTS_SPEC, args, True, "events")
    if pos:
        raise CLIError("\"docker events\" accepts no arguments.\nSee 'docker events --help'.", 1)
    from skiff.cli.container import _filters, _time_arg

    q: dict = {}
    if o["since"]:
        q["since"] = _time_arg(o["since"])
    if o["until"]:
        q["until"] = _time_arg(o["until"])
    f = _filters(o["filter"])
    if f:
        q["filters"] = f
    tmpl = None
    if o["format"]:
        from skiff.cli.template import Template

        tmpl = Template("{{json .}}" if o["format"] == "json" else o["format"])
    r = cli.request("GET", "/events", q, stream=True)
    try:
        for line in r.body.lines():
            ev = fastjson.loads(line)
            if tmpl is not None:
                _out(tmpl.execute(ev))
            else:
                _out(_event_line(ev))
            sys.stdout.flush()
    finally:
        r.body.close()
    return 0


def _event_line(ev: dict) -> str:
    tn = ev.get("timeNano") or int(ev.get("time", 0)) * 10**9
    secs, ns = divmod(int(tn), 10**9)
    lt = time.localtime(secs)
    off = lt.tm_gmtoff
    tz = "Z" if off == 0 and os.environ.get("TZ", "UTC") in ("UTC", "", "Etc/UTC") else \
        f"{'+' if off >= 0 else '-'}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}"
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", lt) + f".{ns:09d}" + tz
    actor = ev.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    a = ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs))
    return f"{ts} {ev.get('Type', '')} {ev.get('Action', '')} {actor.get('ID', '')}" + (f" ({a})" if a else "")


def _confirm(force: bool, msg: str) -> bool:
    if force:
        return True
    sys.stdout.write(msg + "\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


PRUNE_SPEC = Spec("f|force", "filter=", "a|all", "volumes")


def container_prune(cli: Client, args: list[str]) -> int:
    from skiff.cli.container import _filters
    from skiff.cli.fmt import human_size

    o, _ = parse(Spec("f|force", "filter="), args, True, "container prune")
    if not _confirm(o["force"], "WARNING! This will remove all stopped containers."):
        return 0
    f = _filters(o["filter"])
    r = cli.post_json("/containers/prune", {"filters": f} if f else None) or {}
    ids = r.get("ContainersDeleted") or []
    if ids:
        _out("Deleted Containers:\n" + "\n".join(ids) + "\n")
    _out(f"Total reclaimed space: {human_size(r.get('SpaceReclaimed') or 0)}")
    return 0


def image_prune(cli: Client, args: list[str]) -> int:
    from skiff.cli.container import _filters
    from skiff.cli.fmt import human_size

    o, _ = parse(Spec("f|force", "filter=", "a|all"), args, True, "image prune")
    warn = ("WARNING! This will remove all images without at least one container associated to them."
            if o["all"] else "WARNING! This will remove all dangling images.")
    if not _confirm(o["force"], warn):
        return 0
    f = _filters(o["filter"]) or {}
    f["dangling"] = {"false" if o["all"] else "true": True}
    r = cli.post_json("/images/prune", {"filters": f}) or {}
    items = r.get("ImagesDeleted") or []
    if items:
        lines = []
        for it in items:
            for k in ("Untagged", "Deleted"):
                if it.get(k):
                    lines.append(f"{k.lower()}: {it[k]}")
        _out("Deleted Images:\n" + "\n".join(lines) + "\n")
    _out(f"Total reclaimed space: {human_size(r.get('SpaceReclaimed') or 0)}")
    return 0


def system_prune(cli: Client, args: list[str]) -> int:
    o, _ = parse(PRUNE_SPEC, args, True, "system prune")
    what = ["all stopped containers", "all networks not used by at least one container"]
    if o["volumes"]:
        what.append("all anonymous volumes not used by at least one container")
    what.append("all images without at least one container associated to them" if o["all"]
                else "all dangling images")
    if not _confirm(o["force"], "WARNING! This will remove:\n" + "".join(f"  - {w}\n" for w in what).rstrip()):
        return 0
    fl = [x for f in o["filter"] for x in ("--filter", f)]
    container_prune(cli, ["-f", *fl])
    from skiff.cli.objects import network, volume

    network(cli, ["prune", "-f", *fl])
    if o["volumes"]:
        volume(cli, ["prune", "-f", *fl])
    image_prune(cli, ["-f", *(["-a"] if o["all"] else []), *fl])
    return 0


def df(cli: Client, args: list[str]) -> int:
    o, _ = parse(Spec("v|verbose", "format:"), args, True, "system df")
    if o["verbose"]:
        raise CLIError("system df --verbose is not supported by skiff", 1)
    from skiff.cli.fmt import human_size, render

    d = cli.get_json("/system/df") or {}
    imgs = d.get("Images") or []
    ctrs = d.get("Containers") or []
    vols = d.get("Volumes") or []
    cache = d.get("BuildCache") or []
    isize = sum(i.get("Size", 0) for i in imgs) - sum(max(i.get("SharedSize", 0), 0) for i in imgs[1:])
    iact = [i for i in imgs if (i.get("Containers") or 0) > 0]
    ireclaim = isize - sum(i.get("Size", 0) for i in iact)
    csize = sum(c.get("SizeRw") or 0 for c in ctrs)
    cact = [c for c in ctrs if c.get("State") == "running"]
    creclaim = csize - sum(c.get("SizeRw") or 0 for c in cact)
    vsize = sum((v.get("UsageData") or {}).get("Size", 0) or 0 for v in vols)
    vact = [v for v in vols if ((v.get("UsageData") or {}).get("RefCount") or 0) > 0]
    vreclaim = vsize - sum((v.get("UsageData") or {}).get("Size", 0) or 0 for v in vact)
    bsize = sum(b.get("Size", 0) for b in cache)

    def hs(n: float) -> str:
        return human_size(n, 4)

    def pct(r: float, t: float) -> str:
        return f"{hs(max(r, 0))} ({int(r * 100 / t)}%)" if t else hs(max(r, 0))
    rows = [
        {"Type": "Images", "TotalCount": str(len(imgs)), "Active": str(len(iact)), "Size": hs(isize),
         "Reclaimable": pct(ireclaim, isize)},
        {"Type": "Containers", "TotalCount": str(len(ctrs)), "Active": str(len(cact)), "Size": hs(csize),
         "Reclaimable": pct(creclaim, csize)},
        {"Type": "Local Volumes", "TotalCount": str(len(vols)), "Active": str(len(vact)),
         "Size": hs(vsize), "Reclaimable": pct(vreclaim, vsize)},
        {"Type": "Build Cache", "TotalCount": str(len(cache)), "Active": "0", "Size": hs(bsize),
         "Reclaimable": hs(bsize)},
    ]
    fmt = o["format"] or "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
    _out(render("{{json .}}" if fmt == "json" else fmt, rows,
                {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Reclaimable": "RECLAIMABLE"}))
    return 0


def _config_path() -> str:
    return os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json")


def login(cli: Client, args: list[str]) -> int:
    import base64

    o, pos = parse(Spec("u|username:", "p|password:", "password-stdin"), args, True, "login")
    server = pos[0] if pos else "https://index.docker.io/v1/"
    user = o["username"]
    pw = o["password"]
    if o["password_stdin"]:
        if pw:
            raise CLIError("--password and --password-stdin are mutually exclusive", 1)
        if not user:
            raise CLIError("Must provide --username with --password-stdin", 1)
        pw = sys.stdin.read().rstrip("\n").rstrip("\r")
    if not user:
        sys.stdout.write("Username: ")
        sys.stdout.flush()
        user = sys.stdin.readline().strip()
    if not pw:
        import getpass

        pw = getpass.getpass("Password: ")
    if not user or not pw:
        raise CLIError("Error: Non-null Username and Password Required", 1)
    r = cli.post_json("/auth", None, {"username": user, "password": pw, "serveraddress": server}) or {}
    path = _config_path()
    try:
        cfg = fastjson.load_file(path)
    except FileNotFoundError:
        cfg = {}
    except ValueError as e:
        raise CLIError(f"{path}: {e}", 1) from None
    if cfg.get("credsStore"):
        raise CLIError(f"credsStore \"{cfg['credsStore']}\" in {path} is not supported by skiff", 1)
    ent: dict = {"auth": base64.b64encode(f"{user}:{pw}".encode()).decode()}
    if r.get("IdentityToken"):
        ent = {"auth": base64.b64encode(f"{user}:".encode()).decode(), "identitytoken": r["IdentityToken"]}
    cfg.setdefault("auths", {})[server] = ent
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(fastjson.dumps(cfg, indent=1) + "\n")
    os.rename(tmp, path)
    sys.stderr.write(f"WARNING! Your credentials are stored unencrypted in '{path}'.\n")
    _out(r.get("Status") or "Login Succeeded")
    return 0


def logout(cli: Client, args: list[str]) -> int:
    _, pos = parse(Spec(), args, True, "logout")
    server = pos[0] if pos else "https://index.docker.io/v1/"
    path = _config_path()
    try:
        cfg = fastjson.load_file(path)
    except FileNotFoundError:
        cfg = {}
    if server not in (cfg.get("auths") or {}):
        _out(f"Not logged in to {server}")
        return 0
    del cfg["auths"][server]
    with open(path + ".tmp", "w") as f:
        f.write(fastjson.dumps(cfg, indent=1) + "\n")
    os.rename(path + ".tmp", path)
    _out(f"Removing login credentials for {server}")
    return 0
