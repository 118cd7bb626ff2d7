"""Debian's ``ctr`` (containerd 1.6) against skiff-containerd's socket, and, where the output is
deterministic, against a private real containerd 1.6 doing the same."""

from __future__ import annotations

import json
import os
import signal
import stat

import pytest
from ctr_util import RealContainerd, SkiffContainerd, table

pytestmark = pytest.mark.root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUSYBOX_TAR = os.path.join(REPO, "build", "images", "busybox.tar")
IMAGE = "docker.io/library/busybox:latest"


@pytest.fixture
def skc(state_dirs):
    d = SkiffContainerd(state_dirs.short).start()
    yield d
    code = d.stop()
    assert code == 0, f"skiff-containerd exited {code}; log:\n{d.log()}"


@pytest.fixture
def real(state_dirs):
    base = state_dirs.short / "real"
    base.mkdir()
    d = RealContainerd(base).start()
    yield d
    d.stop()


def busybox_manifest_digest() -> str:
    """The manifest digest ``ctr images import`` gives the built-in archive (from its OCI layout)."""
    with open(os.path.join(REPO, "build", "images", "busybox-oci", "index.json")) as f:
        index = json.load(f)
    return index["manifests"][0]["digest"]


def test_version_plugins_and_uuid(skc):
    out = skc.ctr("version").stdout
    server = out.split("Server:")[1]
    assert "Version:  v1.6.0+skiff.0.1.0" in server
    with open(skc.root / "io.containerd.grpc.v1.introspection" / "uuid") as f:
        assert f"UUID: {f.read().strip()}" in server
    rows = {(r[0], r[1]): r for r in table(skc.ctr("plugins", "ls").stdout)}
    assert rows[("io.containerd.snapshotter.v1", "overlayfs")][-1] == "ok"
    assert rows[("io.containerd.snapshotter.v1", "native")][-1] == "ok"
    assert rows[("io.containerd.content.v1", "content")][-1] == "ok"
    assert rows[("io.containerd.grpc.v1", "images")][-1] == "ok"
    assert rows[("io.containerd.runtime.v2", "task")][-1] == "ok"


def test_socket_mode_and_pid_file(skc):
    st = os.stat(skc.address)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    with open(skc.state / "containerd.pid") as f:
        assert int(f.read()) == skc.pid


def test_namespaces_create_label_ls_rm(skc):
    skc.ctr("namespaces", "create", "team1", "owner=me", "tier=dev")
    skc.ctr("namespaces", "label", "team1", "tier=prod")
    rows = table(skc.ctr("namespaces", "ls").stdout)
    assert rows == [["team1", "owner=me,tier=prod"]]
    assert skc.ctr("namespaces", "ls", "-q").stdout.split() == ["team1"]
    dup = skc.ctr("namespaces", "create", "team1", check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    skc.ctr("namespaces", "remove", "team1")
    assert table(skc.ctr("namespaces", "ls").stdout) == []
    # ctr ignores NotFound on remove (as against containerd); labelling a missing one fails
    missing = skc.ctr("namespaces", "label", "team1", "x=y", check=False)
    assert missing.returncode != 0 and "not found" in missing.stderr


def test_images_import_unpacks_into_the_snapshotter(skc, events):
    sub = events(skc.address)
    sub.wait_subscribed()
    out = skc.ctr("images", "import", BUSYBOX_TAR).stdout
    digest = busybox_manifest_digest()
    assert f"unpacking {IMAGE} ({digest})...done" in out
    [row] = table(skc.ctr("images", "ls").stdout)
    assert row[:3] == [IMAGE, "application/vnd.oci.image.manifest.v1+json", digest]
    assert "linux/amd64" in row
    content = {r[0]: r for r in table(skc.ctr("content", "ls").stdout)}
    assert digest in content and len(content) == 3
    snaps = table(skc.ctr("snapshots", "ls").stdout)
    assert len(snaps) == 1 and snaps[0][-1] == "Committed"
    chain = snaps[0][0]
    # the committed snapshot holds busybox's tree (the overlay snapshotter's directory)
    skc.ctr("snapshots", "view", "probe-view", chain)
    mount = skc.ctr("snapshots", "mounts", "/mnt", "probe-view").stdout.split()
    # a view of a single layer is a read-only bind of the layer's directory
    assert mount[:3] == ["mount", "-t", "bind"] and mount[-1] == "ro,rbind"
    assert os.path.isfile(os.path.join(mount[3], "bin", "busybox"))
    skc.ctr("snapshots", "rm", "probe-view")
    lines = sub.stop()
    topics = [ln.split()[5] for ln in lines]
    assert topics[:3] == ["/images/create", "/snapshot/prepare", "/snapshot/commit"]
    assert f'{{"name":"{IMAGE}"}}' in lines[0] and " default " in lines[0]
    # the image's layer is labelled as containerd's unpacker labels it
    labels = content[[d for d in content if d != digest and "gc.ref.snapshot" not in content[d][-1]][0]][-1]
    assert labels.startswith("containerd.io/uncompressed=sha256:")


def test_containers_create_ls_info_rm(skc):
    skc.ctr("images", "import", BUSYBOX_TAR)
    skc.ctr("containers", "create", "--label", "team=a", IMAGE, "c1", "echo", "hi")
    rows = table(skc.ctr("containers", "ls").stdout)
    assert rows == [["c1", IMAGE, "io.containerd.runc.v2"]]
    info = json.loads(skc.ctr("containers", "info", "c1").stdout)
    assert info["ID"] == "c1" and info["Labels"]["team"] == "a" and info["SnapshotKey"] == "c1"
    assert info["Spec"]["process"]["args"] == ["echo", "hi"]
    snaps = {r[0]: r for r in table(skc.ctr("snapshots", "ls").stdout)}
    assert snaps["c1"][-1] == "Active"
    assert table(skc.ctr("containers", "ls", "labels.team==b").stdout) == []
    skc.ctr("containers", "rm", "c1")
    assert table(skc.ctr("containers", "ls").stdout) == []
    assert "c1" not in {r[0] for r in table(skc.ctr("snapshots", "ls").stdout)}


def test_leases_create_ls_rm(skc):
    lid = skc.ctr("leases", "create", "--id", "mylease", "--expires", "1h", "purpose=test").stdout.strip()
    assert lid == "mylease"
    rows = {r[0]: r for r in table(skc.ctr("leases", "ls").stdout)}
    assert "purpose=test" in rows["mylease"][-1] and "containerd.io/gc.expire=" in rows["mylease"][-1]
    skc.ctr("leases", "rm", "mylease")
    assert table(skc.ctr("leases", "ls").stdout) == []


def test_images_rm_collects_content_and_snapshots(skc):
    skc.ctr("images", "import", BUSYBOX_TAR)
    skc.ctr("images", "rm", "--sync", IMAGE)
    assert table(skc.ctr("images", "ls").stdout) == []
    assert table(skc.ctr("content", "ls").stdout) == []
    assert table(skc.ctr("snapshots", "ls").stdout) == []


def test_events_filters(skc, events):
    images_only = events(skc.address, 'topic~="/images/"', 'topic=="/namespaces/create"')
    images_only.wait_subscribed()
    skc.ctr("images", "import", BUSYBOX_TAR)
    skc.ctr("images", "rm", IMAGE)
    lines = images_only.stop()
    assert [ln.split()[5] for ln in lines] == ["/images/create", "/images/delete"]


def test_namespace_with_objects_cannot_be_removed(skc):
    skc.ctr("images", "import", BUSYBOX_TAR)
    proc = skc.ctr("namespaces", "remove", "default", check=False)
    assert proc.returncode != 0
    assert "must be empty" in proc.stderr and "images" in proc.stderr
    assert 'snapshots on "overlayfs" snapshotter' in proc.stderr


def test_state_survives_a_restart_and_sigterm_is_graceful(state_dirs, events):
    d = SkiffContainerd(state_dirs.short).start()
    try:
        d.ctr("images", "import", BUSYBOX_TAR)
        uuid = d.ctr("version").stdout.split("UUID: ")[1].split()[0]
        sub = events(d.address)
        sub.wait_subscribed()
        d.proc.send_signal(signal.SIGTERM)  # with a subscriber connected
        assert d.proc.wait(60) == 0
        sub.proc.wait(60)  # ctr events ends (with the stream's EOF as its error) when the server goes
        assert "EOF" in sub.proc.stderr.read()
        assert not os.path.exists(d.address)
        assert not os.path.exists(d.state / "containerd.pid")
        assert "received SIGTERM: shutting down" in d.log()
    finally:
        d.stop()
    d2 = SkiffContainerd(state_dirs.short).start()
    try:
        assert [r[0] for r in table(d2.ctr("images", "ls").stdout)] == [IMAGE]
        assert d2.ctr("version").stdout.split("UUID: ")[1].split()[0] == uuid
    finally:
        assert d2.stop() == 0


def _normal_content(text: str) -> list[tuple[str, str, str]]:
    """content ls rows without the AGE column, labels sorted (Go prints maps in random order)."""
    out = []
    for line in text.splitlines()[1:]:
        cols = line.split("\t")
        cols = [c for c in cols if c]
        out.append((cols[0], cols[1], ",".join(sorted(cols[-1].split(",")))))
    return sorted(out)


def test_same_outputs_as_real_containerd(skc, real):
    outputs = {}
    for name, d in (("skiff", skc), ("containerd", real)):
        d.ctr("namespaces", "create", "extra", "a=b")
        d.ctr("images", "import", BUSYBOX_TAR)
        d.ctr("containers", "create", IMAGE, "c1", "true")
        outputs[name] = {
            "images": d.ctr("images", "ls").stdout,
            "images -q": d.ctr("images", "ls", "-q").stdout,
            "content": _normal_content(d.ctr("content", "ls").stdout),
            "snapshots": d.ctr("snapshots", "ls").stdout,
            "containers": d.ctr("containers", "ls").stdout,
            "namespaces": d.ctr("namespaces", "ls").stdout,
            "filtered": d.ctr("images", "ls", "-q", "name~=busy").stdout,
            "no such image": d.ctr("images", "rm", "nope", check=False).stderr.split("msg=")[-1],
            "dup snapshot": d.ctr("snapshots", "prepare", "c1", check=False).returncode,
        }
        d.ctr("containers", "rm", "c1")
    assert outputs["skiff"] == outputs["containerd"]
