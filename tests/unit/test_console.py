"""skiff.runtime.console: passing a pty master over a socket, and the runtime's own console proxy
(``run -t`` / ``exec -t`` without ``--console-socket``), driven with a forked shell on a pty."""

from __future__ import annotations

import os
import signal
import tempfile
import termios

import pytest

from skiff.runtime import console

FORWARD = (1, 2, 3, 10, 12, 15)


def _spawn(script: str, raw: bool = False) -> tuple[int, int]:
    """Fork ``sh -c script`` with a new pty as its controlling terminal and stdio: (pid, master)."""
    master, slave = os.openpty()
    if raw:
        console.make_raw(slave)  # before the fork: input may arrive before the child runs
    pid = os.fork()
    if pid == 0:
        try:
            os.close(master)
            os.setsid()
            import fcntl

            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            os.execv("/bin/sh", ["sh", "-c", script])
        finally:
            os._exit(127)
    os.close(slave)
    return pid, master


def _run(script: str, stdin: bytes = b"", raw: bool = False) -> tuple[int, bytes]:
    pid, master = _spawn(script, raw)
    with tempfile.TemporaryFile() as inp, tempfile.TemporaryFile() as out:
        inp.write(stdin)
        inp.seek(0)
        try:
            code = console.proxy(master, pid, FORWARD, stdin=inp.fileno(), stdout=out.fileno())
        finally:
            os.close(master)
        out.seek(0)
        return code, out.read()


def test_input_reaches_the_process_and_output_comes_back():
    code, out = _run("read x; echo x=$x; exit 5", b"hello\n")
    assert code == 5
    assert b"x=hello\r\n" in out  # through the pty: echo of the input, then the output, CRLF


def test_exit_by_signal_is_128_plus_the_signal():
    code, _ = _run("kill -9 $$")
    assert code == 137


def test_output_left_in_the_pty_after_exit_is_not_lost():
    code, out = _run("i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done")
    assert code == 0
    lines = out.split(b"\r\n")
    assert lines[0] == b"line0" and lines[1999] == b"line1999"


def test_much_input_and_output_do_not_deadlock():
    data = bytes(range(256)) * 1000  # 256 kB, more than the pty or our stdin buffer hold
    # stdin's end-of-file is not passed on (as runc does not): read a known amount
    code, out = _run(f"head -c {len(data)} > /dev/null; echo done", data, raw=True)
    assert code == 0 and out == b"done\n"  # raw: no echo, no CRLF
    code, out = _run("head -c 300000 /dev/zero | tr '\\0' a")
    assert code == 0 and out.count(b"a") == 300000


def test_signals_sent_to_the_runtime_are_forwarded():
    # the shell signals its parent (this process, the "runtime"), which forwards USR1 back
    code, out = _run("trap 'echo got-usr1; exit 7' USR1; kill -USR1 $PPID; "
                     "while :; do sleep 0.05; done")
    assert code == 7 and b"got-usr1" in out
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handlers restored


def test_a_terminal_stdin_is_put_in_raw_mode_and_restored():
    outer_master, outer_slave = os.openpty()
    try:
        before = termios.tcgetattr(outer_slave)
        # the shell waits for a line from the proxy (so the proxy has set raw mode by then)
        pid, master = _spawn(f"read x; stty -a < {os.ttyname(outer_slave)} | grep -o -- '-icanon'")
        os.write(outer_master, b"go\n")
        with tempfile.TemporaryFile() as out:
            try:
                code = console.proxy(master, pid, FORWARD, stdin=outer_slave, stdout=out.fileno())
            finally:
                os.close(master)
            out.seek(0)
            text = out.read()
        assert code == 0
        assert b"-icanon" in text  # while proxying, our terminal was raw
        assert termios.tcgetattr(outer_slave) == before
    finally:
        os.close(outer_master)
        os.close(outer_slave)


def test_master_travels_over_a_socketpair():
    ours, theirs = console.socketpair()
    master, slave = os.openpty()
    try:
        import _socket
        import struct

        theirs.sendmsg([b"/dev/pts/9"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", master))])
        got = console.receive_master(ours)
        try:
            assert os.path.samestat(os.fstat(got), os.fstat(master))
        finally:
            os.close(got)
        theirs.send(b"no fd")
        with pytest.raises(OSError, match="no file descriptor"):
            console.receive_master(ours)
    finally:
        ours.close()
        theirs.close()
        os.close(master)
        os.close(slave)
