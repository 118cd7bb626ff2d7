"""Unit tests of `skiff build`: the context tar as the docker CLI makes it (.dockerignore with
exceptions, the Dockerfile and .dockerignore always sent, -f outside the context, the stdin
forms, ownership, modes, symlinks, hard links), the chunked upload and query against a scripted
server on a Unix socket, the rendering of the daemon's stream (-q, --iidfile, errors and their
exit codes), and `builder prune`."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import tarfile
from urllib.parse import parse_qs, urlsplit

import pytest

from cli_fakes import Server, chunked, reply
from skiff.cli import build as build_mod
from skiff.cli.build import ContextPlan, is_archive, plan_context, write_context
from skiff.cli.http import CLIError
from skiff.cli.main import main

# ---------------------------------------------------------------- a scripted daemon


def _events(c, events: list[dict]) -> None:
    try:
        chunked(c, [json.dumps(ev).encode() + b"\r\n" for ev in events])
    except (BrokenPipeError, ConnectionResetError):
        pass        # the client stops reading at an error, before the last chunk


@pytest.fixture
def sock(monkeypatch):
    d = f"/tmp/skbt{os.getpid()}"
    os.makedirs(d, exist_ok=True)
    monkeypatch.setenv("DOCKER_API_VERSION", "1.47")     # no /_ping before the upload
    monkeypatch.setenv("DOCKER_HOST", f"unix://{d}/s.sock")
    yield f"{d}/s.sock"
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    os.rmdir(d)


class _Stdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)

    def isatty(self) -> bool:
        return False


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
        return tf.getmembers()


def _tar_of(plan: ContextPlan, compress: bool = False) -> tuple[bytes, list[int]]:
    pieces: list[bytes] = []
    write_context(plan, pieces.append, compress)
    return b"".join(pieces), [len(p) for p in pieces]


def _content(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


@pytest.fixture
def ctx(tmp_path):
    """A context: Dockerfile, files, a subdirectory, a symlink, a hard link, ignore rules."""
    d = tmp_path / "ctx"
    (d / "sub" / "deep").mkdir(parents=True)
    (d / "Dockerfile").write_text("FROM busybox\nCOPY . /x\n")
    (d / "b.txt").write_text("b")
    (d / "a.txt").write_text("a")
    (d / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(d / "run.sh", 0o751)
    (d / "sub" / "one").write_text("1")
    (d / "sub" / "deep" / "two").write_text("2")
    (d / "app.log").write_text("log")
    (d / "keep.log").write_text("keep")
    (d / "secret").mkdir()
    (d / "secret" / "key").write_text("k")
    (d / "secret" / "public").write_text("p")
    os.symlink("/etc/passwd", d / "link-out")
    os.link(d / "a.txt", d / "sub" / "a-hard")
    return d


# ---------------------------------------------------------------- the context tar

def test_plain_context_order_ownership_modes_links(ctx):
    plan = plan_context(str(ctx), "", None)
    assert plan.dockerfile == "Dockerfile" and plan.extra_dockerfile is None
    data, _ = _tar_of(plan)
    ms = _members(data)
    names = [m.name for m in ms]
    # filepath.Walk order: each directory's names sorted, depth first, no entry for the root
    assert names == ["Dockerfile", "a.txt", "app.log", "b.txt", "keep.log", "link-out", "run.sh",
                     "secret", "secret/key", "secret/public", "sub", "sub/a-hard", "sub/deep",
                     "sub/deep/two", "sub/one"]
    by = {m.name: m for m in ms}
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in ms)
    assert by["run.sh"].mode == 0o751 and by["sub"].isdir()
    assert by["link-out"].issym() and by["link-out"].linkname == "/etc/passwd"   # kept, not followed
    assert by["sub/a-hard"].islnk() and by["sub/a-hard"].linkname == "a.txt"      # second name: a link
    assert _content(data, "sub/deep/two") == b"2"


def test_dockerignore_rules_and_build_files_always_sent(ctx):
    (ctx / ".dockerignore").write_text("# comment\n*.log\n!keep.log\nsecret\nsub/deep\nDockerfile\n.dockerignore\n")
    plan = plan_context(str(ctx), "", None)
    names = [m.name for m in _members(_tar_of(plan)[0])]
    assert names == [".dockerignore", "Dockerfile", "a.txt", "b.txt", "keep.log", "link-out", "run.sh",
                     "sub", "sub/a-hard", "sub/one"]
    assert plan.patterns[-2:] == ["!.dockerignore", "!Dockerfile"]


def test_excluded_directory_entered_only_for_an_exception_below_it(ctx):
    # docker's TarWithOptions: an excluded directory is walked (without its own entry) when an
    # exception pattern starts with its path; other excluded directories are skipped whole
    (ctx / ".dockerignore").write_text("secret\nsub\n!secret/public\n")
    names = [m.name for m in _members(_tar_of(plan_context(str(ctx), "", None))[0])]
    assert "secret/public" in names and "secret" not in names and "secret/key" not in names
    assert not [n for n in names if n.startswith("sub")]


def test_dockerfile_outside_the_context_goes_in_under_a_generated_name(ctx, tmp_path):
    outside = tmp_path / "other.Dockerfile"
    outside.write_text("FROM busybox\nRUN true\n")
    (ctx / ".dockerignore").write_text("*.log")
    plan = plan_context(str(ctx), str(outside), None)
    assert plan.dockerfile.startswith(".dockerfile.") and len(plan.dockerfile) == len(".dockerfile.") + 20
    data, _ = _tar_of(plan)
    names = [m.name for m in _members(data)]
    assert names[-1] == plan.dockerfile and "Dockerfile" in names
    assert _content(data, plan.dockerfile) == outside.read_bytes()
    # the generated name is appended to .dockerignore, so the daemon never lets COPY see it
    assert _content(data, ".dockerignore") == b"*.log\n" + plan.dockerfile.encode() + b"\n"
    # no .dockerignore in the context: one is made
    os.unlink(ctx / ".dockerignore")
    plan = plan_context(str(ctx), str(outside), None)
    data, _ = _tar_of(plan)
    assert _content(data, ".dockerignore") == b".dockerignore\n" + plan.dockerfile.encode() + b"\n"


def test_dockerfile_inside_given_with_f_is_relative_to_the_cwd(ctx, monkeypatch):
    (ctx / "sub" / "Dockerfile.dev").write_text("FROM busybox\n")
    (ctx / ".dockerignore").write_text("sub\n")
    monkeypatch.chdir(ctx / "sub")
    plan = plan_context(str(ctx), "Dockerfile.dev", None)
    assert plan.dockerfile == "sub/Dockerfile.dev" and plan.extra_dockerfile is None
    names = [m.name for m in _members(_tar_of(plan)[0])]
    assert "sub/Dockerfile.dev" in names and "sub/one" not in names


def test_dockerfile_from_stdin_with_a_directory_context(ctx):
    plan = plan_context(str(ctx), "-", io.BytesIO(b"FROM busybox\nCMD x\n"))
    data, _ = _tar_of(plan)
    assert _content(data, plan.dockerfile) == b"FROM busybox\nCMD x\n"
    assert "Dockerfile" in [m.name for m in _members(data)]


def test_stdin_context_tar_is_passed_through(ctx):
    raw = _tar_of(plan_context(str(ctx), "", None))[0]
    for blob in (raw, gzip.compress(raw)):
        assert is_archive(blob[:1024])
        plan = plan_context("-", "sub/one", io.BytesIO(blob))
        assert plan.dockerfile == "sub/one"
        assert _tar_of(plan)[0] == blob


def test_stdin_dockerfile_becomes_a_one_file_context():
    plan = plan_context("-", "", io.BytesIO(b"FROM busybox\nRUN echo hi\n"))
    assert plan.dockerfile == "Dockerfile"
    data, _ = _tar_of(plan)
    # as Go's archive/tar writes it: header, data block, two zero blocks, no 10 KiB record padding
    assert len(data) == 512 + 512 + 1024 and data[-1024:] == b"\0" * 1024
    ms = _members(data)
    assert [m.name for m in ms] == ["Dockerfile"] and ms[0].uid == 0
    assert _content(data, "Dockerfile") == b"FROM busybox\nRUN echo hi\n"


def test_stdin_errors_and_url_refused(tmp_path):
    with pytest.raises(CLIError, match="can't use stdin for both build context and dockerfile"):
        plan_context("-", "-", io.BytesIO(b""))
    with pytest.raises(CLIError, match="ambiguous Dockerfile source"):
        plan_context("-", "Dockerfile", io.BytesIO(b"FROM busybox\n"))
    with pytest.raises(CLIError, match="remote build contexts are not supported"):
        plan_context("https://example.com/ctx.tar", "", None)
    with pytest.raises(CLIError, match=r'unable to prepare context: path ".*nope" not found'):
        plan_context(str(tmp_path / "nope"), "", None)
    (tmp_path / "f").write_text("x")
    with pytest.raises(CLIError, match="context must be a directory"):
        plan_context(str(tmp_path / "f"), "", None)
    (tmp_path / "d").mkdir()
    with pytest.raises(CLIError, match="unable to evaluate symlinks in Dockerfile path: lstat .*/d/Dockerfile"):
        plan_context(str(tmp_path / "d"), "", None)
    (tmp_path / "d" / "dockerfile").write_text("FROM busybox\n")     # docker's lower-case fallback
    assert plan_context(str(tmp_path / "d"), "", None).dockerfile == "dockerfile"


def test_compress_gzips_the_same_tar(ctx):
    plain = _tar_of(plan_context(str(ctx), "", None))[0]
    packed = _tar_of(plan_context(str(ctx), "", None), compress=True)[0]
    assert packed[:2] == b"\x1f\x8b"
    assert [m.name for m in _members(packed)] == [m.name for m in _members(plain)]


def test_big_context_is_streamed_in_pieces(ctx):
    (ctx / "big").write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    data, sizes = _tar_of(plan_context(str(ctx), "", None))
    assert len(sizes) >= 5 and max(sizes) <= 1 << 20          # never the whole tar at once
    assert _content(data, "big") == (ctx / "big").read_bytes()


# ---------------------------------------------------------------- the request and the output

OK_EVENTS = [{"stream": "Step 1/2 : FROM busybox"}, {"stream": "\n"}, {"stream": " ---> 1234\n"},
             {"stream": "Step 2/2 : RUN echo hi\n"}, {"stream": "hi\n"},
             {"aux": {"ID": "sha256:" + "ab" * 32}},
             {"stream": "Successfully built abababababab\n"}, {"stream": "Successfully tagged t:1\n"}]


def test_build_request_query_headers_and_output(sock, ctx, tmp_path, monkeypatch, capsys):
    (ctx / "big").write_bytes(os.urandom(3 * 1024 * 1024))
    monkeypatch.setenv("FROMENV", "envval")
    monkeypatch.delenv("UNSET_ARG", raising=False)
    srv = Server(sock, lambda req, c: _events(c, OK_EVENTS))
    iid = tmp_path / "iid"
    iid.write_text("stale")
    try:
        rc = main(["build", "-t", "t:1", "--tag", "t:2", "--build-arg", "A=1", "--build-arg", "FROMENV",
                   "--build-arg", "UNSET_ARG", "--target", "final", "--no-cache", "--rm=false",
                   "--label", "k=v", "-m", "64m", "--network", "none", "--add-host", "h:1.2.3.4",
                   "--cache-from", "a,b", "--iidfile", str(iid), str(ctx)])
    finally:
        srv.close()
    assert rc == 0
    req = srv.reqs[0]
    u = urlsplit(req["path"])
    assert req["method"] == "POST" and u.path == "/v1.47/build"
    q = parse_qs(u.query)
    assert q["t"] == ["t:1", "t:2"] and q["dockerfile"] == ["Dockerfile"] and q["target"] == ["final"]
    assert json.loads(q["buildargs"][0]) == {"A": "1", "FROMENV": "envval", "UNSET_ARG": None}
    assert json.loads(q["labels"][0]) == {"k": "v"} and json.loads(q["cachefrom"][0]) == ["a", "b"]
    assert q["nocache"] == ["1"] and q["rm"] == ["0"] and q["memory"] == [str(64 << 20)]
    assert q["networkmode"] == ["none"] and q["extrahosts"] == ["h:1.2.3.4"] and q["version"] == ["1"]
    assert req["headers"]["content-type"] == "application/x-tar"
    assert req["headers"]["transfer-encoding"] == "chunked" and len(req["chunks"]) >= 3
    assert json.loads(base64.urlsafe_b64decode(req["headers"]["x-registry-config"])) == {}
    assert "big" in [m.name for m in _members(req["body"])]
    out = capsys.readouterr().out
    assert out.startswith("Sending build context to Docker daemon  ")
    assert out.split("\r\r\n", 1)[1] == ("Step 1/2 : FROM busybox\n ---> 1234\nStep 2/2 : RUN echo hi\nhi\n"
                                        "Successfully built abababababab\nSuccessfully tagged t:1\n")
    assert iid.read_text() == "sha256:" + "ab" * 32


def test_quiet_prints_only_the_id(sock, ctx, tmp_path, capsys):
    iid = tmp_path / "iid"

    def handler(req, c):
        _events(c, [{"stream": "sha256:" + "cd" * 32 + "\n"}, {"aux": {"ID": "sha256:" + "cd" * 32}}])
    srv = Server(sock, handler)
    try:
        assert main(["build", "-q", "--iidfile", str(iid), str(ctx)]) == 0
    finally:
        srv.close()
    assert parse_qs(urlsplit(srv.reqs[0]["path"]).query)["q"] == ["1"]
    got = capsys.readouterr()
    assert got.out == "sha256:" + "cd" * 32 + "\n" and got.err == ""
    assert iid.read_text() == "sha256:" + "cd" * 32 + "\n"      # docker writes -q's buffer as is


def test_failing_step_exit_code_and_stderr(sock, ctx, tmp_path, capsys):
    err = {"errorDetail": {"code": 3, "message": "The command '/bin/sh -c exit 3' returned a non-zero code: 3"},
           "error": "The command '/bin/sh -c exit 3' returned a non-zero code: 3"}
    iid = tmp_path / "iid"
    iid.write_text("stale")

    def handler(req, c):
        _events(c, [{"stream": "Step 1/1 : RUN exit 3\n"}, {"stream": " ---> Running in abc\n"}, err])
    srv = Server(sock, handler)
    try:
        assert main(["build", "--iidfile", str(iid), str(ctx)]) == 3
        got = capsys.readouterr()
        assert got.out.endswith("Step 1/1 : RUN exit 3\n ---> Running in abc\n")
        assert got.err == "The command '/bin/sh -c exit 3' returned a non-zero code: 3\n"
        assert not iid.exists()                          # removed first, not written on failure
        # -q: what was held back goes to stderr before the error
        assert main(["build", "-q", str(ctx)]) == 3
        got = capsys.readouterr()
        assert got.out == ""
        assert got.err.startswith("Sending build context to Docker daemon")
        assert got.err.endswith("Step 1/1 : RUN exit 3\n ---> Running in abc\n"
                                "The command '/bin/sh -c exit 3' returned a non-zero code: 3\n")
    finally:
        srv.close()


def test_error_without_code_exits_1_and_http_error(sock, ctx, capsys):
    def handler(req, c):
        if "t=bad" in req["path"]:
            reply(c, 400, b'{"message":"invalid platform"}', reason="Bad Request")
        else:
            _events(c, [{"errorDetail": {"message": "boom"}, "error": "boom"}])
    srv = Server(sock, handler)
    try:
        assert main(["build", str(ctx)]) == 1
        assert capsys.readouterr().err == "boom\n"
        assert main(["build", "-t", "bad", str(ctx)]) == 1
        assert capsys.readouterr().err == "Error response from daemon: invalid platform\n"
    finally:
        srv.close()


def test_stdin_context_through_main(sock, monkeypatch, capsys):
    srv = Server(sock, lambda req, c: _events(c, OK_EVENTS))
    monkeypatch.setattr("sys.stdin", _Stdin(b"FROM busybox\nRUN echo hi\n"))
    try:
        assert main(["image", "build", "-"]) == 0
    finally:
        srv.close()
    body = srv.reqs[0]["body"]
    assert _content(body, "Dockerfile") == b"FROM busybox\nRUN echo hi\n"
    assert parse_qs(urlsplit(srv.reqs[0]["path"]).query)["dockerfile"] == ["Dockerfile"]


def test_usage_errors(capsys, sock):
    assert main(["build"]) == 1
    assert '"docker build" requires exactly 1 argument' in capsys.readouterr().err
    assert main(["build", "-t", "Bad:1", "."]) == 125
    assert "repository name must be lowercase" in capsys.readouterr().err
    assert main(["build", "git@github.com:x/y.git"]) == 1
    assert "remote build contexts are not supported" in capsys.readouterr().err


def test_help_lists_build(capsys):
    assert main(["build", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage:  skiff build [OPTIONS] PATH | URL | -\n")
    assert "  -t, --tag list " in out and "  -f, --file string " in out and "--iidfile string" in out
    assert main(["--help"]) == 0
    assert "\n  build " in capsys.readouterr().out
    assert main(["builder"]) == 0
    out = capsys.readouterr().out
    assert "\n  prune " in out and "\n  build " in out


def test_builder_prune(sock, capsys):
    def handler(req, c):
        reply(c, 200, json.dumps({"CachesDeleted": ["sha256:aa", "sha256:bb"], "SpaceReclaimed": 2500}).encode())
    srv = Server(sock, handler)
    try:
        assert main(["builder", "prune", "-f", "-a", "--filter", "until=24h"]) == 0
    finally:
        srv.close()
    u = urlsplit(srv.reqs[0]["path"])
    assert srv.reqs[0]["method"] == "POST" and u.path == "/v1.47/build/prune"
    q = parse_qs(u.query)
    assert q["all"] == ["1"] and json.loads(q["filters"][0]) == {"until": {"24h": True}}
    assert capsys.readouterr().out == ("Deleted build cache objects:\nsha256:aa\nsha256:bb\n\n"
                                       "Total reclaimed space: 2.5kB\n")


def test_build_module_is_not_on_the_hot_path():
    import subprocess
    import sys

    code = ("import sys; from skiff.cli.main import main; main(['--version']); "
            "print('skiff.cli.build' in sys.modules, 'tarfile' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "False False"
    assert build_mod.CHUNK == 1 << 20
