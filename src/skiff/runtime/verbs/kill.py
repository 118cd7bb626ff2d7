"""``kill``: send a signal to the init (or, with ``--all``, every process of the container)."""

from __future__ import annotations

import os

from skiff.runtime.flags import Flag, UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context

SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
    "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22,
    "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29,
    "POLL": 29, "PWR": 30, "SYS": 31,
}


def parse_signal(s: str) -> int:
    """``9``, ``KILL``, ``SIGKILL``, ``sigkill``, ``RTMIN+3``."""
    from skiff.runtime.cli import RuntimeFailure

    if s.isdigit():
        n = int(s)
        if 0 < n <= 64:
            return n
        raise RuntimeFailure(f"invalid signal: {s}")
    name = s.upper().removeprefix("SIG")
    if name in SIGNALS:
        return SIGNALS[name]
    for base, num in (("RTMIN", 34), ("RTMAX", 64)):
        if name.startswith(base):
            rest = name[len(base):]
            try:
                n = num + int(rest) if rest else num
            except ValueError:
                break
            if 34 <= n <= 64:
                return n
    raise RuntimeFailure(f"unknown signal {s!r}")


def run(ctx: Context, args: list[str]) -> int:
    from skiff.runtime import state
    from skiff.runtime.cli import RuntimeFailure

    opts, pos = parse(args, [Flag("--all,-a", "bool")], positional_max=2)
    if not pos:
        raise UsageError('"kill" requires 1 or 2 arguments (the container id and a signal)')
    sig = parse_signal(pos[1] if len(pos) > 1 else "TERM")
    st = state.load(ctx.root, pos[0])
    status = st.status()
    if opts["all"] and st.cgroup and status != "creating":
        from skiff.runtime.cgroups import load_manager

        # As runc: --all also works once the init has exited. containerd's shim runs
        # `kill --all ID KILL` when the init of a container without its own PID namespace
        # exits, to end the processes it left behind in the container's cgroup.
        m = load_manager(st.cgroup)
        if status == "stopped" and not m.exists():
            return 0
        m.kill_all(sig)
        return 0
    if status in ("stopped", "creating"):
        raise RuntimeFailure("container not running")
    try:
        os.kill(st.pid, sig)
    except ProcessLookupError:
        raise RuntimeFailure("container not running") from None
    return 0
