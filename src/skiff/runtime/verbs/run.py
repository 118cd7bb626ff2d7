"""``run``: create and start; in the foreground, wait and return the container's exit status."""

from __future__ import annotations

from skiff.runtime.flags import Flag, UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context

FLAGS = [
    Flag("--bundle,-b", default="."),
    Flag("--console-socket"),
    Flag("--pid-file"),
    Flag("--detach,-d", "bool"),
    Flag("--keep", "bool"),
    Flag("--no-pivot", "bool"),
    Flag("--no-new-keyring", "bool"),
    Flag("--no-subreaper", "bool"),
    Flag("--preserve-fds", "int", 0),
]


def run(ctx: Context, args: list[str]) -> int:
    from skiff.runtime.launch import OwnConsole, create, wait_forwarding_signals
    from skiff.runtime.start import start

    opts, pos = parse(args, FLAGS, positional_max=1)
    if not pos:
        raise UsageError('"run" requires exactly 1 argument (the container id)')
    detach = opts["detach"]
    if opts["console_socket"] and not detach:
        from skiff.runtime.cli import RuntimeFailure

        raise RuntimeFailure("cannot use console socket if skiff-runc will not detach or allocate tty")
    # in the foreground with a terminal and no console socket, run keeps the pty itself
    own = None if detach or opts["console_socket"] else OwnConsole()
    st = create(ctx, pos[0], opts["bundle"], pid_file=opts["pid_file"] or "",
                console_socket=opts["console_socket"] or "", no_pivot=opts["no_pivot"],
                preserve_fds=opts["preserve_fds"], subreaper=not detach, own_console=own)
    try:
        try:
            start(st)
        except BaseException:
            from skiff.runtime.destroy import destroy

            destroy(st, force=True)
            raise
        if detach:
            return 0
        code = wait_forwarding_signals(st.pid, own)
    finally:
        if own is not None:
            own.close()
    if not opts["keep"]:
        from skiff.runtime.destroy import destroy

        destroy(st, force=True)
    return code
