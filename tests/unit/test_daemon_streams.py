"""ContainerIO against real FIFOs and real processes.

The writer side is a small "shim" process that opens the FIFOs exactly as skiff-shim does
(``skiff.shim.stdio.ProcIO``: output FIFOs opened for writing with a keeper read end of its own,
stdin opened for reading with a keeper write end until CloseIO), runs a command with them as
fds 0-2, waits for it and closes its ends. No root needed: FIFOs and processes are plain.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from skiff.daemon.logger import new_logger, read_logs
from skiff.daemon.streams import MAX_MESSAGE, ContainerIO, SlowSubscriber

FAKE_SHIM = r"""
import os, subprocess, sys
from skiff.shim.stdio import ProcIO
stdin, stdout, stderr, *cmd = sys.argv[1:]
io = ProcIO(stdin, stdout, stderr, False)
io.open()
p = subprocess.Popen(cmd, stdin=io.child[0], stdout=io.child[1], stderr=io.child[2])
io.release_child()
print("started", flush=True)
if os.environ.get("CLOSEIO"):          # Tasks.CloseIO right away
    io.close_stdin()
if os.environ.get("WAIT_LINE"):        # hold the process's exit until told
    sys.stdin.readline()
p.wait()
io.close()
print("exited", p.returncode, flush=True)
"""


async def start_shim(io: ContainerIO, *cmd: str, closeio: bool = False,
                     hold: bool = False) -> asyncio.subprocess.Process:
    stdin, stdout, stderr = io.fifo_paths()
    env = dict(os.environ)
    if closeio:
        env["CLOSEIO"] = "1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FAKE_SHIM, stdin, stdout, stderr, *cmd, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert (await proc.stdout.readline()) == b"started\n"
    return proc


async def finish_shim(proc: asyncio.subprocess.Process) -> int:
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdin.close()
    line = await proc.stdout.readline()
    await proc.wait()
    assert line.startswith(b"exited ")
    return int(line.split()[1])


def log_lines(path: str) -> list[dict[str, str]]:
    with open(path, "rb") as f:
        return [json.loads(x) for x in f.read().splitlines()]


def test_fifos_no_eof_before_the_shim_and_eof_after_exit(tmp_path) -> None:
    fifo_dir = str(tmp_path / "fifos")
    log_path = str(tmp_path / "c-json.log")

    async def run() -> None:
        io = ContainerIO(fifo_dir, "init", stdin=False, tty=False,
                         logger=new_logger("json-file", {}, log_path))
        assert io.fifo_paths() == ("", fifo_dir + "/init-stdout", fifo_dir + "/init-stderr")
        await io.open()
        sub = io.subscribe()
        # a few loop turns with no writer: the readers must not take it for EOF
        for _ in range(20):
            await asyncio.sleep(0)
        assert not io.closed
        proc = await start_shim(io, "sh", "-c", "echo out1; echo err1 >&2; printf 'no newline'")
        got = [item async for item in sub]
        await io.wait_closed()
        assert io.closed
        assert await finish_shim(proc) == 0
        out = b"".join(d for s, d in got if s == "stdout")
        err = b"".join(d for s, d in got if s == "stderr")
        assert out == b"out1\nno newline" and err == b"err1\n"

    asyncio.run(run())
    entries = log_lines(log_path)
    assert sorted((e["stream"], e["log"]) for e in entries) == [
        ("stderr", "err1\n"), ("stdout", "no newline"), ("stdout", "out1\n")]
    assert all(e["time"].endswith("Z") and len(e["time"]) == 30 for e in entries)


def test_long_lines_become_partial_messages(tmp_path) -> None:
    fifo_dir = str(tmp_path / "fifos")
    log_path = str(tmp_path / "c-json.log")
    n = MAX_MESSAGE * 2 + 100

    async def run() -> None:
        io = ContainerIO(fifo_dir, "init", stdin=False, tty=False,
                         logger=new_logger("json-file", {}, log_path))
        io.fifo_paths()
        await io.open()
        proc = await start_shim(io, "sh", "-c", f"head -c {n} /dev/zero | tr '\\0' x; echo; echo y")
        await io.wait_closed()
        assert await finish_shim(proc) == 0

    asyncio.run(run())
    logs = [e["log"] for e in log_lines(log_path)]
    assert [len(x) for x in logs] == [MAX_MESSAGE, MAX_MESSAGE, 101, 2]
    assert "".join(logs) == "x" * n + "\ny\n"


def test_stdin_written_before_start_then_closed(tmp_path) -> None:
    fifo_dir = str(tmp_path / "fifos")
    log_path = str(tmp_path / "c-json.log")

    async def run() -> None:
        io = ContainerIO(fifo_dir, "init", stdin=True, tty=False,
                         logger=new_logger("json-file", {}, log_path))
        stdin, _, _ = io.fifo_paths()
        assert stdin == fifo_dir + "/init-stdin"
        await io.open()
        # `printf 'a\nb\n' | docker run -i`: stdin arrives before the process exists
        await io.write_stdin(b"a\nb\n")
        closed = []

        async def closeio() -> None:
            closed.append(True)
        io.on_stdin_closed = closeio
        await io.close_stdin()            # the client's half-close, still before the task
        with pytest.raises(BrokenPipeError):
            await io.write_stdin(b"late")
        assert io.stdin_open and closed == []   # deferred: closing now would lose the input
        proc = await start_shim(io, "cat", closeio=True)
        await io.process_created()
        assert not io.stdin_open and closed == [True]
        await io.wait_closed()            # cat saw EOF: both ends closed
        assert await finish_shim(proc) == 0

    asyncio.run(run())
    assert [e["log"] for e in log_lines(log_path)] == ["a\n", "b\n"]


def test_stdin_big_input_waits_for_the_reader(tmp_path) -> None:
    fifo_dir = str(tmp_path / "fifos")
    size = 1 << 20                      # far more than a pipe holds

    async def run() -> bytes:
        io = ContainerIO(fifo_dir, "x1", stdin=True, tty=False, logger=None)
        io.fifo_paths()
        await io.open()
        sub = io.subscribe(stdout=True, stderr=False)
        proc = await start_shim(io, "sh", "-c", "wc -c", closeio=True)
        await io.process_created()

        async def feed() -> None:
            await io.write_stdin(b"z" * size)
            await io.close_stdin()

        out = bytearray()
        results = await asyncio.gather(feed(), _collect(sub, out))
        assert results[0] is None
        assert await finish_shim(proc) == 0
        return bytes(out)

    assert asyncio.run(run()).strip() == str(size).encode()


async def _collect(sub, out: bytearray) -> None:
    async for _stream, data in sub:
        out += data


def test_tty_has_only_stdout(tmp_path) -> None:
    io = ContainerIO(str(tmp_path / "f"), "init", stdin=True, tty=True, logger=None)
    stdin, stdout, stderr = io.fifo_paths()
    assert (stderr, os.path.basename(stdout), os.path.basename(stdin)) == \
        ("", "init-stdout", "init-stdin")
    assert sorted(os.listdir(tmp_path / "f")) == ["init-stdin", "init-stdout"]
    io.remove()
    assert not (tmp_path / "f").exists()


def test_slow_subscriber_is_cut_off_without_holding_up_others(tmp_path) -> None:
    fifo_dir = str(tmp_path / "fifos")
    log_path = str(tmp_path / "c-json.log")
    size = 2 << 20

    async def run() -> None:
        io = ContainerIO(fifo_dir, "init", stdin=False, tty=False,
                         logger=new_logger("json-file", {}, log_path), subscriber_limit=256 * 1024)
        io.fifo_paths()
        await io.open()
        slow = io.subscribe()
        fast = io.subscribe()
        proc = await start_shim(io, "sh", "-c", f"head -c {size} /dev/zero | tr '\\0' 'y' | fold -w 99")
        out = bytearray()
        await _collect(fast, out)        # the slow one is never read meanwhile
        await io.wait_closed()
        assert await finish_shim(proc) == 0
        assert len(out) == size + size // 99      # fold: no newline after the last piece
        assert slow.overflowed
        with pytest.raises(SlowSubscriber, match="fell more than 262144 bytes behind"):
            async for _ in slow:
                pass

    asyncio.run(run())
    total = sum(len(e["log"]) for e in log_lines(log_path))
    assert total == size + size // 99


def test_reopen_after_a_restart_reads_the_rest(tmp_path) -> None:
    """skiffd goes away while the process runs (the shim keeps the FIFOs); a new ContainerIO
    reopens them, gets what was written meanwhile and EOF at the exit."""
    fifo_dir = str(tmp_path / "fifos")
    log_path = str(tmp_path / "c-json.log")

    async def run() -> None:
        io = ContainerIO(fifo_dir, "init", stdin=True, tty=False,
                         logger=new_logger("json-file", {}, log_path))
        io.fifo_paths()
        await io.open()
        sub = io.subscribe()
        proc = await start_shim(io, "sh", "-c", "echo before; read x; echo \"after $x\"")
        await io.process_created()
        assert (await sub.__anext__()) == ("stdout", b"before\n")
        await io.close()                 # skiffd "dies" (its fds close)
        assert io.closed
        io2 = ContainerIO(fifo_dir, "init", stdin=True, tty=False,
                          logger=new_logger("json-file", {}, log_path))
        await io2.reopen()
        sub2 = io2.subscribe()
        await io2.write_stdin(b"restored\n")
        got = [item async for item in sub2]
        assert got == [("stdout", b"after restored\n")]
        await io2.close_stdin()
        assert await finish_shim(proc) == 0

    asyncio.run(run())
    assert [e["log"] for e in log_lines(log_path)] == ["before\n", "after restored\n"]


def test_reopen_after_the_process_exited_meanwhile(tmp_path) -> None:
    fifo_dir = str(tmp_path / "fifos")
    log_path = str(tmp_path / "c-json.log")

    async def run() -> None:
        io = ContainerIO(fifo_dir, "init", stdin=False, tty=False,
                         logger=new_logger("json-file", {}, log_path))
        io.fifo_paths()
        await io.open()
        # the shim's keeper read end keeps what the process wrote after skiffd went away
        env = dict(os.environ, WAIT_LINE="1")
        stdin, stdout, stderr = io.fifo_paths()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FAKE_SHIM, stdin, stdout, stderr, "sh", "-c",
            "read x < /dev/null; echo first; exec 1>&- 2>&-; sleep 0", env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdin is not None
        assert await proc.stdout.readline() == b"started\n"
        await io.wait_closed()           # the process closed its output: EOF
        entries = [e async for e in read_logs(log_path)]
        assert [e.line for e in entries] == [b"first\n"]
        await finish_shim(proc)

        io2 = ContainerIO(fifo_dir, "init", stdin=False, tty=False, logger=None)
        await io2.reopen()               # no writer left: EOF at once, not a hang
        await io2.wait_closed()
        assert io2.closed

    asyncio.run(run())


def test_close_before_any_writer_ends_subscriptions(tmp_path) -> None:
    async def run() -> None:
        io = ContainerIO(str(tmp_path / "f"), "init", stdin=True, tty=False, logger=None)
        io.fifo_paths()
        await io.open()
        sub = io.subscribe()
        await io.close()                 # e.g. Tasks.Create failed
        assert [x async for x in sub] == []
        await io.wait_closed()
        late = io.subscribe()
        assert [x async for x in late] == []
        io.remove()

    asyncio.run(run())
    assert not (tmp_path / "f").exists()


def test_attach_before_start_input_waits_for_open(tmp_path) -> None:
    """docker run -i: the attach (subscription and stdin) comes before the start opens the
    FIFOs; the input waits, nothing is lost."""
    fifo_dir = str(tmp_path / "fifos")

    async def run() -> bytes:
        io = ContainerIO(fifo_dir, "init", stdin=True, tty=False, logger=None)
        sub = io.subscribe()
        waiter = asyncio.create_task(io.wait_closed())

        async def client() -> None:
            await io.write_stdin(b"early input\n")
            await io.close_stdin()
        writer = asyncio.create_task(client())
        await asyncio.sleep(0)
        assert not writer.done() and not waiter.done()
        # "start": FIFOs, open, task create, process_created
        io.fifo_paths()
        await io.open()
        proc = await start_shim(io, "cat", closeio=True)
        await writer
        await io.process_created()
        out = bytearray()
        await _collect(sub, out)
        await waiter
        assert await finish_shim(proc) == 0
        return bytes(out)

    assert asyncio.run(run()) == b"early input\n"


def test_close_before_open_releases_waiting_writers(tmp_path) -> None:
    async def run() -> None:
        io = ContainerIO(str(tmp_path / "f"), "init", stdin=True, tty=False, logger=None)
        writer = asyncio.create_task(io.write_stdin(b"x"))
        await asyncio.sleep(0)
        await io.close()                 # the start failed before the FIFOs were opened
        with pytest.raises(BrokenPipeError):
            await writer
        await io.wait_closed()

    asyncio.run(run())


def test_output_before_the_process_is_created_is_held_then_passed_on_or_dropped(tmp_path) -> None:
    """With hold_until_created, what arrives before process_created() (the OCI runtime's own
    messages: runc prints its create error on the stderr it shares with the container) is held:
    passed on once the process exists, dropped when it never does."""
    async def run() -> None:
        log_path = str(tmp_path / "a-json.log")
        io = ContainerIO(str(tmp_path / "a"), "init", stdin=False, tty=False,
                         logger=new_logger("json-file", {}, log_path), hold_until_created=True)
        _, out, err = io.fifo_paths()
        await io.open()
        sub = io.subscribe()
        w_out = os.open(out, os.O_WRONLY)
        w_err = os.open(err, os.O_WRONLY)
        os.write(w_err, b"early\n")
        await asyncio.sleep(0)
        assert sub.pending() == 0 and [e async for e in read_logs(log_path)] == []
        await io.process_created()
        os.write(w_out, b"later\n")
        os.close(w_out)
        os.close(w_err)
        got = [x async for x in sub]
        assert got == [("stderr", b"early\n"), ("stdout", b"later\n")]
        await io.wait_closed()
        assert [e.line for e in [e async for e in read_logs(log_path)]] == [b"early\n", b"later\n"]

        log_b = str(tmp_path / "b-json.log")
        failed = ContainerIO(str(tmp_path / "b"), "init", stdin=False, tty=False,
                             logger=new_logger("json-file", {}, log_b), hold_until_created=True)
        _, out, err = failed.fifo_paths()
        await failed.open()
        sub = failed.subscribe()
        w_out = os.open(out, os.O_WRONLY)
        w_err = os.open(err, os.O_WRONLY)
        os.write(w_err, b'runc create failed: exec: "/x": permission denied\n')
        os.close(w_out)
        os.close(w_err)              # the shim gives up: EOF, the process was never created
        assert [x async for x in sub] == []
        await failed.wait_closed()
        assert [e async for e in read_logs(log_b)] == []

    asyncio.run(run())
