"""Containers through a real skiffd (spawning its own skiff-containerd), driven by the real
docker CLI: run, detached run + ps + inspect + logs + stop + rm, exit codes, names, wait, kill,
restart policy, live restore across a skiffd restart."""

from __future__ import annotations

import json
import os
import time

import pytest
from skiffd_util import Skiffd


@pytest.fixture
def skiffd(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    yield d
    d.stop()


def ok(r) -> str:
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr}"
    return r.stdout


@pytest.mark.root
def test_run_rm_echo_and_exit_codes(skiffd):
    r = skiffd.docker("run", "--rm", "busybox", "echo", "hello from isolation")
    assert (r.returncode, r.stdout) == (0, "hello from isolation\n"), r.stderr
    r = skiffd.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout) == (3, "out\n") and "err\n" in r.stderr
    r = skiffd.docker("run", "--rm", "busybox", "nosuchcmd")
    assert r.returncode == 127
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in r.stderr
    r = skiffd.docker("run", "--rm", "busybox", "/etc")          # runc 1.1: a directory is EACCES
    assert r.returncode == 126 and 'exec: "/etc": permission denied' in r.stderr
    r = skiffd.docker("run", "--rm", "busybox", "/etc/passwd")   # no execute bit: fails at create
    assert r.returncode == 126 and 'exec: "/etc/passwd": permission denied' in r.stderr
    assert "skiff-runc:" not in r.stdout
    r = skiffd.docker("run", "--rm", "--pull", "never", "busybox:nope", "true")
    assert r.returncode == 125 and "No such image: busybox:nope" in r.stderr, r.stderr
    r = skiffd.docker("run", "--rm", "busybox:nope", "true")      # a 404 makes the CLI pull
    assert r.returncode == 125 and "Unable to find image 'busybox:nope' locally" in r.stderr
    r = skiffd.docker("run", "--rm", "-u", "nobody", "busybox", "id", "-u")
    assert (r.returncode, r.stdout) == (0, "65534\n"), r.stderr
    # --rm removed every one of them, also those whose start failed
    assert ok(skiffd.docker("ps", "-aq")) == ""


@pytest.mark.root
def test_detached_ps_inspect_logs_stop_rm(skiffd):
    cid = ok(skiffd.docker("run", "-d", "--name", "web", "-l", "tier=front", "busybox", "sh", "-c",
                           "echo started; trap 'echo bye; exit 7' TERM; while :; do sleep 0.1; done")).strip()
    assert len(cid) == 64
    ps = ok(skiffd.docker("ps", "--format", "{{.ID}} {{.Names}} {{.Status}} {{.Labels}}"))
    assert ps.startswith(f"{cid[:12]} web Up ") and "tier=front" in ps
    info = json.loads(ok(skiffd.docker("inspect", "web")))[0]
    assert info["Id"] == cid and info["Name"] == "/web" and info["State"]["Running"] is True
    assert info["State"]["Pid"] > 0 and os.path.exists(f"/proc/{info['State']['Pid']}")
    assert info["Config"]["Hostname"] == cid[:12] and info["Config"]["Labels"] == {"tier": "front"}
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert info["Path"] == "sh" and info["Image"].startswith("sha256:")
    assert info["LogPath"].endswith(f"{cid}/{cid}-json.log")
    assert ok(skiffd.docker("ps", "-q", "--filter", "label=tier=front")).strip() == cid[:12]
    assert ok(skiffd.docker("ps", "-q", "--filter", "name=nomatch")) == ""
    # the prefix of the ID works as a reference
    assert ok(skiffd.docker("inspect", "-f", "{{.Name}}", cid[:8])).strip() == "/web"

    r = skiffd.docker("rm", "web")
    assert r.returncode == 1 and "container is running: stop the container before removing" in r.stderr
    assert ok(skiffd.docker("stop", "web")).strip() == "web"
    st = json.loads(ok(skiffd.docker("inspect", "web")))[0]["State"]
    assert (st["Status"], st["ExitCode"], st["Running"], st["Pid"]) == ("exited", 7, False, 0)
    assert st["FinishedAt"] > st["StartedAt"]
    assert ok(skiffd.docker("logs", "web")) == "started\nbye\n"
    # stop of a stopped container: 304, the CLI still succeeds
    assert ok(skiffd.docker("stop", "web")).strip() == "web"
    assert ok(skiffd.docker("ps", "-aq", "--filter", "status=exited")).strip() == cid[:12]
    assert ok(skiffd.docker("ps", "-aq", "--filter", "exited=7")).strip() == cid[:12]
    assert ok(skiffd.docker("rm", "web")).strip() == "web"
    r = skiffd.docker("container", "inspect", "web")
    assert r.returncode == 1 and "No such container: web" in r.stderr
    assert not os.path.exists(os.path.join(skiffd.data_dir, "containers", cid))


@pytest.mark.root
def test_name_conflict_rename_wait_kill(skiffd):
    ok(skiffd.docker("run", "-d", "--name", "one", "busybox", "sleep", "300"))
    r = skiffd.docker("run", "--name", "one", "busybox", "true")
    assert r.returncode == 125
    assert 'Conflict. The container name "/one" is already in use by container' in r.stderr
    ok(skiffd.docker("rename", "one", "two"))
    assert ok(skiffd.docker("inspect", "-f", "{{.Name}}", "two")).strip() == "/two"
    ok(skiffd.docker("kill", "two"))
    assert ok(skiffd.docker("wait", "two")).strip() == "137"
    r = skiffd.docker("kill", "two")
    assert r.returncode == 1 and "is not running" in r.stderr
    # wait for a created container that is then started (next-exit through start -a)
    ok(skiffd.docker("create", "--name", "three", "busybox", "sh", "-c", "exit 4"))
    r = skiffd.docker("start", "-a", "three")
    assert r.returncode == 4
    assert ok(skiffd.docker("wait", "three")).strip() == "4"
    pruned = ok(skiffd.docker("container", "prune", "-f"))
    assert "Deleted Containers:" in pruned
    assert ok(skiffd.docker("ps", "-aq")) == ""


@pytest.mark.root
def test_restart_policy_on_failure(skiffd):
    ok(skiffd.docker("run", "-d", "--name", "rs", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 1"))
    # each run is short: backoff 100 ms, 200 ms; then the policy gives up
    r = skiffd.docker("wait", "rs")
    assert r.returncode == 0
    for _ in range(200):
        st = json.loads(ok(skiffd.docker("inspect", "rs")))[0]
        if st["RestartCount"] == 2 and st["State"]["Status"] == "exited":
            break
    assert (st["RestartCount"], st["State"]["Status"], st["State"]["ExitCode"]) == (2, "exited", 1)


@pytest.mark.root
def test_live_restore_across_skiffd_restart(skiffd):
    cid = ok(skiffd.docker("run", "-d", "--name", "lr", "busybox", "sh", "-c",
                           "echo before; sleep 300")).strip()
    pid = json.loads(ok(skiffd.docker("inspect", "lr")))[0]["State"]["Pid"]
    assert skiffd.stop_daemon() == 0
    assert os.path.exists(f"/proc/{pid}"), "stopping skiffd stopped the container"
    skiffd.start()
    st = json.loads(ok(skiffd.docker("inspect", "lr")))[0]["State"]
    assert (st["Status"], st["Pid"]) == ("running", pid)
    assert ok(skiffd.docker("logs", "lr")) == "before\n"
    ok(skiffd.docker("stop", "-t", "1", "lr"))
    assert json.loads(ok(skiffd.docker("inspect", "lr")))[0]["State"]["ExitCode"] == 137
    assert cid


@pytest.mark.root
def test_info_counts_and_events(skiffd):
    ok(skiffd.docker("run", "-d", "--name", "c1", "busybox", "sleep", "300"))
    ok(skiffd.docker("create", "--name", "c2", "busybox", "true"))
    info = json.loads(ok(skiffd.docker("info", "--format", "{{json .}}")))
    assert (info["Containers"], info["ContainersRunning"], info["ContainersStopped"]) == (2, 1, 1)
    assert info["Images"] >= 1
    ok(skiffd.docker("pause", "c1"))
    assert ok(skiffd.docker("inspect", "-f", "{{.State.Status}}", "c1")).strip() == "paused"
    ok(skiffd.docker("unpause", "c1"))
    ok(skiffd.docker("rm", "-f", "c1", "c2"))
    until = str(int(time.time()) + 1)      # the CLI sends --until durations in whole seconds
    ev = ok(skiffd.docker("events", "--since", "0", "--until", until, "--filter", "container=c1",
                          "--format", "{{.Action}}")).split()
    assert ev[:2] == ["create", "start"] and ev[-3:] == ["kill", "die", "destroy"]
    assert "pause" in ev and "unpause" in ev


@pytest.mark.root
def test_sigkilled_skiffd_restores_logs_and_restart_policies(skiffd):
    ok(skiffd.docker("run", "-d", "--name", "ticker", "busybox", "sh", "-c",
                     "i=0; while :; do i=$((i+1)); echo n$i; sleep 0.2; done"))
    ok(skiffd.docker("run", "-d", "--name", "flappy", "--restart", "always", "busybox", "sh", "-c",
                     "echo up; sleep 1; exit 1"))
    pid = json.loads(ok(skiffd.docker("inspect", "ticker")))[0]["State"]["Pid"]
    skiffd.proc.kill()
    skiffd.proc.wait()
    skiffd.proc = None
    assert os.path.exists(f"/proc/{pid}")
    skiffd.start()
    assert json.loads(ok(skiffd.docker("inspect", "ticker")))[0]["State"]["Pid"] == pid
    first = ok(skiffd.docker("logs", "ticker")).split()
    # logs keep growing after the restore: the output copying resumed
    for _ in range(100):
        later = ok(skiffd.docker("logs", "ticker")).split()
        if len(later) > len(first) + 2:
            break
        time.sleep(0.1)
    assert later[:len(first)] == first and len(later) > len(first) + 2
    assert later == [f"n{i}" for i in range(1, len(later) + 1)]
    # the always policy keeps restarting flappy under the new skiffd
    count = json.loads(ok(skiffd.docker("inspect", "flappy")))[0]["RestartCount"]
    for _ in range(100):
        st = json.loads(ok(skiffd.docker("inspect", "flappy")))[0]
        if st["RestartCount"] > count:
            break
        time.sleep(0.1)
    assert st["RestartCount"] > count


@pytest.mark.root
def test_healthchecks(skiffd):
    ok(skiffd.docker("run", "-d", "--name", "good", "--health-cmd", "echo fine; test -e /tmp/ok",
                     "--health-interval", "200ms", "--health-retries", "2", "busybox", "sh", "-c",
                     "touch /tmp/ok; sleep 300"))
    ok(skiffd.docker("run", "-d", "--name", "bad", "--health-cmd", "exit 1", "--health-interval", "200ms",
                     "--health-retries", "2", "busybox", "sleep", "300"))
    for _ in range(200):
        st = {n: json.loads(ok(skiffd.docker("inspect", n)))[0]["State"]["Health"] for n in ("good", "bad")}
        if st["good"]["Status"] == "healthy" and st["bad"]["Status"] == "unhealthy":
            break
        time.sleep(0.05)
    assert st["good"]["Status"] == "healthy" and st["good"]["Log"][-1]["Output"] == "fine\n"
    assert st["bad"]["Status"] == "unhealthy" and st["bad"]["FailingStreak"] >= 2
    assert st["bad"]["Log"][-1]["ExitCode"] == 1
    ps = ok(skiffd.docker("ps", "--format", "{{.Names}} {{.Status}}")).splitlines()
    assert any(line.startswith("good Up ") and line.endswith("(healthy)") for line in ps), ps
    assert ok(skiffd.docker("ps", "-q", "--filter", "health=unhealthy")).strip() == \
        ok(skiffd.docker("inspect", "-f", "{{.Id}}", "bad")).strip()[:12]


@pytest.mark.root
def test_runtimes_builtin_and_configured(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data), "--add-runtime", "myrunc=/usr/sbin/runc")
    try:
        for rt in ("skiff-runc", "runc", "crun", "myrunc"):
            r = d.docker("run", "--rm", "--runtime", rt, "busybox", "echo", f"hi from {rt}")
            assert (r.returncode, r.stdout) == (0, f"hi from {rt}\n"), r.stderr
        cid = ok(d.docker("create", "--runtime", "crun", "busybox", "true")).strip()
        assert ok(d.docker("inspect", "-f", "{{.HostConfig.Runtime}}", cid)).strip() == "crun"
        r = d.docker("run", "--rm", "--runtime", "nope", "busybox", "true")
        assert r.returncode == 125 and "Unknown runtime specified nope" in r.stderr
    finally:
        d.stop()


@pytest.mark.root
def test_sigkilled_containerd_is_restarted_and_exits_meanwhile_are_seen(skiffd):
    ok(skiffd.docker("run", "-d", "--name", "long", "busybox", "sleep", "300"))
    ok(skiffd.docker("run", "-d", "--name", "short", "busybox", "sh", "-c", "sleep 1; exit 6"))
    pid = json.loads(ok(skiffd.docker("inspect", "long")))[0]["State"]["Pid"]
    old = skiffd.containerd_pid()
    os.kill(old, 9)
    for _ in range(300):
        new = skiffd.containerd_pid()
        st = json.loads(ok(skiffd.docker("inspect", "short")))[0]["State"]
        if new not in (None, old) and st["Status"] == "exited":
            break
        time.sleep(0.05)
    assert new not in (None, old), "skiffd did not start skiff-containerd again"
    assert (st["Status"], st["ExitCode"]) == ("exited", 6)
    assert os.path.exists(f"/proc/{pid}")
    assert json.loads(ok(skiffd.docker("inspect", "long")))[0]["State"]["Status"] == "running"
    ok(skiffd.docker("stop", "-t", "0", "long"))
    assert json.loads(ok(skiffd.docker("inspect", "long")))[0]["State"]["ExitCode"] == 137
