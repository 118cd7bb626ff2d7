"""``create``: set a container up; its init waits for ``start``."""

from __future__ import annotations

from skiff.runtime.flags import Flag, UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context

FLAGS = [
    Flag("--bundle,-b", default="."),
    Flag("--console-socket"),
    Flag("--pid-file"),
    Flag("--no-pivot", "bool"),
    Flag("--no-new-keyring", "bool"),
    Flag("--preserve-fds", "int", 0),
]


def run(ctx: Context, args: list[str]) -> int:
    from skiff.runtime.launch import create

    opts, pos = parse(args, FLAGS, positional_max=1)
    if not pos:
        raise UsageError('"create" requires exactly 1 argument (the container id)')
    create(ctx, pos[0], opts["bundle"], pid_file=opts["pid_file"] or "",
           console_socket=opts["console_socket"] or "", no_pivot=opts["no_pivot"],
           preserve_fds=opts["preserve_fds"])
    return 0
