"""`skiff stats`: one sample per container (--no-stream) or the daemon's stats streams, one
connection per container, with the table redrawn once a second. Kept out of container.py so
the hot path (`ps`, `inspect`) does not load it."""

from __future__ import annotations

import sys
import time

from skiff import fastjson
from skiff.cli.container import STATS_SPEC, _err, _out, _q
from skiff.cli.flags import parse
from skiff.cli.http import APIError, Client, CLIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATS_TABLE = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"


def _stats_row(arg: str, s: dict, trunc: bool) -> dict:
    from skiff.cli.fmt import bytes_size, human_size

    cpu = s.get("cpu_stats") or {}
    pre = s.get("precpu_stats") or {}
    cu = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get("total_usage", 0)
    sysd = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    cpup = cu / sysd * online * 100.0 if sysd > 0 and cu > 0 else 0.0
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage", 0) or 0
    st = mem.get("stats") or {}
    for k in ("total_inactive_file", "inactive_file"):
        if k in st and st[k] < usage:
            usage -= st[k]
            break
    limit = mem.get("limit", 0) or 0
    rx = tx = 0
    for n in (s.get("networks") or {}).values():
        rx += n.get("rx_bytes", 0)
        tx += n.get("tx_bytes", 0)
    rd = wr = 0
    for e in (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = (e.get("op") or "").lower()
        if op == "read":
            rd += e.get("value", 0)
        elif op == "write":
            wr += e.get("value", 0)
    cid = s.get("id", "")
    name = (s.get("name") or "").lstrip("/")
    return {"Container": arg, "Name": name, "ID": cid[:12] if trunc else cid,
            "CPUPerc": f"{cpup:.2f}%", "MemUsage": f"{bytes_size(usage)} / {bytes_size(limit)}",
            "MemPerc": f"{(usage / limit * 100.0 if limit else 0.0):.2f}%",
            "NetIO": f"{human_size(rx)} / {human_size(tx)}", "BlockIO": f"{human_size(rd)} / {human_size(wr)}",
            "PIDs": str((s.get("pids_stats") or {}).get("current", 0))}


def stats(cli: Client, args: list[str]) -> int:
    o, names = parse(STATS_SPEC, args, True, "stats")
    fmt = o["format"] or STATS_TABLE
    if fmt == "json":
        fmt = "{{json .}}"
    from skiff.cli.fmt import render

    if not o["no_stream"]:
        return _stats_stream(cli, names, o["all"], not o["no_trunc"], fmt, sys.stdout)
    targets = names
    if not targets:
        cs = cli.get_json("/containers/json", {"all": "1"} if o["all"] else None)
        targets = [c["Id"] for c in cs]
    rows = []
    rc = 0
    for n in targets:
        try:
            s = cli.get_json(f"/containers/{_q(n)}/stats", {"stream": "0"})
        except APIError as e:
            _err(e.msg)
            rc = 1
            continue
        rows.append(_stats_row(n, s, not o["no_trunc"]))
    text = render(fmt, rows)
    if text:
        _out(text)
    return rc


def _stats_stream(cli: Client, names: list[str], all_: bool, trunc: bool, fmt: str, out: Any,
                  interval: float = 1.0) -> int:
    """`stats` without --no-stream: one streaming GET /containers/{id}/stats per container, each
    read by its own thread that keeps the latest sample; the table is redrawn once per
    ``interval`` (cleared first on a terminal, printed again otherwise). Without names the
    container list is re-read each tick: new containers get a stream, gone ones leave the
    table. With names it ends (rc 1 if any failed) when no stream is left open."""
    import threading

    from skiff.cli.fmt import render

    latest: dict[str, dict] = {}
    open_streams: dict[str, Any] = {}
    order: list[str] = []
    lock = threading.Lock()
    wake = threading.Event()
    rc = 0
    tty = out.isatty()

    def reader(key: str, resp: Any) -> None:
        try:
            for line in resp.body.lines():
                try:
                    s = fastjson.loads(line)
                except ValueError:
                    continue
                with lock:
                    latest[key] = _stats_row(key, s, trunc)
                wake.set()
        except (CLIError, OSError):
            pass        # the daemon closed the stream (container gone) or the socket was shut
        finally:
            with lock:
                open_streams.pop(key, None)
                if not names:
                    latest.pop(key, None)
                    if key in order:
                        order.remove(key)
            resp.body.close()
            wake.set()

    def watch(key: str) -> bool:
        try:
            resp = cli.request("GET", f"/containers/{_q(key)}/stats", {"stream": "1"}, stream=True)
        except APIError as e:
            _err(e.msg)
            return False
        with lock:
            open_streams[key] = resp
            order.append(key)
        threading.Thread(target=reader, args=(key, resp), daemon=True).start()
        return True

    try:
        for n in names:
            if not watch(n):
                rc = 1
        next_draw = time.monotonic()
        while True:
            now = time.monotonic()
            with lock:
                done = bool(names) and not open_streams
            if done and not order:
                return rc       # every named container failed (errors printed)
            if now >= next_draw or done:
                if not names:
                    for c in cli.get_json("/containers/json", {"all": "1"} if all_ else None):
                        with lock:
                            known = c["Id"] in open_streams
                        if not known:
                            watch(c["Id"])
                with lock:
                    waiting = bool(open_streams) and not latest and not done
                if waiting:     # no first sample yet: wait for one (at most a tick) before drawing
                    wake.wait(interval)
                    wake.clear()
                    continue
                with lock:
                    rows = [latest[k] for k in order if k in latest]
                text = render(fmt, rows)
                if tty:
                    out.write("\033[2J\033[H")
                out.write(text + "\n" if text else "")
                out.flush()
                if done:
                    return rc
                next_draw = now + interval
            # woken early by a finished stream (to end at once); new samples wait for the tick
            wake.wait(max(0.0, next_draw - time.monotonic()))
            wake.clear()
    finally:
        with lock:
            pending = list(open_streams.values())
        for resp in pending:
            resp.body.close()
