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
    if not ctx.log("error", msg) or verb not in CONTAINER_STDIO_VERBS:
        sys.stderr.write(f"skiff-runc: {msg}\n")
    return 1
