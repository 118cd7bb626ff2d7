"""skiff-runc terminals through its CLI: ``--console-socket`` (the caller receives the pty master)
and ``run -t`` / ``exec -t`` in the foreground without one (skiff-runc proxies the pty itself)."""

from __future__ import annotations

import array
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import termios
import time

import pytest
from runtime_util import RUNTIME, make_bundle, write_config

pytestmark = pytest.mark.root


def _recv_master(server: socket.socket, timeout: float = 10) -> tuple[int, str]:
    """Accept one connection on a console socket; return (master fd, the pty name sent with it)."""
    server.settimeout(timeout)
    conn, _ = server.accept()
    with conn:
        fds = array.array("i")
        msg, anc, _flags, _addr = conn.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    assert len(fds) == 1, f"expected one fd with the console message, got {list(fds)}"
    return fds[0], msg.decode()


def _read_until(fd: int, needle: bytes, timeout: float = 10) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; got {out!r}"
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: every holder of the slave is gone
                break
            if not data:
                break
            out += data
    return out


def _read_all(fd: int, proc: subprocess.Popen, timeout: float = 20) -> bytes:
    """Read a pty master until ``proc`` exited and nothing more comes."""
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"timed out; got {out!r}"
        readable = select.select([fd], [], [], 0.2)[0]
        data = b""
        if readable:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: nobody holds the slave
                data = b""
        if data:
            out += data
            continue
        if proc.poll() is not None:
            return out
        if readable:
            time.sleep(0.05)  # end of the pty while the process still runs: wait for it


def test_console_socket_gets_the_master_of_the_containers_pty(runtime, tmp_path, state_dirs):
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["sh", "-c",
                               "tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo isatty; "
                               "readlink /proc/self/fd/1; stty size; read line; echo got=$line; exit 4"])
    cfg["process"]["terminal"] = True
    cfg["process"]["consoleSize"] = {"height": 40, "width": 120}
    write_config(bundle, cfg)
    path = str(state_dirs.run / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    cid = runtime.track("c-csock")
    master = -1
    try:
        runtime("create", "--console-socket", path, "--bundle", bundle, cid)
        master, name = _recv_master(server)
        assert name == "/dev/pts/0"  # the first pty of the container's own devpts instance
        assert os.isatty(master)
        runtime("start", cid)
        out = _read_until(master, b"120\r\n")
        assert out.split(b"\r\n")[:4] == [b"/dev/pts/0", b"isatty", b"/dev/pts/0", b"40 120"]
        os.write(master, b"typed\n")
        out = _read_until(master, b"got=typed\r\n")
        assert b"typed\r\n" in out  # the container's pty echoes what was typed (cooked mode)
        deadline = time.monotonic() + 10
        while runtime.state(cid)["status"] != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        runtime("delete", cid)
    finally:
        server.close()
        if master >= 0:
            os.close(master)


def test_console_socket_with_run_detached_and_exec(runtime, tmp_path, state_dirs):
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["sleep", "300"])
    cfg["process"]["terminal"] = True
    write_config(bundle, cfg)
    path = str(state_dirs.run / "c.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(2)
    cid = runtime.track("c-csock-exec")
    masters = []
    try:
        runtime("run", "-d", "--console-socket", path, "--bundle", bundle, cid)
        masters.append(_recv_master(server)[0])
        # exec -t -d with its own console socket: a second pty of the same devpts instance
        runtime("exec", "-t", "-d", "--console-socket", path, cid, "sh", "-c", "tty; sleep 300")
        m, name = _recv_master(server)
        masters.append(m)
        assert name == "/dev/pts/1"
        assert _read_until(m, b"\r\n").startswith(b"/dev/pts/1")
        # without a console socket a detached terminal is refused, as runc refuses it
        p = runtime("exec", "-t", "-d", cid, "true", check=False)
        assert p.returncode == 1
        assert "cannot allocate tty if skiff-runc will detach without setting console socket" in p.stderr
        # and a console socket without a terminal is refused too
        p = runtime("exec", "-d", "--console-socket", path, cid, "true", check=False)
        assert p.returncode == 1 and "console socket" in p.stderr
        runtime("delete", "--force", cid)
    finally:
        server.close()
        for m in masters:
            os.close(m)


def test_detached_terminal_without_console_socket_is_refused(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["true"])
    cfg["process"]["terminal"] = True
    write_config(bundle, cfg)
    for verb in (["create"], ["run", "-d"]):
        p = runtime(*verb, "--bundle", bundle, "c-noconsole", check=False)
        assert p.returncode == 1
        assert "cannot allocate tty if skiff-runc will detach without setting console socket" in p.stderr
        assert not os.path.exists(os.path.join(runtime.root, "c-noconsole"))


def _spawn_on_pty(args: list[str], master: int, slave: int, rows: int, cols: int) -> subprocess.Popen:
    """Start ``args`` with the pty (``master``, ``slave``) as its controlling terminal and stdio.
    The test keeps the slave open to read its terminal attributes afterwards."""
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def ctty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    return subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=ctty)


def test_run_with_terminal_and_no_console_socket_proxies_the_pty(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["sh", "-c",
                               "tty; [ -t 0 ] && echo isatty; stty size; read line; echo got=$line; "
                               "trap 'stty size; exit 3' WINCH; echo waiting; while :; do sleep 0.05; done"])
    cfg["process"]["terminal"] = True
    write_config(bundle, cfg)
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    p = _spawn_on_pty([RUNTIME, "--root", runtime.root, "run", "--bundle", bundle, "c-tty"],
                      master, slave, 33, 101)
    try:
        out = _read_until(master, b"33 101\r\n")
        # skiff-runc put its terminal (our pty's slave) in raw mode while it proxies
        raw = termios.tcgetattr(slave)
        assert not raw[3] & termios.ICANON and not raw[3] & termios.ECHO and not raw[1] & termios.OPOST
        os.write(master, b"hello\r")
        out += _read_until(master, b"waiting\r\n")
        # resizing the outer terminal sends SIGWINCH to skiff-runc (its foreground process
        # group), which resizes the container's pty: the kernel then signals the container's shell
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
        out += _read_all(master, p)
        assert p.wait(timeout=20) == 3
        lines = out.split(b"\r\n")
        assert lines[:3] == [b"/dev/pts/0", b"isatty", b"33 101"]
        assert b"got=hello" in lines
        assert lines[lines.index(b"waiting") + 1] == b"50 132"
        # the terminal is given back as it was found
        assert termios.tcgetattr(slave) == before
        assert not os.path.exists(os.path.join(runtime.root, "c-tty"))  # run deleted it
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
        os.close(slave)


def test_run_tty_forwards_signals_and_passes_ctrl_c_as_a_byte(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    cfg = make_bundle(bundle, ["sh", "-c",
                               "trap 'echo got-int' INT; trap 'echo got-term; exit 9' TERM; echo ready; "
                               "while :; do sleep 0.1; done"])
    cfg["process"]["terminal"] = True
    write_config(bundle, cfg)
    master, slave = os.openpty()
    p = _spawn_on_pty([RUNTIME, "--root", runtime.root, "run", "--bundle", bundle, "c-ttysig"],
                      master, slave, 24, 80)
    try:
        _read_until(master, b"ready\r\n")
        # ^C typed on the outer terminal goes through as a byte (raw mode) and the container's
        # pty turns it into SIGINT for its foreground group
        os.write(master, b"\x03")
        _read_until(master, b"got-int")
        # a signal sent to skiff-runc itself is forwarded to the container's process
        os.kill(p.pid, signal.SIGTERM)
        rest = _read_all(master, p)
        assert b"got-term" in rest
        assert p.wait(timeout=20) == 9
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
        os.close(slave)
        runtime("delete", "--force", "c-ttysig", check=False)


def test_exec_with_terminal_and_no_console_socket(runtime, tmp_path):
    bundle = str(tmp_path / "b")
    make_bundle(bundle, ["sleep", "300"])
    cid = runtime.track("c-exectty")
    runtime("run", "-d", "--bundle", bundle, cid)
    master, slave = os.openpty()
    p = _spawn_on_pty([RUNTIME, "--root", runtime.root, "exec", "-t", cid, "sh", "-c",
                       "tty; stty size; read x; echo x=$x; exit 6"], master, slave, 20, 70)
    try:
        out = _read_until(master, b"20 70\r\n")
        os.write(master, b"abc\r")
        out += _read_all(master, p)
        assert p.wait(timeout=20) == 6
        lines = out.split(b"\r\n")
        assert lines[0].startswith(b"/dev/pts/") and lines[1] == b"20 70"
        assert b"x=abc" in lines
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
        os.close(slave)
    # stdin not a terminal (a pipe): no raw mode, input still reaches the pty
    q = subprocess.run([RUNTIME, "--root", runtime.root, "exec", "-t", cid, "sh", "-c",
                        "read x; echo x=$x; [ -t 1 ] && echo tty-out"],
                       input=b"piped\n", capture_output=True, timeout=30)
    assert q.returncode == 0, q.stderr
    assert b"x=piped\r\n" in q.stdout and b"tty-out\r\n" in q.stdout
    runtime("delete", "--force", cid)
