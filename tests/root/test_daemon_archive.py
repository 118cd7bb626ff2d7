"""docker cp (archive HEAD/GET/PUT), export and diff against a real skiffd (its own
skiff-containerd), running and stopped containers, bind mounts, tmpfs, and hostile paths:
symlinks in the container and crafted upload tars never reach the host."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile

import docker
import pytest
from skiffd_util import Skiffd

pytestmark = [pytest.mark.root]

BUSYBOX_PASSWD = b"root:x:0:0:root:/root:/bin/sh\n"


@pytest.fixture
def skiffd(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    yield d
    d.stop()


@pytest.fixture
def client(skiffd):
    c = docker.DockerClient(base_url=f"unix://{skiffd.sock}", timeout=60)
    yield c
    c.close()


@pytest.fixture
def canary(tmp_path):
    """A host directory the containers must never read nor write."""
    d = tmp_path / "canary"
    d.mkdir()
    (d / "secret").write_text("host secret\n")
    return d


def _host_state(canary) -> tuple[list[str], str, str]:
    with open("/etc/passwd", "rb") as f:
        passwd = hashlib.sha256(f.read()).hexdigest()
    return sorted(os.listdir(canary)), (canary / "secret").read_text(), passwd


def _tar(*members: tuple[str, str, object]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for kind, name, arg in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if kind == "file":
                data = str(arg).encode()
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}[kind]
            if kind != "dir":
                info.linkname = str(arg)
            t.addfile(info)
    return buf.getvalue()


def _get(client, cid: str, path: str) -> dict[str, bytes]:
    stream, _ = client.api.get_archive(cid, path)
    data = b"".join(stream)
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        for m in t.getmembers():
            f = t.extractfile(m) if m.isreg() else None
            out[m.name] = f.read() if f else (b"->" + m.linkname.encode() if m.issym() else b"")
    return out


def _run(skiffd, *args: str) -> str:
    r = subprocess.run(["docker", "run", "-d", *args], env=skiffd.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _exec(client, cid: str, *cmd: str) -> str:
    r = client.api.exec_create(cid, list(cmd))
    out = client.api.exec_start(r["Id"])
    return out.decode()


def _api_error(fn, *a, **kw) -> docker.errors.APIError:
    with pytest.raises(docker.errors.APIError) as e:
        fn(*a, **kw)
    return e.value


def _archive_mounts(skiffd) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if os.path.join(skiffd.run_dir, "archive") in line]


SYMLINKS = "ln -s / /tmp/x; ln -s /proc/1/root /tmp/p; ln -s ../../../../../../ /tmp/u; ln -s {canary} /tmp/h"


def _hostile_reads(client, cid: str, canary, running: bool) -> None:
    for p in (f"/tmp/x{canary}/secret", f"/tmp/p{canary}/secret", f"/tmp/u{canary}/secret",
              "/tmp/h/secret", f"/tmp/x{canary}", "/tmp/h/"):
        err = _api_error(client.api.get_archive, cid, p)
        assert err.status_code == 404, p
        assert f"Could not find the file {p} in container {cid}" in str(err.explanation)
    # through the symlinks: the container's own tree
    # (a stopped container has no /proc/1/root: /tmp/p leads to an empty /proc)
    for p in (("/tmp/p/etc/passwd",) if running else ()) + ("/tmp/x/etc/passwd", "/tmp/u/etc/passwd"):
        assert _get(client, cid, p)["passwd"].startswith(BUSYBOX_PASSWD), p
    # the symlink itself is copied, never followed, unless the path asks for the directory
    assert _get(client, cid, "/tmp/x") == {"x": b"->/"}
    assert _get(client, cid, "/tmp/h") == {"h": b"->" + str(canary).encode()}


def _hostile_writes(client, cid: str, canary) -> None:
    rel = str(canary).lstrip("/")
    before = _host_state(canary)
    # a destination through a symlink that names the host: not in the container
    for dest in ("/tmp/h", f"/tmp/x{canary}", f"/tmp/u{canary}", f"/tmp/p{canary}"):
        err = _api_error(client.api.put_archive, cid, dest, _tar(("file", "secret", "pwned")))
        assert err.status_code == 404, dest
    # into / through /tmp/x -> /: lands in the container's root
    assert client.api.put_archive(cid, "/tmp/x", _tar(("file", f"{rel}/secret", "inside")))
    assert client.api.put_archive(cid, "/tmp/u", _tar(("file", f"{rel}/other", "inside2")))
    # crafted members
    for members, why in [
        ((("file", "../escape", "x"),), "leaves the extraction directory"),
        ((("file", "a/../../../escape", "x"),), "leaves the extraction directory"),
        ((("hard", "h", "../../../etc/passwd"),), "leaves the extraction directory"),
        ((("hard", "h", f"x{canary}/nothere"),), "does not exist"),
        ((("hard", "h", "etc"),), "is a directory"),
    ]:
        err = _api_error(client.api.put_archive, cid, "/", _tar(*members))
        assert err.status_code == 400 and why in str(err.explanation), (members, err.explanation)
    # symlinks the archive plants, then members through them: inside the container
    for i, target in enumerate(["/", "../../../../../..", "/proc/1/root", str(canary)]):
        assert client.api.put_archive(cid, "/tmp", _tar(("sym", f"l{i}", target),
                                                        ("file", f"l{i}/{rel}/secret", f"planted{i}")))
    # a symlink at a member's own name is replaced, not written through
    assert client.api.put_archive(cid, "/tmp", _tar(("file", "h", "replaced")))
    assert _host_state(canary) == before
    assert not os.path.exists("/escape")


def test_cp_running_container_hostile(client, canary):
    c = client.containers.run("busybox", ["sh", "-c", SYMLINKS.format(canary=canary) + "; sleep 300"],
                              detach=True)
    _exec(client, c.id, "true")
    _hostile_reads(client, c.id, canary, running=True)
    _hostile_writes(client, c.id, canary)
    # l0..l2 lead to the container's /, l3 to the canary's path inside the container
    assert _exec(client, c.id, "cat", f"{canary}/secret") == "planted2"
    assert _exec(client, c.id, "cat", f"{canary}{canary}/secret") == "planted3"
    assert _exec(client, c.id, "cat", f"{canary}/other") == "inside2"
    assert _exec(client, c.id, "cat", "/tmp/h") == "replaced"


def test_cp_stopped_container_hostile(client, skiffd, canary):
    c = client.containers.run("busybox", ["sh", "-c", SYMLINKS.format(canary=canary)], detach=True)
    assert c.wait()["StatusCode"] == 0
    _hostile_reads(client, c.id, canary, running=False)
    _hostile_writes(client, c.id, canary)
    # l0 and l1 lead to the container's /; l2 (/proc/1/root) into the snapshot's empty /proc
    assert _get(client, c.id, f"{canary}/secret")["secret"] == b"planted1"
    assert _get(client, c.id, f"/proc/1/root{canary}/secret")["secret"] == b"planted2"
    assert _get(client, c.id, f"{canary}{canary}/secret")["secret"] == b"planted3"
    assert _archive_mounts(skiffd) == []
    assert not os.listdir(os.path.join(skiffd.run_dir, "archive"))


def test_cp_bind_mounts_tmpfs_and_read_only(client, skiffd, tmp_path):
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "f").write_text("ro content")
    c = client.containers.get(_run(skiffd, "--tmpfs", "/scratch", "-v", f"{rw}:/data", "-v", f"{ro}:/ro:ro",
                                   "busybox", "sleep", "300"))
    assert client.api.put_archive(c.id, "/data", _tar(("file", "running", "r1")))
    assert (rw / "running").read_text() == "r1"
    assert client.api.put_archive(c.id, "/scratch", _tar(("file", "t", "in tmpfs")))
    assert _exec(client, c.id, "cat", "/scratch/t") == "in tmpfs"
    assert _get(client, c.id, "/ro/f") == {"f": b"ro content"}
    err = _api_error(client.api.put_archive, c.id, "/ro", _tar(("file", "x", "no")))
    assert err.status_code == 403 and "read-only" in str(err.explanation)
    c.stop(timeout=0)
    c.wait()
    # stopped: the binds are reached through a private mount of the snapshot
    assert client.api.put_archive(c.id, "/data", _tar(("file", "stopped", "s1")))
    assert (rw / "stopped").read_text() == "s1"
    assert _get(client, c.id, "/data/running") == {"running": b"r1"}
    assert _get(client, c.id, "/ro/f") == {"f": b"ro content"}
    err = _api_error(client.api.put_archive, c.id, "/ro", _tar(("file", "x", "no")))
    assert err.status_code == 403
    assert not (ro / "x").exists()
    assert client.api.put_archive(c.id, "/", _tar(("file", "rootfile", "in the snapshot")))
    assert _archive_mounts(skiffd) == []
    c.start()
    assert _exec(client, c.id, "cat", "/rootfile") == "in the snapshot"

    # a read-only root: only writable mounts take a copy
    r = client.containers.run("busybox", ["sleep", "300"], detach=True, read_only=True, tmpfs={"/tmp": ""})
    err = _api_error(client.api.put_archive, r.id, "/", _tar(("file", "x", "no")))
    assert err.status_code == 403 and "read-only" in str(err.explanation)
    assert client.api.put_archive(r.id, "/tmp", _tar(("file", "x", "yes")))


def test_stat_header_copy_uid_gid_and_no_overwrite(client, skiffd):
    c = client.containers.run("busybox", ["sh", "-c", "ln -s /etc/passwd /tmp/pl; sleep 300"], detach=True,
                              user="1234:5678")
    _exec(client, c.id, "true")
    r = client.api.head(client.api._url("/containers/{0}/archive", c.id), params={"path": "/tmp"})
    assert r.status_code == 200
    st = json.loads(base64.b64decode(r.headers["X-Docker-Container-Path-Stat"]))
    assert st["name"] == "tmp" and st["mode"] == (1 << 31) | (1 << 20) | 0o777 and st["linkTarget"] == ""
    _, st = client.api.get_archive(c.id, "/tmp/pl")
    assert st["mode"] & (1 << 27) and st["linkTarget"] == "/etc/passwd"
    r = client.api.head(client.api._url("/containers/{0}/archive", c.id), params={"path": "/nope"})
    assert r.status_code == 404

    # ownership: the archive's, or the container user's with copyUIDGID
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("owned")
        info.uid, info.gid, info.size = 42, 43, 1
        t.addfile(info, io.BytesIO(b"x"))
    url = client.api._url("/containers/{0}/archive", c.id)
    resp = client.api._put(url, params={"path": "/tmp"}, data=buf.getvalue())
    assert resp.status_code == 200
    assert _exec(client, c.id, "stat", "-c", "%u:%g", "/tmp/owned").strip() == "42:43"
    resp = client.api._put(url, params={"path": "/tmp", "copyUIDGID": "1"}, data=buf.getvalue())
    assert resp.status_code == 200
    assert _exec(client, c.id, "stat", "-c", "%u:%g", "/tmp/owned").strip() == "1234:5678"
    resp = client.api._put(url, params={"path": "/", "noOverwriteDirNonDir": "true"},
                           data=_tar(("file", "tmp", "x")))
    assert resp.status_code == 409 and "cannot overwrite directory '/tmp' with non-directory" in resp.text

    # the real CLI, both ways, a directory
    src = skiffd.data_dir + "/cpdir"
    os.makedirs(src + "/sub")
    with open(src + "/sub/f", "w") as f:
        f.write("deep")
    r2 = subprocess.run(["docker", "cp", src, f"{c.id}:/tmp/"], env=skiffd.env, capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr
    assert _exec(client, c.id, "cat", "/tmp/cpdir/sub/f") == "deep"
    out = skiffd.data_dir + "/out"
    r2 = subprocess.run(["docker", "cp", f"{c.id}:/tmp/cpdir", out], env=skiffd.env, capture_output=True, text=True)
    assert r2.returncode == 0, r2.stderr
    with open(out + "/sub/f") as f:
        assert f.read() == "deep"


def test_export_and_diff(client, skiffd, tmp_path):
    bind = tmp_path / "b"
    bind.mkdir()
    (bind / "not-exported").write_text("x")
    c = client.containers.get(_run(skiffd, "-v", f"{bind}:/bnd", "busybox", "sh", "-c",
                                   "echo new > /added; echo x >> /etc/passwd; rm /etc/group; rm -rf /home;"
                                   " mkdir /home; touch /home/newhome; sleep 300"))
    _exec(client, c.id, "true")
    for attempt in range(2):   # running, then stopped
        changes = {ch["Path"]: ch["Kind"] for ch in client.api.diff(c.id)}
        assert changes["/added"] == 1 and changes["/etc/passwd"] == 0 and changes["/etc/group"] == 2
        assert changes["/home"] == 0 and changes["/home/newhome"] == 1
        assert "/bnd/not-exported" not in changes and "/etc/hostname" not in changes and "/proc" not in changes
        data = b"".join(client.api.export(c.id))
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            names = set(t.getnames())
            f = t.extractfile("added")
            assert f is not None and f.read() == b"new\n"
        assert "bin/busybox" in names and "etc/passwd" in names and "etc/group" not in names
        assert "bnd/not-exported" not in names and "home/newhome" in names
        assert _archive_mounts(skiffd) == []
        if attempt == 0:
            c.stop(timeout=0)
            c.wait()
    r = subprocess.run(["docker", "diff", c.id], env=skiffd.env, capture_output=True, text=True)
    assert r.returncode == 0 and "A /added" in r.stdout.splitlines() and "D /etc/group" in r.stdout.splitlines()
    err = _api_error(client.api.diff, "nosuchcontainer")
    assert err.status_code == 404


def test_cp_racing_symlink_swaps_never_reach_the_host(client, canary):
    """The container swaps /tmp/d between a directory and a symlink to the canary's path
    (which, followed by the kernel through /proc/<pid>/root, would be the *host's* canary)
    while copies go in and out through it: every copy either lands in the container or is
    refused; the host canary is never read nor written."""
    loop = (f"while true; do rm -rf /tmp/d; mkdir /tmp/d; echo inner > /tmp/d/secret; rm -rf /tmp/d;"
            f" ln -s {canary} /tmp/d; done")
    c = client.containers.run("busybox", ["sh", "-c", loop], detach=True)
    before = _host_state(canary)
    outcomes: set[str] = set()
    for i in range(60):
        try:
            client.api.put_archive(c.id, "/tmp", _tar(("file", "d/secret", f"race{i}"),
                                                      ("file", f"d/new{i}", "x")))
            outcomes.add("put ok")
        except docker.errors.APIError as e:
            assert e.status_code in (400, 404, 409), e.explanation
            outcomes.add(f"put {e.status_code}")
        try:
            got = _get(client, c.id, "/tmp/d/secret")
            assert got.get("secret") != b"host secret\n"
            outcomes.add("get ok")
        except docker.errors.APIError as e:
            assert e.status_code in (400, 404), e.explanation
            outcomes.add(f"get {e.status_code}")
        assert _host_state(canary) == before, f"iteration {i}: the host canary changed ({outcomes})"
    c.kill()
