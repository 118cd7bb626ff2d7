"""docker-py (the Docker SDK for Python) drives a real skiffd: run (attached and detached), logs
streaming, wait conditions, events, attach sockets, the lifecycle verbs, list filters, prune,
images, system calls, error classes, and exec/stats.

One skiffd serves the module (started before the first test's leak snapshot, with one warm-up
container so that its cgroup parent exists before any test); every test removes what it made.
The exec and stats tests need ``/containers/{id}/exec`` and ``/stats`` (issue 6, wave 2).
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import subprocess
import tempfile
import threading

import docker
import docker.errors
import pytest
from docker.utils.socket import frames_iter, next_frame_header, read_exactly
from skiffd_util import Skiffd

IMAGE = "busybox:latest"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    run_dir = tempfile.mkdtemp(prefix="sk-", dir="/tmp")
    # a cgroup parent of its own: other tests' daemons (and their clean-up of /skiff) stay apart
    d = Skiffd(os.path.join(run_dir, "run"), str(tmp_path_factory.mktemp("skiffd-py")),
               cgroup_parent="/skiff-" + os.path.basename(run_dir))
    try:
        # warm-up with runc: it makes the parent cgroups and, as dockerd's /docker, never removes
        # them, so they exist before any test's leak snapshot (d.stop removes them)
        r = d.docker("run", "--rm", "--runtime", "runc", IMAGE, "true")
        assert r.returncode == 0, r.stderr
        yield d
    finally:
        d.stop()
        shutil.rmtree(run_dir)


@pytest.fixture
def client(daemon):
    c = docker.DockerClient(base_url=f"unix://{daemon.sock}", timeout=120)
    yield c
    try:
        for ctr in c.containers.list(all=True):
            ctr.remove(force=True)
    finally:
        c.close()


# ------------------------------------------------------------------ system, images


@pytest.mark.root
def test_ping_version_info(client):
    assert client.ping() is True
    v = client.version()
    assert v["ApiVersion"] == client.api.api_version
    assert v["Os"] == "linux" and v["Components"][0]["Name"] == "Engine"
    info = client.info()
    assert info["OperatingSystem"] and info["Containers"] == 0 and info["Images"] >= 1
    assert info["DockerRootDir"]


@pytest.mark.root
def test_images_list_get_and_not_found(client):
    images = client.images.list()
    busy = [i for i in images if IMAGE in i.tags]
    assert len(busy) == 1
    img = client.images.get("busybox")
    assert img.id == busy[0].id and img.id.startswith("sha256:")
    assert img.attrs["Config"]["Cmd"] == ["sh"]
    assert client.images.get(img.id[7:19]).id == img.id         # a short id works
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("busybox:nope")
    assert [i.id for i in client.images.list(name="busybox")] == [img.id]


# ------------------------------------------------------------------ run


@pytest.mark.root
def test_run_attached_output_and_exit_codes(client):
    out = client.containers.run(IMAGE, ["sh", "-c", "echo out; echo err >&2"], remove=True)
    assert out == b"out\n"
    out = client.containers.run(IMAGE, ["sh", "-c", "echo out; echo err >&2"], remove=True,
                                stdout=False, stderr=True)
    assert out == b"err\n"
    with pytest.raises(docker.errors.ContainerError) as ei:
        client.containers.run(IMAGE, ["sh", "-c", "echo bad >&2; exit 3"], remove=True, stderr=True)
    assert ei.value.exit_status == 3 and b"bad" in ei.value.stderr
    # a command that cannot start: the API error of the start, 400/404/500 by cause
    with pytest.raises(docker.errors.APIError) as ei2:
        client.containers.run(IMAGE, ["nosuchcmd"], remove=True)
    assert "executable file not found in $PATH" in str(ei2.value)
    # docker-py's remove=True removes after a wait, so (as with dockerd) the container whose start
    # failed stays, never started, with the start error and exit code 127 recorded
    left = client.containers.list(all=True)
    assert len(left) == 1 and left[0].status == "created"
    assert left[0].attrs["State"]["ExitCode"] == 127
    assert "executable file not found" in left[0].attrs["State"]["Error"]


@pytest.mark.root
def test_run_detached_logs_stream_and_follow(client):
    c = client.containers.run(IMAGE, ["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.1; done"],
                              detach=True)
    assert c.status in ("created", "running")
    # logs(stream=True) while it runs: follows until the container exits
    lines = b"".join(c.logs(stream=True))
    assert lines == b"line1\nline2\nline3\n"
    assert c.wait() == {"StatusCode": 0, "Error": None}
    assert c.logs() == b"line1\nline2\nline3\n"
    assert b"".join(c.logs(stream=True, follow=True)) == b"line1\nline2\nline3\n"   # exited: ends
    assert c.logs(tail=1) == b"line3\n"
    ts = c.logs(timestamps=True).split(b"\n")[0]
    assert ts.endswith(b" line1") and ts[:4].isdigit()
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 0


@pytest.mark.root
def test_wait_conditions(client):
    c = client.containers.create(IMAGE, ["sh", "-c", "exit 5"])
    # next-exit on a created container waits for the run that follows
    result: dict = {}
    waiter = threading.Thread(target=lambda: result.update(c.wait(condition="next-exit")))
    waiter.start()
    c.start()
    waiter.join(60)
    assert result == {"StatusCode": 5, "Error": None}
    assert c.wait(condition="not-running")["StatusCode"] == 5
    # removed: answered when the container is gone
    removed: dict = {}
    w2 = threading.Thread(target=lambda: removed.update(c.wait(condition="removed")))
    w2.start()
    c.remove()
    w2.join(60)
    assert removed["StatusCode"] == 5
    with pytest.raises(docker.errors.APIError) as ei:
        client.api.wait("nosuch", condition="bogus")
    assert ei.value.status_code in (400, 404)


# ------------------------------------------------------------------ events


@pytest.mark.root
def test_events_filters_since_until(client):
    start = datetime.datetime.now(datetime.UTC)
    c = client.containers.run(IMAGE, ["true"], detach=True, labels={"evt": "yes"})
    c.wait()
    c.remove()
    end = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
    evs = list(client.events(decode=True, since=start, until=end, filters={"container": c.id}))
    actions = [e["Action"] for e in evs]
    assert actions[:2] == ["create", "start"] and actions[-1] == "destroy"
    assert "die" in actions
    die = next(e for e in evs if e["Action"] == "die")
    assert die["Actor"]["Attributes"]["exitCode"] == "0" and die["Actor"]["Attributes"]["evt"] == "yes"
    assert die["Type"] == "container" and die["id"] == c.id and die["from"] == IMAGE
    only_die = list(client.events(decode=True, since=start, until=end,
                                  filters={"container": c.id, "event": "die"}))
    assert [e["Action"] for e in only_die] == ["die"]
    by_label = list(client.events(decode=True, since=start, until=end,
                                  filters={"label": "evt=yes", "type": "container"}))
    assert [e["Action"] for e in by_label] == actions
    # live: a stream opened now sees the next container's events
    stream = client.events(decode=True, filters={"type": "container", "event": "start"})
    try:
        c2 = client.containers.run(IMAGE, ["true"], detach=True)
        ev = next(iter(stream))
        assert ev["Action"] == "start" and ev["id"] == c2.id
    finally:
        stream.close()
    # docker-py's events() does not check the status: ask directly
    bad = client.api._get(client.api._url("/events"), params={"filters": '{"type": ["nosuchtype"]}'})
    assert bad.status_code == 400 and "invalid filter 'type=nosuchtype'" in bad.json()["message"]


# ------------------------------------------------------------------ attach


@pytest.mark.root
def test_attach_socket_stdin_and_frames(client):
    c = client.containers.create(IMAGE, ["sh", "-c", "read x; echo got:$x; echo err:$x >&2"],
                                 stdin_open=True)
    sock = c.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    raw = sock._sock
    try:
        c.start()
        raw.sendall(b"hello\n")
        got: dict[int, bytes] = {1: b"", 2: b""}
        while not (got[1].endswith(b"\n") and got[2].endswith(b"\n")):
            stream, size = next_frame_header(sock)
            assert stream in (1, 2), (stream, size)
            got[stream] += read_exactly(sock, size)
        assert got == {1: b"got:hello\n", 2: b"err:hello\n"}
    finally:
        raw.close()
    assert c.wait()["StatusCode"] == 0


@pytest.mark.root
def test_attach_socket_tty_and_close_write_ends_stdin_once(client):
    c = client.containers.create(IMAGE, ["cat"], stdin_open=True, tty=False)   # StdinOnce: attached run
    assert c.attrs["Config"]["StdinOnce"] is True
    sock = c.attach_socket(params={"stdin": 1, "stdout": 1, "stream": 1})
    raw = sock._sock
    try:
        c.start()
        raw.sendall(b"ping\n")
        raw.shutdown(socket.SHUT_WR)                  # EOF on stdin: cat exits
        data = b"".join(d for _s, d in frames_iter(sock, tty=False))
        assert data == b"ping\n"
    finally:
        raw.close()
    assert c.wait()["StatusCode"] == 0


# ------------------------------------------------------------------ lifecycle


@pytest.mark.root
def test_kill_stop_restart_remove(client):
    c = client.containers.run(IMAGE, ["sh", "-c", "trap 'exit 9' USR1; trap 'exit 7' TERM; "
                                      "echo ready; while :; do sleep 0.1; done"], detach=True, name="life")
    assert b"".join(_until(c.logs(stream=True), b"ready\n")) == b"ready\n"
    c.kill(signal="SIGUSR1")
    assert c.wait()["StatusCode"] == 9
    c.start()
    c.reload()
    assert c.status == "running"
    c.stop(timeout=30)
    c.reload()
    assert (c.status, c.attrs["State"]["ExitCode"]) == ("exited", 7)
    c.restart(timeout=30)
    c.reload()
    assert c.status == "running" and c.attrs["RestartCount"] == 0
    with pytest.raises(docker.errors.APIError) as ei:
        c.remove()
    assert ei.value.status_code == 409 and "stop the container before removing" in str(ei.value)
    with pytest.raises(docker.errors.APIError) as ei:
        client.containers.create(IMAGE, ["true"], name="life")
    assert ei.value.status_code == 409 and 'The container name "/life" is already in use' in str(ei.value)
    c.remove(force=True)
    with pytest.raises(docker.errors.NotFound) as nf:
        client.containers.get("life")
    assert "No such container: life" in str(nf.value)
    with pytest.raises(docker.errors.NotFound):
        client.api.kill("life")
    # kill of a stopped container: 409
    d = client.containers.create(IMAGE, ["true"])
    with pytest.raises(docker.errors.APIError) as ei:
        d.kill()
    assert ei.value.status_code == 409 and "is not running" in str(ei.value)
    d.remove()


def _until(gen, want: bytes):
    """Chunks of a log stream until their concatenation ends with ``want``."""
    buf = b""
    for chunk in gen:
        buf += chunk
        yield chunk
        if buf.endswith(want):
            return


@pytest.mark.root
def test_list_filters_and_prune(client):
    a = client.containers.run(IMAGE, ["sleep", "60"], detach=True, name="alpha", labels={"k": "a"})
    b = client.containers.create(IMAGE, ["true"], name="beta", labels={"k": "b"})
    e = client.containers.run(IMAGE, ["sh", "-c", "exit 4"], detach=True, name="gamma", labels={"k": "c"})
    assert e.wait()["StatusCode"] == 4
    ids = lambda cs: sorted(x.id for x in cs)      # noqa: E731
    assert ids(client.containers.list()) == [a.id]
    assert ids(client.containers.list(all=True)) == sorted([a.id, b.id, e.id])
    assert ids(client.containers.list(all=True, filters={"label": "k=b"})) == [b.id]
    assert ids(client.containers.list(all=True, filters={"label": "k"})) == sorted([a.id, b.id, e.id])
    assert ids(client.containers.list(all=True, filters={"status": "exited"})) == [e.id]
    assert ids(client.containers.list(all=True, filters={"status": "created"})) == [b.id]
    assert ids(client.containers.list(all=True, filters={"exited": 4})) == [e.id]
    assert ids(client.containers.list(all=True, filters={"name": "alp"})) == [a.id]
    assert ids(client.containers.list(all=True, filters={"id": b.id[:10]})) == [b.id]
    assert ids(client.containers.list(all=True, filters={"ancestor": "busybox"})) == sorted([a.id, b.id, e.id])
    assert len(client.containers.list(all=True, limit=1)) == 1
    with pytest.raises(docker.errors.APIError) as ei:
        client.containers.list(filters={"nosuch": "x"})
    assert ei.value.status_code == 400
    # prune removes the stopped ones only, label filter honoured
    pr = client.containers.prune(filters={"label": "k=c"})
    assert pr["ContainersDeleted"] == [e.id] and isinstance(pr["SpaceReclaimed"], int)
    pr = client.containers.prune()
    assert pr["ContainersDeleted"] == [b.id]
    assert ids(client.containers.list(all=True)) == [a.id]


# ------------------------------------------------------------------ exec, stats (issue 6, wave 2)


@pytest.mark.root
def test_exec_run(client):
    c = client.containers.run(IMAGE, ["sleep", "60"], detach=True)
    r = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert r.exit_code == 3 and b"out\n" in r.output and b"err\n" in r.output
    r = c.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True)
    assert r == (0, (b"out\n", b"err\n"))
    r = c.exec_run(["id", "-u"], user="nobody", environment={"X": "1"}, workdir="/tmp")
    assert (r.exit_code, r.output) == (0, b"65534\n")
    r = c.exec_run(["sh", "-c", "echo $X $PWD"], environment={"X": "1"}, workdir="/tmp")
    assert r.output == b"1 /tmp\n"
    r = c.exec_run("tty", tty=True)
    assert r.exit_code == 0 and r.output.startswith(b"/dev/pts/")
    r = c.exec_run(["nosuchcmd"])
    assert r.exit_code == 126 or r.exit_code == 127
    stream = c.exec_run(["sh", "-c", "echo a; echo b"], stream=True)
    assert b"".join(stream.output) == b"a\nb\n"
    c.kill()
    c.wait()
    with pytest.raises(docker.errors.APIError) as ei:
        c.exec_run(["true"])
    assert ei.value.status_code == 409


@pytest.mark.root
def test_stats(client):
    c = client.containers.run(IMAGE, ["sleep", "60"], detach=True)
    s = c.stats(stream=False)
    assert s["id"] == c.id and s["name"] == "/" + c.name
    assert s["memory_stats"]["usage"] > 0 and s["pids_stats"]["current"] >= 1
    assert s["cpu_stats"]["cpu_usage"]["total_usage"] > 0
    it = c.stats(decode=True)
    first = next(it)
    second = next(it)
    assert second["precpu_stats"]["cpu_usage"]["total_usage"] == first["cpu_stats"]["cpu_usage"]["total_usage"]
    it.close()


# ------------------------------------------------------------------ the docker CLI on a terminal


@pytest.mark.root
def test_cli_run_it_output_is_the_containers_only(daemon):
    """``docker run -it`` under ``script`` (a terminal): exactly what the container wrote. The
    stdin pipe stays open until the end: on EOF of its stdin ``script`` types a NUL into the
    terminal, which the container's pty echoes as ``^@`` (the same with runc alone)."""
    p = subprocess.Popen(["script", "-qec", "docker run -it --rm busybox tty", "/dev/null"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=daemon.env)
    try:
        out = p.stdout.read()
        assert p.wait(timeout=120) == 0
    finally:
        p.stdin.close()
        p.stdout.close()
    assert out == b"/dev/pts/0\r\n"


# ------------------------------------------------------------------ disk usage


@pytest.mark.root
def test_system_df_api_and_cli(client, daemon):
    running = client.containers.run(IMAGE, ["sh", "-c", "head -c 50000 /dev/zero > /big; echo ok; sleep 60"],
                                    detach=True, name="dfrun")
    assert b"".join(_until(running.logs(stream=True), b"ok\n")) == b"ok\n"     # /big is written
    stopped = client.containers.create(IMAGE, ["true"], name="dfstopped")
    img = client.images.get(IMAGE)
    df = client.df()
    assert set(df) >= {"LayersSize", "Images", "Containers", "Volumes", "BuildCache"}
    assert df["Volumes"] == [] and df["BuildCache"] == []
    (busy,) = [i for i in df["Images"] if i["Id"] == img.id]
    assert busy["Containers"] == 2 and busy["Size"] == img.attrs["Size"] and busy["SharedSize"] == 0
    assert df["LayersSize"] == sum(i["Size"] - i["SharedSize"] for i in df["Images"]) > 0
    by_name = {c["Names"][0]: c for c in df["Containers"]}
    assert set(by_name) == {"/dfrun", "/dfstopped"}
    # the writable layer's usage (as containerd's: blocks of every inode, its top directory too)
    assert by_name["/dfstopped"]["SizeRw"] < 50000 <= by_name["/dfrun"]["SizeRw"]
    for c in by_name.values():
        assert c["SizeRootFs"] == img.attrs["Size"] + c["SizeRw"]
    assert by_name["/dfrun"]["Id"] == running.id and by_name["/dfstopped"]["Id"] == stopped.id
    # ?type= limits the answer (API 1.42+); an unknown type is a 400
    only = client.api._result(client.api._get(client.api._url("/system/df"), params={"type": "image"}), True)
    assert only["Containers"] is None and [i["Id"] for i in only["Images"]] == [i["Id"] for i in df["Images"]]
    bad = client.api._get(client.api._url("/system/df"), params={"type": "nope"})
    assert bad.status_code == 400 and bad.json()["message"] == "unknown object type: nope"
    # the docker CLI
    r = daemon.docker("system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Active}}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"Images {len(df['Images'])} {sum(1 for i in df['Images'] if i['Containers'] > 0)}",
        "Containers 2 1", "Local Volumes 0 0", "Build Cache 0 0"]
    r = daemon.docker("system", "df", "-v")
    assert r.returncode == 0, r.stderr
    assert "dfrun" in r.stdout and "dfstopped" in r.stdout and "busybox" in r.stdout


@pytest.mark.root
@pytest.mark.parametrize("runtime", ["skiff-runc", "runc", "crun"])
def test_cli_runtime_create_errors_are_not_container_output(daemon, runtime):
    """A runtime's create error reaches ``docker run`` as the daemon's answer only: runc and crun
    also print it on their stderr, which is the container's stderr FIFO; skiffd drops what
    arrives there before the task exists."""
    r = daemon.docker("run", "--rm", "--runtime", runtime, IMAGE, "/etc/passwd")
    assert r.returncode == (125 if runtime == "crun" else 126), r.stderr   # crun words it its way
    assert r.stderr.startswith("docker: Error response from daemon: failed to create task"), r.stderr
    assert r.stdout == ""


@pytest.mark.root
def test_containers_cgroups_are_under_the_cgroup_parent(client, daemon):
    c = client.containers.run(IMAGE, ["sleep", "60"], detach=True)
    c.reload()
    assert daemon.cgroup_parent.startswith("/skiff-sk-")
    with open(f"/proc/{c.attrs['State']['Pid']}/cgroup") as f:
        lines = f.read().splitlines()
    memory = [ln.split(":", 2)[2] for ln in lines if ln.split(":", 2)[1] == "memory"]
    assert memory == [f"{daemon.cgroup_parent}/{c.id}"]
