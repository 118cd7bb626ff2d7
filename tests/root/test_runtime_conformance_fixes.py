"""skiff-runc behaviours fixed for the OCI runtime-tools validation suite (see
tests/root/test_oci_conformance.py, which runs the suite itself).

- linux_ns_itype: a container without a mount namespace (it inherits the runtime's): its
  mounts are made in the runtime's namespace under the rootfs, the init chroots, ``exec``
  enters the same root, and ``delete`` (or a failed ``create``) leaves no mount behind;
- linux_ns_path: ``hostname`` with a UTS namespace joined by path is set in that namespace;
- hooks_stdin: prestart/createRuntime hooks get the state with status ``created``;
- poststart: the poststart hooks run once the container's process has been executed;
- a failed ``create`` kills every process in the container's cgroup, not only the init, so the
  cgroup can be removed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from runtime_util import RUNTIME, make_bundle, write_config

pytestmark = pytest.mark.root


def _no_mount_ns(cfg: dict) -> dict:
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "mount"]
    return cfg


# A private mount namespace (slave of ours) for the runtime: the container's mounts are made in
# the namespace the runtime runs in, and this keeps a failure of this test from leaving them in
# pytest's. The script prints, after each step, the number of mounts at or below the rootfs.
NO_MOUNT_NS_SCRIPT = r"""
set -u
R="$1"; ROOT="$2"; B="$3"; RFS="$4"; BAD="$5"
trap '"$R" --root "$ROOT" delete -f nomnt >/dev/null 2>&1; "$R" --root "$ROOT" delete -f nomnt-bad >/dev/null 2>&1' EXIT
count() { awk -v r="$RFS" '$5 == r || index($5, r "/") == 1' /proc/self/mountinfo | wc -l; }
echo "before $(count)"
"$R" --root "$ROOT" create --bundle "$B" nomnt || exit 1
echo "created $(count)"
awk -v r="$RFS/proc" '$5 == r {print "proc-type", $9}' /proc/self/mountinfo
"$R" --root "$ROOT" start nomnt || exit 1
pid=$("$R" --root "$ROOT" state nomnt | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
echo "same-mntns $([ "$(readlink /proc/$pid/ns/mnt)" = "$(readlink /proc/self/ns/mnt)" ] && echo yes || echo no)"
echo "own-pidns $([ "$(readlink /proc/$pid/ns/pid)" != "$(readlink /proc/self/ns/pid)" ] && echo yes || echo no)"
echo "exec $("$R" --root "$ROOT" exec nomnt cat /marker)"
"$R" --root "$ROOT" delete -f nomnt || exit 1
echo "deleted $(count)"
"$R" --root "$ROOT" create --bundle "$BAD" nomnt-bad 2>/dev/null && echo "bad-create succeeded"
echo "failed-create $(count)"
"""


def test_container_without_mount_namespace(busybox_bundle, state_dirs):
    bundle = str(busybox_bundle)
    rootfs = os.path.join(bundle, "rootfs")
    with open(os.path.join(rootfs, "marker"), "w") as f:
        f.write("inside-the-rootfs\n")
    cfg = _no_mount_ns(make_bundle(bundle, ["sleep", "300"], rootfs=rootfs))
    write_config(bundle, cfg)
    bad = str(state_dirs.tmp / "bad")
    bad_cfg = _no_mount_ns(make_bundle(bad, ["true"], rootfs=rootfs))
    bad_cfg["hooks"] = {"prestart": [{"path": "/bin/false"}]}  # fails after the mounts are made
    write_config(bad, bad_cfg)
    p = subprocess.run(["unshare", "-m", "--propagation", "slave", "sh", "-c", NO_MOUNT_NS_SCRIPT, "sh",
                        RUNTIME, str(state_dirs.root), bundle, os.path.realpath(rootfs), bad],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = dict(line.split(" ", 1) for line in p.stdout.splitlines())
    assert out["before"] == "0"
    assert int(out["created"]) >= 7  # rootfs bind, proc, dev, dev/pts, shm, mqueue, sys, ...
    assert out["proc-type"] == "proc"
    assert out["same-mntns"] == "yes"  # inherited: the runtime's mount namespace
    assert out["own-pidns"] == "yes"  # the other namespaces are still the container's own
    assert out["exec"] == "inside-the-rootfs"  # exec enters the container's root, not the host's
    assert out["deleted"] == "0", p.stdout
    assert "bad-create succeeded" not in out
    assert out["failed-create"] == "0", p.stdout


def test_hostname_in_a_uts_namespace_joined_by_path(runtime, busybox_bundle, state_dirs):
    holder = subprocess.Popen(["unshare", "--uts", "sleep", "300"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/uts") == os.readlink("/proc/self/ns/uts"):
            assert time.monotonic() < deadline, "unshare --uts did not switch namespaces"
            time.sleep(0.01)
        bundle = str(busybox_bundle)
        cfg = make_bundle(bundle, ["hostname"], rootfs=os.path.join(bundle, "rootfs"))
        cfg["hostname"] = "joined-uts"
        for ns in cfg["linux"]["namespaces"]:
            if ns["type"] == "uts":
                ns["path"] = f"/proc/{holder.pid}/ns/uts"
        write_config(bundle, cfg)
        assert runtime("run", "--bundle", bundle, "c-utspath").stdout == "joined-uts\n"
        # set in the joined namespace itself, which outlives the container
        p = subprocess.run(["nsenter", "-t", str(holder.pid), "-u", "hostname"],
                           capture_output=True, text=True, check=True)
        assert p.stdout == "joined-uts\n"
        assert os.uname().nodename != "joined-uts"
        # without any UTS namespace of its own the hostname is still refused
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "uts"]
        write_config(bundle, cfg)
        p = runtime("create", "--bundle", bundle, "c-nouts", check=False)
        assert p.returncode == 1
        assert "unable to set hostname without a private UTS namespace" in p.stderr
    finally:
        holder.kill()
        holder.wait()


def test_hook_states_and_poststart_after_exec(runtime, busybox_bundle, tmp_path):
    bundle = str(busybox_bundle)
    log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    # the state on stdin, and the command line of the process its pid names at that moment
    hook.write_text("#!/bin/sh\nstate=$(cat)\n"
                    "pid=$(echo \"$state\" | sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p')\n"
                    f"echo \"$1 $(tr '\\0' ' ' < /proc/$pid/cmdline)| $state\" >> {log}\n")
    hook.chmod(0o755)
    cfg = make_bundle(bundle, ["sleep", "300"], rootfs=os.path.join(bundle, "rootfs"))
    cfg["hooks"] = {k: [{"path": str(hook), "args": ["hook.sh", k]}]
                    for k in ("prestart", "createRuntime", "poststart")}
    # in the init between `start` and execve: poststart must wait for it and for the exec
    cfg["hooks"]["startContainer"] = [{"path": "/bin/sleep", "args": ["sleep", "1"]}]
    write_config(bundle, cfg)
    cid = runtime.track("c-hookstate")
    runtime("create", "--bundle", bundle, cid)
    pid = runtime.state(cid)["pid"]
    runtime("start", cid)
    lines = log.read_text().splitlines()
    kinds = [line.split(" ", 1)[0] for line in lines]
    assert kinds == ["prestart", "createRuntime", "poststart"]
    cmdlines = [line.split(" ", 1)[1].split("| ", 1)[0] for line in lines]
    states = [json.loads(line.split("| ", 1)[1]) for line in lines]
    for st in states[:2]:
        assert st["status"] == "created" and st["pid"] == pid and st["id"] == cid
    assert states[2]["status"] == "running" and states[2]["pid"] == pid
    assert cmdlines[2] == "sleep 300 "  # the user's process, already exec'd
    assert not cmdlines[0].startswith("sleep")  # (at prestart it was still the runtime's init)


def test_failed_create_kills_every_process_of_the_cgroup(runtime, busybox_bundle, tmp_path):
    bundle = str(busybox_bundle)
    hook = tmp_path / "hook.sh"
    # a process in the container's cgroup that is not the init, then a failure
    hook.write_text("#!/bin/sh\nstate=$(cat)\n"
                    "pid=$(echo \"$state\" | sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p')\n"
                    "cg=$(sed -n 's/^[0-9]*:pids:\\(.*\\)$/\\1/p' /proc/$pid/cgroup)\n"
                    f"echo $cg > {tmp_path}/cgroup\n"
                    "sleep 300 </dev/null >/dev/null 2>&1 &\n"
                    f"echo $! > {tmp_path}/straggler\n"
                    "echo $! > /sys/fs/cgroup/pids$cg/cgroup.procs\n"
                    "exit 1\n")
    hook.chmod(0o755)
    cfg = make_bundle(bundle, ["true"], rootfs=os.path.join(bundle, "rootfs"))
    cfg["linux"]["cgroupsPath"] = "/skiff-conformance-test/c-straggler"
    cfg["hooks"] = {"createRuntime": [{"path": str(hook)}]}
    write_config(bundle, cfg)
    p = runtime("create", "--bundle", bundle, "c-straggler", check=False)
    straggler = int((tmp_path / "straggler").read_text())
    try:
        assert p.returncode == 1 and "createRuntime hook #0" in p.stderr
        assert "cleaning up" not in p.stderr, p.stderr
        assert (tmp_path / "cgroup").read_text().strip() == "/skiff-conformance-test/c-straggler"
        assert not os.path.exists("/sys/fs/cgroup/pids/skiff-conformance-test")
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{straggler}") and open(f"/proc/{straggler}/stat").read().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline, "the process in the container's cgroup survived"
            time.sleep(0.02)
    finally:
        try:
            os.kill(straggler, 9)  # only if the test failed: it is ours, by PID
        except ProcessLookupError:
            pass
