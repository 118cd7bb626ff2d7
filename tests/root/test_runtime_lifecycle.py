"""skiff-runc end to end: real containers from a busybox bundle, driven through its CLI."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import pytest
from runtime_util import make_bundle, make_rootfs, write_config

pytestmark = pytest.mark.root


def test_run_echo_and_exit_status(runtime, tmp_path):
    make_bundle(str(tmp_path / "b"), ["echo", "hello from isolation"])
    p = runtime("run", "--bundle", str(tmp_path / "b"), "c-echo")
    assert p.stdout == "hello from isolation\n"
    assert not os.path.exists(os.path.join(runtime.root, "c-echo"))  # run removes it
    make_bundle(str(tmp_path / "b2"), ["sh", "-c", "exit 7"])
    assert runtime("run", "--bundle", str(tmp_path / "b2"), "c-exit", check=False).returncode == 7


def test_namespaces_are_private(runtime, tmp_path):
    cfg = make_bundle(str(tmp_path / "b"), ["sh", "-c",
                      "echo pid=$$; hostname; ls /proc | grep -c '^[0-9]'; cat /proc/self/cgroup | head -1"])
    cfg["hostname"] = "skiffbox"
    write_config(str(tmp_path / "b"), cfg)
    out = runtime("run", "--bundle", str(tmp_path / "b"), "c-ns").stdout.split("\n")
    assert out[0] == "pid=1"
    assert out[1] == "skiffbox"
    assert int(out[2]) <= 3  # sh, ls, grep: the host's processes are invisible
    host_ns = os.readlink("/proc/self/ns/pid")
    assert host_ns  # the test itself ran in the host namespaces


def test_create_start_state_kill_delete(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    make_bundle(bundle, ["sleep", "300"])
    cid = runtime.track("c-life")
    pidfile = tmp_path / "pid"
    runtime("create", "--bundle", bundle, "--pid-file", str(pidfile), cid)
    st = runtime.state(cid)
    assert st["status"] == "created"
    assert st["pid"] == int(pidfile.read_text())
    assert st["bundle"] == bundle and st["id"] == cid
    # the init waits: it has not exec'd sleep yet
    assert open(f"/proc/{st['pid']}/cmdline", "rb").read().split(b"\0")[0] != b"sleep"
    runtime("start", cid)
    assert runtime.state(cid)["status"] == "running"
    assert open(f"/proc/{st['pid']}/cmdline", "rb").read().split(b"\0")[:2] == [b"sleep", b"300"]
    p = runtime("start", cid, check=False)
    assert p.returncode == 1 and "already running" in p.stderr
    p = runtime("delete", cid, check=False)
    assert p.returncode == 1 and "not stopped: running" in p.stderr
    ids = json.loads(runtime("list", "--format", "json").stdout)
    assert [c["id"] for c in ids] == [cid]
    runtime("kill", cid, "KILL")
    deadline = time.monotonic() + 10
    while runtime.state(cid)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runtime("delete", cid)
    assert not os.path.exists(os.path.join(runtime.root, cid))
    p = runtime("state", cid, check=False)
    assert p.returncode == 1 and "container does not exist" in p.stderr


def test_duplicate_id_and_bad_bundle_are_refused_cleanly(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["sleep", "300"])
    cid = runtime.track("c-dup")
    runtime("create", "--bundle", bundle, cid)
    p = runtime("create", "--bundle", bundle, cid, check=False)
    assert p.returncode == 1 and "container with id exists: c-dup" in p.stderr
    cfg["process"]["user"]["uid"] = "root"
    write_config(bundle, cfg)
    p = runtime("create", "--bundle", bundle, "c-bad", check=False)
    assert p.returncode == 1 and "process.user.uid" in p.stderr
    assert not os.path.exists(os.path.join(runtime.root, "c-bad"))


def test_missing_executable_fails_create(runtime, tmp_path):
    make_bundle(str(tmp_path / "b"), ["/no/such/program"])
    p = runtime("create", "--bundle", str(tmp_path / "b"), "c-noexe", check=False)
    assert p.returncode == 1
    assert "/no/such/program" in p.stderr and "no such file" in p.stderr
    assert not os.path.exists(os.path.join(runtime.root, "c-noexe"))


def test_exec_in_running_container(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    make_bundle(bundle, ["sleep", "300"])
    cid = runtime.track("c-exec")
    runtime("run", "-d", "--bundle", bundle, cid)
    p = runtime("exec", cid, "sh", "-c", "echo in; cat /proc/1/cmdline | tr '\\0' ' '; exit 5", check=False)
    assert p.returncode == 5
    assert p.stdout == "in\nsleep 300 "
    p = runtime("exec", "--env", "FOO=bar", "--cwd", "/tmp", "--user", "65534:65534", cid,
                "sh", "-c", "echo $FOO $(pwd) $(id -u):$(id -g)")
    assert p.stdout.strip() == "bar /tmp 65534:65534"
    pids = json.loads(runtime("ps", "--format", "json", cid).stdout)
    assert runtime.state(cid)["pid"] in pids
    runtime("delete", "--force", cid)


def test_user_capabilities_and_readonly_root(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["sh", "-c",
                      "id -u; id -g; grep CapEff /proc/self/status; touch /x 2>&1 || echo ro-ok"])
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5]}
    write_config(bundle, cfg)
    out = runtime("run", "--bundle", bundle, "c-user").stdout.split("\n")
    assert out[0] == "1000" and out[1] == "1000"
    assert out[2].split()[1] == "0000000000000000"  # non-root with no ambient caps: nothing effective
    assert out[-2] == "ro-ok"


def test_masked_and_readonly_paths(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["true"])
    masked = [p for p in cfg["linux"]["maskedPaths"] if os.path.isfile(p)]
    assert masked, "the host has none of the default masked files"
    cfg["process"]["args"] = ["sh", "-c", "for f in " + " ".join(masked) + "; do wc -c < $f; done; "
                              "echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo ro"]
    write_config(bundle, cfg)
    out = runtime("run", "--bundle", bundle, "c-mask").stdout.split()
    assert out == ["0"] * len(masked) + ["ro"]


def test_container_cannot_reach_runtime_exe(runtime, tmp_path):
    """CVE-2019-5736 class: while the init (a fork of the runtime) waits in the container, other
    container processes must not open /proc/1/exe (the host's interpreter) or its memory."""
    bundle = str(tmp_path / "b")
    make_bundle(bundle, ["sleep", "300"])
    cid = runtime.track("c-cve")
    runtime("create", "--bundle", bundle, cid)
    p = runtime("exec", cid, "sh", "-c",
                "cat /proc/1/exe > /dev/null 2>&1 && echo EXE-OPEN; "
                "readlink /proc/1/exe >/dev/null 2>&1 && echo EXE-LINK; "
                "cat /proc/1/maps > /dev/null 2>&1 && echo MAPS-OPEN; "
                "for f in /proc/1/fd/*; do readlink $f >/dev/null 2>&1 && echo FD-LINK; done; "
                "cat /proc/1/environ > /dev/null 2>&1 && echo ENVIRON; echo done")
    assert p.stdout.strip() == "done", p.stdout
    runtime("delete", "--force", cid)


def test_prestart_and_poststop_hooks(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["true"])
    log = tmp_path / "hooks.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\necho \"$1 $(cat)\" >> {log}\n")
    hook.chmod(0o755)
    cfg["hooks"] = {k: [{"path": str(hook), "args": ["hook.sh", k]}]
                    for k in ("prestart", "createRuntime", "poststart", "poststop")}
    write_config(bundle, cfg)
    runtime("run", "--bundle", bundle, "c-hooks")
    lines = log.read_text().splitlines()
    kinds = [line.split(" ", 1)[0] for line in lines]
    assert kinds == ["prestart", "createRuntime", "poststart", "poststop"]
    states = [json.loads(line.split(" ", 1)[1]) for line in lines]
    assert states[0]["id"] == "c-hooks" and states[0]["status"] == "created" and states[0]["pid"] > 0
    assert states[3]["status"] == "stopped"


def test_failing_prestart_hook_aborts_create(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["true"])
    cfg["hooks"] = {"prestart": [{"path": "/bin/false"}]}
    write_config(bundle, cfg)
    p = runtime("create", "--bundle", bundle, "c-hookfail", check=False)
    assert p.returncode == 1 and "prestart hook #0" in p.stderr
    assert not os.path.exists(os.path.join(runtime.root, "c-hookfail"))


def test_user_namespace_mapping(runtime, tmp_path, request_cleanup):
    # container root is host uid 100000: every directory up to the rootfs must let it through
    # (pytest's tmp_path is 0700), as it must for runc: use a directory of its own
    top = tempfile.mkdtemp(prefix="skiff-userns-")
    os.chmod(top, 0o755)
    request_cleanup.append(lambda: shutil.rmtree(top))
    rootfs = os.path.join(top, "rootfs")
    make_rootfs(rootfs)
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), 100000, 100000)
    os.lchown(rootfs, 100000, 100000)
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["sh", "-c", "id -u; cat /proc/self/uid_map"], rootfs=rootfs)
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    # sysfs and cgroup mounts need the user namespace to own the network/cgroup namespaces: it does
    write_config(bundle, cfg)
    out = runtime("run", "--bundle", bundle, "c-userns").stdout.split()
    assert out[0] == "0"
    assert out[1:4] == ["0", "100000", "65536"]
