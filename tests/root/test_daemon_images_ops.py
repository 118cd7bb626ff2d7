"""skiffd's image verbs with the real docker CLI against a real skiffd: tag, rmi (untag vs
delete, in use by a container, force, by ID), history, prune, save/load identity, import with
changes, and commit (diff as a new layer, changes, author/message, pause)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time

import pytest
from skiffd_util import Skiffd

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def skiffd(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    yield d
    d.stop()


def ok(d: Skiffd, *args: str) -> str:
    r = d.docker(*args)
    assert r.returncode == 0, f"docker {' '.join(args)}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def fails(d: Skiffd, *args: str) -> str:
    r = d.docker(*args)
    assert r.returncode != 0, f"docker {' '.join(args)} succeeded:\n{r.stdout}"
    return r.stderr


def until() -> str:
    """An events ``--until`` just past now: the CLI sends whole seconds, and the events of
    this second must be in."""
    return str(int(time.time()) + 1)


def inspect(d: Skiffd, ref: str) -> dict:
    return json.loads(ok(d, "image", "inspect", ref))[0]


def test_tag_rmi_semantics(skiffd):
    bb = inspect(skiffd, "busybox:latest")
    short = bb["Id"][7:19]
    ok(skiffd, "tag", "busybox", "one:v1")
    ok(skiffd, "tag", bb["Id"][7:19], "two")
    assert sorted(inspect(skiffd, "one:v1")["RepoTags"]) == ["busybox:latest", "one:v1", "two:latest"]
    assert "invalid reference format" in fails(skiffd, "tag", "busybox", "Bad:Name:x")
    # several names: a name goes, the image stays
    assert ok(skiffd, "rmi", "two").strip() == "Untagged: two:latest"
    # by ID with several names: refused without force
    assert f"conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories" \
        in fails(skiffd, "rmi", short)
    # the last name of an image a container uses
    ok(skiffd, "tag", "busybox", "solo:1")
    ok(skiffd, "rmi", "busybox", "one:v1")
    cid = ok(skiffd, "create", "--name", "user", "solo:1", "true").strip()
    err = fails(skiffd, "rmi", "solo:1")
    assert (f'conflict: unable to remove repository reference "solo:1" (must force) - container {cid[:12]} '
            f"is using its referenced image {short}") in err
    # a stopped container's image by ID: must be forced; forced untag keeps it dangling
    assert f"(must be forced) - image is being used by stopped container {cid[:12]}" in fails(skiffd, "rmi", short)
    assert ok(skiffd, "rmi", "-f", "solo:1").strip() == "Untagged: solo:1"
    listed = ok(skiffd, "images", "-a", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}").split("\n")
    assert f"{short} <none>:<none>" in listed
    ok(skiffd, "start", "-a", "user")          # still runs: its image is there
    # prune keeps what a container uses
    assert "Total reclaimed space: 0B" in ok(skiffd, "image", "prune", "-f")
    ok(skiffd, "rm", "user")
    ok(skiffd, "tag", short, "busybox:latest")
    assert "No such image: nope:zz" in fails(skiffd, "rmi", "nope:zz")
    # a dangling image no container uses is pruned; --all prunes unused tagged ones too
    ok(skiffd, "tag", "busybox", "gone:1")
    imported = _import(skiffd, "imp:1")
    ok(skiffd, "rmi", "gone:1")
    assert "imp:1" in ok(skiffd, "images", "--format", "{{.Repository}}:{{.Tag}}")
    out = ok(skiffd, "image", "prune", "-a", "-f", "--filter", "label=skiff.test=imported")
    assert f"deleted: {imported}" in out
    assert "imp:1" not in ok(skiffd, "images", "--format", "{{.Repository}}:{{.Tag}}")
    assert inspect(skiffd, "busybox:latest")["Id"] == bb["Id"]
    events = ok(skiffd, "events", "--since", "0", "--until", until(), "--filter", "type=image",
                "--format", "{{.Action}}").split()
    for action in ("tag", "untag", "delete", "import"):
        assert action in events, " ".join(events)


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc"):
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            tar.addfile(ti)
        tar.add("/bin/busybox", "bin/busybox")
        data = b"imported\n"
        ti = tarfile.TarInfo("etc/motd")
        ti.size = len(data)
        ti.mode = 0o644
        tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _import(d: Skiffd, ref: str) -> str:
    r = subprocess.run(
        ["/usr/local/bin/docker", "import", "--change", 'CMD ["/bin/busybox", "cat", "/etc/motd"]',
         "--change", "LABEL skiff.test=imported", "--change", "ENV A=1", "-m", "from a test", "-", ref],
        input=_rootfs_tar(), capture_output=True, env=d.env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().strip()


def test_import_with_changes(skiffd):
    iid = _import(skiffd, "imp:1")
    assert iid.startswith("sha256:")
    img = inspect(skiffd, "imp:1")
    assert img["Id"] == iid
    assert img["Config"]["Cmd"] == ["/bin/busybox", "cat", "/etc/motd"]
    assert img["Config"]["Labels"] == {"skiff.test": "imported"}
    assert "A=1" in img["Config"]["Env"]
    assert img["Comment"] == "from a test"
    assert len(img["RootFS"]["Layers"]) == 1
    assert ok(skiffd, "run", "--rm", "imp:1").strip() == "imported"
    r = subprocess.run(["/usr/local/bin/docker", "import", "--change", "BOGUS x", "-", "imp:2"],
                       input=_rootfs_tar(), capture_output=True, env=skiffd.env, timeout=60)
    assert r.returncode == 1 and "BOGUS" in r.stderr.decode().upper()
    assert skiffd.docker("image", "inspect", "imp:2").returncode == 1


def test_history_save_load_identity(skiffd, tmp_path):
    bb = inspect(skiffd, "busybox:latest")
    rows = ok(skiffd, "history", "--no-trunc", "--format", "{{.ID}}|{{.Size}}", "busybox").splitlines()
    assert rows[0].split("|")[0] == bb["Id"]
    ok(skiffd, "tag", "busybox", "saved:1")
    out = tmp_path / "x.tar"
    ok(skiffd, "save", "-o", str(out), "saved:1", "busybox:latest")
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert "oci-layout" in names and "repositories" in names
    assert len(manifest) == 1
    assert sorted(manifest[0]["RepoTags"]) == ["busybox:latest", "saved:1"]
    assert manifest[0]["Config"] == "blobs/sha256/" + bb["Id"][7:]
    assert {m["annotations"]["io.containerd.image.name"] for m in index["manifests"]} == {
        "docker.io/library/saved:1", "docker.io/library/busybox:latest"}
    ok(skiffd, "rmi", "saved:1")
    assert "Loaded image: saved:1" in ok(skiffd, "load", "-i", str(out))
    assert inspect(skiffd, "saved:1")["Id"] == bb["Id"]
    assert inspect(skiffd, "saved:1")["RootFS"] == bb["RootFS"]
    # a second save of the same image is byte-identical (reproducible archive)
    out2 = tmp_path / "y.tar"
    ok(skiffd, "save", "-o", str(out2), "saved:1", "busybox:latest")
    assert out.read_bytes() == out2.read_bytes()
    assert "No such image: nope:1" in fails(skiffd, "save", "-o", str(tmp_path / "z.tar"), "nope:1")


def test_commit_diff_changes_and_pause(skiffd):
    bb = inspect(skiffd, "busybox:latest")
    cid = ok(skiffd, "run", "-d", "--name", "src", "busybox", "sh", "-c",
             "echo committed > /built && rm /etc/passwd && echo ready && sleep 300").strip()
    # wait until the command has written (no timings: poll its output)
    while "ready" not in ok(skiffd, "logs", "src"):
        assert json.loads(ok(skiffd, "inspect", "src"))[0]["State"]["Running"]
    iid = ok(skiffd, "commit", "-a", "Ann <ann@example.com>", "-m", "a message", "-c", "ENV B=2",
             "-c", 'CMD ["cat", "/built"]', "src", "made:1").strip()
    st = json.loads(ok(skiffd, "inspect", "src"))[0]["State"]
    assert st["Status"] == "running" and not st["Paused"]
    img = inspect(skiffd, "made:1")
    assert img["Id"] == iid
    assert img["Author"] == "Ann <ann@example.com>"
    assert img["Comment"] == "a message"
    assert img["Config"]["Cmd"] == ["cat", "/built"]
    assert "B=2" in img["Config"]["Env"]
    assert img["RootFS"]["Layers"][:-1] == bb["RootFS"]["Layers"]
    assert len(img["RootFS"]["Layers"]) == len(bb["RootFS"]["Layers"]) + 1
    assert ok(skiffd, "run", "--rm", "made:1").strip() == "committed"
    # the deletion is in the layer (a whiteout)
    r = skiffd.docker("run", "--rm", "made:1", "cat", "/etc/passwd")
    assert r.returncode == 1 and "No such file" in r.stderr + r.stdout
    hist = ok(skiffd, "history", "--format", "{{.Comment}}", "made:1").splitlines()
    assert hist[0] == "a message"
    events = ok(skiffd, "events", "--since", "0", "--until", until(), "--filter", "container=src",
                "--format", "{{.Action}}").split()
    assert events.index("pause") < events.index("unpause") and "commit" in events, events
    # --pause=false leaves the container alone; a bad change is refused before anything is made
    ok(skiffd, "commit", "--pause=false", "src", "made:2")
    assert "ENV" in fails(skiffd, "commit", "-c", "ENV", "src", "made:3").upper()
    ok(skiffd, "rm", "-f", cid)
