"""``start``: release a created container's init."""

from __future__ import annotations

from skiff.runtime.flags import UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context


def run(ctx: Context, args: list[str]) -> int:
    from skiff.runtime import state
    from skiff.runtime.start import start

    _, pos = parse(args, [], positional_max=1)
    if not pos:
        raise UsageError('"start" requires exactly 1 argument (the container id)')
    start(state.load(ctx.root, pos[0]))
    return 0
