"""skiff-runc forks the init itself when there is no user or time namespace (launch._fork_init):
the init lands in the new (or joined) pid namespace, the runtime itself does not, and the
runtime's later children (hooks) are back in the host's pid namespace. Also without any pid
namespace, and through the intermediate child when a time namespace asks for it."""

from __future__ import annotations

import os

import pytest
from runtime_util import make_bundle, write_config

pytestmark = pytest.mark.root

HOOK = ("#!/bin/sh\ncat > /dev/null\n"
        "echo \"$1 $(readlink /proc/self/ns/pid) $(readlink /proc/$PPID/ns/pid_for_children)\" >> {log}\n")


def hook_bundle(tmp_path, name: str, script: str, edit=None) -> tuple[str, str]:
    log = tmp_path / f"{name}.log"
    hook = tmp_path / f"{name}.sh"
    hook.write_text(HOOK.format(log=log))
    hook.chmod(0o755)
    bundle = str(tmp_path / name)
    cfg = make_bundle(bundle, ["sh", "-c", script])
    cfg["hooks"] = {k: [{"path": str(hook), "args": ["hook", k]}]
                    for k in ("prestart", "createRuntime", "poststart", "poststop")}
    if edit is not None:
        edit(cfg)
    write_config(bundle, cfg)
    return bundle, str(log)


def host_pidns() -> str:
    return os.readlink("/proc/self/ns/pid")


def test_new_pid_namespace_init_is_pid_1_and_hooks_stay_on_the_host(runtime, tmp_path):
    bundle, log = hook_bundle(tmp_path, "newpid", "echo $$ $(readlink /proc/self/ns/pid)")
    out = runtime("run", "--bundle", bundle, "c-direct-new").stdout.split()
    assert out[0] == "1" and out[1] != host_pidns()
    lines = open(log).read().splitlines()
    assert [line.split()[0] for line in lines] == ["prestart", "createRuntime", "poststart", "poststop"]
    for line in lines:
        # each hook, and the runtime that started it (its children's pid namespace too), in ours
        _, own, parents_children = line.split()
        assert own == host_pidns() == parents_children, line


def test_created_container_then_exec_and_kill(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    make_bundle(bundle, ["sleep", "300"])
    cid = runtime.track("c-direct-created")
    runtime("create", "--bundle", bundle, cid)
    st = runtime.state(cid)
    assert st["status"] == "created"
    pid = st["pid"]
    assert os.readlink(f"/proc/{pid}/ns/pid") != host_pidns()
    with open(f"/proc/{pid}/status") as f:
        nspid = [line.split()[1:] for line in f if line.startswith("NSpid:")][0]
    assert nspid == [str(pid), "1"]
    runtime("start", cid)
    assert runtime("exec", cid, "sh", "-c", "echo $(cat /proc/1/cmdline | tr '\\0' ' ')").stdout == "sleep 300\n"
    runtime("kill", cid, "KILL")
    runtime("delete", "--force", cid)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"


def test_pid_namespace_joined_by_path(runtime, tmp_path):
    a_bundle = str(tmp_path / "a")
    make_bundle(a_bundle, ["sleep", "300"])
    a = runtime.track("c-direct-a")
    runtime("run", "-d", "--bundle", a_bundle, a)
    apid = runtime.state(a)["pid"]
    a_ns = os.readlink(f"/proc/{apid}/ns/pid")

    def join(cfg):
        cfg["linux"]["namespaces"] = [ns if ns["type"] != "pid" else
                                      {"type": "pid", "path": f"/proc/{apid}/ns/pid"}
                                      for ns in cfg["linux"]["namespaces"]]

    bundle, log = hook_bundle(tmp_path, "joinpid", "readlink /proc/self/ns/pid; cat /proc/1/cmdline", join)
    out = runtime("run", "--bundle", bundle, "c-direct-b").stdout.splitlines()
    assert out[0] == a_ns and out[1].split("\0")[0] == "sleep"
    for line in open(log).read().splitlines():
        _, own, parents_children = line.split()
        assert own == host_pidns() == parents_children, line
    runtime("delete", "--force", a)


def test_no_pid_namespace_shares_the_hosts(runtime, tmp_path):
    def no_pidns(cfg):
        cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != "pid"]
        # the host's /proc of the host's pid namespace: no new proc mount without a pid namespace
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/proc"] + [
            {"destination": "/proc", "type": "bind", "source": "/proc", "options": ["rbind", "ro"]}]

    bundle, log = hook_bundle(tmp_path, "nopid", "readlink /proc/self/ns/pid; echo $$", no_pidns)
    out = runtime("run", "--bundle", bundle, "c-direct-none").stdout.split()
    assert out[0] == host_pidns() and out[1] != "1"


def test_time_namespace_goes_through_the_intermediate_child(runtime, tmp_path):
    if not os.path.exists("/proc/self/ns/time"):
        pytest.skip("no time namespaces in this kernel")

    def timens(cfg):
        cfg["linux"]["namespaces"].append({"type": "time"})
        cfg["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}

    bundle, log = hook_bundle(tmp_path, "timens", "echo $$; readlink /proc/self/ns/time; cut -d. -f1 /proc/uptime",
                              timens)
    out = runtime("run", "--bundle", bundle, "c-direct-time").stdout.split()
    assert out[0] == "1" and out[1] != os.readlink("/proc/self/ns/time")
    assert int(out[2]) >= 86400 * 365
    for line in open(log).read().splitlines():
        _, own, parents_children = line.split()
        assert own == host_pidns() == parents_children, line
