"""``ps``: the processes of a container (``ps`` output filtered by its cgroup, or JSON pids)."""

from __future__ import annotations

from skiff import fastjson as json
from skiff.runtime.flags import Flag, UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context


def run(ctx: Context, args: list[str]) -> int:
    from skiff.runtime import state
    from skiff.runtime.cgroups import load_manager
    from skiff.runtime.cli import RuntimeFailure

    opts, pos = parse(args, [Flag("--format,-f", default="table")], stop_at_first_positional=True)
    if not pos:
        raise UsageError('"ps" requires at least 1 argument (the container id)')
    st = state.load(ctx.root, pos[0])
    if st.status() in ("stopped", "creating") or not st.cgroup:
        raise RuntimeFailure("container not running" if st.cgroup else f"container {st.id} has no cgroup")
    pids = load_manager(st.cgroup).pids()
    if opts["format"] == "json":
        print(json.dumps(pids))
        return 0
    if opts["format"] != "table":
        raise UsageError(f"invalid format option {opts['format']!r} (table or json)")
    import subprocess

    ps_args = pos[1:] or ["-ef"]
    try:
        out = subprocess.run(["ps", *ps_args], capture_output=True, check=True, text=True).stdout
    except FileNotFoundError:
        raise RuntimeFailure("ps: the ps command is not installed") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeFailure(f"ps {' '.join(ps_args)}: {e.stderr.strip()}") from None
    lines = out.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    try:
        col = header.index("PID")
    except ValueError:
        raise RuntimeFailure("couldn't find PID field in ps output") from None
    wanted = set(pids)
    print(lines[0])
    for line in lines[1:]:
        fields = line.split(None, col + 1)
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in wanted:
            print(line)
    return 0
