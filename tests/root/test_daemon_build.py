"""skiffd's classic builder (``POST /build``) against a real skiffd, driven by the real docker
CLI (``DOCKER_BUILDKIT=0``) and by raw HTTP: every instruction, multi-stage builds, build args
and targets, the cache, failing RUNs, hostile contexts, intermediate images and their cascade
removal, and the wording of a few outputs next to a private dockerd 20.10's."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import lzma
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from dockerd_util import busybox_dockerd
from skiffd_util import Skiffd

from tar_util import tar_of

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUSYBOX_TAR = REPO / "build" / "images" / "busybox.tar"
DEPRECATION = ("DEPRECATED", "BuildKit is currently disabled", "environment-variable", "Install the buildx")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    run_dir = tempfile.mkdtemp(prefix="sk-", dir="/tmp")
    d = Skiffd(os.path.join(run_dir, "run"), str(tmp_path_factory.mktemp("skiffd-build")),
               cgroup_parent="/skiff-" + os.path.basename(run_dir))
    try:
        # the parent cgroups (never removed by the runtime) and the bridge exist before any test's
        # leak snapshot
        r = d.docker("run", "--rm", "busybox", "true")
        assert r.returncode == 0, r.stderr
        yield d
    finally:
        d.stop()
        shutil.rmtree(run_dir)


@pytest.fixture
def skiffd(daemon):
    yield daemon
    daemon.remove_all_containers()


def docker(d, *args: str, input: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(d.env, DOCKER_BUILDKIT="0")
    return subprocess.run(["/usr/local/bin/docker", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, input=input)


def ok(d, *args: str) -> str:
    r = docker(d, *args)
    assert r.returncode == 0, f"docker {' '.join(args)}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def err_text(r: subprocess.CompletedProcess) -> str:
    return "\n".join(ln for ln in (r.stdout + r.stderr).splitlines() if not any(x in ln for x in DEPRECATION))


def context(tmp: Path, files: dict[str, str | bytes]) -> str:
    d = tmp / f"ctx-{len(list(tmp.iterdir()))}"
    d.mkdir()
    for name, content in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(d)


def inspect(d, ref: str) -> dict:
    return json.loads(ok(d, "image", "inspect", ref))[0]


def steps(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("Step ")]


# --- raw HTTP over the unix socket ---------------------------------------------------------------

class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 240) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def post(d, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
    conn = UnixConnection(d.sock)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/x-tar", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def file_member(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(name)
    ti.mode = mode
    return ti, data


def link_member(name: str, target: str, hard: bool = False) -> tuple[tarfile.TarInfo, None]:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    ti.linkname = target
    return ti, None


def messages(body: bytes) -> list[dict]:
    return [json.loads(ln) for ln in body.decode().split("\r\n") if ln.strip()]


# --- the tests -------------------------------------------------------------------------------------

EVERYTHING = """\
ARG BASE=busybox
FROM $BASE AS base
MAINTAINER me@example.com
ARG V=7
LABEL a=1 "b c"="d e"
ENV P=/p Q="q $V"
RUN echo "v=$V" && echo app:x:1234:1234::/home/app:/bin/sh >> /etc/passwd && echo app:x:1234: >> /etc/group && mkdir -p /p
COPY dir /copied/
COPY --chown=app:app *.txt /txt/
COPY --chmod=0751 a.txt /chm
ADD arch.tar.gz /ext/
COPY <<EOF /heredoc.txt
hello $P
EOF
WORKDIR rel
WORKDIR $P/w
USER app
EXPOSE 80 53/udp
VOLUME ["/data"]
SHELL ["/bin/sh", "-c"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --retries=3 CMD true
ONBUILD RUN echo triggered-in-child
ENTRYPOINT ["/bin/echo"]
CMD ["from-cmd"]
"""


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        ti = tarfile.TarInfo("inner/x.txt")
        ti.size = 2
        t.addfile(ti, io.BytesIO(b"x\n"))
    return buf.getvalue()


def test_every_instruction(skiffd, tmp_path):
    ctx = context(tmp_path, {"Dockerfile": EVERYTHING, "dir/f1": "f1\n", "dir/sub/f2": "f2\n", "a.txt": "a\n",
                             "b.txt": "b\n", "arch.tar.gz": _archive()})
    os.chmod(f"{ctx}/dir/sub/f2", 0o600)
    os.symlink("f1", f"{ctx}/dir/link")
    r = docker(skiffd, "build", "--build-arg", "V=9", "--build-arg", "UNUSED=1", "-t", "every:1",
               "--label", "zz=top", ctx)
    out = err_text(r)
    assert r.returncode == 0, out
    assert len(steps(out)) == 24 and steps(out)[-1] == "Step 24/24 : LABEL zz=top"
    assert "Step 1/24 : ARG BASE=busybox" in out and "v=9" in out
    assert "[Warning] One or more build-args [UNUSED] were not consumed" in out
    assert re.search(r"Successfully built [0-9a-f]{12}\nSuccessfully tagged every:1\n", out)
    img = inspect(skiffd, "every:1")
    cfg = img["Config"]
    assert img["Author"] == "me@example.com"
    assert cfg["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "P=/p", "Q=q 9"]
    assert cfg["Labels"] == {"a": "1", "b c": "d e", "zz": "top"}
    assert cfg["User"] == "app" and cfg["WorkingDir"] == "/p/w"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}} and cfg["Volumes"] == {"/data": {}}
    assert cfg["Entrypoint"] == ["/bin/echo"] and cfg["Cmd"] == ["from-cmd"]
    assert cfg["StopSignal"] == "SIGTERM" and cfg["Shell"] == ["/bin/sh", "-c"]
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000, "Retries": 3}
    assert cfg["OnBuild"] == ["RUN echo triggered-in-child"]
    assert img["Parent"].startswith("sha256:") and cfg["Image"] == img["Parent"]
    # the image runs with its CMD/ENTRYPOINT, USER and WORKDIR
    assert ok(skiffd, "run", "--rm", "every:1").strip() == "from-cmd"
    assert ok(skiffd, "run", "--rm", "--entrypoint", "sh", "every:1", "-c", "id -u; pwd").split() == ["1234", "/p/w"]
    listing = ok(skiffd, "run", "--rm", "--entrypoint", "sh", "every:1", "-c",
                 "stat -c '%n %u:%g %a %F' /copied/f1 /copied/sub/f2 /copied/link /txt/a.txt /txt/b.txt /chm "
                 "/ext/inner/x.txt /rel /p/w; cat /copied/f1 /ext/inner/x.txt /heredoc.txt; readlink /copied/link")
    lines = listing.splitlines()
    assert lines[:9] == ["/copied/f1 0:0 644 regular file", "/copied/sub/f2 0:0 600 regular file",
                         "/copied/link 0:0 777 symbolic link", "/txt/a.txt 1234:1234 644 regular file",
                         "/txt/b.txt 1234:1234 644 regular file", "/chm 0:0 751 regular file",
                         "/ext/inner/x.txt 0:0 644 regular file", "/rel 0:0 755 directory",
                         "/p/w 0:0 755 directory"]
    assert lines[9:] == ["f1", "x", "hello /p", "f1"]
    # docker history: one row per step, as moby writes them
    hist = ok(skiffd, "history", "--no-trunc", "--format", "{{.CreatedBy}}", "every:1").splitlines()
    assert hist[0] == "/bin/sh -c #(nop)  LABEL zz=top"
    assert '/bin/sh -c #(nop)  CMD ["from-cmd"]' in hist
    assert '/bin/sh -c #(nop)  ENTRYPOINT ["/bin/echo"]' in hist
    assert "/bin/sh -c #(nop)  HEALTHCHECK &{[\"CMD-SHELL\" \"true\"] \"5s\" \"0s\" \"0s\" '\\x03'}" in hist
    assert "/bin/sh -c #(nop)  VOLUME [/data]" in hist and "/bin/sh -c #(nop)  SHELL [/bin/sh -c]" in hist
    assert "/bin/sh -c #(nop)  EXPOSE 80 53/udp" in hist and "/bin/sh -c #(nop) WORKDIR /p/w" in hist
    assert "/bin/sh -c #(nop)  ENV P=/p Q=q 9" in hist and "/bin/sh -c #(nop)  ARG V=7" in hist
    assert any(re.fullmatch(r"/bin/sh -c #\(nop\) COPY dir:[0-9a-f]{64} in /copied/ ", h) for h in hist)
    assert any(re.fullmatch(r"/bin/sh -c #\(nop\) COPY --chown=app:app multi:[0-9a-f]{64} in /txt/ ", h) for h in hist)
    assert any(re.fullmatch(r"/bin/sh -c #\(nop\) ADD file:[0-9a-f]{64} in /ext/ ", h) for h in hist)
    assert any(h.startswith('|1 V=9 /bin/sh -c echo "v=$V"') for h in hist)
    assert len(hist) == 23     # 22 steps after FROM + the base image's one entry
    # each row is an image of the chain (moby's history of a locally built image)
    ids = ok(skiffd, "history", "-q", "--no-trunc", "every:1").split()
    assert "<missing>" not in ids and ids[0] == img["Id"] and ids[1] == img["Parent"]
    assert ids[-1] == inspect(skiffd, "busybox")["Id"] and len(set(ids)) == 23


def test_run_layer_has_only_the_changes(skiffd, tmp_path):
    """A RUN layer holds what the command changed, not the mount points of the runtime."""
    ctx = context(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo hi > /made\n"})
    ok(skiffd, "build", "-t", "runlayer", ctx)
    out = tmp_path / "saved.tar"
    ok(skiffd, "save", "-o", str(out), "runlayer")
    with tarfile.open(out) as t:
        mf = t.extractfile("manifest.json")
        assert mf is not None
        last = json.load(mf)[0]["Layers"][-1]
        with tarfile.open(fileobj=t.extractfile(last)) as layer:
            names = sorted(m.name for m in layer.getmembers())
    assert names == ["made"]


def test_onbuild_triggers_run_in_child(skiffd, tmp_path):
    ok(skiffd, "build", "-t", "parent-ob", context(tmp_path, {"Dockerfile": "FROM busybox\nONBUILD RUN echo trig > /t\n"}))
    out = ok(skiffd, "build", "-t", "child-ob", context(tmp_path, {"Dockerfile": "FROM parent-ob\nRUN cat /t\n"}))
    assert "# Executing 1 build trigger\n" in out
    assert ok(skiffd, "run", "--rm", "child-ob", "cat", "/t") == "trig\n"
    assert inspect(skiffd, "child-ob")["Config"]["OnBuild"] is None


MULTI = """\
FROM busybox AS one
ARG MSG=default
RUN echo "$MSG" > /msg
FROM busybox AS two
COPY --from=one /msg /from-one
COPY --from=0 /msg /from-zero
RUN cat /from-one
FROM two AS three
RUN echo never-in-target
"""


def test_multistage_build_args_target(skiffd, tmp_path):
    ctx = context(tmp_path, {"Dockerfile": MULTI})
    r = docker(skiffd, "build", "--build-arg", "MSG=hello", "--target", "two", "-t", "ms:1", ctx)
    out = err_text(r)
    assert r.returncode == 0, out
    assert [s.split(" : ")[1] for s in steps(out)] == [
        "FROM busybox AS one", "ARG MSG=default", 'RUN echo "$MSG" > /msg', "FROM busybox AS two",
        "COPY --from=one /msg /from-one", "COPY --from=0 /msg /from-zero", "RUN cat /from-one"]
    assert "never-in-target" not in out
    assert ok(skiffd, "run", "--rm", "ms:1", "cat", "/from-one", "/from-zero") == "hello\nhello\n"
    r = docker(skiffd, "build", "--target", "nope", ctx)
    assert r.returncode != 0 and "failed to reach build target nope in Dockerfile" in err_text(r)


def test_cached_rebuild_gives_the_same_image(skiffd, tmp_path):
    ctx = context(tmp_path, {"Dockerfile": "FROM busybox\nENV A=1\nRUN echo built > /f\nCOPY a /a\nWORKDIR /w\n"
                                           "CMD [\"cat\", \"/f\"]\n", "a": "a\n"})
    first = ok(skiffd, "build", "-t", "cached", ctx)
    iid = inspect(skiffd, "cached")["Id"]
    again = ok(skiffd, "build", "-t", "cached", ctx)
    assert "Using cache" not in first
    assert again.count(" ---> Using cache\n") == 5 and "Running in" not in again
    assert inspect(skiffd, "cached")["Id"] == iid
    # a changed source invalidates its step and those after it
    Path(ctx, "a").write_text("changed\n")
    third = ok(skiffd, "build", "-t", "cached", ctx)
    assert third.count(" ---> Using cache\n") == 2 and inspect(skiffd, "cached")["Id"] != iid
    nocache = ok(skiffd, "build", "--no-cache", "-t", "cached2", ctx)
    assert "Using cache" not in nocache and "Running in" in nocache


def test_failing_run(skiffd, tmp_path):
    ctx = context(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo before; exit 3\n"})
    r = docker(skiffd, "build", ctx)
    assert r.returncode == 3
    assert "before" in r.stdout
    assert "The command '/bin/sh -c echo before; exit 3' returned a non-zero code: 3" in r.stderr
    # rm (the default) keeps the failed container, forcerm removes it
    left = ok(skiffd, "ps", "-aq", "--filter", "status=exited").split()
    assert len(left) == 1
    ok(skiffd, "rm", left[0])
    r = docker(skiffd, "build", "--force-rm", ctx)
    assert r.returncode == 3 and ok(skiffd, "ps", "-aq").split() == []


def test_hostile_contexts(skiffd, tmp_path):
    marker = tmp_path / "outside-secret"
    marker.write_text("secret\n")
    ctx = context(tmp_path, {"Dockerfile": "FROM busybox\nCOPY ../x /\n"})
    r = docker(skiffd, "build", ctx)
    assert r.returncode == 1 and "COPY failed: forbidden path outside the build context: ../x" in err_text(r)
    # symlinks out of the context are followed inside it only (as dockerd): nothing is found
    for link in (str(marker), "../../../../../.." + str(marker)):
        ctx = context(tmp_path, {"Dockerfile": "FROM busybox\nCOPY evil /got\n"})
        os.symlink(link, f"{ctx}/evil")
        r = docker(skiffd, "build", ctx)
        assert r.returncode == 1, err_text(r)
        assert "COPY failed: file not found in build context or excluded by .dockerignore" in err_text(r)
    # raw tars the CLI would never send
    df = file_member("Dockerfile", b"FROM busybox\nCOPY . /c/\n")
    cases: list[tuple[list[tuple[tarfile.TarInfo, bytes | None]], str]] = [
            ([df, file_member("../escape", b"x")], "leaves the context"),
            ([df, link_member("hl", "../../etc/passwd", hard=True)], "leaves the context"),
            ([df, link_member("hl", "missing", hard=True)], "not a regular file listed before it"),
            ([df, link_member("up", "/"), file_member("up/etc/evil", b"x")], "its parent is not a directory")]
    for members, words in cases:
        status, body = post(skiffd, "/build", tar_of(members))
        assert status == 400 and words in json.loads(body)["message"], body
    # a directory symlink leading out: followed inside the context only
    status, body = post(skiffd, "/build", tar_of([file_member("Dockerfile", b"FROM busybox\nCOPY up/etc/passwd /p\n"),
                                                  link_member("up", "../../..")]))
    assert status == 200 and "file not found in build context" in messages(body)[-1]["error"]
    # ADD of an archive that climbs out fails, nothing written outside
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as t:
        ti = tarfile.TarInfo("../../../../../../tmp/skiff-build-escape")
        ti.size = 1
        t.addfile(ti, io.BytesIO(b"x"))
    status, body = post(skiffd, "/build", tar_of([file_member("Dockerfile", b"FROM busybox\nADD evil.tar /d/\n"),
                                                  file_member("evil.tar", evil.getvalue())]))
    assert status == 200 and "error" in messages(body)[-1]
    assert not os.path.exists("/tmp/skiff-build-escape")
    # .dockerignore: an ignored Dockerfile or file cannot be copied
    ctx = context(tmp_path, {"Dockerfile": "FROM busybox\nCOPY Dockerfile /d\n", ".dockerignore": "Dockerfile\n"})
    r = docker(skiffd, "build", ctx)
    assert r.returncode == 1 and "file not found in build context or excluded by .dockerignore" in err_text(r)


def test_raw_http(skiffd, tmp_path):
    df = file_member("Dockerfile", b"FROM busybox\nRUN echo raw; echo oops >&2\n")
    plain = tar_of([df])
    status, body = post(skiffd, "/build?t=raw:1", plain)
    assert status == 200 and body.endswith(b"\r\n")
    assert b'{"stream":" ---\\u003e Running in ' in body            # Go's JSON, as moby writes it
    msgs = messages(body)
    assert {"stream": "raw\n"} in msgs and {"stream": "\x1b[91moops\n\x1b[0m"} in msgs   # stderr in red
    aux = [m["aux"]["ID"] for m in msgs if "aux" in m]
    assert len(aux) == 1 and aux[0].startswith("sha256:")
    assert {"stream": "Successfully tagged raw:1\n"} in msgs
    # q=1: only the ID, on a build that is entirely cached
    status, body = post(skiffd, "/build?q=1", plain)
    assert status == 200 and messages(body) == [{"stream": aux[0] + "\n"}]
    # compressed contexts
    for data in (gzip.compress(plain), lzma.compress(plain)):
        status, body = post(skiffd, "/build?q=1", data)
        assert status == 200 and messages(body) == [{"stream": aux[0] + "\n"}], body
    # q=1 on failure: what was held back, then the error with its code
    status, body = post(skiffd, "/build?q=1", tar_of([file_member("Dockerfile", b"FROM busybox\nRUN exit 5\n")]))
    msgs = messages(body)
    assert msgs[0] == {"stream": "Step 1/2 : FROM busybox"}
    assert msgs[-1] == {"errorDetail": {"code": 5, "message": "The command '/bin/sh -c exit 5' returned a non-zero code: 5"},
                        "error": "The command '/bin/sh -c exit 5' returned a non-zero code: 5"}
    for query, words in (("platform=linux/arm64", "not supported"), ("squash=1", "experimental"),
                         ("remote=http://127.0.0.1:1/x.tar", "remote build contexts"), ("version=2", "BuildKit"),
                         ("t=Bad:Tag:x", "invalid reference format"), ("dockerfile=Nope", "Cannot locate specified Dockerfile")):
        status, body = post(skiffd, "/build?" + query, plain)
        assert status == 400 and words in json.loads(body)["message"], (query, body)
    status, body = post(skiffd, "/build", tar_of([file_member("Dockerfile", b"FROM busybox\nFOO bar\n")]))
    assert status == 400 and "unknown instruction" in json.loads(body)["message"].lower()
    for path in ("/grpc", "/session"):
        status, body = post(skiffd, path)
        assert (status, json.loads(body)) == (404, {"message": "page not found"})


def test_intermediate_images_and_rmi_cascade(skiffd, tmp_path):
    ctx = context(tmp_path, {"Dockerfile": "FROM busybox\nENV X=1\nRUN echo a > /a\nCMD [\"sh\"]\n"})
    before = set(ok(skiffd, "images", "-aq", "--no-trunc").split())
    ok(skiffd, "build", "-t", "casc", ctx)
    every = set(ok(skiffd, "images", "-aq", "--no-trunc").split()) - before
    visible = set(ok(skiffd, "images", "-q", "--no-trunc").split()) - before
    final = inspect(skiffd, "casc")["Id"]
    assert visible == {final} and len(every) == 3        # ENV and RUN images are hidden without -a
    parent = inspect(skiffd, "casc")["Parent"]
    assert parent in every
    r = docker(skiffd, "rmi", parent)
    assert r.returncode == 1 and "image has dependent child images" in r.stderr
    out = ok(skiffd, "rmi", "casc")
    assert out.splitlines()[0] == "Untagged: casc:latest"
    assert {ln.split()[1] for ln in out.splitlines()[1:]} == every
    assert set(ok(skiffd, "images", "-aq", "--no-trunc").split()) == before
    # a failed build leaves its intermediate images: /build/prune removes them
    ok(skiffd, "build", "-t", "keep", context(tmp_path, {"Dockerfile": "FROM busybox\nENV K=1\n"}))
    r = docker(skiffd, "build", "--force-rm", context(tmp_path, {"Dockerfile": "FROM busybox\nENV Y=2\nRUN false\n"}))
    left = re.findall(r" ---> ([0-9a-f]{12})\n", r.stdout)[-1]      # the ENV step's image
    assert left in ok(skiffd, "images", "-q")
    status, body = post(skiffd, "/build/prune")
    report = json.loads(body)
    assert status == 200 and report["SpaceReclaimed"] >= 0
    assert any(i.startswith("sha256:" + left) for i in report["CachesDeleted"])
    assert left not in ok(skiffd, "images", "-aq")
    assert inspect(skiffd, "keep")["Config"]["Env"][-1] == "K=1"
    # docker image prune: dangling images go, a tagged image's parents stay
    ok(skiffd, "build", "-t", "keep2", context(tmp_path, {"Dockerfile": "FROM busybox\nENV K=2\nENV L=3\n"}))
    parent = inspect(skiffd, "keep2")["Parent"]
    ok(skiffd, "image", "prune", "-f")
    assert inspect(skiffd, parent)["Id"] == parent


# --- next to a real dockerd 20.10 ------------------------------------------------------------------

@pytest.fixture(scope="module")
def dockerd(tmp_path_factory):
    yield from busybox_dockerd(tmp_path_factory.mktemp("dockerd-build-e"), str(BUSYBOX_TAR))


COMPARE = """\
FROM busybox
ARG A=1
ENV E=2 F="x y"
LABEL l=v
RUN echo run-$A
WORKDIR /w
EXPOSE 8080
USER nobody
ENTRYPOINT ["sh", "-c"]
CMD echo hi
"""


def _normalise(out: str) -> list[str]:
    """The output without what differs by design: IDs, and the "Running in"/"Removing" lines
    dockerd prints for the containers it creates (never starts) for config-only steps."""
    lines = []
    for ln in out.splitlines():
        if any(x in ln for x in DEPRECATION) or ln.startswith("Sending build context") or not ln.strip():
            continue
        lines.append(re.sub(r"[0-9a-f]{12}", "<id>", ln))
    out_lines = []
    i = 0
    while i < len(lines):     # a config-only step at dockerd: Running in, Removing, then the ID
        if lines[i] == " ---> Running in <id>" and i + 1 < len(lines) and \
                lines[i + 1] == "Removing intermediate container <id>":
            i += 2
            continue
        out_lines.append(lines[i])
        i += 1
    return out_lines


def test_output_and_history_like_dockerd(skiffd, dockerd, tmp_path):
    ctx = context(tmp_path, {"Dockerfile": COMPARE})
    env = dict(dockerd.env, DOCKER_BUILDKIT="0")
    theirs = subprocess.run(["/usr/local/bin/docker", "build", "--build-arg", "A=5", "-t", "cmp", ctx], env=env,
                            capture_output=True, text=True, timeout=240)
    assert theirs.returncode == 0, theirs.stderr
    ours = docker(skiffd, "build", "--build-arg", "A=5", "-t", "cmp", ctx)
    assert ours.returncode == 0, ours.stderr
    assert _normalise(ours.stdout) == _normalise(theirs.stdout)
    fmt = ("history", "--no-trunc", "--format", "{{.CreatedBy}}", "cmp")
    their_hist = subprocess.run(["/usr/local/bin/docker", *fmt], env=env, capture_output=True, text=True).stdout
    assert ok(skiffd, *fmt).splitlines()[:-1] == their_hist.splitlines()[:-1]
    their_cfg = json.loads(subprocess.run(["/usr/local/bin/docker", "image", "inspect", "cmp"], env=env,
                                          capture_output=True, text=True).stdout)[0]["Config"]
    our_cfg = inspect(skiffd, "cmp")["Config"]
    for key in ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Labels", "ArgsEscaped"):
        assert our_cfg.get(key) == their_cfg.get(key), key
    # the rebuild: every step from the cache at both
    theirs = subprocess.run(["/usr/local/bin/docker", "build", "--build-arg", "A=5", "-t", "cmp", ctx], env=env,
                            capture_output=True, text=True, timeout=240)
    ours = docker(skiffd, "build", "--build-arg", "A=5", "-t", "cmp", ctx)
    assert _normalise(ours.stdout) == _normalise(theirs.stdout)
    # a failing RUN: the same error and exit code
    ctx = context(tmp_path, {"Dockerfile": "FROM busybox\nRUN exit 7\n"})
    theirs = subprocess.run(["/usr/local/bin/docker", "build", ctx], env=env, capture_output=True, text=True, timeout=240)
    ours = docker(skiffd, "build", ctx)
    assert ours.returncode == theirs.returncode == 7
    assert err_text(ours).splitlines()[-1] == err_text(theirs).splitlines()[-1]


# --- RUN options, cache-from, pulls ----------------------------------------------------------------

def test_run_options_network_hosts_limits_proxy_args(skiffd, tmp_path):
    df = ("FROM busybox\nARG USED=u\n"
          "RUN grep -c : /proc/net/dev > /ifaces; grep myhost /etc/hosts > /hosts; "
          "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null | head -1 > /mem; "
          "echo \"$HTTP_PROXY $USED\" > /env\n")
    ctx = context(tmp_path, {"Dockerfile": df})
    r = docker(skiffd, "build", "--network", "none", "--add-host", "myhost:10.9.8.7", "--memory", "64m",
               "--build-arg", "HTTP_PROXY=http://proxy:3128", "-t", "opts", ctx)
    assert r.returncode == 0, err_text(r)
    out = ok(skiffd, "run", "--rm", "opts", "cat", "/ifaces", "/hosts", "/mem", "/env").splitlines()
    assert out[0] == "1"                                  # --network none: lo only
    assert out[1].split() == ["10.9.8.7", "myhost"]
    assert out[2] == str(64 << 20)
    assert out[3] == "http://proxy:3128 u"
    # the proxy argument is in the RUN's environment but not in its history (as moby)
    hist = ok(skiffd, "history", "--no-trunc", "--format", "{{.CreatedBy}}", "opts").splitlines()
    assert hist[0].startswith("|1 USED=u /bin/sh -c grep") and "proxy" not in hist[0]
    assert "[Warning]" not in r.stdout                     # HTTP_PROXY is predefined: no warning


def test_add_url_fails_clearly_offline(skiffd, tmp_path):
    r = docker(skiffd, "build", context(tmp_path, {"Dockerfile": "FROM busybox\nADD http://127.0.0.1:9/x /x\n"}))
    assert r.returncode == 1 and "remote URLs are not supported: skiffd builds offline" in err_text(r)
    r = docker(skiffd, "build", context(tmp_path, {"Dockerfile": "FROM busybox\nCOPY http://127.0.0.1:9/x /x\n"}))
    assert r.returncode == 1 and "source can't be a URL for COPY" in err_text(r)


def test_cache_from(skiffd, tmp_path):
    df = "FROM busybox\nENV CF=1\nRUN echo cf > /cf\nCMD [\"cat\", \"/cf\"]\n"
    ok(skiffd, "build", "-t", "cf-src", context(tmp_path, {"Dockerfile": df}))
    src = inspect(skiffd, "cf-src")["Id"]
    # the same steps with cache-from: every step from the source, the same image
    out = ok(skiffd, "build", "--cache-from", "cf-src", "-t", "cf-new", context(tmp_path, {"Dockerfile": df}))
    assert out.count(" ---> Using cache\n") == 3 and inspect(skiffd, "cf-new")["Id"] == src
    # with a cache-from image that does not match, local images are not used either (moby)
    ok(skiffd, "build", "-t", "other", context(tmp_path, {"Dockerfile": "FROM busybox\nENV OTHER=1\n"}))
    out = ok(skiffd, "build", "--cache-from", "other", context(tmp_path, {"Dockerfile": df}))
    assert "Using cache" not in out


@pytest.fixture
def registry(tmp_path):
    import sys
    sys.path.insert(0, str(REPO / "tests"))
    from registry_util import Registry
    reg = Registry.start(tmp_path / "reg")
    yield reg
    reg.stop()


def test_from_pulls_missing_images_and_pull_option(skiffd, registry, tmp_path):
    ref = f"{registry.host}/t/base:1"
    ok(skiffd, "tag", "busybox", ref)
    ok(skiffd, "push", ref)
    ok(skiffd, "rmi", ref)
    ctx = context(tmp_path, {"Dockerfile": f"FROM {ref}\nRUN echo pulled\n"})
    out = ok(skiffd, "build", "-t", "frompull", ctx)
    assert "Pulling from t/base" in out and "pulled" in out
    assert inspect(skiffd, ref)["Id"] == inspect(skiffd, "busybox")["Id"]
    out = ok(skiffd, "build", "--pull", "-t", "frompull", ctx)     # pulled again, then cached
    assert f"Status: Image is up to date for {ref}" in out and "Using cache" in out
    # a built image (uncompressed layers) goes through a registry and comes back the same
    pushed = f"{registry.host}/t/built:1"
    ok(skiffd, "tag", "frompull", pushed)
    ok(skiffd, "push", pushed)
    built = inspect(skiffd, "frompull")["Id"]
    ok(skiffd, "rmi", pushed)
    ok(skiffd, "pull", pushed)
    assert inspect(skiffd, pushed)["Id"] == built
    missing = context(tmp_path, {"Dockerfile": f"FROM {registry.host}/t/none:1\n"})
    r = docker(skiffd, "build", missing)
    assert r.returncode == 1 and f"manifest for {registry.host}/t/none:1 not found" in err_text(r)


def test_client_going_away_removes_the_run_container(skiffd):
    """A client that disconnects during a RUN: the container is killed and removed (as dockerd)."""
    import time
    body = tar_of([file_member("Dockerfile", b"FROM busybox\nRUN echo ab$((1+1))cd; sleep 60\n")])
    conn = UnixConnection(skiffd.sock)
    try:
        conn.request("POST", "/build?nocache=1", body=body, headers={"Content-Type": "application/x-tar"})
        resp = conn.getresponse()
        seen = b""
        while b"ab2cd" not in seen:       # the RUN's output (the step line says ab$((1+1))cd)
            line = resp.fp.readline()
            assert line, seen
            seen += line
        assert len(ok(skiffd, "ps", "-q").split()) == 1
    finally:
        conn.close()
    deadline = time.monotonic() + 60
    while ok(skiffd, "ps", "-aq").split() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ok(skiffd, "ps", "-aq").split() == []


def test_scratch_copy_and_run(skiffd, tmp_path):
    """FROM scratch: COPY makes the first layer; a RUN works once there is a shell, and is cached."""
    ctx = context(tmp_path, {"Dockerfile": "FROM scratch\nCOPY sh /bin/sh\nRUN echo from-scratch > /made\n"
                                           "CMD [\"/bin/sh\", \"-c\", \"echo $(cat /made)\"]\n",
                             "sh": Path("/bin/busybox").read_bytes()})
    os.chmod(f"{ctx}/sh", 0o755)
    first = ok(skiffd, "build", "-t", "scr", ctx)
    assert "Step 1/4 : FROM scratch\n ---> \n" in first
    assert ok(skiffd, "run", "--rm", "scr") == "from-scratch\n"
    again = ok(skiffd, "build", "-t", "scr", ctx)
    assert again.count(" ---> Using cache\n") == 3
    assert len(inspect(skiffd, "scr")["RootFS"]["Layers"]) == 2
