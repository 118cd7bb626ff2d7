"""Tearing a container down: kill what is left, remove its cgroup, run poststop, drop the state."""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.state import ContainerState


def wait_gone(st: ContainerState, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while st.alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def remove_state_dir(path: str) -> None:
    """Remove a container's state directory (flat: state.json, the FIFO, temp files).
    Not shutil.rmtree: importing shutil costs more than the whole removal."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for n in names:
        p = os.path.join(path, n)
        if os.path.isdir(p) and not os.path.islink(p):
            remove_state_dir(p)
        else:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def destroy(st: ContainerState, *, force: bool) -> None:
    from skiff.runtime.cli import RuntimeFailure

    status = st.status()
    if status in ("running", "paused") and not force:
        raise RuntimeFailure(f"cannot delete container {st.id} that is not stopped: {status}")
    cg = None
    if st.cgroup:
        from skiff.runtime.cgroups import load_manager

        cg = load_manager(st.cgroup)
    if st.pid and status != "stopped":
        if cg is not None and cg.exists():
            cg.kill_all(9)
            if status == "paused":
                cg.thaw()  # frozen tasks only die once thawed
        try:
            os.kill(st.pid, 9)
        except ProcessLookupError:
            pass
        if not wait_gone(st):
            raise RuntimeFailure(f"container {st.id}: init {st.pid} did not exit after SIGKILL")
    if cg is not None:
        cg.destroy()
    if st.rootfs_mount:
        # no mount namespace: the container's mounts live in ours, below its rootfs bind
        from skiff.runtime.rootfs import release_rootfs
        from skiff.runtime.syscalls import LinuxSyscalls

        release_rootfs(LinuxSyscalls(), st.rootfs, st.rootfs_mount)
    hooks = (st.config.get("hooks") or {}).get("poststop")
    if hooks:
        from skiff.oci.spec import parse_config
        from skiff.runtime.hooks import run_hooks

        run_hooks(parse_config(st.config).hooks.get("poststop", []), st.oci_state("stopped"),
                  "poststop", warn_only=True)
    remove_state_dir(st.dir)
    if os.path.exists(st.dir):
        raise RuntimeFailure(f"container {st.id}: cannot remove state directory {st.dir}")
