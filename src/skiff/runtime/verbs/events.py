"""``events``: stats (once with ``--stats``, else every ``--interval``) and OOM notices, as JSON lines."""

from __future__ import annotations

import sys
import time

from skiff import fastjson as json
from skiff.runtime.flags import Flag, UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context


def parse_duration(s: str) -> float:
    """Go durations as runc takes them: ``5s``, ``500ms``, ``1m``, ``1m30s``."""
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, num, i = 0.0, "", 0
    if not s:
        raise UsageError("invalid duration ''")
    while i < len(s):
        c = s[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        unit = s[i:i + 2] if s[i:i + 2] in units else c
        if unit not in units or not num:
            raise UsageError(f"invalid duration {s!r}")
        total += float(num) * units[unit]
        num = ""
        i += len(unit)
    if num:
        raise UsageError(f"invalid duration {s!r}: missing unit")
    if total <= 0:
        raise UsageError(f"duration must be greater than 0: {s}")
    return total


def run(ctx: Context, args: list[str]) -> int:
    from skiff.runtime import state
    from skiff.runtime.cgroups import load_manager
    from skiff.runtime.cli import RuntimeFailure

    opts, pos = parse(args, [Flag("--interval", default="5s"), Flag("--stats", "bool")], positional_max=1)
    if not pos:
        raise UsageError('"events" requires exactly 1 argument (the container id)')
    interval = parse_duration(opts["interval"])
    st = state.load(ctx.root, pos[0])
    if st.status() in ("stopped", "creating"):
        raise RuntimeFailure(f"container with id {st.id} is not running")
    cg = load_manager(st.cgroup)

    def emit(kind: str, data: object = None) -> None:
        ev: dict = {"type": kind, "id": st.id}
        if data is not None:
            ev["data"] = data
        sys.stdout.write(json.dumps(ev) + "\n")
        sys.stdout.flush()

    if opts["stats"]:
        emit("stats", cg.stats())
        return 0
    ooms = cg.oom_kill_count()
    next_stats = time.monotonic()
    while st.alive():
        now = time.monotonic()
        if now >= next_stats:
            emit("stats", cg.stats())
            next_stats = now + interval
        n = cg.oom_kill_count()
        if n > ooms:
            ooms = n
            emit("oom")
        time.sleep(min(0.2, interval))
    return 0
