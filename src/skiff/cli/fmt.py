"""Docker's human formats (go-units) and its tabwriter table layout."""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_DEC = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
_BIN = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def _gofmt_g(v: float, prec: int) -> str:
    return f"{v:.{prec}g}"


def human_size(n: float, prec: int = 3) -> str:
    """units.HumanSizeWithPrecision: decimal units."""
    i = 0
    v = float(n)
    while v >= 1000.0 and i < len(_DEC) - 1:
        v /= 1000.0
        i += 1
    return _gofmt_g(v, prec) + _DEC[i]


def bytes_size(n: float) -> str:
    """units.BytesSize: binary units, 4 significant digits."""
    i = 0
    v = float(n)
    while v >= 1024.0 and i < len(_BIN) - 1:
        v /= 1024.0
        i += 1
    return _gofmt_g(v, 4) + _BIN[i]


def human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = int(seconds / 60)
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = int(seconds / 3600 + 0.5)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def since(ts: float) -> str:
    return human_duration(time.time() - ts) + " ago"


def parse_rfc3339(s: str) -> float:
    """'2026-11-27T23:50:00.123456789Z' (or +hh:mm) -> unix seconds."""
    import calendar

    if not s or s.startswith("0001-"):
        return 0.0
    tz = 0
    main = s
    if s.endswith("Z"):
        main = s[:-1]
    elif len(s) > 6 and s[-6] in "+-" and s[-3] == ":":
        sign = 1 if s[-6] == "+" else -1
        tz = sign * (int(s[-5:-3]) * 3600 + int(s[-2:]) * 60)
        main = s[:-6]
    date, _, clock = main.partition("T")
    frac = 0.0
    if "." in clock:
        clock, f = clock.split(".", 1)
        frac = float("0." + f)
    y, mo, d = (int(x) for x in date.split("-"))
    hh, mm, ss = (int(x) for x in clock.split(":"))
    return calendar.timegm((y, mo, d, hh, mm, ss, 0, 0, 0)) - tz + frac


def ellipsis(s: str, n: int) -> str:
    if len(s) <= n:
        return s
    if n <= 1:
        return s[:n]
    return s[:n - 1] + "…"


def tabwrite(lines: list[str], minwidth: int = 10, padding: int = 3) -> str:
    """text/tabwriter with docker's settings: cells end at tabs; a column's width is
    max(widest cell + padding, minwidth); the text after the last tab is not padded.
    Like tabwriter, a column block ends at a line with fewer cells."""
    rows = [ln.split("\t") for ln in lines]
    out = []
    # compute widths per column over consecutive rows having that column as a terminated cell
    ncols = max((len(r) for r in rows), default=0)
    widths = [0] * ncols
    for r in rows:
        for ci, cell in enumerate(r[:-1]):
            w = len(cell) + padding
            if w > widths[ci]:
                widths[ci] = w
    widths = [max(w, minwidth) for w in widths]
    for r in rows:
        parts = [cell.ljust(widths[ci]) for ci, cell in enumerate(r[:-1])]
        parts.append(r[-1])
        out.append("".join(parts).rstrip(" ") if not r[-1] else "".join(parts))
    return "\n".join(out)


HEADERS = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED", "Ports": "PORTS", "Status": "STATUS", "Size": "SIZE",
    "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
    "State": "STATE", "LocalVolumes": "LOCAL VOLUMES", "Platform": "PLATFORM",
    "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "CreatedSince": "CREATED",
    "Container": "CONTAINER", "Name": "NAME", "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS",
    "CreatedBy": "CREATED BY", "Comment": "COMMENT", "Driver": "DRIVER", "Scope": "SCOPE",
}


def render(fmt: str, rows: list[Any], headers: dict[str, str] | None = None,
           id_header: str | None = None) -> str:
    """Render rows with a --format value ("table ..." gets a header line and tab alignment)."""
    from skiff.cli.template import Template, TemplateError

    table = fmt.startswith("table")
    if table:
        fmt = fmt[5:].lstrip()
    fmt = fmt.replace("\\t", "\t").replace("\\n", "\n")
    tmpl = Template(fmt)
    lines = []
    if table:
        hdr = dict(HEADERS)
        if id_header:
            hdr["ID"] = id_header
        if headers:
            hdr.update(headers)
        lines.append(_header_line(fmt, hdr))
    try:
        for row in rows:
            lines.append(tmpl.execute(row))
    except TemplateError as e:
        raise TemplateError(f"failed to execute template: {e.msg}") from None
    if table:
        return tabwrite("\n".join(lines).split("\n"))
    return "\n".join(lines)


def _header_line(fmt: str, hdr: dict[str, str]) -> str:
    out = []
    pos = 0
    while True:
        i = fmt.find("{{", pos)
        if i < 0:
            out.append(fmt[pos:])
            break
        j = fmt.find("}}", i)
        if j < 0:
            out.append(fmt[pos:])
            break
        out.append(fmt[pos:i])
        inner = fmt[i + 2:j]
        k = inner.find(".")
        if k >= 0:
            e = k + 1
            while e < len(inner) and (inner[e].isalnum() or inner[e] == "_"):
                e += 1
            name = inner[k + 1:e]
            out.append(hdr.get(name, name.upper()))
        pos = j + 2
    return "".join(out)
