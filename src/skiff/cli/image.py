"""Image commands: images, pull, tag, rmi, save, load, history."""

from __future__ import annotations

import sys

from skiff import fastjson
from skiff.cli.flags import Spec, parse
from skiff.cli.http import APIError, Client, CLIError, quote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

IMAGES_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"


def _out(s: str) -> None:
    sys.stdout.write(s + "\n")


def _err(s: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(s + "\n")


def _q(s: str) -> str:
    return quote(s, safe=":@")


IMAGES_SPEC = Spec("a|all", "q|quiet", "no-trunc", "digests", "format:", "f|filter=", "tree")


def images(cli: Client, args: list[str]) -> int:
    o, pos = parse(IMAGES_SPEC, args, True, "images")
    if len(pos) > 1:
        raise CLIError("\"docker images\" requires at most 1 argument.\nSee 'docker images --help'.", 1)
    if o["tree"]:
        raise CLIError("--tree is not supported by skiff", 1)
    f: dict = {}
    for it in o["filter"]:
        k, _, v = it.partition("=")
        f.setdefault(k, {})[v] = True
    if pos:
        f.setdefault("reference", {})[pos[0]] = True
    q: dict = {}
    if o["all"]:
        q["all"] = "1"
    if f:
        q["filters"] = f
    imgs = cli.get_json("/images/json", q)
    trunc = not o["no_trunc"]
    rows = []
    from skiff.cli.fmt import human_size, since

    want_digest = o["digests"] or ".Digest" in (o["format"] or "")
    for im in sorted(imgs, key=lambda i: -i.get("Created", 0)):
        iid = im.get("Id", "")
        short = iid.split(":", 1)[-1][:12] if trunc else iid
        tags = [t for t in (im.get("RepoTags") or []) if t != "<none>:<none>"] or ["<none>:<none>"]
        digests = im.get("RepoDigests") or []
        for t in tags:
            repo, _, tag = t.rpartition(":")
            dg = "<none>"
            for d in digests if want_digest else ():
                if d.split("@")[0] == repo:
                    dg = d.split("@", 1)[1]
            rows.append({"Repository": repo, "Tag": tag, "ID": short, "Digest": dg,
                         "CreatedSince": since(im.get("Created", 0)),
                         "CreatedAt": _ts(im.get("Created", 0)),
                         "Size": human_size(im.get("Size", 0)),
                         "Containers": "N/A" if im.get("Containers", -1) < 0 else str(im["Containers"]),
                         "SharedSize": "N/A" if im.get("SharedSize", -1) < 0 else human_size(im["SharedSize"]),
                         "UniqueSize": "N/A" if im.get("SharedSize", -1) < 0 else human_size(
                             im.get("Size", 0) - im["SharedSize"]),
                         "VirtualSize": human_size(im.get("Size", 0), 4)})
    if o["quiet"]:
        seen: list[str] = []
        for r in rows:
            if r["ID"] not in seen:
                seen.append(r["ID"])
        sys.stdout.write("".join(i + "\n" for i in seen))
        return 0
    fmt = o["format"] or (IMAGES_TABLE.replace("{{.Tag}}", "{{.Tag}}\t{{.Digest}}") if o["digests"] else IMAGES_TABLE)
    if fmt == "json":
        fmt = "{{json .}}"
        rows = [dict(sorted(r.items())) for r in rows]
    from skiff.cli.fmt import render

    text = render(fmt, rows, {"ID": "IMAGE ID"})
    if text or fmt.startswith("table"):
        _out(text)
    return 0


def _ts(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(t))


def _auth_header(cli: Client, ref: str) -> dict[str, str]:
    """X-Registry-Auth from $DOCKER_CONFIG/config.json's auths (base64 user:pass), or {}."""
    import base64
    import os

    cfgdir = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    path = os.path.join(cfgdir, "config.json")
    first = ref.split("/", 1)[0]
    registry = first if ("." in first or ":" in first or first == "localhost") and "/" in ref else "https://index.docker.io/v1/"
    ident: dict = {}
    try:
        cfg = fastjson.load_file(path)
    except (OSError, ValueError):
        cfg = {}
    ent = (cfg.get("auths") or {}).get(registry)
    if ent and ent.get("auth"):
        user, _, pw = base64.b64decode(ent["auth"]).decode().partition(":")
        ident = {"username": user, "password": pw, "serveraddress": registry}
    elif cfg.get("credsStore") and ent is not None:
        raise CLIError(f"credsStore \"{cfg['credsStore']}\" in {path} is not supported by skiff", 1)
    return {"X-Registry-Auth": base64.urlsafe_b64encode(fastjson.dumps(ident).encode()).decode()}


def pull_image(cli: Client, image: str, out: Any, quiet: bool = False, platform: str | None = None) -> None:
    from skiff.cli.container import _full_ref, _split_ref

    name, tag = _split_ref(image)
    q = {"fromImage": name, "tag": tag}
    if platform:
        q["platform"] = platform
    r = cli.request("POST", "/images/create", q, stream=True, headers=_auth_header(cli, name))
    if not quiet and "@" not in image and ":" not in image.rsplit("/", 1)[-1]:
        out.write("Using default tag: latest\n")
    try:
        show_progress(r.body, out, quiet)
    finally:
        r.body.close()
    if not quiet:
        pass
    sys.stdout.write(_full_ref(image) + "\n") if out is sys.stdout else None


def progress_bar(ev: dict, width: int = 50) -> str:
    """The progress part of one event: the daemon's ``progress`` string when it sent one, else a
    bar built from ``progressDetail`` (``[====>    ]  1.5MB/4MB``; only the count without a total)."""
    if ev.get("progress"):
        return str(ev["progress"])
    d = ev.get("progressDetail") or {}
    cur, total = d.get("current"), d.get("total")
    if not isinstance(cur, (int, float)) or cur <= 0 and not total:
        return ""
    from skiff.cli.fmt import human_size

    if not isinstance(total, (int, float)) or total <= 0:
        return human_size(cur)
    frac = min(max(cur / total, 0.0), 1.0)
    full = int(frac * width)
    bar = "=" * full + (">" + " " * (width - full - 1) if full < width else "")
    return f"[{bar}] {human_size(cur):>8}/{human_size(total)}"


def show_progress(body: Any, out: Any, quiet: bool = False) -> None:
    """Print a JSON message stream as docker's jsonmessage does. On a terminal each layer id keeps
    one line, rewritten in place (cursor up, clear line) with its status and progress bar; other
    output (``stream`` text, id-less statuses) is printed as it comes. Not on a terminal: plain
    lines, without the per-chunk progress updates. ``errorDetail``/``error`` ends it (CLIError)."""
    tty = not quiet and out.isatty()
    ids: list[str] = []
    for line in body.lines():
        ev = fastjson.loads(line)
        if ev.get("error") or ev.get("errorDetail"):
            msg = (ev.get("errorDetail") or {}).get("message") or ev.get("error")
            raise CLIError(msg, 1)
        if quiet:
            continue
        st = ev.get("status", "")
        lid = ev.get("id")
        if ev.get("stream"):
            out.write(ev["stream"])
            ids = []        # what follows the text starts a new block of layer lines
        elif lid and tty:
            text = f"{lid}: {st} {progress_bar(ev)}".rstrip()
            if lid in ids:
                up = len(ids) - ids.index(lid)
                out.write(f"\033[{up}A\r\033[2K{text}\r\033[{up}B")
            else:
                ids.append(lid)
                out.write(text + "\n")
        elif lid:
            if not ev.get("progress") and not ev.get("progressDetail"):   # plain: no per-chunk lines
                out.write(f"{lid}: {st}\n")
        elif st:
            ids = []
            bar = progress_bar(ev) if tty else ""
            out.write(f"{st} {bar}".rstrip() + "\n")
        out.flush()


PULL_SPEC = Spec("a|all-tags", "q|quiet", "platform:", "disable-content-trust")


def pull(cli: Client, args: list[str]) -> int:
    o, pos = parse(PULL_SPEC, args, True, "pull")
    if len(pos) != 1:
        raise CLIError("\"docker pull\" requires exactly 1 argument.\nSee 'docker pull --help'.", 1)
    if o["all_tags"]:
        raise CLIError("--all-tags is not supported by skiff", 1)
    try:
        pull_image(cli, pos[0], sys.stdout, o["quiet"], o["platform"])
    except APIError as e:
        raise CLIError(e.msg, 1) from None
    if o["quiet"]:
        from skiff.cli.container import _full_ref

        _out(_full_ref(pos[0]))
    return 0


def tag(cli: Client, args: list[str]) -> int:
    _, pos = parse(Spec(), args, True, "tag")
    if len(pos) != 2:
        raise CLIError("\"docker tag\" requires exactly 2 arguments.\nSee 'docker tag --help'.", 1)
    from skiff.cli.container import _split_ref

    repo, t = _split_ref(pos[1])
    cli.request("POST", f"/images/{_q(pos[0])}/tag", {"repo": repo, "tag": t})
    return 0


RMI_SPEC = Spec("f|force", "no-prune", "platform=")


def rmi(cli: Client, args: list[str]) -> int:
    o, names = parse(RMI_SPEC, args, True, "rmi")
    if not names:
        raise CLIError("\"docker rmi\" requires at least 1 argument.\nSee 'docker rmi --help'.", 1)
    rc = 0
    for n in names:
        try:
            res = cli.request("DELETE", f"/images/{_q(n)}", {"force": o["force"] or None,
                                                           "noprune": o["no_prune"] or None})
            for item in fastjson.loads(res.data) or []:  # type: ignore[attr-defined]
                for k in ("Untagged", "Deleted"):
                    if item.get(k):
                        _out(f"{k}: {item[k]}")
        except APIError as e:
            _err(e.msg)
            rc = 1
    return rc


SAVE_SPEC = Spec("o|output:", "platform=")


def save(cli: Client, args: list[str]) -> int:
    o, names = parse(SAVE_SPEC, args, True, "save")
    if not names:
        raise CLIError("\"docker save\" requires at least 1 argument.\nSee 'docker save --help'.", 1)
    if not o["output"] and sys.stdout.isatty():
        raise CLIError("cowardly refusing to save to a terminal. Use the -o flag or redirect", 1)
    from skiff.cli.http import quote

    url = cli.url("/images/get") + "?" + "&".join("names=" + quote(n, safe="") for n in names)
    r = cli._do("GET", url, None, None, {}, True)
    if r.status >= 400:
        raise cli._error(r)  # no too-new retry: save is rare; set DOCKER_API_VERSION for old daemons
    import os

    f: Any
    if o["output"]:
        tmp = o["output"] + ".skiff-tmp"
        f = open(tmp, "wb")  # closed below, renamed into place on success
    else:
        f = sys.stdout.buffer
    try:
        while True:
            b = r.body.read()
            if not b:
                break
            f.write(b)
    except BaseException:
        if o["output"]:
            f.close()
            os.unlink(tmp)
        raise
    finally:
        r.body.close()
    if o["output"]:
        f.close()
        os.rename(tmp, o["output"])
    else:
        f.flush()
    return 0


LOAD_SPEC = Spec("i|input:", "q|quiet", "platform=")


def load(cli: Client, args: list[str]) -> int:
    o, pos = parse(LOAD_SPEC, args, True, "load")
    if pos:
        raise CLIError("\"docker load\" accepts no arguments.\nSee 'docker load --help'.", 1)
    from skiff.cli.upload import copy_file, file_size

    f: Any
    if o["input"]:
        try:
            f = open(o["input"], "rb")  # closed below
        except OSError as e:
            raise CLIError(f"open {o['input']}: {e.strerror.lower() if e.strerror else e}", 1) from None
    else:
        if sys.stdin.isatty():
            raise CLIError("requested load from stdin, but stdin is empty", 1)
        f = sys.stdin.buffer
    try:
        r = cli.upload("POST", "/images/load", {"quiet": "1" if o["quiet"] else "0"}, copy_file(f),
                       "application/x-tar", file_size(f))
    finally:
        if o["input"]:
            f.close()
    try:
        show_progress(r.body, sys.stdout)
    finally:
        r.body.close()
    return 0


HISTORY_SPEC = Spec("H|human:", "no-trunc", "q|quiet", "format:", "platform:")


def history(cli: Client, args: list[str]) -> int:
    o, pos = parse(HISTORY_SPEC, args, True, "history")
    if len(pos) != 1:
        raise CLIError("\"docker history\" requires exactly 1 argument.\nSee 'docker history --help'.", 1)
    hs = cli.get_json(f"/images/{_q(pos[0])}/history")
    trunc = not o["no_trunc"]
    human = (o["human"] or "true").lower() in ("1", "true")
    from skiff.cli.fmt import ellipsis, human_size, since

    rows = []
    for h in hs:
        hid = h.get("Id") or "<missing>"
        if trunc and hid.startswith("sha256:"):
            hid = hid[7:19]
        cb = (h.get("CreatedBy") or "").replace("\t", " ")
        created = h.get("Created", 0)
        rows.append({"ID": hid, "CreatedSince": "N/A" if not created else since(created) if human else _ts(created),
                     "CreatedAt": _ts(h.get("Created", 0)),
                     "CreatedBy": ellipsis(cb, 45) if trunc else cb,
                     "Size": human_size(h.get("Size", 0)) if human else str(h.get("Size", 0)),
                     "Comment": h.get("Comment", "")})
    if o["quiet"]:
        sys.stdout.write("".join(r["ID"] + "\n" for r in rows))
        return 0
    fmt = o["format"] or "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    from skiff.cli.fmt import render

    _out(render(fmt, rows, {"ID": "IMAGE"}))
    return 0


PUSH_SPEC = Spec("a|all-tags", "q|quiet", "platform:", "disable-content-trust")


def push(cli: Client, args: list[str]) -> int:
    o, pos = parse(PUSH_SPEC, args, True, "push")
    if len(pos) != 1:
        raise CLIError("\"docker push\" requires exactly 1 argument.\nSee 'docker push --help'.", 1)
    from skiff.cli.container import _split_ref

    name, t = _split_ref(pos[0])
    q: dict = {"tag": None if o["all_tags"] else t}
    if o["platform"]:
        q["platform"] = o["platform"]
    if not o["all_tags"] and ":" not in pos[0].rsplit("/", 1)[-1] and "@" not in pos[0]:
        _out("Using default tag: latest")
    _out(f"The push refers to repository [{_full_name(name)}]")
    try:
        r = cli.request("POST", f"/images/{_q(name)}/push", q, stream=True, headers=_auth_header(cli, name))
    except APIError as e:
        raise CLIError(e.msg, 1) from None
    try:
        show_progress(r.body, sys.stdout, o["quiet"])
    finally:
        r.body.close()
    return 0


def _full_name(name: str) -> str:
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return "docker.io/" + (name if "/" in name else "library/" + name)


IMPORT_SPEC = Spec("c|change=", "m|message:", "platform:")


def import_(cli: Client, args: list[str]) -> int:
    o, pos = parse(IMPORT_SPEC, args, True, "import")
    if len(pos) not in (1, 2):
        raise CLIError("\"docker import\" requires at least 1 and at most 2 arguments.\nSee 'docker import --help'.", 1)
    from skiff.cli.container import _multi, _split_ref

    src = pos[0]
    q: dict = {"fromSrc": src if "://" in src else "-", "message": o["message"], "platform": o["platform"]}
    if len(pos) == 2:
        q["repo"], q["tag"] = _split_ref(pos[1])
    if o["change"]:
        q["changes"] = o["change"]
    if "://" in src:
        r = cli.request("POST", "/images/create", _multi(q), stream=True, raw_body=b"",
                        ctype="application/x-tar")
    else:
        from skiff.cli.upload import copy_file, file_size

        f: Any
        if src == "-":
            f = sys.stdin.buffer
        else:
            try:
                f = open(src, "rb")  # closed below
            except OSError as e:
                raise CLIError(f"open {src}: {(e.strerror or str(e)).lower()}", 1) from None
        try:
            r = cli.upload("POST", "/images/create", _multi(q), copy_file(f), "application/x-tar", file_size(f))
        finally:
            if src != "-":
                f.close()
    try:
        for line in r.body.lines():
            ev = fastjson.loads(line)
            if ev.get("error") or ev.get("errorDetail"):
                raise CLIError((ev.get("errorDetail") or {}).get("message") or ev["error"], 1)
            if ev.get("status") and not ev.get("id") and ev["status"].startswith("sha256:"):
                _out(ev["status"])
            elif ev.get("status") and ev.get("id") is None and "progress" not in ev:
                _out(ev["status"])
    finally:
        r.body.close()
    return 0
