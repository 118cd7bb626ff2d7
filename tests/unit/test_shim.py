"""skiff-shim unit tests: the API against a fake runtime (a script with runc's command line
that records its argv in <root>/calls.log and runs the bundle's process without namespaces)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from skiff.shim import oom, protocol
from skiff.shim.client import (
    ShimClient,
    ShimError,
    find_shim,
    start_shim,
    stop_zygote,
)
from skiff.shim.config import ShimConfig
from skiff.shim.server import Shim

FAKE_RUNTIME = r'''
"""A fake OCI runtime with runc's command line, for the shim's unit tests."""
import json
import os
import signal
import socket
import sys

args = sys.argv[1:]
g = {}
while args and args[0].startswith("--"):
    name = args.pop(0)[2:]
    g[name] = args.pop(0) if name in ("root", "log", "log-format") else True
root = g["root"]
os.makedirs(root, exist_ok=True)
with open(os.path.join(root, "calls.log"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
verb = args.pop(0)
opts = {}
while args and args[0].startswith("--"):
    name = args.pop(0)[2:]
    opts[name] = True if name in ("all", "force", "detach", "no-pivot", "no-new-keyring", "stats") else args.pop(0)


def fail(msg):
    if g.get("log"):
        with open(g["log"], "a") as f:
            f.write(json.dumps({"level": "error", "msg": msg, "time": "now"}) + "\n")
    sys.stderr.write(f"fake-runtime: {msg}\n")
    sys.exit(1)


def load(cid):
    try:
        with open(os.path.join(root, cid + ".json")) as f:
            return json.load(f)
    except FileNotFoundError:
        fail(f"container does not exist: {cid}")


def save(cid, st):
    with open(os.path.join(root, cid + ".json"), "w") as f:
        json.dump(st, f)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def spawn(proc, console, wait_fifo):
    """Fork the process; with a console socket, send it a pty master first."""
    pid = os.fork()
    if pid:
        return pid
    try:
        if console:
            master, slave = os.openpty()
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(console)
            s.sendmsg([b"/dev/pts/x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, master.to_bytes(4, "little"))])
            s.close()
            os.close(master)
            os.setsid()
            import fcntl
            import termios
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            os.close(slave)
        if wait_fifo:
            fd = os.open(wait_fifo, os.O_RDONLY)
            os.read(fd, 1)
            os.close(fd)
        env = dict(e.split("=", 1) for e in proc.get("env", []))
        os.execvpe(proc["args"][0], proc["args"], {**os.environ, **env})
    finally:
        os._exit(127)


cid = args[-1] if args else ""
if verb == "create":
    with open(os.path.join(opts["bundle"], "config.json")) as f:
        config = json.load(f)
    proc = config["process"]
    if proc["args"][0] == "fail-create":
        fail("create: the bundle asked for a failure")
    if os.path.exists(os.path.join(root, cid + ".json")):
        fail(f"container with id exists: {cid}")
    fifo = os.path.join(root, cid + ".fifo")
    os.mkfifo(fifo)
    pid = spawn(proc, opts.get("console-socket"), fifo)
    save(cid, {"pid": pid, "execs": [], "status": "created"})
    with open(opts["pid-file"], "w") as f:
        f.write(str(pid))
elif verb == "start":
    st = load(cid)
    fifo = os.path.join(root, cid + ".fifo")
    fd = os.open(fifo, os.O_WRONLY)
    os.write(fd, b"x")
    os.close(fd)
    os.unlink(fifo)
    st["status"] = "running"
    save(cid, st)
elif verb == "kill":
    sig = int(args[-1])
    cid = args[-2]
    st = load(cid)
    if not alive(st["pid"]) and not opts.get("all"):
        fail("container not running")
    for p in [st["pid"]] + (st["execs"] if opts.get("all") else []):
        if alive(p):
            os.kill(p, sig)
elif verb == "delete":
    st = load(cid)
    if alive(st["pid"]):
        if not opts.get("force"):
            fail(f"cannot delete container {cid} that is not stopped")
        os.kill(st["pid"], signal.SIGKILL)
    os.unlink(os.path.join(root, cid + ".json"))
    if os.path.exists(os.path.join(root, cid + ".fifo")):
        os.unlink(os.path.join(root, cid + ".fifo"))
elif verb == "exec":
    st = load(cid)
    with open(opts["process"]) as f:
        proc = json.load(f)
    if proc["args"][0] == "fail-exec":
        fail("exec: the process asked for a failure")
    pid = spawn(proc, opts.get("console-socket"), None)
    st["execs"].append(pid)
    save(cid, st)
    with open(opts["pid-file"], "w") as f:
        f.write(str(pid))
elif verb == "ps":
    st = load(cid)
    print(json.dumps([p for p in [st["pid"]] + st["execs"] if alive(p)]))
elif verb in ("pause", "resume"):
    st = load(cid)
    os.kill(st["pid"], signal.SIGSTOP if verb == "pause" else signal.SIGCONT)
elif verb == "update":
    st = load(cid)
    with open(opts["resources"]) as f:
        res = json.load(f)
    with open(os.path.join(root, "calls.log"), "a") as f:
        f.write(json.dumps(["resources", res]) + "\n")
elif verb == "events":
    st = load(cid)
    print(json.dumps({"type": "stats", "id": cid, "data": {"pids": {"current": 1}, "memory": {"usage": {"usage": 4096}}}}))
elif verb == "state":
    st = load(cid)
    print(json.dumps({"id": cid, "pid": st["pid"], "status": st["status"]}))
else:
    fail(f"no such command: {verb}")
'''


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, what: str) -> None:
    for _ in range(500):
        if not _alive(pid):
            return
        time.sleep(0.01)
    raise AssertionError(f"{what} {pid} is still alive")


class Env:
    """A short scratch directory (unix socket paths), a bundle, the fake runtime and FIFOs."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="shu-", dir="/tmp")
        self.bundle = os.path.join(self.dir, "bundle")
        os.mkdir(self.bundle)
        self.root = os.path.join(self.dir, "rt")
        self.runtime = os.path.join(self.dir, "fake-runtime")
        with open(self.runtime, "w") as f:
            f.write(f"#!{sys.executable}\n{FAKE_RUNTIME}")
        os.chmod(self.runtime, 0o755)
        self.sock = os.path.join(self.dir, "shim.sock")
        self.clients: list[ShimClient] = []

    def config(self, args: list[str], *, pidns: bool = True, terminal: bool = False) -> None:
        ns = [{"type": "pid"}] if pidns else []
        with open(os.path.join(self.bundle, "config.json"), "w") as f:
            json.dump({"process": {"args": args, "terminal": terminal, "env": ["PATH=/usr/bin:/bin"]},
                       "linux": {"namespaces": ns}}, f)

    def fifos(self, name: str) -> tuple[str, str, str]:
        paths = tuple(os.path.join(self.dir, f"{name}-{s}") for s in ("in", "out", "err"))
        for p in paths:
            os.mkfifo(p)
        return paths  # type: ignore[return-value]

    def start(self, **kw) -> ShimClient:
        c = start_shim("c1", self.bundle, self.sock, namespace="test", **kw)
        self.clients.append(c)
        return c

    def create(self, c: ShimClient, name: str = "io", **kw) -> tuple[int, tuple[str, str, str]]:
        i, o, e = self.fifos(name)
        pid = c.create(self.bundle, self.runtime, runtime_root=self.root, stdin=i, stdout=o, stderr=e, **kw)
        return pid, (i, o, e)

    def calls(self) -> list[list]:
        with open(os.path.join(self.root, "calls.log")) as f:
            return [json.loads(line) for line in f]

    def cleanup(self) -> None:
        for c in self.clients:
            c.close()
        for d in (self.bundle,):
            try:
                with open(os.path.join(d, "shim.pid")) as f:
                    pid = int(f.read())
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        if os.path.isdir(self.root):
            for name in os.listdir(self.root):
                if name.endswith(".json"):
                    with open(os.path.join(self.root, name)) as f:
                        st = json.load(f)
                    for pid in [st["pid"], *st["execs"]]:
                        if _alive(pid):
                            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir)


@pytest.fixture
def env():
    e = Env()
    yield e
    e.cleanup()


def read_fifo_nb(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def read_until_eof(fd: int, limit: float = 30.0) -> bytes:
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


def finish(env: Env, c: ShimClient) -> None:
    """delete + shutdown, then the shim is gone with its files."""
    pid = c.pid
    c.delete()
    c.shutdown()
    _wait_gone(pid, "shim")
    assert not os.path.exists(env.sock)
    for name in ("shim.pid", "address", "init.pid"):
        assert not os.path.exists(os.path.join(env.bundle, name)), name


# ---------------------------------------------------------------- protocol


def test_split_lines_keeps_partial_line():
    buf = bytearray(b'{"a": 1}\n\n{"b": 2}\n{"c"')
    assert protocol.split_lines(buf) == [b'{"a": 1}', b'{"b": 2}']
    assert bytes(buf) == b'{"c"'
    assert protocol.split_lines(buf) == []
    assert protocol.decode(protocol.encode({"x": "é\n"})) == {"x": "é\n"}
    assert protocol.encode({"x": "\n"}).count(b"\n") == 1
    with pytest.raises(ValueError):
        protocol.decode(b"[1]")


def test_bad_requests_and_pipelining(env):
    env.config(["true"])
    c = env.start()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(env.sock)
    s.sendall(b'not json\n{"id": 1, "method": "frobnicate"}\n{"id": 2, "method": "state", "params": []}\n'
              b'{"id": 3, "method": "connect"}\n{"id": 4, "method": "state"}\n')
    f = s.makefile("rb")
    answers = [json.loads(f.readline()) for _ in range(5)]
    s.close()
    assert answers[0]["id"] is None and answers[0]["error"]["code"] == "InvalidArgument"
    assert answers[1]["error"] == {"code": "Unimplemented",
                                   "message": "method 'frobnicate' is not implemented by skiff-shim"}
    assert answers[2]["error"]["code"] == "InvalidArgument"
    assert answers[3]["id"] == 3 and answers[3]["result"]["id"] == "c1"
    assert answers[3]["result"]["namespace"] == "test" and answers[3]["result"]["init"] is None
    assert answers[4]["error"] == {"code": "NotFound", "message": "container c1: not created"}
    c.shutdown()  # never created: allowed
    _wait_gone(c.pid, "shim")


# ---------------------------------------------------------------- lifecycle


def test_lifecycle_output_exit_status_events(env):
    env.config(["sh", "-c", "echo hello; echo oops >&2; exit 3"])
    c = env.start()
    assert os.path.exists(os.path.join(env.bundle, "shim.log"))
    with open(os.path.join(env.bundle, "address")) as f:
        assert f.read() == env.sock
    with open(os.path.join(env.bundle, "shim.pid")) as f:
        assert int(f.read()) == c.pid
    # detached: a session of its own (not its leader: it can never get a controlling
    # terminal), not our child
    with open(f"/proc/{c.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    assert int(fields[1]) != os.getpid() and int(fields[3]) not in (os.getsid(0), c.pid)
    pid, (i, o, e) = env.create(c)
    out, err = read_fifo_nb(o), read_fifo_nb(e)
    st = c.state()
    assert (st.pid, st.status, st.stdout) == (pid, "created", o)
    assert c.start() == pid
    ex = c.wait()
    assert (ex.exec_id, ex.pid, ex.exit_status) == ("", pid, 3) and ex.exited_at > 0
    assert c.state().status == "stopped"
    assert read_until_eof(out) == b"hello\n" and read_until_eof(err) == b"oops\n"
    batch = c.events()
    assert [ev.type for ev in batch.events] == ["create", "start", "exit"]
    assert batch.events[2].fields == {"exec_id": "", "pid": pid, "exit_status": 3, "exited_at": ex.exited_at}
    calls = env.calls()
    log = os.path.join(env.bundle, "log.json")
    assert calls[0] == ["--root", env.root, "--log", log, "--log-format", "json", "create", "--bundle",
                        env.bundle, "--pid-file", os.path.join(env.bundle, "init.pid"), "c1"]
    assert calls[1][-2:] == ["start", "c1"]
    with pytest.raises(ShimError) as ei:
        c.kill(9)
    assert ei.value.code == "NotFound" and "process already finished" in ei.value.message
    d = c.delete()
    assert d.exit_status == 3 and env.calls()[-1][-2:] == ["delete", "c1"]
    assert [ev.type for ev in c.events(after=batch.seq).events] == ["delete"]
    with pytest.raises(ShimError) as ei:
        c.state()
    assert ei.value.code == "NotFound"
    c.shutdown()
    _wait_gone(c.pid, "shim")
    assert not os.path.exists(env.sock) and not os.path.exists(os.path.join(env.bundle, "address"))
    for fd in (out, err):
        os.close(fd)


def test_output_waits_for_a_late_reader(env):
    """Written while nobody reads the FIFO, read after the process exited: nothing lost."""
    env.config(["sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done"])
    c = env.start()
    pid, (i, o, e) = env.create(c)
    c.start()
    assert c.wait().exit_status == 0
    fd = read_fifo_nb(o)
    data = read_until_eof(fd)
    os.close(fd)
    assert data == b"".join(b"line %d\n" % n for n in range(2000))
    finish(env, c)


def test_output_blocks_without_reader_then_flows(env):
    """More than a pipe's worth with no reader: the process waits (no EPIPE), then a reader
    that comes later gets all of it."""
    env.config(["sh", "-c", "head -c 300000 /dev/zero | tr '\\000' x; echo; echo done"])
    c = env.start()
    pid, (i, o, e) = env.create(c)
    c.start()
    assert c.state().status == "running"  # blocked on the full FIFO, not killed by SIGPIPE
    fd = read_fifo_nb(o)
    data = read_until_eof(fd)
    os.close(fd)
    assert data == b"x" * 300000 + b"\ndone\n"
    assert c.wait().exit_status == 0
    finish(env, c)


def test_stdin_reaches_eof_only_after_closeio(env):
    env.config(["cat"])
    c = env.start()
    pid, (i, o, e) = env.create(c)
    out = read_fifo_nb(o)
    c.start()
    w = os.open(i, os.O_WRONLY)
    os.write(w, b"first\n")
    os.close(w)  # the client goes away: cat must not see EOF yet
    w = os.open(i, os.O_WRONLY)  # a client attaches again
    os.write(w, b"second\n")
    assert c.state().status == "running"
    c.closeio()
    os.close(w)
    assert c.wait().exit_status == 0
    assert read_until_eof(out) == b"first\nsecond\n"
    os.close(out)
    finish(env, c)


def test_runtime_error_is_reported_and_create_can_be_retried(env):
    env.config(["fail-create"])
    c = env.start()
    with pytest.raises(ShimError) as ei:
        env.create(c, "a")
    assert ei.value.code == "Unknown"
    assert ei.value.message == "OCI runtime create failed: create: the bundle asked for a failure"
    with pytest.raises(ShimError) as ei:
        c.state()
    assert ei.value.code == "NotFound"
    env.config(["true"])
    pid, _ = env.create(c, "b")
    assert c.state().pid == pid
    with pytest.raises(ShimError) as ei:
        env.create(c, "c")
    assert ei.value.code == "AlreadyExists"
    with pytest.raises(ShimError) as ei:
        c.shutdown()
    assert ei.value.code == "FailedPrecondition" and "not deleted" in ei.value.message
    # delete of a created container: --force, and its init's exit is reported
    d = c.delete()
    assert d.pid == pid and d.exit_status == 137
    assert env.calls()[-1][-3:] == ["delete", "--force", "c1"]
    c.shutdown()
    _wait_gone(c.pid, "shim")


def test_missing_runtime_binary(env):
    env.config(["true"])
    c = env.start()
    i, o, e = env.fifos("x")
    with pytest.raises(ShimError) as ei:
        c.create(env.bundle, os.path.join(env.dir, "no-such-runtime"), stdout=o)
    assert ei.value.code == "Unknown" and "no-such-runtime" in ei.value.message
    with pytest.raises(ShimError) as ei:
        c.create(env.bundle, env.runtime, stdout=os.path.join(env.dir, "nodir", "out"))
    assert ei.value.code == "InvalidArgument" and "nodir/out" in ei.value.message
    with pytest.raises(ShimError) as ei:
        c.create(env.bundle, env.runtime, stdout="binary:///usr/bin/logger")
    assert ei.value.code == "InvalidArgument" and "binary://" in ei.value.message
    c.shutdown()


def test_stdout_to_a_file(env):
    env.config(["sh", "-c", "echo to-file; echo err-too >&2"])
    c = env.start()
    log = os.path.join(env.dir, "out.log")
    c.create(env.bundle, env.runtime, runtime_root=env.root, stdout="file://" + log, stderr=log)
    c.start()
    assert c.wait().exit_status == 0
    with open(log) as f:
        assert sorted(f.read().splitlines()) == ["err-too", "to-file"]
    finish(env, c)


# ---------------------------------------------------------------- exec, kill, wait


def test_exec_with_own_stdio_and_exit_code(env):
    env.config(["sleep", "1000"])
    c = env.start()
    pid, _ = env.create(c)
    c.start()
    xi, xo, xe = env.fifos("x")
    c.exec("e1", {"args": ["sh", "-c", "read l; echo out:$l; echo err >&2; exit 7"], "env": [], "cwd": "/"},
           stdin=xi, stdout=xo, stderr=xe)
    with pytest.raises(ShimError) as ei:
        c.exec("e1", {"args": ["true"]})
    assert ei.value.code == "AlreadyExists"
    assert c.state("e1").status == "created"
    out = read_fifo_nb(xo)
    err = read_fifo_nb(xe)
    epid = c.start("e1")
    assert epid != pid and c.state("e1").status == "running"
    assert [p.exec_id for p in c.pids() if p.pid == epid] == ["e1"]
    with pytest.raises(ShimError) as ei:
        c.delete("e1")
    assert ei.value.code == "FailedPrecondition"
    w = os.open(xi, os.O_WRONLY)
    os.write(w, b"ping\n")
    os.close(w)
    ex = c.wait("e1")
    assert (ex.exec_id, ex.pid, ex.exit_status) == ("e1", epid, 7)
    assert read_until_eof(out) == b"out:ping\n" and read_until_eof(err) == b"err\n"
    os.close(out)
    os.close(err)
    assert c.state().status == "running"  # the init is not affected
    types = [(ev.type, ev.fields.get("exec_id")) for ev in c.events().events]
    assert types[2:] == [("exec_added", "e1"), ("exec_started", "e1"), ("exit", "e1")]
    spec_call = [cl for cl in env.calls() if "exec" in cl][0]
    assert spec_call[spec_call.index("exec") + 1:spec_call.index("exec") + 4] == \
        ["--process", spec_call[spec_call.index("--process") + 1], "--detach"]
    assert c.delete("e1").exit_status == 7
    with pytest.raises(ShimError) as ei:
        c.state("e1")
    assert ei.value.code == "NotFound"
    with pytest.raises(ShimError) as ei:
        c.start("nope")
    assert ei.value.code == "NotFound"
    # an exec the runtime refuses
    c.exec("bad", {"args": ["fail-exec"]})
    with pytest.raises(ShimError) as ei:
        c.start("bad")
    assert ei.value.message == "OCI runtime exec failed: exec: the process asked for a failure"
    assert c.wait("bad").exit_status == 255
    c.kill(9)
    assert c.wait().exit_status == 137
    finish(env, c)


def test_quick_exec_exit_is_attributed(env):
    """An exec that exits before the runtime has written its pid file."""
    env.config(["sleep", "1000"])
    c = env.start()
    env.create(c)
    c.start()
    for n in range(5):
        c.exec(f"q{n}", {"args": ["sh", "-c", f"exit {n}"]})
        epid = c.start(f"q{n}")
        ex = c.wait(f"q{n}")
        assert (ex.pid, ex.exit_status) == (epid, n)
    evs = [(ev.type, ev.fields.get("exec_id")) for ev in c.events().events if ev.fields.get("exec_id")]
    for n in range(5):
        assert evs.index(("exec_started", f"q{n}")) < evs.index(("exit", f"q{n}"))
    c.kill(9)
    c.wait()
    finish(env, c)


def test_kill_signal_and_several_waiters_and_reconnect(env):
    env.config(["sleep", "1000"])
    c = env.start()
    pid, _ = env.create(c)
    c.start()
    results: list = []

    def waiter() -> None:
        cl = ShimClient(env.sock)
        results.append(cl.wait(timeout=60))
        cl.close()

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    # a waiter that goes away must not disturb the others
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(env.sock)
    s.sendall(b'{"id": 1, "method": "wait"}\n')
    s.close()
    c.kill(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert [r.exit_status for r in results] == [143, 143, 143]
    c.close()
    c2 = find_shim(env.bundle)  # a "restarted manager"
    assert c2.pid == c.pid
    info = c2.connect()
    assert info.init is not None and (info.init.status, info.init.exit_status) == ("stopped", 143)
    assert c2.wait().exit_status == 143
    assert env.calls()[2][-3:] == ["kill", "c1", "15"]
    env.clients.append(c2)
    finish(env, c2)


def test_kill_all_after_init_exit_without_pid_namespace(env):
    env.config(["true"], pidns=False)
    c = env.start()
    env.create(c)
    c.start()
    c.wait()
    with pytest.raises(ShimError):
        c.pids()  # stopped: no processes to list
    # the kill --all is queued before any later runtime command
    c.delete()
    calls = [cl[6:] for cl in env.calls()]
    assert ["kill", "--all", "c1", "9"] in calls
    assert calls.index(["kill", "--all", "c1", "9"]) < calls.index(["delete", "c1"])
    c.shutdown()


def test_pause_resume_pids_update_stats(env):
    env.config(["sleep", "1000"])
    c = env.start()
    pid, _ = env.create(c)
    c.start()
    c.pause()
    assert c.state().status == "paused"
    # the fake runtime pauses with SIGSTOP, which takes effect once the target is scheduled
    deadline = time.monotonic() + 5
    while True:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                break
        assert time.monotonic() < deadline, "the process never stopped"
        time.sleep(0.01)
    with pytest.raises(ShimError) as ei:
        c.pause()
    assert ei.value.code == "FailedPrecondition"
    c.resume()
    assert c.state().status == "running"
    assert [(p.pid, p.exec_id) for p in c.pids()] == [(pid, "")]
    c.update({"memory": {"limit": 1 << 20}})
    assert ["resources", {"memory": {"limit": 1048576}}] in env.calls()
    assert not [f for f in os.listdir(env.bundle) if f.startswith("resources")]
    assert c.stats() == {"pids": {"current": 1}, "memory": {"usage": {"usage": 4096}}}
    assert [ev.type for ev in c.events().events][-2:] == ["paused", "resumed"]
    with pytest.raises(ShimError) as ei:
        c.resize(80, 24)
    assert ei.value.code == "FailedPrecondition" and "no terminal" in ei.value.message
    c.kill(9)
    c.wait()
    finish(env, c)


def test_events_long_poll_and_acknowledgement(env):
    env.config(["sleep", "1000"])
    c = env.start()
    first = c.events()
    assert first.events == [] and first.seq == 0
    got: list = []
    t = threading.Thread(target=lambda: got.append(c.events(0, wait=True, timeout=60)))
    t.start()
    env.create(c)
    t.join(60)
    assert [ev.type for ev in got[0].events] == ["create"]
    seq = got[0].seq
    c.start()
    after = c.events(seq)
    assert [ev.type for ev in after.events] == ["start"]
    assert [ev.type for ev in c.events(0).events] == ["start"]  # "create" was acknowledged
    c.kill(9)
    c.wait()
    finish(env, c)


def test_event_queue_is_bounded(tmp_path):
    shim = Shim(ShimConfig(id="x", bundle=str(tmp_path), state_dir=str(tmp_path), socket="/nonexistent"))
    for n in range(1030):
        shim.emit("oom", n=n)
    res = shim._events_after(0)
    assert res["dropped"] == 6 and res["seq"] == 1030
    assert len(res["events"]) == 1024 and res["events"][0]["n"] == 6


# ---------------------------------------------------------------- terminal


def test_terminal_copy_resize_and_closeio(env):
    env.config(["sh", "-c", "stty -echo; read l; echo got:$l; stty size; cat; echo bye; exit 4"], terminal=True)
    c = env.start()
    pid, (i, o, e) = env.create(c, terminal=True)
    assert c.state().terminal
    out = read_fifo_nb(o)
    c.resize(100, 40)
    c.start()
    w = os.open(i, os.O_WRONLY)
    os.write(w, b"hi\n")
    os.write(w, b"cat-input\n")
    c.closeio()
    os.close(w)  # end of input: the terminal gets ^D, cat ends
    assert c.wait().exit_status == 4
    data = read_until_eof(out)
    os.close(out)
    lines = data.replace(b"\r\n", b"\n").decode().split("\n")
    assert "got:hi" in lines and "40 100" in lines and "bye" in lines
    assert "cat-input" in lines
    console = [cl for cl in env.calls() if "create" in cl][0]
    assert "--console-socket" in console
    finish(env, c)


def test_queued_terminal_execs_get_their_own_console(env):
    """Runtime commands run one at a time; requests sent together each get their own console
    socket and their own output."""
    env.config(["sleep", "1000"])
    c = env.start()
    env.create(c)
    c.start()
    outs = {}
    for n in range(3):
        i, o, e = env.fifos(f"t{n}")
        c.exec(f"t{n}", {"args": ["sh", "-c", f"echo tty-{n}; exit {n}"]}, stdout=o, terminal=True)
        outs[n] = read_fifo_nb(o)
    errors: list = []

    def start(n: int) -> None:
        try:
            ShimClient(env.sock).start(f"t{n}")
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    for n in range(3):
        assert c.wait(f"t{n}").exit_status == n
        assert read_until_eof(outs[n]).strip() == f"tty-{n}".encode()
        os.close(outs[n])
    consoles = [cl[cl.index("--console-socket") + 1] for cl in env.calls() if "--console-socket" in cl]
    assert len(set(consoles)) == 3 and not any(os.path.exists(p) for p in consoles)
    c.kill(9)
    c.wait()
    finish(env, c)


# ---------------------------------------------------------------- start-up


def test_zygote_forks_detached_shims(env):
    env.config(["sh", "-c", "echo from-zygote-shim"])
    zsock = os.path.join(env.dir, "z.sock")
    c = env.start(zygote=zsock)
    with open(os.path.join(env.dir, "z.sock.lock")):
        pass
    ping = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ping.connect(zsock)
    ping.sendall(b'{"method": "ping"}\n')
    zpid = json.loads(ping.makefile("rb").readline())["pid"]
    ping.close()
    with open(f"/proc/{c.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    assert int(fields[1]) not in (zpid, os.getpid()) and int(fields[3]) not in (os.getsid(0), zpid)
    with open(f"/proc/{c.pid}/comm") as f:
        assert f.read().strip() == "skiff-shim"
    stop_zygote(zsock)
    _wait_gone(zpid, "zygote")
    assert not os.path.exists(zsock)
    # the shim outlives the zygote
    pid, (i, o, e) = env.create(c)
    out = read_fifo_nb(o)
    c.start()
    assert c.wait().exit_status == 0
    assert read_until_eof(out) == b"from-zygote-shim\n"
    os.close(out)
    finish(env, c)


def test_second_shim_on_a_busy_socket_is_refused(env):
    env.config(["true"])
    c = env.start()
    other = os.path.join(env.dir, "b2")
    os.mkdir(other)
    with pytest.raises(ShimError) as ei:
        start_shim("c2", other, env.sock)
    assert "another process listens" in ei.value.message
    assert c.connect().id == "c1"
    c.shutdown()


def test_command_line_errors():
    shim = [os.path.join(os.path.dirname(sys.executable), "skiff-shim")]
    p = subprocess.run([*shim, "--id", "x"], capture_output=True, text=True)
    assert p.returncode == 2 and "--bundle: required" in p.stderr
    p = subprocess.run([*shim, "--id", "x", "--bundle", "/tmp", "--socket", "rel.sock"], capture_output=True,
                       text=True)
    assert p.returncode == 2 and "an absolute path is required" in p.stderr
    p = subprocess.run([*shim, "--bogus"], capture_output=True, text=True)
    assert p.returncode == 2 and "flag provided but not defined: --bogus" in p.stderr


def test_find_shim_without_one(tmp_path):
    with pytest.raises(ShimError) as ei:
        find_shim(str(tmp_path))
    assert ei.value.code == "NotFound"
    (tmp_path / "address").write_text("/nonexistent.sock")
    (tmp_path / "shim.pid").write_text("999999999")
    with pytest.raises(ShimError) as ei:
        find_shim(str(tmp_path))
    assert ei.value.code == "NotFound" and "is gone" in ei.value.message
    with pytest.raises(ShimError) as ei:
        ShimClient("/nonexistent.sock").connect()
    assert ei.value.code == "Unavailable"


# ---------------------------------------------------------------- OOM sources


MOUNTINFO = """\
25 30 0:22 / /sys rw - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
33 31 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
40 31 0:35 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:36 /sub /sys/fs/cgroup/cpu\\040x rw - cgroup cgroup rw,cpu,cpuacct
"""


def test_memory_cgroup_v1_and_v2(tmp_path):
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "7").mkdir()
    (proc / "self" / "mountinfo").write_text(MOUNTINFO)
    (proc / "7" / "cgroup").write_text("5:cpu,cpuacct:/sub/a\n4:memory:/skiff/c1\n0::/skiff/c1\n")
    assert oom.memory_cgroup(7, str(proc)) == ("v1", "/sys/fs/cgroup/memory/skiff/c1")
    v1, v2 = oom.parse_mountinfo_cgroups(MOUNTINFO)
    assert v1["cpu"] == ("/sub", "/sys/fs/cgroup/cpu x") and v2 == ("/", "/sys/fs/cgroup/unified")
    # pure v2: the memory.events file must be there
    (proc / "self" / "mountinfo").write_text(f"33 31 0:28 / {tmp_path}/cg rw - cgroup2 cgroup2 rw\n")
    (proc / "7" / "cgroup").write_text("0::/skiff/c1\n")
    with pytest.raises(OSError):
        oom.memory_cgroup(7, str(proc))
    d = tmp_path / "cg" / "skiff" / "c1"
    d.mkdir(parents=True)
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n")
    assert oom.memory_cgroup(7, str(proc)) == ("v2", str(d))
    w = oom.watch(7, str(proc))
    try:
        assert (w.kind, w.count) == ("v2", 1)
        assert w.fired() == 0
        (d / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 3\noom_kill 3\n")
        assert w.fired() == 2
        assert w.fired() == 0
    finally:
        w.close()
