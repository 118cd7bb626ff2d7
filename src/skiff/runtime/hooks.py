"""OCI hooks: run a hook with the container state on stdin, honouring its timeout.

Which namespace a hook runs in is the caller's business: prestart, createRuntime, poststart and
poststop are run by the runtime process (runtime namespace); createContainer and startContainer
by the container's init (container namespaces).
"""

from __future__ import annotations

import os
import time

from skiff import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.oci.spec import Hook


class HookError(Exception):
    pass


def run_hook(hook: Hook, state: dict, index: int, kind: str) -> None:
    """Run one hook; raise HookError when it fails, times out or cannot start."""
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    argv = hook.args or [hook.path]
    env = hook.env
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(stdin_r, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            os.execve(hook.path, argv, dict(e.split("=", 1) for e in env if "=" in e))
        except OSError as e:
            os.write(2, f"exec {hook.path}: {e.strerror}".encode())
        os._exit(127)
    os.close(stdin_r)
    os.close(out_w)
    try:
        os.write(stdin_w, json.dumps(state).encode())
    except BrokenPipeError:
        pass  # the hook need not read its stdin
    os.close(stdin_w)
    deadline = time.monotonic() + hook.timeout if hook.timeout else None
    output = b""
    os.set_blocking(out_r, False)
    status = None
    while status is None:
        wpid, st = os.waitpid(pid, os.WNOHANG)
        try:
            while chunk := os.read(out_r, 65536):
                output = (output + chunk)[-4096:]
        except BlockingIOError:
            pass
        if wpid:
            status = st
            break
        if deadline is not None and time.monotonic() > deadline:
            os.kill(pid, 9)  # SIGKILL
            os.waitpid(pid, 0)
            os.close(out_r)
            raise HookError(f"error running {kind} hook #{index} ({hook.path}): "
                            f"timed out after {hook.timeout}s")
        time.sleep(0.002)
    os.close(out_r)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        what = f"exit status {code}" if code > 0 else f"killed by signal {-code}"
        raise HookError(f"error running {kind} hook #{index} ({hook.path}): {what}, "
                        f"output: {output.decode(errors='replace').strip()}")


def run_hooks(hooks: list[Hook], state: dict, kind: str, *, warn_only: bool = False) -> None:
    """Run hooks in order. The first failure raises, unless ``warn_only`` (poststart, poststop:
    the spec says their failure is logged and the lifecycle continues)."""

    for i, h in enumerate(hooks):
        try:
            run_hook(h, state, i, kind)
        except HookError as e:
            if not warn_only:
                raise
            from skiff.runtime.cli import report

            report("warning", str(e))
