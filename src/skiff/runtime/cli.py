"""``skiff-runc``: runc's command line over the runtime library.

Global flags come before the verb. Each verb is a thin module ``skiff.runtime.verbs.<verb>``
with ``run(ctx, args) -> int``; only the verb being run is imported.

Errors: a verb raises ``RuntimeFailure`` (or ``UsageError``); the CLI writes it to ``--log``
(containerd's shim reads the last JSON line ``{"level":"error","msg":...}`` from that file),
prints it on stderr, and exits 1, as runc does. Except, as crun: a verb whose stdio is the
container's (``create``, ``run``, ``exec``, ``restore``: a shim passes the container's FIFOs as
the runtime's fds) prints nothing there once the error is in ``--log``, so that the runtime's
message never shows up as the container's output (``docker run`` prints that stream).
"""

from __future__ import annotations

import os
import sys

CONTAINER_STDIO_VERBS = ("create", "run", "exec", "restore")
VERBS = ("create", "start", "run", "state", "kill", "delete", "exec", "ps", "list", "pause",
         "resume", "update", "events", "spec", "features", "checkpoint", "restore")
ALIASES = {"ls": "list"}
USAGE = """usage: skiff-runc [global options] command [command options] [arguments...]

An OCI runtime with runc's command line.

commands: create start run state kill delete exec ps list pause resume update events spec features

global options:
   --root DIR        state directory (default: /run/skiff-runc)
   --log FILE        log file (default: stderr only)
   --log-format FMT  text or json (default: text)
   --debug           log debug messages
   --systemd-cgroup  use systemd cgroups (not supported: cgroupfs is used)
   --version, -v     print the version
"""
DEFAULT_ROOT = "/run/skiff-runc"


class RuntimeFailure(Exception):
    """An operation failed; the message says what, on which container or path, and why."""


class Context:
    """Global options, shared by every verb."""

    __slots__ = ("root", "log_path", "log_format", "debug", "systemd_cgroup", "rootless", "verb")

    def __init__(self) -> None:
        self.root = DEFAULT_ROOT
        self.log_path = ""
        self.log_format = "text"
        self.debug = False
        self.systemd_cgroup = False
        self.rootless = "auto"
        self.verb = ""

    def log(self, level: str, msg: str) -> bool:
        """Append one record to ``--log`` (JSON lines as runc writes them, or text); whether it
        was written."""
        if not self.log_path or (level == "debug" and not self.debug):
            return False
        import time

        now = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
        if self.log_format == "json":
            from skiff import fastjson

            line = fastjson.dumps({"level": level, "msg": msg, "time": ts})
        else:
            line = f'time="{ts}" level={level} msg="{msg}"'
        try:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, line.encode() + b"\n")
            finally:
                os.close(fd)
        except OSError as e:
            sys.stderr.write(f"skiff-runc: cannot write log {self.log_path}: {e.strerror}\n")
            return False
        return True


_current: Context | None = None

# Verbs that move a process into a cgroup (``cgroup.procs``), whose first write waits for an
# RCU grace period (see ``_prime_cgroup_attach``).
ATTACH_VERBS = ("create", "run", "exec")
PRIMER_SHELL = "/bin/sh"
_primer = 0  # the pid of the primer process while it is not reaped


def _prime_cgroup_attach(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> None:
    """Start the kernel's ~10-15 ms wait of the first ``cgroup.procs`` write now, in a helper
    process, so that it overlaps the runtime's imports and config loading instead of delaying
    the container.

    Every write to a ``cgroup.procs`` file takes the kernel's global threadgroup rwsem for
    writing, and the first writer after an idle period waits for an RCU grace period
    (``rcu_sync_enter``); a writer that comes within about one grace period of the previous
    one does not wait. The helper (``sh -c 'echo 0 > FILE'``, spawned, stdio on /dev/null)
    writes "0", i.e. itself, to the cgroup it inherited from the runtime: a move to where it
    already is, which changes nothing. Any failure (no cgroupfs at the usual place, no
    permission, no shell) only means that the runtime's own write pays the wait itself: nothing
    is reported. The kernel holds its cgroup lock during the wait, so a ``mkdir`` in cgroupfs
    waits too: ``create`` forks the container's process first (it prepares its namespaces
    meanwhile), imports what comes later while ``primer_pending()``, and reaps the helper
    (``wait_primer``) after its mkdirs.

    A process rather than a thread: the runtime stays single-threaded, and no second thread
    competes for the interpreter's lock (on a busy machine, handing it to a thread that waits
    for a CPU stalls the runtime for as long).

    Tried in order: the cgroup v2 directory (hybrid ``<root>/unified``, then pure v2 ``<root>``),
    then each v1 hierarchy, from ``/proc/self/cgroup``; the first ``cgroup.procs`` that exists."""
    global _primer
    import posix

    try:
        with open(proc_cgroup, "rb") as f:
            lines = f.read().decode().splitlines()
    except OSError:
        return
    candidates: list[str] = []
    for line in lines:
        hid, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if hid == "0":
            candidates[:0] = [f"{root}/unified{path}", f"{root}{path}"]
        elif ctrls:
            candidates.append(f"{root}/{ctrls.removeprefix('name=')}{path}")
    for d in candidates:
        target = f"{d.rstrip('/')}/cgroup.procs"
        if not posix.access(target, posix.W_OK):
            continue
        devnull = [(posix.POSIX_SPAWN_OPEN, fd, "/dev/null", posix.O_RDWR, 0) for fd in (0, 1, 2)]
        try:
            _primer = posix.posix_spawn(PRIMER_SHELL, ["sh", "-c", 'echo 0 > "$1"', "sh", target], {},
                                        file_actions=devnull)
        except OSError:
            pass  # no shell: see above
        return


def primer_pending() -> bool:
    """Whether the primer process is still in its write."""
    global _primer
    if not _primer:
        return False
    import posix

    try:
        pid, _ = posix.waitpid(_primer, posix.WNOHANG)
    except ChildProcessError:
        pid = _primer  # reaped elsewhere (a wait for any child)
    if pid:
        _primer = 0
    return not pid


def wait_primer() -> None:
    """Reap the primer process, if there is one (waits for the end of its write)."""
    global _primer
    if _primer:
        import posix

        try:
            posix.waitpid(_primer, 0)
        except ChildProcessError:
            pass  # reaped elsewhere (a wait for any child)
        _primer = 0


def report(level: str, msg: str) -> None:
    """A warning, or a cleanup error beside the error that matters: into ``--log`` when the
    verb's stdio is the container's, else on stderr as ``skiff-runc: [warning: ]msg``."""
    ctx = _current
    if ctx is not None and ctx.verb in CONTAINER_STDIO_VERBS and ctx.log(level, msg):
        return
    sys.stderr.write(f"skiff-runc: {'warning: ' if level == 'warning' else ''}{msg}\n")


def main(argv: list[str] | None = None) -> int:
    global _current
    args = sys.argv[1:] if argv is None else argv
    ctx = Context()
    i = 0
    while i < len(args) and args[i].startswith("-"):
        a = args[i]
        name, eq, val = a.partition("=")
        if name in ("--version", "-v"):
            from skiff import __version__

            print(f"skiff-runc version {__version__}\nspec: 1.2.0")
            return 0
        if name in ("--help", "-h"):
            sys.stdout.write(USAGE)
            return 0
        if name in ("--debug", "--systemd-cgroup"):
            setattr(ctx, name[2:].replace("-", "_"), val != "false")
            i += 1
            continue
        if name in ("--root", "--log", "--log-format", "--rootless", "--criu"):
            if not eq:
                if i + 1 >= len(args):
                    sys.stderr.write(f"skiff-runc: flag needs an argument: {name}\n")
                    return 1
                val = args[i + 1]
                i += 1
            i += 1
            if name == "--root":
                ctx.root = val
            elif name == "--log":
                ctx.log_path = val
            elif name == "--log-format":
                if val not in ("text", "json"):
                    sys.stderr.write(f"skiff-runc: invalid log format {val!r} (text or json)\n")
                    return 1
                ctx.log_format = val
            elif name == "--rootless":
                ctx.rootless = val
            continue
        sys.stderr.write(f"skiff-runc: flag provided but not defined: {name}\n{USAGE}")
        return 1
    if i >= len(args):
        sys.stderr.write(USAGE)
        return 1
    verb = ALIASES.get(args[i], args[i])
    if verb not in VERBS:
        sys.stderr.write(f"skiff-runc: no such command: {args[i]}\n")
        return 1
    from skiff.runtime.flags import UsageError

    ctx.verb = verb
    _current = ctx
    if verb in ATTACH_VERBS:
        _prime_cgroup_attach()
    try:
        name = f"skiff.runtime.verbs.{verb}"
        __import__(name)  # importlib.import_module would import importlib (~1 ms)
        mod = sys.modules[name]
        return int(mod.run(ctx, args[i + 1:]) or 0)
    except UsageError as e:
        msg = f"{verb}: {e}"
    except RuntimeFailure as e:
        msg = str(e)
    except OSError as e:
        msg = f"{verb}: {e}"
    except KeyboardInterrupt:
        return 130
    finally:
        wait_primer()  # not left to a verb that failed before its fork
    if not ctx.log("error", msg) or verb not in CONTAINER_STDIO_VERBS:
        sys.stderr.write(f"skiff-runc: {msg}\n")
    return 1
