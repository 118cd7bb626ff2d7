"""The snapshotter conformance suite with real mounts: overlayfs and native, same expectations.

Each test mounts what a snapshotter describes with mount_all, works through the mount as a
container would, and unmounts in ``finally`` (the leak checker watches).
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tarfile

import pytest

from skiff.images.layers import apply_layer, apply_to_mounts, diff_mounts
from skiff.images.mount import PAGE_SIZE, mount_all, unmount_all
from skiff.images.snapshots import new_snapshotter
from skiff.images.snapshots.fsutil import copy_tree, describe_tree

pytestmark = pytest.mark.root

KINDS = ["overlayfs", "native"]


def tar(*members: tuple) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for m in members:
            name, data = m[0], m[1]
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_000_000
            ti.mode = m[2] if len(m) > 2 else 0o644
            if isinstance(data, tuple):  # (type, linkname)
                ti.type, ti.linkname = data
                t.addfile(ti)
            elif data is None:
                ti.type = tarfile.DIRTYPE
                ti.mode = m[2] if len(m) > 2 else 0o755
                t.addfile(ti)
            else:
                ti.size = len(data)
                ti.uid = ti.gid = m[3] if len(m) > 3 else 0
                t.addfile(ti, io.BytesIO(data))
    return out.getvalue()


LAYERS = [
    tar(("etc", None), ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"), ("bin", None),
        ("bin/tool", b"\x7fELF", 0o4755), ("bin/alias", (tarfile.LNKTYPE, "bin/tool")),
        ("usr", None), ("usr/lib", None), ("usr/lib/libc.so", b"libc"), ("lib", (tarfile.SYMTYPE, "usr/lib")),
        ("var", None), ("var/cache", None), ("var/cache/a", b"a"), ("var/cache/b", b"b"),
        ("home", None), ("home/user", None), ("home/user/file", b"mine", 0o600, 1000)),
    tar(("var", None), ("var/cache", None), ("var/cache/.wh..wh..opq", b""), ("var/cache/c", b"c"),
        ("etc", None), ("etc/.wh.passwd", b""), ("etc/group", b"root:x:0:\n"),
        ("lib/libm.so", b"libm")),  # written through the lower layer's symlink
    tar((".wh.home", b""), ("home", None), ("home/new", b"fresh")),
]


@pytest.fixture(params=KINDS)
def sn(request, tmp_path):
    s = new_snapshotter(request.param, str(tmp_path / request.param))
    yield s
    s.close()


def build(sn, layers: list[bytes]) -> list[str]:
    names = []
    parent = ""
    for i, data in enumerate(layers):
        key = f"extract-{i}"
        apply_to_mounts(sn.prepare(key, parent), io.BytesIO(data))
        sn.commit(f"layer-{i}", key)
        parent = f"layer-{i}"
        names.append(parent)
    return names


def expected_tree(tmp_path, layers: list[bytes]) -> dict:
    """The layers applied one after the other to a plain directory (delete mode)."""
    d = str(tmp_path / "expected")
    os.makedirs(d, exist_ok=True)
    for data in layers:
        apply_layer(io.BytesIO(data), d)
    return describe_tree(d, mtimes=False)


class Mounted:
    def __init__(self, mounts, target: str) -> None:
        self.mounts, self.target = mounts, target

    def __enter__(self) -> str:
        os.makedirs(self.target, exist_ok=True)
        mount_all(self.mounts, self.target)
        return self.target

    def __exit__(self, *exc) -> None:
        unmount_all(self.target)


def test_active_snapshot_shows_the_merged_layers(sn, tmp_path):
    build(sn, LAYERS)
    mounts = sn.prepare("ctr", "layer-2")
    with Mounted(mounts, str(tmp_path / "mnt")) as root:
        got = describe_tree(root, mtimes=False)
    want = expected_tree(tmp_path, LAYERS)
    got.pop("")
    want.pop("")
    assert got == want
    assert "etc/passwd" not in got and "var/cache/a" not in got and "home/user" not in got
    assert got["usr/lib/libm.so"][0] == "file" and got["bin/tool"][1] == 0o4755


def test_views_are_read_only(sn, tmp_path):
    build(sn, LAYERS[:2])
    for key, parent in (("v1", "layer-0"), ("v2", "layer-1")):
        with Mounted(sn.view(key, parent), str(tmp_path / key)) as root:
            assert os.path.exists(os.path.join(root, "etc/group" if parent == "layer-1" else "etc/passwd"))
            with pytest.raises(OSError) as e:
                open(os.path.join(root, "new"), "w").close()
            assert e.value.errno == errno.EROFS


def test_container_changes_become_a_layer(sn, tmp_path):
    """Write through the mount as a container does, take the diff from the mounts (overlay:
    from the upper directory; native: by comparing trees), apply it to a copy of the parent:
    the result is what the container saw."""
    build(sn, LAYERS)
    mounts = sn.prepare("ctr", "layer-2")
    with Mounted(mounts, str(tmp_path / "mnt")) as root:
        os.unlink(os.path.join(root, "etc/group"))
        shutil.rmtree(os.path.join(root, "var/cache"))
        os.mkdir(os.path.join(root, "var/cache"))  # overlay makes this directory opaque
        with open(os.path.join(root, "var/cache/d"), "w") as f:
            f.write("d")
        with open(os.path.join(root, "bin/tool"), "ab") as f:
            f.write(b"patched")
        os.chmod(os.path.join(root, "usr/lib/libc.so"), 0o600)
        os.chown(os.path.join(root, "home/new"), 1234, 5678)
        os.link(os.path.join(root, "home/new"), os.path.join(root, "home/new2"))
        os.setxattr(os.path.join(root, "home/new"), "user.tag", b"t")
        os.symlink("../etc", os.path.join(root, "home/etc-link"))
        os.mkfifo(os.path.join(root, "home/fifo"))
        os.mknod(os.path.join(root, "home/null"), 0o666 | 0o020000, os.makedev(1, 3))
        seen = describe_tree(root, mtimes=False)
    view = sn.view("base-view", "layer-2")
    out = io.BytesIO()
    diff = diff_mounts(view, mounts, out)
    assert diff.size == len(out.getvalue())
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(out.getvalue()))]
    assert "etc/.wh.group" in names
    if sn.name == "overlayfs":
        assert "var/cache/.wh..wh..opq" in names
        # copy-up (index=off) broke the hard link: bin/alias still shows the old inode
        assert "bin/alias" not in names
    else:
        assert "var/cache/.wh.c" in names
        assert "bin/alias" in names  # the other name of the patched inode, as a tar hard link
    # replay on a plain copy of the parent
    target = str(tmp_path / "replay")
    os.mkdir(target)
    with Mounted(sn.view("copy-src", "layer-2"), str(tmp_path / "src")) as src:
        copy_tree(src, target)
    apply_layer(io.BytesIO(out.getvalue()), target)
    got = describe_tree(target, mtimes=False)
    seen.pop("")
    got.pop("")
    assert got == seen


def test_a_chain_of_130_layers_mounts(sn, tmp_path):
    """130 lower directories do not fit in a page of mount options: mount_all shortens them."""
    parent = ""
    for i in range(130):
        key = f"k{i}"
        apply_to_mounts(sn.prepare(key, parent), io.BytesIO(tar((f"f{i:03d}", str(i).encode()))))
        sn.commit(f"l{i}", key)
        parent = f"l{i}"
    mounts = sn.prepare("top", parent)
    if sn.name == "overlayfs":
        assert len(",".join(mounts[0].options)) > PAGE_SIZE
        assert mounts[0].option("lowerdir").count(":") == 129
    cwd = os.getcwd()
    with Mounted(mounts, str(tmp_path / "mnt")) as root:
        assert os.getcwd() == cwd
        names = sorted(os.listdir(root))
        assert names == [f"f{i:03d}" for i in range(130)]
        assert open(os.path.join(root, "f000")).read() == "0"
        with open(os.path.join(root, "f129"), "w") as f:
            f.write("changed")
    with Mounted(sn.view("v", parent), str(tmp_path / "view")) as root:
        assert len(os.listdir(root)) == 130
        assert open(os.path.join(root, "f129")).read() == "129"


def test_commit_of_a_mounted_change_and_reuse_as_parent(sn, tmp_path):
    build(sn, LAYERS[:1])
    mounts = sn.prepare("work", "layer-0")
    with Mounted(mounts, str(tmp_path / "mnt")) as root:
        with open(os.path.join(root, "etc/motd"), "w") as f:
            f.write("hi")
        os.unlink(os.path.join(root, "bin/alias"))
    sn.commit("committed", "work")
    assert sn.usage("committed").inodes >= 2
    with Mounted(sn.view("v", "committed"), str(tmp_path / "v")) as root:
        assert open(os.path.join(root, "etc/motd")).read() == "hi"
        assert not os.path.lexists(os.path.join(root, "bin/alias"))
        assert os.path.exists(os.path.join(root, "bin/tool"))
    sn.remove("v")
    sn.remove("committed")
    assert sn.stat("layer-0").kind.name == "COMMITTED"


def test_diff_through_mounts_when_the_description_is_not_simple(tmp_path):
    """An active overlay compared with no parent at all: neither fast path applies, so both
    sides are mounted and compared as trees (and unmounted again)."""
    sn = new_snapshotter("overlayfs", str(tmp_path / "o"))
    try:
        build(sn, LAYERS[:2])
        mounts = sn.prepare("ctr", "layer-1")
        with Mounted(mounts, str(tmp_path / "mnt")) as root:
            with open(os.path.join(root, "added"), "w") as f:
                f.write("new")
            seen = describe_tree(root, mtimes=False)
        out = io.BytesIO()
        diff_mounts([], mounts, out)
        names = {m.name for m in tarfile.open(fileobj=io.BytesIO(out.getvalue()))}
        assert {"added", "etc/group", "usr/lib/libm.so", "bin/tool"} <= names
        assert not any(".wh." in n for n in names)
        replay = str(tmp_path / "replay")
        os.mkdir(replay)
        apply_layer(io.BytesIO(out.getvalue()), replay)
        got = describe_tree(replay, mtimes=False)
        got.pop("")
        seen.pop("")
        assert got == seen
    finally:
        sn.close()
