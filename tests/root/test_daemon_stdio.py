"""skiffd's ContainerIO against the real skiff-shim and skiff-runc with the busybox image:
output into the json-file log and to a live subscriber, stdin sent before the process starts,
CloseIO, EOF after the exit, and a terminal (one raw stream)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from test_shim import Box

from skiff.daemon.logger import new_logger
from skiff.daemon.streams import ContainerIO

pytestmark = pytest.mark.root


@pytest.fixture
def box(state_dirs, runtime_bin):
    b = Box(state_dirs, runtime_bin)
    yield b
    b.cleanup()


def _log(path: str) -> list[tuple[str, str]]:
    with open(path, "rb") as f:
        return [(d["stream"], d["log"]) for d in map(json.loads, f.read().splitlines())]


def test_container_output_stdin_and_exit(box, tmp_path):
    box.bundle_for(["sh", "-c", "echo out-line; echo err-line >&2; read x; echo \"got $x\"; "
                                "cat; exit 3"])
    client = box.start_shim()
    log_path = str(tmp_path / "c-json.log")

    async def run() -> tuple[int, list[tuple[str, bytes]]]:
        io = ContainerIO(os.path.join(box.run, "fifos"), "init", stdin=True, tty=False,
                         logger=new_logger("json-file", {}, log_path))

        async def closeio() -> None:
            await asyncio.to_thread(client.closeio)
        io.on_stdin_closed = closeio
        stdin, stdout, stderr = io.fifo_paths()
        await io.open()
        sub = io.subscribe()
        # input written and closed before the task exists (docker run -i with piped input)
        await io.write_stdin(b"hello\nrest of input\n")
        await io.close_stdin()
        await asyncio.to_thread(client.create, box.bundle, box.runtime, runtime_root=box.root,
                                stdin=stdin, stdout=stdout, stderr=stderr, terminal=False)
        await io.process_created()       # carries out the deferred close: CloseIO
        assert not io.stdin_open
        await asyncio.to_thread(client.start)
        got = [item async for item in sub]          # ends at EOF on both FIFOs
        status = (await asyncio.to_thread(client.wait)).exit_status
        await io.wait_closed()
        io.remove()
        return status, got

    status, got = asyncio.run(run())
    assert status == 3
    out = b"".join(d for s, d in got if s == "stdout")
    err = b"".join(d for s, d in got if s == "stderr")
    assert (out, err) == (b"out-line\ngot hello\nrest of input\n", b"err-line\n")
    assert sorted(_log(log_path)) == [("stderr", "err-line\n"), ("stdout", "got hello\n"),
                                      ("stdout", "out-line\n"), ("stdout", "rest of input\n")]
    box.finish()


def test_terminal_is_one_raw_stream(box, tmp_path):
    box.bundle_for(["sh"], terminal=True)
    client = box.start_shim()
    log_path = str(tmp_path / "t-json.log")

    async def run() -> tuple[int, bytes]:
        io = ContainerIO(os.path.join(box.run, "fifos"), "init", stdin=True, tty=True,
                         logger=new_logger("json-file", {}, log_path))
        stdin, stdout, stderr = io.fifo_paths()
        assert stderr == ""
        await io.open()
        sub = io.subscribe()
        await asyncio.to_thread(client.create, box.bundle, box.runtime, runtime_root=box.root,
                                stdin=stdin, stdout=stdout, stderr=stderr, terminal=True)
        await io.process_created()
        await asyncio.to_thread(client.start)
        await io.write_stdin(b"echo to-err >&2; echo done-$((6*7)); exit 5\n")
        out = bytearray()
        async for stream, data in sub:
            assert stream == "stdout"
            out += data
        status = (await asyncio.to_thread(client.wait)).exit_status
        await io.close_stdin()
        io.remove()
        return status, bytes(out)

    status, out = asyncio.run(run())
    assert status == 5
    lines = out.replace(b"\r\n", b"\n").split(b"\n")
    assert b"to-err" in lines and b"done-42" in lines
    logged = "".join(text for _s, text in _log(log_path))
    assert "done-42\r\n" in logged and {s for s, _ in _log(log_path)} == {"stdout"}
    box.finish()
