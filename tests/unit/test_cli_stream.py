"""Unit tests of the `skiff` CLI's streaming paths against a scripted HTTP server on a Unix
socket: uploads streamed in pieces (load, import, cp), progress rendering (jsonmessage style),
generated --help texts, and `stats` over the daemon's stats stream."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading

import pytest

from cli_fakes import Server, chunked, reply
from skiff.cli import image as image_mod
from skiff.cli.container import cp
from skiff.cli.flags import HelpRequested, Spec, parse
from skiff.cli.help import command_help
from skiff.cli.http import APIError, Client, CLIError
from skiff.cli.image import import_, load, progress_bar, show_progress
from skiff.cli.main import CONTAINER, IMAGE, SYSTEM, main
from skiff.cli.stats import _stats_stream
from skiff.cli.upload import copy_file, file_size


@pytest.fixture
def sock(monkeypatch):
    d = f"/tmp/skst{os.getpid()}"
    os.makedirs(d, exist_ok=True)
    monkeypatch.setenv("DOCKER_API_VERSION", "1.47")     # no /_ping before an upload
    yield f"{d}/s.sock"
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    os.rmdir(d)


class _Stdin:
    def __init__(self, buffer) -> None:
        self.buffer = buffer

    def isatty(self) -> bool:
        return False


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


LOADED = b'{"stream":"Loaded image: busybox:latest\\n"}\r\n'


# ---------------------------------------------------------------- streamed uploads

def test_copy_file_reads_in_pieces_and_file_size():
    reads: list[int] = []

    class Spy(io.BytesIO):
        def read(self, n=-1):
            reads.append(n)
            return super().read(n)

    got: list[bytes] = []
    copy_file(Spy(b"x" * 2500), chunk=1000)(got.append)
    assert [len(g) for g in got] == [1000, 1000, 500]
    assert reads == [1000, 1000, 1000, 1000]        # never read(-1): nothing held whole
    r, w = os.pipe()
    with os.fdopen(r, "rb") as pr, os.fdopen(w, "wb"):
        assert file_size(pr) is None                 # a pipe: chunked transfer-encoding
    with open(__file__, "rb") as f:
        f.read(10)
        assert file_size(f) == os.path.getsize(__file__) - 10


def test_load_file_streams_with_content_length(sock, tmp_path, monkeypatch, capsys):
    data = os.urandom(3 * 1024 * 1024 + 17)
    p = tmp_path / "img.tar"
    p.write_bytes(data)
    srv = Server(sock, lambda req, c: chunked(c, [LOADED]))
    reads: list[int] = []
    real_copy = image_mod.__dict__.get("copy_file")
    assert real_copy is None                       # imported lazily, not at module load

    import skiff.cli.upload as http_mod
    orig = http_mod.copy_file

    def spy(f, chunk=1 << 20):
        class F:
            def read(self, n):
                reads.append(n)
                return f.read(n)
        return orig(F(), chunk)
    monkeypatch.setattr(http_mod, "copy_file", spy)
    try:
        assert load(Client(f"unix://{sock}"), ["-i", str(p)]) == 0
    finally:
        srv.close()
    req = srv.reqs[0]
    assert req["method"] == "POST" and req["path"].startswith("/v1.47/images/load?quiet=0")
    assert req["headers"]["content-length"] == str(len(data))
    assert "transfer-encoding" not in req["headers"]
    assert req["body"] == data
    assert max(reads) == 1 << 20 and len(reads) == 5   # 4 pieces of at most 1 MiB, then EOF
    assert capsys.readouterr().out == "Loaded image: busybox:latest\n"


def test_load_stdin_pipe_streams_chunked(sock, monkeypatch, capsys):
    data = os.urandom(2 * 1024 * 1024 + 5)
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as fw:
            fw.write(data)
    t = threading.Thread(target=feed)
    t.start()
    srv = Server(sock, lambda req, c: chunked(c, [LOADED]))
    with os.fdopen(r, "rb") as pr:
        monkeypatch.setattr("sys.stdin", _Stdin(pr))
        try:
            assert load(Client(f"unix://{sock}"), []) == 0
        finally:
            srv.close()
            t.join()
    req = srv.reqs[0]
    assert req["headers"]["transfer-encoding"] == "chunked"
    assert "content-length" not in req["headers"]
    assert req["body"] == data
    assert len(req["chunks"]) >= 3 and max(req["chunks"]) <= 1 << 20
    assert "Loaded image: busybox:latest" in capsys.readouterr().out


def test_load_error_in_stream_and_early_error_reply(sock, tmp_path):
    p = tmp_path / "bad.tar"
    p.write_bytes(b"not a tar" * 1000)
    def handler(req, c):
        try:
            chunked(c, [b'{"errorDetail":{"message":"bad tar"},"error":"bad tar"}\n'])
        except BrokenPipeError:
            pass        # the client stops reading at the error, before the last chunk
    srv = Server(sock, handler)
    try:
        with pytest.raises(CLIError) as e:
            load(Client(f"unix://{sock}"), ["-i", str(p)])
        assert e.value.msg == "bad tar"
    finally:
        srv.close()
    os.unlink(sock)
    # the daemon answers before reading the (large) body: its error is what the user sees
    big = tmp_path / "big.tar"
    big.write_bytes(b"\0" * (8 * 1024 * 1024))
    srv = Server(sock, lambda req, c: reply(c, 500, b'{"message":"no space left on device"}', reason="Error"),
                 read_body=False)
    try:
        with pytest.raises(APIError) as e2:
            load(Client(f"unix://{sock}"), ["-i", str(big)])
        assert e2.value.status == 500 and "no space left on device" in e2.value.msg
    finally:
        srv.close()


def test_upload_refuses_input_that_changes_size(sock):
    def handler(req, c):
        # no answer before the client gives up on the request (closes): an early answer would race
        # the client's check of the body size ("the daemon stopped reading it" instead)
        while c.recv(65536):
            pass
        try:
            reply(c, 200, b"{}")
        except (BrokenPipeError, ConnectionResetError):
            pass        # the client gave up on the request before the reply
    srv = Server(sock, handler, read_body=False)
    try:
        with pytest.raises(CLIError) as e:
            Client(f"unix://{sock}").upload("POST", "/images/load", None, lambda w: w(b"abc"),
                                            "application/x-tar", size=10)
        assert "not the 10 announced" in e.value.msg
    finally:
        srv.close()


def test_import_file_streams(sock, tmp_path, capsys):
    data = os.urandom(300000)
    p = tmp_path / "rootfs.tar"
    p.write_bytes(data)
    srv = Server(sock, lambda req, c: chunked(c, [b'{"status":"sha256:' + b"a" * 64 + b'"}\n']))
    try:
        assert import_(Client(f"unix://{sock}"), [str(p), "imp:1"]) == 0
    finally:
        srv.close()
    req = srv.reqs[0]
    assert "fromSrc=-" in req["path"] and "repo=imp" in req["path"] and "tag=1" in req["path"]
    assert req["headers"]["content-length"] == str(len(data)) and req["body"] == data
    assert capsys.readouterr().out == "sha256:" + "a" * 64 + "\n"


def test_cp_directory_upload_streams_a_tar(sock, tmp_path):
    src = tmp_path / "d"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(100000))
    (src / "small").write_text("hi\n")

    def handler(req, c):
        if req["method"] == "HEAD":
            reply(c, 404, b'{"message":"Could not find the file /dst in container c1"}', reason="Not Found")
        else:
            reply(c, 200, b"")
    srv = Server(sock, handler)
    try:
        assert cp(Client(f"unix://{sock}"), [str(src), "c1:/dst"]) == 0
    finally:
        srv.close()
    put = [r for r in srv.reqs if r["method"] == "PUT"][0]
    assert "/containers/c1/archive?path=%2F" in put["path"]
    assert put["headers"]["transfer-encoding"] == "chunked"
    assert len(put["chunks"]) > 5                 # tar records sent as they were filled
    with tarfile.open(fileobj=io.BytesIO(put["body"])) as tf:
        names = sorted(tf.getnames())
        assert names == ["dst", "dst/big", "dst/small"]
        assert tf.extractfile("dst/big").read() == (src / "big").read_bytes()  # type: ignore[union-attr]


# ---------------------------------------------------------------- progress

def test_progress_bar_forms():
    assert progress_bar({"progress": "[==>   ] 1MB/3MB"}) == "[==>   ] 1MB/3MB"
    bar = progress_bar({"progressDetail": {"current": 1500000, "total": 4000000}}, width=20)
    assert bar.startswith("[" + "=" * 7 + ">" + " " * 12 + "]")
    assert bar.endswith("1.5MB/4MB")
    assert progress_bar({"progressDetail": {"current": 2000000}}) == "2MB"
    assert progress_bar({"progressDetail": {"current": 10, "total": 10}}, width=4) == "[====]      10B/10B"
    assert progress_bar({"progressDetail": {}}) == ""


class _Body:
    def __init__(self, events: list[dict]) -> None:
        self.events = events

    def lines(self):
        for e in self.events:
            yield json.dumps(e).encode()


PULL_EVENTS: list[dict] = [
    {"status": "Pulling from library/busybox", "id": "latest"},
    {"status": "Pulling fs layer", "id": "aaa", "progressDetail": {}},
    {"status": "Pulling fs layer", "id": "bbb", "progressDetail": {}},
    {"status": "Downloading", "id": "aaa", "progressDetail": {"current": 500, "total": 1000}},
    {"status": "Downloading", "id": "bbb", "progress": "[=>  ] 1kB/9kB", "progressDetail": {"current": 1000}},
    {"status": "Pull complete", "id": "aaa", "progressDetail": {}},
    {"status": "Digest: sha256:abc"},
    {"stream": "Loaded image: x\n"},
]


def test_show_progress_terminal_rewrites_layer_lines():
    out = _TTY()
    show_progress(_Body(PULL_EVENTS), out)
    text = out.getvalue()
    assert "latest: Pulling from library/busybox\n" in text
    assert "\nbbb: Pulling fs layer\n" in text
    # aaa is 2 lines up from the cursor (aaa, bbb below latest): rewritten in place with a bar
    assert "\033[2A\r\033[2Kaaa: Downloading [" + "=" * 25 + ">" in text
    assert "\033[1A\r\033[2Kbbb: Downloading [=>  ] 1kB/9kB\r\033[1B" in text
    assert "\033[2A\r\033[2Kaaa: Pull complete\r\033[2B" in text
    assert text.endswith("Digest: sha256:abc\nLoaded image: x\n")


def test_show_progress_plain_and_quiet():
    out = io.StringIO()
    show_progress(_Body(PULL_EVENTS), out)
    assert out.getvalue() == ("latest: Pulling from library/busybox\naaa: Pulling fs layer\nbbb: Pulling fs layer\n"
                              "aaa: Pull complete\nDigest: sha256:abc\nLoaded image: x\n")
    q = io.StringIO()
    show_progress(_Body(PULL_EVENTS), q, quiet=True)
    assert q.getvalue() == ""
    with pytest.raises(CLIError) as e:
        show_progress(_Body([{"errorDetail": {"message": "manifest unknown"}}]), io.StringIO())
    assert e.value.msg == "manifest unknown"


# ---------------------------------------------------------------- --help

def test_help_generated_from_spec():
    with pytest.raises(HelpRequested) as e:
        parse(Spec("a|all", "f|filter=", "n|last#", "format:"), ["-a", "--help"], True, "ps")
    text = command_help(e.value.spec, e.value.cmd)
    lines = text.splitlines()
    assert lines[0] == "Usage:  skiff ps [OPTIONS]"
    assert lines[2] == "List containers"
    assert "Options:" in lines
    assert any(ln.startswith("  -a, --all ") and "Show all containers" in ln for ln in lines)
    assert any(ln.startswith("  -f, --filter list ") for ln in lines)
    assert any(ln.startswith("  -n, --last int ") for ln in lines)
    assert any(ln.startswith("      --format string ") for ln in lines)
    with pytest.raises(HelpRequested):
        parse(Spec("a|all"), ["-h"], True, "ps")
    o, _ = parse(Spec("h|hostname:"), ["-h", "box"], True, "run")   # run's -h stays --hostname
    assert o["hostname"] == "box"
    # a command whose own flags include "help" keeps it as a flag
    o, _ = parse(Spec("help"), ["--help"], True, "x")
    assert o["help"] is True


def test_every_command_help_exits_0_without_a_daemon(capsys, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/skiff-help.sock")
    cmds = sorted((set(CONTAINER) - {"ls", "list", "remove"}) | set(IMAGE) | set(SYSTEM)) + [
        "network ls", "network create", "volume ls", "volume create", "system df", "system prune",
        "container ls", "image ls", "image prune", "container prune"]
    for c in cmds:
        assert main([*c.split(), "--help"]) == 0, c
        out = capsys.readouterr().out
        assert out.startswith("Usage:  skiff "), c
        assert "Options:" in out and "--help" in out, c
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage:  skiff run [OPTIONS] IMAGE [COMMAND] [ARG...]\n")
    assert "  -d, --detach " in out and "  -p, --publish list " in out and "  -h, --hostname string " in out


def test_main_and_management_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage:  skiff [OPTIONS] COMMAND\n")
    for section in ("Common Commands:", "Management Commands:", "Commands:", "Global Options:"):
        assert section in out
    assert "\n  ps " in out and "\n  container " in out and "\n  stats " in out
    assert "-H, --host list" in out
    assert main([]) == 0
    assert capsys.readouterr().out == out
    assert main(["image", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage:  skiff image COMMAND\n") and "\n  load " in out
    assert main(["network"]) == 0
    assert "\n  connect " in capsys.readouterr().out


# ---------------------------------------------------------------- stats stream

def _sample(cpu: int, sys_: int, mem: int) -> bytes:
    return json.dumps({
        "id": "c1" + "0" * 62, "name": "/web",
        "cpu_stats": {"cpu_usage": {"total_usage": cpu}, "system_cpu_usage": sys_, "online_cpus": 2},
        "precpu_stats": {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0},
        "memory_stats": {"usage": mem, "limit": 1024 * 1024 * 1024},
        "pids_stats": {"current": 3}}).encode() + b"\n"


def test_stats_stream_named_containers(sock, capsys):
    def handler(req, c):
        if req["path"].startswith("/v1.47/containers/c1/stats?stream=1"):
            chunked(c, [_sample(10, 1000, 1024 * 1024), _sample(50, 1000, 2 * 1024 * 1024)])
        else:
            reply(c, 404, b'{"message":"No such container: nope"}', reason="Not Found")
    srv = Server(sock, handler)
    out = io.StringIO()
    try:
        rc = _stats_stream(Client(f"unix://{sock}"), ["c1", "nope"], False, True,
                           "table {{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.PIDs}}", out, interval=3600)
    finally:
        srv.close()
    assert rc == 1
    assert "No such container: nope" in capsys.readouterr().err
    text = out.getvalue()
    assert "\033[" not in text                      # not a terminal: plain tables
    last = text.strip().splitlines()[-2:]
    assert last[0].split() == ["NAME", "CPU", "%", "MEM", "USAGE", "/", "LIMIT", "PIDS"]
    assert last[1].split() == ["web", "10.00%", "2MiB", "/", "1GiB", "3"]   # the latest sample
    assert text.count("NAME") == text.count("web")  # no table drawn before the first sample
    paths = [r["path"] for r in srv.reqs]
    assert sum("stream=1" in p for p in paths) == 2   # one stream per container


def test_stats_stream_all_running_follows_the_container_list(sock):
    lists = []

    def handler(req, c):
        if req["path"].startswith("/v1.47/containers/json"):
            lists.append(req["path"])
            if len(lists) == 1:
                reply(c, 200, json.dumps([{"Id": "c1"}]).encode())
            else:       # ends the endless loop of the test: the error propagates
                reply(c, 500, b'{"message":"daemon shutting down"}', reason="Error")
        else:           # a stream that stays open after its first sample, as the daemon's does
            ln = _sample(10, 1000, 1024)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + b"%x\r\n" % len(ln) + ln + b"\r\n")
            stop.wait()
    stop = threading.Event()
    srv = Server(sock, handler)
    out = io.StringIO()
    try:
        with pytest.raises(APIError) as e:
            _stats_stream(Client(f"unix://{sock}"), [], False, True, "{{.Name}} {{.PIDs}}", out, interval=0.01)
    finally:
        stop.set()
        srv.close()
    assert "daemon shutting down" in e.value.msg
    assert out.getvalue().splitlines()[0] == "web 3"
    assert lists[0] == "/v1.47/containers/json"     # running ones only (no -a)


def test_stats_stream_terminal_redraws(sock):
    srv = Server(sock, lambda req, c: chunked(c, [_sample(10, 1000, 1024)]))
    out = _TTY()
    try:
        rc = _stats_stream(Client(f"unix://{sock}"), ["c1"], False, True, "{{.Name}} {{.PIDs}}", out,
                           interval=3600)
    finally:
        srv.close()
    assert rc == 0
    assert out.getvalue().endswith("\033[2J\033[Hweb 3\n")


def test_stats_all_fail(sock, capsys):
    srv = Server(sock, lambda req, c: reply(c, 404, b'{"message":"No such container: x"}', reason="Not Found"))
    out = io.StringIO()
    try:
        assert _stats_stream(Client(f"unix://{sock}"), ["x"], False, True, "{{.Name}}", out) == 1
    finally:
        srv.close()
    assert out.getvalue() == ""
    assert "No such container: x" in capsys.readouterr().err
