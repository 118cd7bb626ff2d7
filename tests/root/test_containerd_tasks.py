"""Tasks through skiff-containerd, driven by Debian's ``ctr``: run, exec, kill, delete, pause,
a terminal, the runtimes of the config's table, the events, and a SIGKILLed manager whose
restart loses no container, exit status or output."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest
from ctr_util import CTR, SkiffContainerd, table

pytestmark = pytest.mark.root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUSYBOX_TAR = os.path.join(REPO, "build", "images", "busybox.tar")
IMAGE = "docker.io/library/busybox:latest"
DEADLINE = 120.0

# ctr --runtime NAME: our table's names, and containerd's shim type name (= the default)
RUNTIMES = ["skiff-runc", "runc", "crun", "io.containerd.runc.v2"]


def remove_all_tasks(d: SkiffContainerd) -> None:
    """Kill and delete whatever a failed test left running, then the containers."""
    for row in table(d.ctr("tasks", "ls").stdout):
        tid = row[0]
        d.ctr("tasks", "kill", "-a", "-s", "KILL", tid, check=False)
        wait_status(d, tid, "STOPPED")
        d.ctr("tasks", "rm", "-f", tid, check=False)
    for row in table(d.ctr("containers", "ls").stdout):
        d.ctr("containers", "rm", row[0], check=False)


@pytest.fixture
def skc(state_dirs):
    d = SkiffContainerd(state_dirs.short).start()
    try:
        d.ctr("images", "import", BUSYBOX_TAR)
    except BaseException:
        d.stop()  # the daemon must not outlive a failed set-up
        raise
    yield d
    try:
        if d.proc is not None:
            remove_all_tasks(d)
    finally:
        code = d.stop()
    assert code == 0, f"skiff-containerd exited {code}; log:\n{d.log()}"


def task_events(lines: list[str]) -> list[tuple[str, dict]]:
    """(topic, event) of the ``/tasks/`` lines of ``ctr events`` (date time zone ns topic json)."""
    out = []
    for ln in lines:
        parts = ln.split(None, 6)
        if len(parts) == 7 and parts[5].startswith("/tasks/"):
            out.append((parts[5], json.loads(parts[6])))
    return out


def rm_status(d: SkiffContainerd, tid: str) -> int:
    """``ctr tasks rm``; the exit status it reports (a warning for a non-zero one, else 0)."""
    p = d.ctr("tasks", "rm", tid)
    m = re.search(r"exit with non-zero exit code (\d+)", p.stderr)
    return int(m.group(1)) if m else 0


def tasks(d: SkiffContainerd) -> dict[str, list[str]]:
    return {r[0]: r for r in table(d.ctr("tasks", "ls").stdout)}


def wait_status(d: SkiffContainerd, tid: str, status: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        row = tasks(d).get(tid)
        if row is not None and row[-1] == status:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"task {tid} never became {status}: {row}; log:\n{d.log()[-4000:]}")
        time.sleep(0.05)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_run_rm_echo(skc, runtime):
    p = skc.ctr("run", "--rm", "--runtime", runtime, IMAGE, "t1", "echo", "hi")
    assert p.stdout == "hi\n"
    assert table(skc.ctr("tasks", "ls").stdout) == []
    assert table(skc.ctr("containers", "ls").stdout) == []
    # nothing of the task is left in the state directory
    assert os.listdir(skc.state / "io.containerd.runtime.v2.task") == []
    assert os.listdir(skc.state / "s") == []


def test_run_exit_status_and_stderr(skc):
    p = skc.ctr("run", "--rm", IMAGE, "t1", "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert p.returncode == 7, p.stderr
    assert p.stdout == "out\n"
    assert "err\n" in p.stderr


def test_unknown_runtime_is_refused(skc):
    p = skc.ctr("run", "--rm", "--runtime", "nosuch", IMAGE, "t1", "true", check=False)
    assert p.returncode != 0
    assert "runtime 'nosuch': not configured" in p.stderr
    assert table(skc.ctr("tasks", "ls").stdout) == []


@pytest.mark.parametrize("runtime", ["skiff-runc", "runc", "crun"])
def test_detached_exec_kill_rm(skc, runtime, events):
    ev = events(skc.address)
    ev.wait_subscribed()
    # pid 1 of a pid namespace ignores SIGTERM unless it handles it: this one does
    skc.ctr("run", "-d", "--runtime", runtime, IMAGE, "t2", "sh", "-c",
            "trap 'exit 143' TERM; while :; do sleep 0.05; done")
    row = tasks(skc)["t2"]
    assert row[2] == "RUNNING" and int(row[1]) > 0
    p = skc.ctr("tasks", "exec", "--exec-id", "e1", "t2", "echo", "x")
    assert p.stdout == "x\n"
    p = skc.ctr("tasks", "exec", "--exec-id", "e2", "t2", "sh", "-c", "exit 4", check=False)
    assert p.returncode == 4
    pids = [int(r[0]) for r in table(skc.ctr("tasks", "ps", "t2").stdout)]
    assert int(row[1]) in pids
    skc.ctr("tasks", "pause", "t2")
    wait_status(skc, "t2", "PAUSED")
    skc.ctr("tasks", "resume", "t2")
    wait_status(skc, "t2", "RUNNING")
    skc.ctr("tasks", "kill", "t2")
    wait_status(skc, "t2", "STOPPED")
    assert rm_status(skc, "t2") == 128 + signal.SIGTERM
    assert table(skc.ctr("tasks", "ls").stdout) == []
    assert [r[0] for r in table(skc.ctr("containers", "ls").stdout)] == ["t2"]
    runtime_col = table(skc.ctr("containers", "ls").stdout)[0][2]
    assert runtime_col == runtime
    skc.ctr("containers", "rm", "t2")
    assert ev.wait_for(" /tasks/delete ")
    evs = task_events(ev.lines())
    topics = [t for t, _ in evs]
    for topic in ("/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started",
                  "/tasks/paused", "/tasks/resumed", "/tasks/exit", "/tasks/delete"):
        assert topic in topics, (topic, topics)
    assert topics.index("/tasks/create") < topics.index("/tasks/start") < topics.index("/tasks/delete")
    exits = [e for t, e in evs if t == "/tasks/exit"]
    assert {"container_id": "t2", "id": "t2"}.items() <= exits[-1].items()
    assert {"container_id": "t2", "exec_id": "e1"}.items() <= [e for t, e in evs if t == "/tasks/exec-added"][0].items()
    assert exits[-1]["exit_status"] == 128 + signal.SIGTERM


def test_delete_running_task_is_refused(skc):
    skc.ctr("run", "-d", IMAGE, "t3", "sleep", "1000")
    p = skc.ctr("tasks", "rm", "t3", check=False)
    assert p.returncode != 0
    assert "running" in p.stderr.lower()
    assert tasks(skc)["t3"][2] == "RUNNING"
    skc.ctr("tasks", "kill", "-s", "KILL", "t3")
    wait_status(skc, "t3", "STOPPED")
    assert rm_status(skc, "t3") == 128 + signal.SIGKILL
    skc.ctr("containers", "rm", "t3")


def _cgroup_v1(controller: str, path: str, name: str) -> str:
    with open(f"/sys/fs/cgroup/{controller}{path}/{name}") as f:
        return f.read().strip()


def test_metrics_of_a_task_match_its_cgroup(skc):
    """ctr tasks metrics (table and JSON) on this hybrid host: io.containerd.cgroups.v1.Metrics,
    the values those of the task's cgroup (ctr puts it at /NAMESPACE/ID)."""
    limit = 64 * 1024 * 1024
    skc.ctr("run", "-d", "--memory-limit", str(limit), IMAGE, "t4", "sleep", "1000")
    cg = "/default/t4"
    cpu_before = int(_cgroup_v1("cpuacct", cg, "cpuacct.usage"))
    out = skc.ctr("tasks", "metrics", "t4").stdout
    cpu_after = int(_cgroup_v1("cpuacct", cg, "cpuacct.usage"))
    usage_file = int(_cgroup_v1("memory", cg, "memory.usage_in_bytes"))
    rows = {r[0]: r[1] for r in table(out.split("\n\n", 1)[1])}
    assert table(out.split("\n\n", 1)[0])[0][0] == "t4"
    assert int(rows["memory.limit_in_bytes"]) == limit == int(_cgroup_v1("memory", cg, "memory.limit_in_bytes"))
    usage = int(rows["memory.usage_in_bytes"])
    assert 0 < usage <= limit
    assert usage_file // 4 <= usage <= usage_file * 4  # the same cgroup, read a moment apart
    assert cpu_before <= int(rows["cpuacct.usage"]) <= cpu_after
    assert cpu_before > 0
    m = re.search(r"^cpuacct\.usage_percpu\s+\[([0-9 ]*)\]", out, re.M)
    assert m is not None, out
    percpu = [int(x) for x in m.group(1).split()]
    assert len(percpu) == len(_cgroup_v1("cpuacct", cg, "cpuacct.usage_percpu").split()) and sum(percpu) > 0
    assert int(rows["pids.current"]) == 1 == int(_cgroup_v1("pids", cg, "pids.current"))  # just sleep
    assert rows["pids.limit"] == "0"  # pids.max is "max": containerd reports 0
    doc = json.loads(skc.ctr("tasks", "metrics", "--format", "json", "t4").stdout)
    assert doc["memory"]["usage"]["limit"] == limit
    assert doc["memory"]["rss"] > 0 and doc["memory"]["hierarchical_memory_limit"] == limit
    assert doc["cpu"]["usage"]["total"] >= cpu_before
    assert doc["pids"]["current"] == 1
    skc.ctr("tasks", "kill", "-s", "KILL", "t4")
    wait_status(skc, "t4", "STOPPED")
    # a stopped task has no statistics: left out of the answer, which ctr reports
    p = skc.ctr("tasks", "metrics", "t4", check=False)
    assert p.returncode != 0 and "no metrics received" in p.stderr


def test_checkpoint_says_why_not(skc):
    skc.ctr("run", "-d", IMAGE, "t4", "sleep", "1000")
    p = skc.ctr("tasks", "checkpoint", "t4", check=False)
    assert p.returncode != 0 and "checkpoint is not supported" in p.stderr


def test_run_with_a_terminal(skc):
    master, slave = pty.openpty()
    proc = subprocess.Popen([CTR, "-a", skc.address, "run", "-t", "--rm", IMAGE, "tty1",
                             "sh", "-c", "tty; stty size; echo done"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 1.0)
            if not r:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every slave end is closed
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(DEADLINE)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode(errors="replace")
    assert code == 0, text
    assert "/dev/pts/" in text and "done" in text
    assert "\r\n" in text  # through a real terminal (onlcr)


def test_restart_loses_nothing(skc, state_dirs, events):
    """Ten containers; skiff-containerd is SIGKILLed and started again; every container is still
    running, then each is let go and gives its exit status and its whole output."""
    n = 10
    logs = state_dirs.short / "logs"
    logs.mkdir()
    for i in range(n):
        # each waits for a file the test creates in its rootfs after the restart
        script = f"echo start; while [ ! -e /go ]; do sleep 0.05; done; echo end; exit {i + 1}"
        skc.ctr("run", "-d", "--log-uri", f"file://{logs}/c{i}.log", IMAGE, f"c{i}", "sh", "-c", script)
    for i in range(n):
        deadline = time.monotonic() + DEADLINE
        while (logs / f"c{i}.log").read_text() != "start\n":
            assert time.monotonic() < deadline, f"c{i} printed no start"
            time.sleep(0.05)
    before = tasks(skc)
    assert all(before[f"c{i}"][2] == "RUNNING" for i in range(n))
    assert skc.proc is not None
    os.kill(skc.pid, signal.SIGKILL)
    skc.proc.wait()
    skc.proc = None
    skc.start()
    ev = events(skc.address)
    ev.wait_subscribed()
    after = tasks(skc)
    assert {k: v[1:] for k, v in after.items()} == {k: v[1:] for k, v in before.items()}
    for i in range(n):
        rootfs = skc.state / "io.containerd.runtime.v2.task" / "default" / f"c{i}" / "rootfs"
        (rootfs / "go").write_text("")
    for i in range(n):
        wait_status(skc, f"c{i}", "STOPPED")
        assert rm_status(skc, f"c{i}") == i + 1
        assert (logs / f"c{i}.log").read_text() == "start\nend\n"
        skc.ctr("containers", "rm", f"c{i}")
    for i in range(n):
        assert ev.wait_for(f'"container_id":"c{i}","id":"c{i}"'), ev.lines()
    exits = {e["container_id"]: e.get("exit_status", 0) for t, e in task_events(ev.lines()) if t == "/tasks/exit"}
    assert exits == {f"c{i}": i + 1 for i in range(n)}
