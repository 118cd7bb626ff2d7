"""Real Docker (dockerd 20.10 + containerd + containerd-shim-runc-v2) with skiff-runc in place of runc.

One private dockerd for the module (see ``dockerd_util``), with ``skiff`` registered as an extra
runtime next to the default ``runc``. Most checks run under both runtimes: the runc run proves
that the expected value is what Docker really does, the skiff run that skiff-runc does the same.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dockerd_util import Dockerd

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO / "build" / "images"
IMAGE_TAR = IMAGE_DIR / "busybox.tar"
IMAGE = "busybox:latest"
NETWORK = "skiffnet"  # a user-defined bridge in dockerd's own network namespace
BOTH = pytest.mark.parametrize("rt", ["runc", "skiff"])


def _ensure_image() -> str:
    if not IMAGE_TAR.exists():
        subprocess.run([sys.executable, "-m", "skiff.images.builtin", "build", "--out", str(IMAGE_DIR)],
                       check=True, cwd=REPO, capture_output=True, text=True)
    return str(IMAGE_TAR)


@pytest.fixture(scope="module")
def dockerd(runtime_bin: str, tmp_path_factory: pytest.TempPathFactory):
    """A private dockerd with the runtime ``skiff`` = skiff-runc, the busybox image loaded and
    the bridge network ``skiffnet``. The warm-up containers (one per runtime, on that network)
    create the daemon's cgroup parent and libnetwork's namespace mounts before any test's leak
    snapshot: those belong to the daemon, and go away with it."""
    image = _ensure_image()
    d = Dockerd(tmp_path_factory.mktemp("dockerd"), runtimes={"skiff": runtime_bin})
    try:
        d.start()
        d.load_image(image)
        d.docker("network", "create", "--driver", "bridge", NETWORK)
        for rt in ("runc", "skiff"):
            d.docker("run", "--rm", "--runtime", rt, "--network", NETWORK, IMAGE, "true")
        yield d
    finally:
        d.close()


class Containers:
    """Names for a test's containers; every one is removed (``rm -f``) after the test."""

    def __init__(self, d: Dockerd, prefix: str) -> None:
        self.d = d
        self.prefix = prefix
        self.names: list[str] = []

    def name(self, what: str) -> str:
        n = f"{self.prefix}-{what}-{len(self.names)}"
        self.names.append(n)
        return n

    def run_detached(self, rt: str, *args: str) -> str:
        """``docker run -d --runtime rt ...``; returns the container's name."""
        n = self.name(rt)
        self.d.docker("run", "-d", "--name", n, "--runtime", rt, *args)
        return n

    def cleanup(self) -> None:
        if self.names:
            self.d.docker("rm", "-f", "-v", *self.names, check=False)


@pytest.fixture
def containers(dockerd: Dockerd, request: pytest.FixtureRequest):
    c = Containers(dockerd, re.sub(r"[^a-zA-Z0-9_.-]", "-", request.node.name)[:40])
    yield c
    c.cleanup()


def cgroup_dir(pid: int, controller: str) -> str:
    """The v1 cgroup directory of ``pid`` for ``controller``, read from /proc/PID/cgroup."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                return f"/sys/fs/cgroup/{controller}{path}"
    raise AssertionError(f"pid {pid} is in no {controller} cgroup")


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


# --- docker run --------------------------------------------------------------------------------

@BOTH
def test_run_echo(dockerd: Dockerd, rt: str) -> None:
    p = dockerd.docker("run", "--rm", "--runtime", rt, IMAGE, "echo", "hello from", rt)
    assert p.stdout == f"hello from {rt}\n"
    assert p.stderr == ""


@BOTH
def test_exit_code(dockerd: Dockerd, containers: Containers, rt: str) -> None:
    n = containers.name(rt)
    p = dockerd.docker("run", "--name", n, "--runtime", rt, IMAGE, "sh", "-c", "exit 3", check=False)
    assert p.returncode == 3, p.stderr
    st = dockerd.inspect(n)["State"]
    assert (st["Status"], st["ExitCode"], st["OOMKilled"]) == ("exited", 3, False)


@BOTH
def test_stdin_is_piped(dockerd: Dockerd, rt: str) -> None:
    p = dockerd.docker("run", "--rm", "-i", "--runtime", rt, IMAGE, "sh", "-c", "tr a-z A-Z; tty",
                       input="piped through the shim\n", check=False)
    assert p.returncode == 1  # `tty` fails: no terminal without -t
    assert p.stdout == "PIPED THROUGH THE SHIM\nnot a tty\n"


@BOTH
def test_missing_executable(dockerd: Dockerd, rt: str) -> None:
    """The shim reads the runtime's --log (JSON) for the error; docker maps it to 127."""
    p = dockerd.docker("run", "--rm", "--runtime", rt, IMAGE, "/nonexistent", check=False)
    assert p.returncode == 127
    assert "OCI runtime create failed" in p.stderr
    assert 'exec: "/nonexistent": stat /nonexistent: no such file or directory' in p.stderr


@BOTH
def test_interactive_tty(dockerd: Dockerd, rt: str) -> None:
    rc, out = dockerd.docker_pty("run", "--rm", "-it", "--runtime", rt, IMAGE,
                                 "sh", "-c", "tty; echo hi")
    assert rc == 0, out
    lines = [x.strip("\0") for x in out.splitlines()]
    assert lines == ["/dev/pts/0", "hi"]


@BOTH
def test_home_is_set_from_passwd(dockerd: Dockerd, containers: Containers, rt: str) -> None:
    """dockerd leaves HOME out of the environment: the runtime sets it from the container's
    /etc/passwd (/ for a uid without an entry), for the init and for exec'd processes."""
    def home(*args: str) -> str:
        env = dockerd.docker("run", "--rm", "--runtime", rt, *args, IMAGE, "env").stdout.splitlines()
        return next((e for e in env if e.startswith("HOME=")), "(no HOME)")

    assert home() == "HOME=/root"
    assert home("-u", "65534") == "HOME=/home"
    assert home("-u", "1000") == "HOME=/"
    assert home("-e", "HOME=/elsewhere") == "HOME=/elsewhere"
    n = containers.run_detached(rt, IMAGE, "sleep", "300")
    assert dockerd.docker("exec", "-u", "65534", n, "sh", "-c", "echo $HOME").stdout == "/home\n"


@BOTH
def test_read_only_rootfs(dockerd: Dockerd, rt: str) -> None:
    p = dockerd.docker("run", "--rm", "--read-only", "--runtime", rt, IMAGE,
                       "sh", "-c", "grep ' / ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; touch /x",
                       check=False)
    assert p.returncode == 1
    assert p.stdout == "ro\n"
    assert "touch: /x: Read-only file system" in p.stderr


@BOTH
def test_capabilities(dockerd: Dockerd, rt: str) -> None:
    def caps(*flags: str) -> dict[str, str]:
        out = dockerd.docker("run", "--rm", "--runtime", rt, *flags, IMAGE,
                             "grep", "^Cap", "/proc/self/status").stdout
        return dict(line.split(":\t") for line in out.splitlines())

    default = caps()
    # Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    # NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
    assert default["CapEff"] == default["CapPrm"] == default["CapBnd"] == "00000000a80425fb"
    dropped = caps("--cap-drop", "ALL")
    assert dropped == {k: "0" * 16 for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


@BOTH
def test_user_network_runs_prestart_hook(dockerd: Dockerd, rt: str) -> None:
    """On a bridge network dockerd configures the container's network namespace from its
    prestart hook (``/proc/<dockerd>/exe libnetwork-setkey``), which the runtime runs."""
    p = dockerd.docker("run", "--rm", "--network", NETWORK, "--runtime", rt, IMAGE,
                       "sh", "-c", "ip -4 -o addr show eth0; hostname -i")
    m = re.search(r"eth0\s+inet (\d+\.\d+\.\d+\.\d+)/\d+", p.stdout)
    assert m, p.stdout
    assert p.stdout.splitlines()[-1] == m.group(1)


# --- a running container -----------------------------------------------------------------------

@BOTH
def test_exec(dockerd: Dockerd, containers: Containers, rt: str) -> None:
    n = containers.run_detached(rt, IMAGE, "sleep", "300")
    p = dockerd.docker("exec", "-e", "WHO=exec", n, "sh", "-c", "echo $WHO; cat /proc/1/cmdline | tr '\\0' ' '")
    assert p.stdout == "exec\nsleep 300 "
    assert dockerd.docker("exec", n, "sh", "-c", "exit 5", check=False).returncode == 5
    p = dockerd.docker("exec", n, "/nonexistent", check=False)
    assert p.returncode == 126
    assert 'exec: "/nonexistent": stat /nonexistent: no such file or directory' in p.stdout + p.stderr
    rc, out = dockerd.docker_pty("exec", "-it", n, "sh", "-c", "tty; echo hi")
    assert rc == 0, out
    assert [x.strip("\0") for x in out.splitlines()] == ["/dev/pts/0", "hi"]


@BOTH
def test_top(dockerd: Dockerd, containers: Containers, rt: str) -> None:
    n = containers.run_detached(rt, IMAGE, "sleep", "300")
    dockerd.docker("exec", "-d", n, "sleep", "301")
    init = dockerd.inspect(n)["State"]["Pid"]
    lines = dockerd.docker("top", n, "-o", "pid,args").stdout.splitlines()
    assert lines[0].split() == ["PID", "COMMAND"]
    rows = {int(pid): args for pid, args in (x.split(None, 1) for x in lines[1:])}
    assert rows[init] == "sleep 300"
    deadline = time.monotonic() + 10
    while "sleep 301" not in rows.values() and time.monotonic() < deadline:
        time.sleep(0.1)
        lines = dockerd.docker("top", n, "-o", "pid,args").stdout.splitlines()
        rows = {int(pid): args for pid, args in (x.split(None, 1) for x in lines[1:])}
    assert sorted(rows.values()) == ["sleep 300", "sleep 301"]


@BOTH
def test_pause_unpause(dockerd: Dockerd, containers: Containers, rt: str) -> None:
    n = containers.run_detached(rt, IMAGE, "sleep", "300")
    freezer = cgroup_dir(dockerd.inspect(n)["State"]["Pid"], "freezer")
    dockerd.docker("pause", n)
    st = dockerd.inspect(n)["State"]
    assert (st["Status"], st["Paused"], st["Running"]) == ("paused", True, True)
    assert read(f"{freezer}/freezer.state") == "FROZEN"
    dockerd.docker("unpause", n)
    st = dockerd.inspect(n)["State"]
    assert (st["Status"], st["Paused"]) == ("running", False)
    assert read(f"{freezer}/freezer.state") == "THAWED"
    assert dockerd.docker("exec", n, "echo", "thawed").stdout == "thawed\n"


@BOTH
def test_stop_escalates_to_sigkill(dockerd: Dockerd, containers: Containers, rt: str) -> None:
    """``sleep`` as PID 1 has no SIGTERM handler, so the kernel drops SIGTERM: docker stop sends
    SIGKILL when the timeout runs out."""
    n = containers.run_detached(rt, IMAGE, "sleep", "300")
    t0 = time.monotonic()
    dockerd.docker("stop", "-t", "2", n)
    took = time.monotonic() - t0
    st = dockerd.inspect(n)["State"]
    assert (st["Status"], st["ExitCode"]) == ("exited", 137)
    assert 2 <= took < 10


@BOTH
def test_stop_and_kill_deliver_signals(dockerd: Dockerd, containers: Containers, rt: str) -> None:
    n = containers.run_detached(
        rt, IMAGE, "sh", "-c",
        'trap "echo got USR1" USR1; trap "echo got TERM; exit 7" TERM; echo ready; '
        "while true; do sleep 0.1; done")
    deadline = time.monotonic() + 10
    while "ready" not in dockerd.docker("logs", n).stdout:
        assert time.monotonic() < deadline, "the container never printed ready"
        time.sleep(0.1)
    dockerd.docker("kill", "-s", "USR1", n)
    t0 = time.monotonic()
    dockerd.docker("stop", "-t", "30", n)
    assert time.monotonic() - t0 < 10  # the TERM trap ran: no waiting for the timeout
    assert dockerd.inspect(n)["State"]["ExitCode"] == 7
    assert dockerd.docker("logs", n).stdout == "ready\ngot USR1\ngot TERM\n"


@BOTH
def test_restart(dockerd: Dockerd, containers: Containers, rt: str) -> None:
    """Restart deletes the runtime's container and creates one again under the same id."""
    n = containers.run_detached(rt, IMAGE, "sleep", "300")
    before = dockerd.inspect(n)["State"]["Pid"]
    dockerd.docker("restart", "-t", "0", n)
    st = dockerd.inspect(n)["State"]
    assert st["Status"] == "running" and st["Pid"] not in (0, before)
    assert read(f"/proc/{st['Pid']}/cmdline").split("\0")[:2] == ["sleep", "300"]


@BOTH
def test_update_memory(dockerd: Dockerd, containers: Containers, rt: str) -> None:
    n = containers.run_detached(rt, IMAGE, "sleep", "300")
    memory = cgroup_dir(dockerd.inspect(n)["State"]["Pid"], "memory")
    assert int(read(f"{memory}/memory.limit_in_bytes")) > 1 << 40  # unlimited
    dockerd.docker("update", "-m", "64m", "--memory-swap", "128m", n)
    assert read(f"{memory}/memory.limit_in_bytes") == str(64 << 20)
    assert read(f"{memory}/memory.memsw.limit_in_bytes") == str(128 << 20)
    assert dockerd.inspect(n)["HostConfig"]["Memory"] == 64 << 20
    dockerd.docker("update", "--cpu-shares", "512", "--pids-limit", "50", n)
    assert read(cgroup_dir(dockerd.inspect(n)["State"]["Pid"], "cpu") + "/cpu.shares") == "512"
    assert read(cgroup_dir(dockerd.inspect(n)["State"]["Pid"], "pids") + "/pids.max") == "50"


@BOTH
def test_oom_killed(dockerd: Dockerd, containers: Containers, rt: str) -> None:
    """The shim watches the container's memory.oom_control itself; the runtime only has to put
    the container in a cgroup with the limit."""
    n = containers.name(rt)
    p = dockerd.docker("run", "--name", n, "--runtime", rt, "-m", "32m", "--memory-swap", "32m", IMAGE,
                       "sh", "-c", 'x=$(head -c 100000000 /dev/zero | tr "\\0" x); echo survived',
                       check=False)
    assert p.returncode == 137, p.stdout + p.stderr
    assert "survived" not in p.stdout
    st = dockerd.inspect(n)["State"]
    assert (st["OOMKilled"], st["ExitCode"]) == (True, 137)


@BOTH
def test_join_another_containers_namespaces(dockerd: Dockerd, containers: Containers, rt: str) -> None:
    n = containers.run_detached(rt, "--ipc", "shareable", IMAGE, "sleep", "300")
    pid = dockerd.inspect(n)["State"]["Pid"]
    p = dockerd.docker("run", "--rm", "--runtime", rt, f"--network=container:{n}", f"--pid=container:{n}",
                       f"--ipc=container:{n}", IMAGE, "sh", "-c",
                       "cat /proc/1/cmdline | tr '\\0' ' '; echo; "
                       "for ns in net pid ipc; do readlink /proc/self/ns/$ns; done")
    lines = p.stdout.splitlines()
    assert lines[0] == "sleep 300 "
    assert lines[1:] == [os.readlink(f"/proc/{pid}/ns/{ns}") for ns in ("net", "pid", "ipc")]


@BOTH
def test_exit_of_init_in_shared_pid_namespace_kills_its_children(
        dockerd: Dockerd, containers: Containers, rt: str) -> None:
    """A container without a PID namespace of its own does not take its processes with it when
    its init exits: the shim ends them with ``kill --all ID KILL`` on the stopped container."""
    a = containers.run_detached(rt, IMAGE, "sleep", "300")
    b = containers.run_detached(rt, f"--pid=container:{a}", IMAGE, "sh", "-c",
                                "sleep 1000 & sleep 0.3; exit 4")
    assert dockerd.docker("wait", b).stdout == "4\n"
    deadline = time.monotonic() + 10
    while True:
        ps = dockerd.docker("exec", a, "ps", "-o", "args").stdout.splitlines()
        if "sleep 1000" not in ps:
            break
        assert time.monotonic() < deadline, f"sleep 1000 outlived its container's init: {ps}"
        time.sleep(0.1)
    # what is left: A's init, ps, and the killed sleep as a zombie (A's init, its new parent,
    # never reaps)
    assert ps[1] == "sleep 300" and "ps -o args" in ps and len(ps) <= 4
    dockerd.docker("rm", b)
