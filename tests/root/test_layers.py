"""Layer extraction as root: owners, device nodes, capabilities, overlay whiteouts checked by
mounting them, and comparisons with the reference tools (umoci, GNU tar) on real images."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings

from skiff.images.layers import apply_layer
from skiff.images.mount import mount_all, unmount_all
from skiff.images.snapshots import Mount, new_snapshotter
from skiff.images.snapshots.fsutil import describe_tree
from skiff.images.unpack import unpack
from unit.test_layers_props import layer_stacks, to_tar

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True, params=["stream", "file"])
def layer_source(request, monkeypatch):
    """Every test runs twice: in-memory layers given to ``apply_layer`` as they are (the
    streaming path) and written to a file first (uncompressed ones take the blob path)."""
    if request.param == "stream":
        yield request.param
        return
    real = apply_layer
    spool = tempfile.mkdtemp(prefix="skiff-test-layers-")

    def via_file(stream, root, **kw):
        if type(stream) is not io.BytesIO:
            return real(stream, root, **kw)
        path = os.path.join(spool, f"layer{len(os.listdir(spool))}")
        with open(path, "wb") as f:
            f.write(stream.read())
        with open(path, "rb") as f:
            return real(f, root, **kw)

    monkeypatch.setitem(globals(), "apply_layer", via_file)
    try:
        yield request.param
    finally:
        shutil.rmtree(spool)

SHARED_BUSYBOX = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "images", "busybox.tar")
# CAP_NET_RAW (13) permitted and effective, revision 2 (what `setcap cap_net_raw+ep` writes)
CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw) -> tuple:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    ti.mtime = 1_000_000
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_tar(*members: tuple) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for ti, f in members:
            t.addfile(ti, f)
    return out.getvalue()


def test_owners_devices_capabilities_and_setuid(tmp_path):
    layer = make_tar(
        member("home", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1001),
        member("home/f", data=b"x", mode=0o640, uid=1000, gid=1001),
        member("home/l", tarfile.SYMTYPE, linkname="f", uid=1002, gid=1003),
        member("bin/ping", data=b"\x7fELF", mode=0o4755, uid=0, gid=0,
               pax_headers={"SCHILY.xattr.security.capability": CAP_NET_RAW.decode("utf-8", "surrogateescape"),
                            "SCHILY.xattr.trusted.note": "t"}),
        member("bin/sg", data=b"\x7fELF", mode=0o2755, uid=5, gid=6),
        member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        member("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660, gid=6),
        member("big-ids", data=b"", uid=3_000_000, gid=4_000_000),
    )
    root = str(tmp_path / "r")
    os.mkdir(root)
    apply_layer(io.BytesIO(layer), root)
    t = describe_tree(root)
    assert t["home"][1:4] == (0o750, 1000, 1001)
    assert t["home/f"][1:4] == (0o640, 1000, 1001)
    assert t["home/l"][2:4] == (1002, 1003)
    assert t["bin/ping"][1] == 0o4755
    assert os.getxattr(os.path.join(root, "bin/ping"), "security.capability") == CAP_NET_RAW
    assert os.getxattr(os.path.join(root, "bin/ping"), "trusted.note") == b"t"
    assert t["bin/sg"][1:4] == (0o2755, 5, 6)  # chown before chmod keeps setgid
    assert t["dev/null"][0] == "char" and t["dev/null"][6][:2] == (1, 3) and t["dev/null"][1] == 0o666
    assert t["dev/sda"][0] == "block" and t["dev/sda"][6][:2] == (8, 0) and t["dev/sda"][3] == 6
    assert t["big-ids"][2:4] == (3_000_000, 4_000_000)


def test_no_same_owner_keeps_ours(tmp_path):
    root = str(tmp_path / "r")
    os.mkdir(root)
    apply_layer(io.BytesIO(make_tar(member("f", data=b"x", uid=1000, gid=1000))), root, same_owner=False)
    st = os.lstat(os.path.join(root, "f"))
    assert (st.st_uid, st.st_gid) == (0, 0)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(stack=layer_stacks)
def test_overlay_whiteouts_mounted_match_delete_mode(stack):
    """Layers applied in overlay mode to upper directories, mounted for real as one overlay,
    show exactly the tree the same layers make applied one after the other in delete mode."""
    tmp = tempfile.mkdtemp(prefix="skiff-ovl-prop-")
    mnt = os.path.join(tmp, "mnt")
    try:
        plain = os.path.join(tmp, "plain")
        empty = os.path.join(tmp, "empty")
        for d in (plain, empty, mnt):
            os.mkdir(d)
        uppers: list[str] = []
        for i, layer in enumerate(stack):
            data = to_tar(layer)
            up = os.path.join(tmp, f"u{i}")
            os.mkdir(up)
            errors = []
            for target, kw in ((plain, {}), (up, {"whiteout": "overlay", "lowers": list(reversed(uppers))})):
                try:
                    apply_layer(io.BytesIO(data), target, **kw)
                    errors.append(None)
                except Exception as e:
                    errors.append(type(e).__name__)
            assert errors[0] == errors[1]
            if errors[0]:
                return
            uppers.append(up)
        lowers = ":".join([*reversed(uppers), empty])
        mount_all([Mount("overlay", "overlay", ["index=off", f"lowerdir={lowers}"])], mnt)
        try:
            got = describe_tree(mnt, mtimes=False)
        finally:
            unmount_all(mnt)
        want = describe_tree(plain, mtimes=False)
        got.pop("")
        want.pop("")
        assert got == want
    finally:
        shutil.rmtree(tmp)


class LayoutProvider:
    """Blobs of an OCI layout as a read-only content provider."""

    def __init__(self, layout: str) -> None:
        self.layout = layout

    def _path(self, digest: str) -> str:
        algo, hexd = digest.split(":", 1)
        return os.path.join(self.layout, "blobs", algo, hexd)

    def open(self, digest: str):
        return open(self._path(digest), "rb")

    def read_all(self, digest: str, max_size: int | None = None) -> bytes:
        with self.open(digest) as f:
            return f.read()


@pytest.mark.parametrize("kind", ["overlayfs", "native"])
def test_builtin_busybox_unpacks_as_umoci_does(tmp_path, kind):
    from skiff.images import builtin
    from skiff.images.content import Descriptor

    built = builtin.build(str(tmp_path / "img"))
    bundle = str(tmp_path / "bundle")
    subprocess.run(["umoci", "unpack", "--image", f"{built.layout_dir}:latest", bundle],
                   check=True, capture_output=True)
    ref = describe_tree(os.path.join(bundle, "rootfs"))
    index = json.load(open(os.path.join(built.layout_dir, "index.json")))
    sn = new_snapshotter(kind, str(tmp_path / kind))
    top = unpack(Descriptor.from_json(index["manifests"][0]), LayoutProvider(built.layout_dir), sn)
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    mount_all(sn.view("v", top), mnt)
    try:
        ours = describe_tree(mnt)
    finally:
        unmount_all(mnt)
        sn.close()
    ref.pop("")  # the rootfs directory itself is umoci's own
    ours.pop("")
    assert ours == ref
    assert len(ours) > 250


def test_docker_hub_busybox_layer_as_gnu_tar_extracts_it(tmp_path):
    """The reference image's layer (hundreds of absolute symlinks to /bin/busybox, sticky /tmp,
    a "./" root entry) against `tar -x --same-owner --same-permissions --xattrs`."""
    with tarfile.open(SHARED_BUSYBOX) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        layer = outer.extractfile(manifest[0]["Layers"][0]).read()
    ref = str(tmp_path / "ref")
    ours = str(tmp_path / "ours")
    os.mkdir(ref)
    os.mkdir(ours)
    subprocess.run(["tar", "-x", "--same-owner", "--same-permissions", "--xattrs", "--xattrs-include=*",
                    "-C", ref], input=layer, check=True)
    got = apply_layer(io.BytesIO(layer), ours)
    assert got.size == len(layer)
    want, have = describe_tree(ref), describe_tree(ours)
    want.pop("")
    have.pop("")
    assert have == want
    absolute = [k for k, v in have.items() if v[0] == "symlink" and v[6][0] == "/bin/busybox"]
    assert len(absolute) > 100  # kept as written, never followed to the host's /bin
    assert stat.S_IMODE(os.stat(os.path.join(ours, "tmp")).st_mode) == 0o1777


def test_owners_of_files_in_setgid_and_other_group_directories(tmp_path):
    """New files get the creator's uid and gid, or a setgid directory's gid: the blob path
    leaves fchown out only where that already is the archive's owner."""
    layer = make_tar(
        member("sg", tarfile.DIRTYPE, mode=0o2775, uid=0, gid=1234),
        member("sg/a", data=b"a", uid=0, gid=0), member("sg/b", data=b"b", uid=0, gid=1234),
        member("og", tarfile.DIRTYPE, mode=0o755, uid=0, gid=1234),
        member("og/a", data=b"a", uid=0, gid=0), member("og/b", data=b"b", uid=0, gid=0),
        member("mine", tarfile.DIRTYPE, mode=0o755),
        member("mine/a", data=b"a", uid=0, gid=0), member("mine/b", data=b"b", uid=1000, gid=0, mode=0o4755),
        member("mine/c", data=b"c", uid=0, gid=0, mode=0o2711))
    from skiff.images import layers

    trees = []
    for how in ("stream", "file"):
        root = tmp_path / how
        root.mkdir()
        if how == "stream":
            layers.apply_layer(io.BytesIO(layer), str(root))
        else:
            (tmp_path / "layer").write_bytes(layer)
            with open(tmp_path / "layer", "rb") as f:
                layers.apply_layer(f, str(root))
        tree = describe_tree(str(root))
        tree.pop("")  # the root's time is when it was made: not from the layer
        trees.append(tree)
    assert trees[0] == trees[1]
    t = trees[1]
    assert [t[n][2:4] for n in ("sg/a", "sg/b", "og/a", "og/b", "mine/a", "mine/b", "mine/c")] == [
        (0, 0), (0, 1234), (0, 0), (0, 0), (0, 0), (1000, 0), (0, 0)]
    assert t["mine/b"][1] == 0o4755 and t["mine/c"][1] == 0o2711 and t["sg"][1] == 0o2775
