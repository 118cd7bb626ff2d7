"""skiff-shim with the real skiff-runc and the built-in busybox image: stdio through FIFOs and
terminals, exec, signals, pause/resume, OOM events, and a manager that is SIGKILLed and
reconnects without losing an exit status or a byte of output."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from skiff.images.builtin import make_bundle
from skiff.shim.client import ShimClient, ShimError, find_shim, start_shim, stop_zygote

pytestmark = pytest.mark.root

LAYOUT = os.environ.get("SKIFF_BUSYBOX_OCI",
                        str(Path(__file__).resolve().parents[2] / "build" / "images" / "busybox-oci"))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, what: str) -> None:
    for _ in range(1000):
        if not _alive(pid):
            return
        time.sleep(0.01)
    raise AssertionError(f"{what} {pid} is still alive")


def read_until_eof(fd: int, limit: float = 60.0) -> bytes:
    out = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        select.select([fd], [], [], 1.0)
        try:
            b = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not b:
            return out
        out += b
    raise AssertionError(f"no EOF after {out!r}")


class Box:
    """One test's container: a busybox bundle, FIFOs and sockets in the short run dir, a shim,
    and the cleanup that leaves nothing (delete --force, the shim killed by its pid)."""

    def __init__(self, dirs, runtime_bin: str, zygote: str = "") -> None:
        self.dirs = dirs
        self.runtime = runtime_bin
        self.root = str(dirs.root)
        self.bundle = str(dirs.bundle)
        self.run = str(dirs.run)
        self.sock = os.path.join(self.run, "shim.sock")
        self.id = "shim-" + uuid.uuid4().hex[:10]
        self.zygote = zygote
        self.client: ShimClient | None = None
        self.fds: list[int] = []

    def bundle_for(self, args: list[str], *, terminal: bool = False, memory: int = 0) -> None:
        if not os.path.exists(os.path.join(self.bundle, "rootfs")) or not os.listdir(
                os.path.join(self.bundle, "rootfs")):
            make_bundle(LAYOUT, self.bundle, args)
        path = os.path.join(self.bundle, "config.json")
        with open(path) as f:
            config = json.load(f)
        config["process"]["args"] = args
        config["process"]["terminal"] = terminal
        if memory:
            config["linux"].setdefault("resources", {})["memory"] = {"limit": memory, "swap": memory}
        with open(path, "w") as f:
            json.dump(config, f)

    def fifos(self, name: str) -> tuple[str, str, str]:
        paths = tuple(os.path.join(self.run, f"{name}-{s}") for s in ("in", "out", "err"))
        for p in paths:
            os.mkfifo(p)
        return paths  # type: ignore[return-value]

    def reader(self, path: str) -> int:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.fds.append(fd)
        return fd

    def start_shim(self) -> ShimClient:
        self.client = start_shim(self.id, self.bundle, self.sock, namespace="test", zygote=self.zygote)
        return self.client

    def create(self, name: str = "io", terminal: bool = False) -> tuple[int, tuple[str, str, str]]:
        assert self.client is not None
        i, o, e = self.fifos(name)
        pid = self.client.create(self.bundle, self.runtime, runtime_root=self.root, stdin=i, stdout=o,
                                 stderr=e, terminal=terminal)
        return pid, (i, o, e)

    def finish(self, c: ShimClient | None = None) -> None:
        """delete + shutdown: the shim exits and leaves no socket, pid or address file."""
        c = c or self.client
        assert c is not None
        pid = c.pid
        c.delete()
        c.shutdown()
        _wait_gone(pid, "shim")
        assert not os.path.exists(self.sock)
        assert not os.path.exists(os.path.join(self.bundle, "address"))
        assert not os.path.exists(os.path.join(self.root, self.id))

    def cleanup(self) -> None:
        for fd in self.fds:
            os.close(fd)
        if self.client is not None:
            self.client.close()
        subprocess.run([self.runtime, "--root", self.root, "delete", "--force", self.id],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with open(os.path.join(self.bundle, "shim.pid")) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            return
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, "shim")


@pytest.fixture
def box(state_dirs, runtime_bin):
    b = Box(state_dirs, runtime_bin)
    yield b
    b.cleanup()


@pytest.fixture(params=["plain", "zygote"])
def any_box(request, state_dirs, runtime_bin):
    zsock = os.path.join(str(state_dirs.run), "zygote.sock") if request.param == "zygote" else ""
    b = Box(state_dirs, runtime_bin, zsock)
    yield b
    b.cleanup()
    if zsock and os.path.exists(zsock):
        stop_zygote(zsock)
        for _ in range(500):
            if not os.path.exists(zsock):
                break
            time.sleep(0.01)


def test_run_output_and_exit_status(any_box):
    b = any_box
    b.bundle_for(["sh", "-c", "echo out-line; echo err-line >&2; exit 3"])
    c = b.start_shim()
    pid, (i, o, e) = b.create()
    out, err = b.reader(o), b.reader(e)
    st = c.state()
    assert (st.pid, st.status) == (pid, "created")
    with open(os.path.join(b.root, b.id, "state.json")) as f:
        assert json.load(f)["pid"] == pid
    # the container's init is the shim's child (the shim is its subreaper)
    with open(f"/proc/{pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == c.pid
    c.start()
    ex = c.wait()
    assert (ex.pid, ex.exit_status) == (pid, 3)
    assert read_until_eof(out) == b"out-line\n" and read_until_eof(err) == b"err-line\n"
    assert [ev.type for ev in c.events().events] == ["create", "start", "exit"]
    assert c.delete().exit_status == 3
    c.shutdown()
    _wait_gone(c.pid, "shim")
    assert not os.path.exists(b.sock) and not os.path.exists(os.path.join(b.root, b.id))


def test_stdin_and_closeio(box):
    box.bundle_for(["cat"])
    c = box.start_shim()
    pid, (i, o, e) = box.create()
    out = box.reader(o)
    c.start()
    w = os.open(i, os.O_WRONLY)
    os.write(w, b"line one\nline two\n")
    os.close(w)
    assert c.state().status == "running"  # no EOF until closeio
    c.closeio()
    assert c.wait().exit_status == 0
    assert read_until_eof(out) == b"line one\nline two\n"
    box.finish()


def test_terminal_through_the_console_socket(box):
    box.bundle_for(["sh"], terminal=True)
    c = box.start_shim()
    pid, (i, o, e) = box.create(terminal=True)
    out = box.reader(o)
    c.resize(123, 45)
    c.start()
    w = os.open(i, os.O_WRONLY)
    os.write(w, b"tty; stty size; echo done-$((6*7)); exit 9\n")
    assert c.wait().exit_status == 9
    os.close(w)
    text = read_until_eof(out).replace(b"\r\n", b"\n").decode()
    lines = text.split("\n")
    assert "45 123" in lines and "done-42" in lines
    assert any(ln.startswith("/dev/pts/") for ln in lines)
    box.finish()


def test_exec_with_its_own_stdio_and_terminal(box):
    box.bundle_for(["sleep", "1000"])
    c = box.start_shim()
    pid, _ = box.create()
    c.start()
    xi, xo, xe = box.fifos("x")
    spec = {"args": ["sh", "-c", "echo exec-out; echo exec-err >&2; exit 7"], "cwd": "/",
            "env": ["PATH=/bin:/usr/bin"], "user": {"uid": 0, "gid": 0}}
    c.exec("e1", spec, stdin=xi, stdout=xo, stderr=xe)
    out, err = box.reader(xo), box.reader(xe)
    epid = c.start("e1")
    ex = c.wait("e1")
    assert (ex.pid, ex.exit_status) == (epid, 7)
    assert read_until_eof(out) == b"exec-out\n" and read_until_eof(err) == b"exec-err\n"
    assert c.delete("e1").exit_status == 7
    # an exec with a terminal
    ti, to, te = box.fifos("t")
    c.exec("t1", dict(spec, args=["sh", "-c", "tty; exit 2"]), stdin=ti, stdout=to, terminal=True)
    tout = box.reader(to)
    c.start("t1")
    assert c.wait("t1").exit_status == 2
    assert read_until_eof(tout).strip().startswith(b"/dev/pts/")
    assert c.state().status == "running"
    c.kill(signal.SIGKILL)
    assert c.wait().exit_status == 137
    box.finish()


def _cgroup_dir(pid: int, controller: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                return f"/sys/fs/cgroup/{controller}{path}"
    raise AssertionError(f"no {controller} cgroup for {pid}")


def test_pause_resume_pids_update_stats_kill(box):
    box.bundle_for(["sleep", "1000"])
    c = box.start_shim()
    pid, _ = box.create()
    c.start()
    assert [p.pid for p in c.pids()] == [pid]
    freezer = _cgroup_dir(pid, "freezer")
    c.pause()
    assert c.state().status == "paused"
    with open(freezer + "/freezer.state") as f:
        assert f.read().strip() == "FROZEN"
    c.resume()
    with open(freezer + "/freezer.state") as f:
        assert f.read().strip() == "THAWED"
    c.update({"memory": {"limit": 64 << 20}})
    with open(_cgroup_dir(pid, "memory") + "/memory.limit_in_bytes") as f:
        assert int(f.read()) == 64 << 20
    stats = c.stats()
    assert stats["pids"]["current"] == 1 and stats["memory"]["usage"]["limit"] == 64 << 20
    c.kill(signal.SIGKILL)
    assert c.wait().exit_status == 137
    with pytest.raises(ShimError) as ei:
        c.kill(signal.SIGKILL)
    assert ei.value.code == "NotFound"
    assert [ev.type for ev in c.events().events] == ["create", "start", "paused", "resumed", "exit"]
    box.finish()


def test_oom_event(box):
    box.bundle_for(["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"], memory=16 << 20)
    c = box.start_shim()
    box.create()
    info = c.connect()
    assert info.oom.startswith("v1:/sys/fs/cgroup/memory/")
    c.start()
    assert c.wait().exit_status == 137
    types = [ev.type for ev in c.events().events]
    assert "oom" in types and types.index("oom") < types.index("exit")
    box.finish()


STAND_IN = r"""
import os, sys
from skiff.shim.client import start_shim
cid, bundle, sock, runtime, root, fin, fout, log = sys.argv[1:]
c = start_shim(cid, bundle, sock, namespace="test")
out = os.open(fout, os.O_RDONLY | os.O_NONBLOCK)
c.create(bundle, runtime, runtime_root=root, stdin=fin, stdout=fout)
c.start()
got = b""
while not got.endswith(b"\n"):
    import select
    select.select([out], [], [])
    got += os.read(out, 1)
with open(log, "wb") as f:
    f.write(got)
print("ready", flush=True)
import time
time.sleep(3600)
"""


def test_manager_sigkill_and_reconnect(box):
    """A manager stand-in starts the shim and the container, reads part of the output, and is
    SIGKILLed. The rest of the output, the exit status and the events survive: a new client
    finds the shim by its address file."""
    box.bundle_for(["sh", "-c", "echo before; read x; echo after $x; exit 5"])
    i, o, e = box.fifos("io")
    log = os.path.join(str(box.dirs.tmp), "stand-in-read")
    script = os.path.join(str(box.dirs.tmp), "stand_in.py")
    with open(script, "w") as f:
        f.write(STAND_IN)
    mgr = subprocess.Popen([sys.executable, script, box.id, box.bundle, box.sock, box.runtime, box.root,
                            i, o, log], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert mgr.stdout is not None
        assert mgr.stdout.readline() == b"ready\n"
    finally:
        mgr.kill()
        mgr.wait()
    assert mgr.returncode == -signal.SIGKILL
    w = os.open(i, os.O_WRONLY)
    os.write(w, b"go\n")
    os.close(w)
    c = find_shim(box.bundle)
    box.client = c
    info = c.connect()
    assert info.id == box.id and info.init is not None
    ex = c.wait()
    assert ex.exit_status == 5 and ex.pid == info.init.pid
    out = box.reader(o)
    with open(log, "rb") as f:
        first = f.read()
    assert first + read_until_eof(out) == b"before\nafter go\n"
    assert [ev.type for ev in c.events().events] == ["create", "start", "exit"]
    box.finish(c)
