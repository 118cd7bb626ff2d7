"""skiff-runc verbs through its CLI, beyond the lifecycle: pause/resume, update, events, ps,
kill --all, delete --force, pid files, --preserve-fds, exec --process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from runtime_util import RUNTIME, make_bundle, write_config

pytestmark = pytest.mark.root


def wait_for(cond, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def cgroup_paths(runtime, cid: str) -> dict[str, str]:
    """The container's cgroup directories by controller, from its state.json."""
    with open(os.path.join(runtime.root, cid, "state.json")) as f:
        return json.load(f)["cgroup"]["paths"]


def proc_cgroup(pid: int, controller: str) -> str:
    """The cgroup path (below the hierarchy's root) of ``pid`` in ``controller``'s v1 hierarchy."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                return path
    raise AssertionError(f"/proc/{pid}/cgroup has no {controller} line")


def cgroup_dir(runtime, cid: str, controller: str) -> str:
    """The container's directory in ``controller``'s hierarchy; checks that state.json agrees with
    the kernel's view of where the init is (/proc/PID/cgroup)."""
    d = cgroup_paths(runtime, cid)[controller]
    pid = runtime.state(cid)["pid"]
    assert d.endswith(proc_cgroup(pid, controller)), (d, proc_cgroup(pid, controller))
    with open(os.path.join(d, "cgroup.procs")) as f:
        assert str(pid) in f.read().split()
    return d


def gone(pid: int) -> bool:
    """The process is dead: no /proc entry, or a zombie left for the host's init to reap (a
    detached container's processes are not our children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] in "ZX"
    except FileNotFoundError:
        return True


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def running(runtime, tmp_path, cid: str, args: list[str], **linux: object) -> tuple[str, dict]:
    """``run -d`` a busybox container with a writable rootfs; returns (bundle, config)."""
    bundle = str(tmp_path / cid)
    cfg = make_bundle(bundle, args)
    cfg["root"]["readonly"] = False
    cfg["linux"].update(linux)
    write_config(bundle, cfg)
    runtime("run", "-d", "--bundle", bundle, runtime.track(cid))
    return bundle, cfg


def test_pause_freezes_and_resume_thaws(runtime, tmp_path):
    bundle, _ = running(runtime, tmp_path, "c-pause", ["sh", "-c",
                        "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; sleep 0.02; done"])
    counter = os.path.join(bundle, "rootfs/tmp/n")
    freezer = os.path.join(cgroup_dir(runtime, "c-pause", "freezer"), "freezer.state")
    wait_for(lambda: os.path.exists(counter) and read(counter), what="the counter")
    assert read(freezer) == "THAWED"
    runtime("pause", "c-pause")
    assert runtime.state("c-pause")["status"] == "paused"
    assert read(freezer) == "FROZEN"
    n = read(counter)
    time.sleep(0.3)
    assert read(counter) == n  # nothing runs while frozen
    p = runtime("pause", "c-pause", check=False)
    assert p.returncode == 1 and "not running" in p.stderr
    p = runtime("exec", "c-pause", "true", check=False)
    assert p.returncode == 1 and "cannot exec in a paused container" in p.stderr
    runtime("resume", "c-pause")
    assert runtime.state("c-pause")["status"] == "running"
    assert read(freezer) == "THAWED"
    wait_for(lambda: read(counter) != n, what="the counter to move again")
    p = runtime("resume", "c-pause", check=False)
    assert p.returncode == 1 and "not paused" in p.stderr
    runtime("delete", "--force", "c-pause")


def test_update_with_flags_and_with_resources_from_stdin(runtime, tmp_path):
    running(runtime, tmp_path, "c-upd", ["sleep", "300"],
            resources={"memory": {"limit": 128 << 20}, "pids": {"limit": 100}})
    mem = cgroup_dir(runtime, "c-upd", "memory")
    pids = cgroup_dir(runtime, "c-upd", "pids")
    cpu = cgroup_dir(runtime, "c-upd", "cpu")
    assert read(f"{mem}/memory.limit_in_bytes") == str(128 << 20)
    assert read(f"{pids}/pids.max") == "100"
    runtime("update", "--memory", "64m", "--pids-limit", "50", "c-upd")
    assert read(f"{mem}/memory.limit_in_bytes") == str(64 << 20)
    assert read(f"{pids}/pids.max") == "50"
    res = {"memory": {"limit": 96 << 20}, "cpu": {"shares": 512, "quota": 50000, "period": 100000},
           "pids": {"limit": 42}}
    runtime("update", "--resources", "-", "c-upd", input=json.dumps(res))
    assert read(f"{mem}/memory.limit_in_bytes") == str(96 << 20)
    assert read(f"{pids}/pids.max") == "42"
    assert read(f"{cpu}/cpu.shares") == "512"
    assert read(f"{cpu}/cpu.cfs_quota_us") == "50000"
    assert read(f"{cpu}/cpu.cfs_period_us") == "100000"
    p = runtime("update", "--resources", "-", "c-upd", input="{not json", check=False)
    assert p.returncode == 1 and "not valid JSON" in p.stderr
    p = runtime("update", "--memory", "lots", "c-upd", check=False)
    assert p.returncode == 1 and "--memory" in p.stderr
    assert read(f"{mem}/memory.limit_in_bytes") == str(96 << 20)  # a refused update changes nothing
    runtime("delete", "--force", "c-upd")
    p = runtime("update", "--memory", "64m", "c-upd", check=False)
    assert p.returncode == 1 and "container does not exist" in p.stderr


def test_events_stats(runtime, tmp_path):
    running(runtime, tmp_path, "c-ev", ["sh", "-c", "sleep 300 & sleep 301 & wait"],
            resources={"memory": {"limit": 64 << 20}, "pids": {"limit": 20}})
    pids = json.loads(runtime("ps", "--format", "json", "c-ev").stdout)
    wait_for(lambda: len(json.loads(runtime("ps", "--format", "json", "c-ev").stdout)) == 3,
             what="sh and two sleeps")
    lines = runtime("events", "--stats", "c-ev").stdout.splitlines()
    assert len(lines) == 1
    ev = json.loads(lines[0])
    assert ev["type"] == "stats" and ev["id"] == "c-ev"
    data = ev["data"]
    assert data["cpu"]["usage"]["total"] > 0
    assert len(data["cpu"]["usage"]["percpu"]) == os.cpu_count()
    mem = cgroup_dir(runtime, "c-ev", "memory")
    assert data["memory"]["usage"]["limit"] == 64 << 20
    assert 0 < data["memory"]["usage"]["usage"] <= 64 << 20
    assert data["memory"]["usage"]["failcnt"] == int(read(f"{mem}/memory.failcnt"))
    assert "total_rss" in data["memory"]["raw"] or "rss" in data["memory"]["raw"]
    pids = json.loads(runtime("ps", "--format", "json", "c-ev").stdout)
    assert data["pids"] == {"current": len(pids), "limit": 20}
    runtime("delete", "--force", "c-ev")
    p = runtime("events", "--stats", "c-ev", check=False)
    assert p.returncode == 1


def test_ps_table_and_json(runtime, tmp_path):
    running(runtime, tmp_path, "c-ps", ["sh", "-c", "sleep 300 & exec sleep 301"])
    init = runtime.state("c-ps")["pid"]
    wait_for(lambda: len(json.loads(runtime("ps", "--format", "json", "c-ps").stdout)) == 2,
             what="two processes")
    pids = json.loads(runtime("ps", "--format", "json", "c-ps").stdout)
    assert init in pids
    procs = read(os.path.join(cgroup_dir(runtime, "c-ps", "pids"), "cgroup.procs")).split()
    assert sorted(pids) == sorted(int(p) for p in procs)
    table = runtime("ps", "c-ps").stdout.splitlines()
    header = table[0].split()
    assert "PID" in header and "CMD" in header
    col = header.index("PID")
    rows = {int(line.split()[col]): line for line in table[1:]}
    assert sorted(rows) == sorted(pids)
    assert rows[init].rstrip().endswith("sleep 301")
    # ps options after the id (runc: runc ps ID -- ps-options)
    table = runtime("ps", "c-ps", "-o", "pid,args").stdout.splitlines()
    assert table[0].split() == ["PID", "COMMAND"]
    assert sorted(int(line.split()[0]) for line in table[1:]) == sorted(pids)
    p = runtime("ps", "--format", "yaml", "c-ps", check=False)
    assert p.returncode == 1 and "invalid format" in p.stderr
    runtime("delete", "--force", "c-ps")


def test_kill_all_reaches_every_process(runtime, tmp_path):
    running(runtime, tmp_path, "c-killall", ["sh", "-c", "sleep 300 & sleep 301 & sleep 302 & wait"])
    wait_for(lambda: len(json.loads(runtime("ps", "--format", "json", "c-killall").stdout)) == 4,
             what="sh and three sleeps")
    pids = json.loads(runtime("ps", "--format", "json", "c-killall").stdout)
    runtime("kill", "--all", "c-killall", "KILL")
    wait_for(lambda: runtime.state("c-killall")["status"] == "stopped", what="stopped")
    for pid in pids:
        wait_for(lambda pid=pid: gone(pid), what=f"pid {pid} gone")
    p = runtime("kill", "c-killall", "TERM", check=False)
    assert p.returncode == 1 and "container not running" in p.stderr
    p = runtime("kill", "c-killall", "NOSUCHSIG", check=False)
    assert p.returncode == 1
    runtime("delete", "c-killall")


def test_kill_signal_reaches_the_init(runtime, tmp_path):
    bundle, _ = running(runtime, tmp_path, "c-kill", ["sh", "-c",
                        "trap 'echo usr1 > /tmp/got; exit 0' USR1; echo up > /tmp/up; "
                        "while :; do sleep 0.05; done"])
    wait_for(lambda: os.path.exists(os.path.join(bundle, "rootfs/tmp/up")), what="the trap")
    runtime("kill", "c-kill", "SIGUSR1")
    wait_for(lambda: runtime.state("c-kill")["status"] == "stopped", what="stopped")
    assert read(os.path.join(bundle, "rootfs/tmp/got")) == "usr1"
    runtime("delete", "c-kill")


def test_delete_force_of_a_paused_container(runtime, tmp_path):
    running(runtime, tmp_path, "c-delp", ["sh", "-c", "sleep 300 & exec sleep 301"])
    wait_for(lambda: len(json.loads(runtime("ps", "--format", "json", "c-delp").stdout)) == 2,
             what="two processes")
    pids = json.loads(runtime("ps", "--format", "json", "c-delp").stdout)
    dirs = set(cgroup_paths(runtime, "c-delp").values())
    runtime("pause", "c-delp")
    assert runtime.state("c-delp")["status"] == "paused"
    p = runtime("delete", "c-delp", check=False)
    assert p.returncode == 1 and "not stopped: paused" in p.stderr
    runtime("delete", "--force", "c-delp")
    assert not os.path.exists(os.path.join(runtime.root, "c-delp"))
    for pid in pids:
        assert gone(pid), f"container process {pid} is still alive"
    assert [d for d in dirs if os.path.exists(d)] == []


def test_pid_files_of_run_detached_and_exec_detached(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    make_bundle(bundle, ["sleep", "300"])
    cid = runtime.track("c-pidf")
    pidfile = tmp_path / "init.pid"
    runtime("run", "-d", "--pid-file", str(pidfile), "--bundle", bundle, cid)
    assert int(pidfile.read_text()) == runtime.state(cid)["pid"]
    xpid = tmp_path / "exec.pid"
    runtime("exec", "-d", "--pid-file", str(xpid), cid, "sleep", "123")
    pid = int(xpid.read_text())
    assert open(f"/proc/{pid}/cmdline", "rb").read() == b"sleep\x00123\x00"
    assert pid in json.loads(runtime("ps", "--format", "json", cid).stdout)
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{runtime.state(cid)['pid']}/ns/pid")
    runtime("delete", "--force", cid)
    assert gone(pid)


def _with_fd3(data: bytes, argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``argv`` with a pipe holding ``data`` as its fd 3 (what --preserve-fds 1 passes on)."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:
        launcher = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.execv(sys.argv[2], sys.argv[2:])"
        return subprocess.run([sys.executable, "-c", launcher, str(r), *argv], pass_fds=(r,),
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    finally:
        os.close(r)


def test_preserve_fds_passes_extra_fds_to_run_and_exec(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    script = ("cat <&3; [ -e /proc/$$/fd/3 ] && echo fd3-open; [ -e /proc/$$/fd/4 ] || echo no-fd4")
    make_bundle(bundle, ["sh", "-c", script])
    p = _with_fd3(b"through fd 3\n", [RUNTIME, "--root", runtime.root, "run", "--preserve-fds", "1",
                                      "--bundle", bundle, "c-fds"])
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"through fd 3\nfd3-open\nno-fd4\n"
    # without the flag the fd is not passed
    p = _with_fd3(b"x", [RUNTIME, "--root", runtime.root, "run", "--bundle", bundle, "c-fds"])
    assert p.stdout == b"no-fd4\n"
    assert b"3: Bad file descriptor" in p.stderr
    # exec --preserve-fds
    cfg = make_bundle(str(tmp_path / "b2"), ["sleep", "300"])
    assert cfg
    runtime("run", "-d", "--bundle", str(tmp_path / "b2"), runtime.track("c-fds2"))
    p = _with_fd3(b"exec fd\n", [RUNTIME, "--root", runtime.root, "exec", "--preserve-fds", "1",
                                 "c-fds2", "sh", "-c", script])
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"exec fd\nfd3-open\nno-fd4\n"
    runtime("delete", "--force", "c-fds2")


def test_exec_process_file(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    make_bundle(bundle, ["sleep", "300"])
    cid = runtime.track("c-procfile")
    runtime("run", "-d", "--bundle", bundle, cid)
    proc = {"terminal": False, "args": ["sh", "-c", "echo $FOO; pwd; id -u; id -G; "
                                        "grep NoNewPrivs /proc/self/status; exit 3"],
            "env": ["FOO=from-file", "PATH=/bin"], "cwd": "/tmp",
            "user": {"uid": 65534, "gid": 65534, "additionalGids": [7]}, "noNewPrivileges": True}
    (tmp_path / "process.json").write_text(json.dumps(proc))
    p = runtime("exec", "--process", str(tmp_path / "process.json"), cid, check=False)
    assert p.returncode == 3, p.stderr
    out = p.stdout.splitlines()
    assert out[:4] == ["from-file", "/tmp", "65534", "65534 7"]
    assert out[4].split() == ["NoNewPrivs:", "1"]
    (tmp_path / "bad.json").write_text("{")
    p = runtime("exec", "--process", str(tmp_path / "bad.json"), cid, check=False)
    assert p.returncode == 1 and "bad.json" in p.stderr and "not valid JSON" in p.stderr
    p = runtime("exec", "--process", str(tmp_path / "missing.json"), cid, check=False)
    assert p.returncode == 1 and "missing.json" in p.stderr
    runtime("delete", "--force", cid)


def test_exec_cap_adds_a_capability_but_not_an_inheritable_one(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    make_bundle(bundle, ["sleep", "300"])
    cid = runtime.track("c-execcap")
    runtime("run", "-d", "--bundle", bundle, cid)
    out = runtime("exec", "--cap", "CAP_NET_RAW", cid, "grep", "^Cap", "/proc/self/status").stdout
    st = dict(line.split(":\t") for line in out.splitlines())
    net_raw = 1 << 13
    assert int(st["CapEff"], 16) & net_raw and int(st["CapBnd"], 16) & net_raw
    assert st["CapInh"] == "0" * 16  # CVE-2022-29162: exec --cap must not make inheritable caps
    out = runtime("exec", cid, "grep", "^CapEff", "/proc/self/status").stdout
    assert not int(out.split()[1], 16) & net_raw  # only that exec had it
    runtime("delete", "--force", cid)
