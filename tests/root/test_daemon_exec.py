"""docker exec, top, stats and update against a real skiffd (its own skiff-containerd), with the
real docker CLI and with docker-py. Limits are read back from the container's cgroup."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess

import docker
import pytest
from skiffd_util import DOCKER, Skiffd

MiB = 1 << 20


@pytest.fixture
def skiffd(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    yield d
    d.stop()


@pytest.fixture
def client(skiffd):
    c = docker.DockerClient(base_url=f"unix://{skiffd.sock}", timeout=60)
    yield c
    c.close()


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"rc {r.returncode}: {r.stdout} {r.stderr}"
    return r.stdout


def _cgroup_file(controller: str, cid: str, name: str) -> str:
    with open(f"/sys/fs/cgroup/{controller}/skiff/{cid}/{name}") as f:
        return f.read().strip()


@pytest.mark.root
def test_cli_exec(skiffd):
    d = skiffd.docker
    cid = _ok(d("run", "-d", "--name", "ex", "busybox", "sleep", "300")).strip()
    assert _ok(d("exec", "ex", "echo", "inside")) == "inside\n"
    assert d("exec", "ex", "sh", "-c", "exit 7").returncode == 7
    assert _ok(d("exec", "ex", "cat", "/proc/1/comm")) == "sleep\n"
    out = _ok(d("exec", "-e", "K=v", "-u", "1000:1000", "-w", "/tmp", "ex", "sh", "-c",
                'echo $K $(id -u):$(id -g) $(pwd)'))
    assert out == "v 1000:1000 /tmp\n"
    assert _ok(d("exec", "-u", "nobody", "ex", "id", "-un")) == "nobody\n"      # name from /etc/passwd
    r = d("exec", "-u", "nosuchuser", "ex", "true")
    assert r.returncode != 0 and "unable to find user nosuchuser" in r.stdout + r.stderr
    assert _ok(d("exec", "-i", "ex", "cat", input="fromstdin\n")) == "fromstdin\n"
    r = d("exec", "ex", "sh", "-c", "echo out; echo err >&2")
    assert (r.stdout, r.stderr) == ("out\n", "err\n")
    # -t: through a pty made by script(1); the exec gets its own pts with the client's size
    r = subprocess.run(["script", "-qec", f"stty rows 21 cols 71; {DOCKER} exec -it ex sh -c 'tty; stty size'",
                        "/dev/null"], env=skiffd.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "/dev/pts/" in r.stdout and "21 71" in r.stdout, r.stdout
    r = d("exec", "ex", "nosuchcmd")
    assert r.returncode == 126 and 'exec: "nosuchcmd": executable file not found' in r.stdout + r.stderr
    # -d: no stream; the process runs on
    _ok(d("exec", "-d", "ex", "sh", "-c", "echo bg > /tmp/bg"))
    assert _ok(d("exec", "ex", "sh", "-c", "for i in $(seq 50); do [ -s /tmp/bg ] && break; sleep 0.1; done; cat /tmp/bg")) == "bg\n"
    # a background child holding the output does not keep the exec open
    assert _ok(d("exec", "ex", "sh", "-c", "sleep 30 & echo started")) == "started\n"
    _ok(d("stop", "-t", "0", "ex"))
    r = d("exec", "ex", "true")
    assert r.returncode == 1 and f"container {cid} is not running" in r.stderr


@pytest.mark.root
def test_cli_top_stats_update(skiffd):
    d = skiffd.docker
    cid = _ok(d("run", "-d", "--name", "lim", "-m", "64m", "--pids-limit", "50", "busybox", "sleep", "300")).strip()
    top = _ok(d("top", "lim")).splitlines()
    assert top[0].split()[:3] == ["UID", "PID", "PPID"] and len(top) == 2 and top[1].endswith("sleep 300")
    top = _ok(d("top", "lim", "-o", "pid,comm")).splitlines()
    assert top[0].split() == ["PID", "COMMAND"] and top[1].split()[1] == "sleep"
    out = _ok(d("stats", "--no-stream", "--format", "{{.MemUsage}} {{.PIDs}}", "lim")).strip()
    assert out.split(" / ")[1].split()[0] == "64MiB" and out.endswith(" 1"), out
    assert _ok(d("update", "-m", "96m", "--memory-swap", "192m", "--pids-limit", "20", "--cpus", "0.5",
                 "lim")).strip() == "lim"
    assert _cgroup_file("memory", cid, "memory.limit_in_bytes") == str(96 * MiB)
    assert _cgroup_file("pids", cid, "pids.max") == "20"
    assert _cgroup_file("cpu", cid, "cpu.cfs_quota_us") == "50000"
    out = _ok(d("stats", "--no-stream", "--format", "{{.MemUsage}}", "lim"))
    assert out.strip().endswith("/ 96MiB"), out
    i = json.loads(_ok(d("inspect", "lim")))[0]["HostConfig"]
    assert (i["Memory"], i["MemorySwap"], i["PidsLimit"], i["NanoCpus"]) == (96 * MiB, 192 * MiB, 20, 500000000)
    r = d("update", "-m", "512m", "lim")
    assert r.returncode == 1 and "update the memoryswap at the same time" in r.stderr
    # the update holds across a restart (it is in the stored spec)
    _ok(d("restart", "-t", "0", "lim"))
    assert _cgroup_file("memory", cid, "memory.limit_in_bytes") == str(96 * MiB)
    _ok(d("stop", "-t", "0", "lim"))
    r = d("top", "lim")
    assert r.returncode == 1 and "is not running" in r.stderr
    out = _ok(d("stats", "--no-stream", "--format", "{{.MemUsage}} {{.CPUPerc}}", "lim"))
    assert out.strip() == "0B / 0B 0.00%"
    _ok(d("update", "--restart", "always", "lim"))
    assert json.loads(_ok(d("inspect", "lim")))[0]["HostConfig"]["RestartPolicy"]["Name"] == "always"


def _read_frames(sock: socket.socket) -> list[tuple[int, bytes]]:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    out = []
    while data:
        stream, n = struct.unpack(">BxxxL", data[:8])
        out.append((stream, data[8:8 + n]))
        data = data[8 + n:]
    return out


@pytest.mark.root
def test_docker_py_exec_top_stats_update(client):
    c = client.containers.run("busybox", ["sleep", "300"], detach=True, mem_limit="64m", name="py")
    try:
        code, out = c.exec_run(["sh", "-c", "echo hi; echo err >&2; exit 3"])
        assert code == 3 and out == b"hi\nerr\n"
        code, out = c.exec_run("id -u", user="1000", environment={"A": "b"}, workdir="/tmp")
        assert (code, out) == (0, b"1000\n")
        code, (out, err) = c.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True)
        assert (code, out, err) == (0, b"o\n", b"e\n")
        code, out = c.exec_run("tty", tty=True)                  # raw stream, a pty
        assert code == 0 and out.startswith(b"/dev/pts/")
        res = c.exec_run(["sh", "-c", "for i in 1 2 3; do echo $i; done"], stream=True)
        assert res.exit_code is None and b"".join(res.output) == b"1\n2\n3\n"
        res = c.exec_run(["sh", "-c", "echo sock"], socket=True)
        sock = res.output._sock
        try:
            sock.shutdown(socket.SHUT_WR)
            assert _read_frames(sock) == [(1, b"sock\n")]
        finally:
            res.output.close()
        eid = client.api.exec_create(c.id, ["sh", "-c", "exit 5"])["Id"]
        client.api.exec_start(eid)
        i = client.api.exec_inspect(eid)
        assert i["ExitCode"] == 5 and i["Running"] is False and i["ContainerID"] == c.id
        top = c.top()
        assert "PID" in top["Titles"] and any("sleep 300" in p[-1] for p in top["Processes"])
        s = c.stats(stream=False)
        assert s["memory_stats"]["limit"] == 64 * MiB and s["memory_stats"]["usage"] > 0
        assert s["precpu_stats"]["cpu_usage"]["total_usage"] > 0 and s["cpu_stats"]["online_cpus"] >= 1
        assert s["name"] == "/py" and s["id"] == c.id and s["pids_stats"]["current"] == 1
        stream = c.stats(stream=True, decode=True)
        first, second = next(stream), next(stream)
        stream.close()
        assert second["preread"] == first["read"] and second["cpu_stats"]["system_cpu_usage"] >= \
            first["cpu_stats"]["system_cpu_usage"]
        c.update(mem_limit="80m", memswap_limit="160m")
        c.reload()
        assert c.attrs["HostConfig"]["Memory"] == 80 * MiB
        assert _cgroup_file("memory", c.id, "memory.limit_in_bytes") == str(80 * MiB)
        assert c.stats(stream=False, one_shot=True)["memory_stats"]["limit"] == 80 * MiB
        assert os.path.exists(f"/proc/{c.attrs['State']['Pid']}")
    finally:
        c.remove(force=True)
