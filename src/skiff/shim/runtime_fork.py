"""Run skiff-runc in a fork of the shim instead of exec'ing its launcher.

A runtime command costs a new interpreter when it is exec'd: CPython's start-up and the import of
the runtime's modules, 10-20 ms per call, three calls (create, start, delete) per container
run. A shim forked from the zygote already holds those modules (the zygote imports them,
``preload``), so a fork of the shim that calls ``skiff.runtime.cli.main(args)`` does the same
work without them.

Only used when that is the same program as the one the shim would exec (``can_fork``): the
runtime path is a lean launcher of ``skiff.runtime.cli`` (``python -m skiff.launchers``) that
puts this very source tree first on ``sys.path``, its interpreter is this interpreter, and the
runtime modules are already imported in this process (a shim started without the zygote spawns
the launcher: importing the runtime into every such shim would cost it more memory than it
saves). Any other runtime (runc, crun, a wrapper, another skiff install) is spawned as before.

The child is made to look like a freshly exec'd launcher: stdio from the given fds (as
posix_spawn's dup2 actions do), every close-on-exec descriptor closed (what exec would do), the
signal mask empty, dispositions as at interpreter start (SIGPIPE ignored, SIGINT raising
KeyboardInterrupt, the rest default), no wake-up fd, new ``sys.std*`` objects on fds 0-2; it
flushes them and leaves with ``os._exit`` (as the launcher does), with the exit status of
``main`` (1 and a traceback on stderr for an uncaught exception, as the interpreter would).

One difference is by design: a zygote keeps the runtime code it imported when it started, as a
running daemon keeps the library it loaded; installing a new skiff takes effect for the shims of
the next skiff-containerd (which starts a new zygote).
"""

from __future__ import annotations

import _signal
import os
import sys

# what the runtime's create/start/delete/kill/state/exec paths import (best effort: a module
# missing here is imported by the child when it needs it)
PRELOAD = (
    "skiff.runtime.cli", "skiff.runtime.flags", "skiff.runtime.paths", "skiff.runtime.state",
    "skiff.runtime.start", "skiff.runtime.destroy", "skiff.runtime.process", "skiff.runtime.launch",
    "skiff.runtime.rootfs", "skiff.runtime.caps", "skiff.runtime.hooks", "skiff.runtime.console",
    "skiff.runtime.sync", "skiff.runtime.syscalls", "skiff.runtime.clib", "skiff.runtime.seccomp",
    "skiff.runtime.cgroups",
    "skiff.runtime.verbs.create", "skiff.runtime.verbs.start", "skiff.runtime.verbs.delete",
    "skiff.runtime.verbs.kill", "skiff.runtime.verbs.state", "skiff.runtime.verbs.exec",
    "skiff.runtime.verbs.pause", "skiff.runtime.verbs.resume", "skiff.runtime.verbs.ps",
)

_checked: dict[str, tuple[int, int, bool]] = {}  # path -> (mtime_ns, size, answer)


def preload() -> list[str]:
    """Import the runtime's modules (in the zygote); returns the ones that could not be."""
    missing = []
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError as e:
            missing.append(f"{name} ({e})")
    return missing


def _source_root() -> str:
    import skiff

    return os.path.dirname(os.path.dirname(os.path.abspath(skiff.__file__)))


def _resolve(runtime: str) -> str:
    if "/" in runtime:
        return runtime
    for d in os.get_exec_path():
        p = os.path.join(d, runtime)
        if os.access(p, os.X_OK):
            return p
    return ""


def can_fork(runtime: str) -> bool:
    """Whether ``runtime`` may run as ``fork_runtime`` (see the module's docstring)."""
    if "skiff.runtime.cli" not in sys.modules:
        return False
    path = _resolve(runtime)
    if not path:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    cached = _checked.get(path)
    if cached is not None and cached[:2] == (st.st_mtime_ns, st.st_size):
        return cached[2]
    answer = False
    try:
        with open(path, "rb") as f:
            head = f.read(2048).decode("utf-8", "replace")
    except OSError:
        head = ""
    lines = head.splitlines()
    if lines and lines[0].startswith("#!"):
        words = lines[0][2:].split()
        interp = words[0] if words else ""
        answer = (bool(interp) and os.path.realpath(interp) == os.path.realpath(sys.executable)
                  and f"sys.path.insert(0, {_source_root()!r})" in lines
                  and "from skiff.runtime.cli import main" in lines
                  and "code = main()" in lines)
    _checked[path] = (st.st_mtime_ns, st.st_size, answer)
    return answer


def _close_cloexec_fds() -> None:
    import fcntl

    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd < 3:
            continue
        try:
            if fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                os.close(fd)
        except OSError:
            pass  # the directory's own fd, gone already


def fork_runtime(argv: list[str], fds: list[int]) -> int:
    """Fork; the child runs ``skiff.runtime.cli.main(argv[1:])`` with fds ``fds`` as its 0, 1,
    2 and exits; returns the child's pid (reaped by the caller like a spawned one)."""
    from skiff.runtime.cli import main

    for f in (sys.stdout, sys.stderr):
        if f is not None:
            f.flush()
    pid = os.fork()
    if pid:
        return pid
    code: object = 1
    try:
        for i, fd in enumerate(fds):
            if fd == i:
                os.set_inheritable(fd, True)
            else:
                os.dup2(fd, i)
        _close_cloexec_fds()
        _signal.set_wakeup_fd(-1)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
        for sig in (_signal.SIGHUP, _signal.SIGCHLD, _signal.SIGTERM, _signal.SIGQUIT, _signal.SIGUSR1,
                    _signal.SIGUSR2, _signal.SIGALRM):
            _signal.signal(sig, _signal.SIG_DFL)
        _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False, errors="backslashreplace")
        sys.argv = list(argv)
        code = main(argv[1:])
    except SystemExit as e:
        code = e.code
        if isinstance(code, str):
            sys.stderr.write(code + "\n")
            code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:
                pass  # as the launcher: nothing is left to report to
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))
