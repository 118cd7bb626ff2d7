"""``pause``: freeze every process of a running container."""

from __future__ import annotations

from skiff.runtime.flags import UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context


def run(ctx: Context, args: list[str]) -> int:
    from skiff.runtime import state
    from skiff.runtime.cgroups import load_manager
    from skiff.runtime.cli import RuntimeFailure

    _, pos = parse(args, [], positional_max=1)
    if not pos:
        raise UsageError('"pause" requires exactly 1 argument (the container id)')
    st = state.load(ctx.root, pos[0])
    status = st.status()
    if status != "running":
        raise RuntimeFailure(f"container {st.id} is not running (it is {status})")
    load_manager(st.cgroup).freeze()
    return 0
