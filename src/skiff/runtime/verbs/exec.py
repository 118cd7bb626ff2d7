"""``exec``: run a new process in a running container."""

from __future__ import annotations

from skiff import fastjson as json
from skiff.runtime.flags import Flag, UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context

FLAGS = [
    Flag("--console-socket"), Flag("--cwd"), Flag("--env,-e", "list"), Flag("--tty,-t", "bool"),
    Flag("--user,-u"), Flag("--additional-gids,-g", "list"), Flag("--process,-p"),
    Flag("--detach,-d", "bool"), Flag("--pid-file"), Flag("--process-label"), Flag("--apparmor"),
    Flag("--no-new-privs", "bool"), Flag("--cap,-c", "list"), Flag("--preserve-fds", "int", 0),
    Flag("--cgroup", "list"), Flag("--ignore-paused", "bool"),
]


def build_process(opts: dict, argv: list[str], base: dict):
    """The process to run: ``--process`` file, or the container's process with the flags applied."""
    from skiff.oci.spec import SpecError, parse_process
    from skiff.runtime.cli import RuntimeFailure

    if opts["process"]:
        try:
            with open(opts["process"], "rb") as f:
                doc = json.loads(f.read())
        except OSError as e:
            raise RuntimeFailure(f"exec: read process file {opts['process']}: {e.strerror}") from None
        except ValueError as e:
            raise RuntimeFailure(f"exec: process file {opts['process']} is not valid JSON: {e}") from None
    else:
        if not argv:
            raise UsageError("exec: no command given (and no --process file)")
        doc = dict(base)
        doc["args"] = argv
        doc["terminal"] = opts["tty"]
        doc.pop("consoleSize", None)
        env = list(doc.get("env") or [])
        for var in opts["env"]:
            key = var.split("=", 1)[0]
            env = [x for x in env if x.split("=", 1)[0] != key] + [var]
        doc["env"] = env
        if opts["cwd"]:
            doc["cwd"] = opts["cwd"]
        user = dict(doc.get("user") or {})
        if opts["user"]:
            uid, _, gid = opts["user"].partition(":")
            try:
                user["uid"] = int(uid)
                user["gid"] = int(gid) if gid else 0
            except ValueError:
                raise UsageError(f"exec: --user {opts['user']!r}: expected UID[:GID] as numbers") from None
        if opts["additional_gids"]:
            try:
                user["additionalGids"] = [int(g) for g in opts["additional_gids"]]
            except ValueError:
                raise UsageError("exec: --additional-gids takes numbers") from None
        doc["user"] = user
        if opts["no_new_privs"]:
            doc["noNewPrivileges"] = True
        if opts["cap"]:
            caps = {k: list(v) for k, v in (doc.get("capabilities") or {}).items()}
            # As runc (>= 1.1.2, CVE-2022-29162): never into the inheritable set; into the
            # ambient set only when the process has an inheritable set (a cap can only be
            # ambient if it is inheritable too).
            kinds = ["bounding", "effective", "permitted"]
            if caps.get("inheritable") is not None:
                kinds.append("ambient")
            for c in opts["cap"]:
                for k in kinds:
                    if c not in caps.setdefault(k, []):
                        caps[k].append(c)
            doc["capabilities"] = caps
    try:
        return parse_process(doc, "process")
    except SpecError as e:
        raise RuntimeFailure(f"exec: invalid process: {e}") from None


def run(ctx: Context, args: list[str]) -> int:
    from skiff.runtime import state
    from skiff.runtime.launch import exec_process

    opts, pos = parse(args, FLAGS, stop_at_first_positional=True)
    if not pos:
        raise UsageError('"exec" requires at least 1 argument (the container id)')
    st = state.load(ctx.root, pos[0])
    proc = build_process(opts, pos[1:], st.config.get("process") or {})
    console_socket = opts["console_socket"] or ""
    return exec_process(ctx, st, proc, detach=opts["detach"], pid_file=opts["pid_file"] or "",
                        console_socket=console_socket, preserve_fds=opts["preserve_fds"],
                        own_console=proc.terminal and not console_socket and not opts["detach"])
