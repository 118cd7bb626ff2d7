"""``delete``: remove a stopped container (``--force``: kill it first)."""

from __future__ import annotations

from skiff.runtime.flags import Flag, UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context


def run(ctx: Context, args: list[str]) -> int:
    import os

    from skiff.runtime import state
    from skiff.runtime.cli import RuntimeFailure
    from skiff.runtime.destroy import destroy

    opts, pos = parse(args, [Flag("--force,-f", "bool")])
    if not pos:
        raise UsageError('"delete" requires at least 1 argument (the container id)')
    for cid in pos:
        try:
            st = state.load(ctx.root, cid)
        except RuntimeFailure:
            if opts["force"]:
                continue  # runc: deleting a missing container with --force is not an error
            raise
        if not os.path.exists(os.path.join(st.dir, state.STATE_FILE)) and not opts["force"]:
            raise RuntimeFailure(f"cannot delete container {cid}: it is still being created")
        destroy(st, force=opts["force"])
    return 0
