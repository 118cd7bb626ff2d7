"""Behaviours fixed for the OCI runtime-tools validation suite (no root).

- a container without a mount namespace: prepare_rootfs leaves the runtime's "/" alone,
  enter_rootfs chroots, and the rootfs bind is found (top_mount_id) and detached at delete
  (release_rootfs);
- ``start`` waits until the init has exec'd the process (end-of-file on the exec FIFO,
  wait_exec) before the poststart hooks.

The root tests of the same fixes are in tests/root/test_runtime_conformance_fixes.py.
"""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from skiff.oci.spec import parse_config
from skiff.runtime.rootfs import (
    RootfsError,
    enter_rootfs,
    prepare_rootfs,
    release_rootfs,
    top_mount_id,
)
from skiff.runtime.start import wait_exec
from skiff.runtime.syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_MOVE,
    MS_PRIVATE,
    MS_REC,
    MS_SHARED,
    MS_SLAVE,
    RecordingSyscalls,
)


def _config(root: str, **linux: object):
    return parse_config({"ociVersion": "1.2.0", "root": {"path": root}, "mounts": [],
                         "process": {"args": ["sh"], "cwd": "/"}, "linux": dict(linux)})


def _rootfs(tmp_path) -> str:
    root = os.path.realpath(tmp_path / "rootfs")
    for d in ("dev", "proc"):
        os.makedirs(os.path.join(root, d))
    return root


# --- no mount namespace: set-up --------------------------------------------------------------

def test_without_mount_namespace_the_runtime_root_is_left_alone(tmp_path) -> None:
    root = _rootfs(tmp_path)
    sys = RecordingSyscalls()
    prepare_rootfs(sys, _config(root), mount_ns=False, host_proc=str(tmp_path))
    mounts = [c for c in sys.calls if c[0] == "mount"]
    assert all(c[2] != "/" for c in mounts), mounts  # no rslave/rprivate of the shared "/"
    assert mounts[0] == ("mount", root, root, None, MS_BIND | MS_REC, None)


def test_with_mount_namespace_root_is_made_rslave_first(tmp_path) -> None:
    root = _rootfs(tmp_path)
    sys = RecordingSyscalls()
    prepare_rootfs(sys, _config(root), host_proc=str(tmp_path))
    assert sys.calls[0] == ("mount", None, "/", None, MS_SLAVE | MS_REC, None)


def test_without_mount_namespace_private_propagation_applies_to_the_rootfs(tmp_path) -> None:
    root = _rootfs(tmp_path)
    sys = RecordingSyscalls()
    prepare_rootfs(sys, _config(root, rootfsPropagation="rprivate"), mount_ns=False,
                   host_proc=str(tmp_path))
    assert sys.calls[:2] == [("mount", root, root, None, MS_BIND | MS_REC, None),
                             ("mount", None, root, None, MS_PRIVATE | MS_REC, None)]


def test_without_mount_namespace_enter_chroots_even_with_no_pivot(tmp_path) -> None:
    root = _rootfs(tmp_path)
    for no_pivot in (False, True):
        sys = RecordingSyscalls()
        enter_rootfs(sys, _config(root, rootfsPropagation="shared"), no_pivot=no_pivot,
                     mount_ns=False)
        assert sys.calls == [("chdir", root), ("chroot", "."), ("chdir", "/"),
                             ("mount", None, "/", None, MS_SHARED, None)]
        assert not any(c[0] == "pivot_root" or (c[0] == "mount" and c[4] & MS_MOVE)
                       for c in sys.calls)


def test_enter_failure_without_mount_namespace_names_the_chroot(tmp_path) -> None:
    root = _rootfs(tmp_path)
    sys = RecordingSyscalls(fail={"chroot": errno.EPERM})
    with pytest.raises(RootfsError, match=f"chroot {root} \\(no mount namespace\\): operation not permitted"):
        enter_rootfs(sys, _config(root), mount_ns=False)


# --- no mount namespace: the rootfs bind, found and released ----------------------------------

MOUNTINFO = """\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 27 0:50 / /b/with\\040space rw - overlay overlay rw
91 90 254:0 /b/with\\040space /b/with\\040space rw - ext4 /dev/vda rw
92 91 0:22 / /b/with\\040space/proc rw - proc proc rw
"""


def test_top_mount_id_picks_the_top_of_a_stack_and_unescapes() -> None:
    assert top_mount_id("/b/with space", MOUNTINFO) == 91
    assert top_mount_id("/b/with space/proc", MOUNTINFO) == 92
    assert top_mount_id("/", MOUNTINFO) == 27
    assert top_mount_id("/nothing", MOUNTINFO) == 0
    # listed out of order: the top is still the one that is nobody's parent
    lines = MOUNTINFO.splitlines()
    assert top_mount_id("/b/with space", "\n".join([lines[2], lines[1]])) == 91


def _proc_with(tmp_path, text: str) -> str:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True, exist_ok=True)
    (proc / "self" / "mountinfo").write_text(text)
    return str(proc)


def test_release_detaches_our_bind_only_while_it_is_on_top(tmp_path) -> None:
    root = "/b/with space"
    proc = _proc_with(tmp_path, MOUNTINFO)
    sys = RecordingSyscalls()
    assert release_rootfs(sys, root, 91, proc=proc) is True
    assert sys.calls == [("umount2", root, MNT_DETACH)]
    # the overlay below (containerd's rootfs mount, say) is never touched; nor is a bind that
    # someone else's mount now covers; nor anything when there was no bind (ID 0)
    for mid in (90, 0, 12345):
        sys = RecordingSyscalls()
        assert release_rootfs(sys, root, mid, proc=proc) is False
        assert sys.calls == []


# --- start waits for the exec -------------------------------------------------------------------

def test_wait_exec_returns_at_end_of_file_only() -> None:
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        os.write(w, b"0")
        os.read(r, 1)  # start read the init's byte; the init still holds its end

        def close_later() -> None:
            time.sleep(0.3)
            os.close(w)

        t = threading.Thread(target=close_later)
        t0 = time.monotonic()
        t.start()
        wait_exec(r)
        waited = time.monotonic() - t0
        t.join()
        assert waited >= 0.25  # it did not return while the writer was open
    finally:
        os.close(r)


def test_wait_exec_when_the_init_already_exec_d() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.close(w)
    import threading

    done = threading.Event()
    t = threading.Thread(target=lambda: (wait_exec(r), done.set()), daemon=True)
    t.start()
    t.join(10)  # it must not wait for a writer that is already gone
    os.close(r)
    assert done.is_set()
