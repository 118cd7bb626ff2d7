"""The snapshotter conformance suite without root: both snapshotters, same expectations.

What needs mounts (writing through an overlay, 130-layer chains) is in
tests/root/test_snapshots.py; here the bookkeeping, the mount descriptions and the trees the
snapshotters prepare are checked directly.
"""

from __future__ import annotations

import errno
import io
import os
import sqlite3
import tarfile

import pytest

from skiff.images.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from skiff.images.layers import apply_to_mounts
from skiff.images.mount import PAGE_SIZE, compact_overlay_data, mount_all, parse_options, unmount_all
from skiff.images.snapshots import Info, Kind, Mount, compile_filters, new_snapshotter, parse_filter
from skiff.images.snapshots.fsutil import copy_tree, describe_tree, disk_usage
from skiff.runtime import syscalls as sc
from skiff.runtime.syscalls import RecordingSyscalls

KINDS = ["overlayfs", "native"]


@pytest.fixture(params=KINDS)
def sn(request, tmp_path):
    s = new_snapshotter(request.param, str(tmp_path / request.param))
    yield s
    s.close()


def layer(*files: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1000
            t.addfile(ti, io.BytesIO(data))
    return out.getvalue()


def commit_layer(sn, name: str, parent: str, data: bytes) -> None:
    key = f"extract {name}"
    mounts = sn.prepare(key, parent)
    apply_to_mounts(mounts, io.BytesIO(data))
    sn.commit(name, key)


# --- lifecycle ----------------------------------------------------------------------------------

def test_prepare_commit_stat(sn):
    sn.prepare("a", "", {"l1": "v1"})
    info = sn.stat("a")
    assert (info.name, info.parent, info.kind, info.labels) == ("a", "", Kind.ACTIVE, {"l1": "v1"})
    sn.commit("base", "a", {"c": "1"})
    with pytest.raises(NotFound, match="snapshot a: not found"):
        sn.stat("a")
    info = sn.stat("base")
    assert info.kind == Kind.COMMITTED and info.labels == {"c": "1"}
    assert info.created <= info.updated
    sn.prepare("b", "base")
    assert sn.stat("b").parent == "base"


def test_kinds_and_errors(sn):
    sn.prepare("a")
    with pytest.raises(AlreadyExists, match="snapshot a: already exists"):
        sn.prepare("a")
    with pytest.raises(AlreadyExists):
        sn.view("a")
    with pytest.raises(NotFound, match="parent nope: not found"):
        sn.prepare("b", "nope")
    with pytest.raises(FailedPrecondition, match="parent a is active, not committed"):
        sn.prepare("b", "a")
    with pytest.raises(InvalidArgument, match="empty key"):
        sn.prepare("")
    sn.commit("c", "a")
    sn.view("v", "c")
    with pytest.raises(FailedPrecondition, match="is view, not active"):
        sn.commit("x", "v")
    with pytest.raises(FailedPrecondition, match="is committed, not active"):
        sn.commit("x", "c")
    sn.prepare("a2")
    with pytest.raises(AlreadyExists, match="snapshot c: already exists"):
        sn.commit("c", "a2")
    assert sn.stat("a2").kind == Kind.ACTIVE  # nothing changed
    with pytest.raises(NotFound):
        sn.commit("y", "missing")
    with pytest.raises(InvalidArgument, match="label"):
        sn.prepare("z", "", {"k": "v" * 5000})


def test_remove_rules(sn):
    commit_layer(sn, "l1", "", layer(("f", b"1")))
    sn.view("v", "l1")
    with pytest.raises(FailedPrecondition, match="parent of v"):
        sn.remove("l1")
    sn.remove("v")
    sn.remove("l1")
    with pytest.raises(NotFound):
        sn.remove("l1")
    assert [d for d in os.listdir(os.path.join(sn.root, "snapshots"))] == []


def test_update_labels(sn):
    sn.prepare("a", "", {"x": "1", "y": "2"})
    info = sn.stat("a")
    info.labels = {"x": "10", "z": "3"}
    assert sn.update(info, ["labels.x", "labels.y"]).labels == {"x": "10"}
    info.labels = {"only": "this"}
    assert sn.update(info).labels == {"only": "this"}
    info.labels = {"q": "1"}
    assert sn.update(info, ["labels"]).labels == {"q": "1"}
    with pytest.raises(InvalidArgument, match="only labels"):
        sn.update(info, ["parent"])
    with pytest.raises(NotFound):
        sn.update(Info(name="nope", parent="", kind=Kind.ACTIVE))


def test_walk_and_filters(sn):
    commit_layer(sn, "l1", "", layer(("f", b"1")))
    sn.prepare("act", "l1", {"containerd.io/gc.root": "x", "team": "a"})
    sn.view("vw", "l1", {"team": "b"})
    seen: list[str] = []
    sn.walk(lambda i: seen.append(i.name))
    assert sorted(seen) == ["act", "l1", "vw"]

    def names(*flt: str) -> list[str]:
        got: list[str] = []
        sn.walk(lambda i: got.append(i.name), list(flt))
        return sorted(got)
    assert names("kind==committed") == ["l1"]
    assert names("parent==l1") == ["act", "vw"]
    assert names("labels.team==a", "labels.team==b") == ["act", "vw"]
    assert names('labels."containerd.io/gc.root"') == ["act"]
    assert names("labels.team~=^[ab]$,kind==view") == ["vw"]
    assert names("name!=l1,labels.team!=a") == ["vw"]


def test_filter_parser():
    assert parse_filter('labels."a.b"==c,name') == [(("labels", "a.b"), "==", "c"), (("name",), "", "")]
    assert parse_filter("name==a.b.c") == [(("name",), "==", "a.b.c")]
    for bad in ("", "name==", "==x", "name==a,", "labels.x~=(", "name=x"):
        with pytest.raises(InvalidArgument):
            parse_filter(bad)
    pred = compile_filters(["kind==Active"])
    assert pred(Info(name="a", parent="", kind=Kind.ACTIVE))


def test_usage(sn):
    key = "u"
    mounts = sn.prepare(key)
    apply_to_mounts(mounts, io.BytesIO(layer(("a", b"x" * 10000), ("b", b"y" * 5000))))
    u = sn.usage(key)
    assert u.inodes == 3 and u.size >= 15000
    sn.commit("c", key)
    assert sn.usage("c") == u
    sn.prepare("child", "c")
    child = sn.usage("child")
    if sn.name == "native":
        assert child.inodes == 3  # a full copy
    else:
        assert child.inodes == 1  # an empty upper directory


def test_mount_descriptions(sn):
    commit_layer(sn, "l1", "", layer(("f1", b"1")))
    commit_layer(sn, "l2", "l1", layer(("f2", b"2")))
    fs = {n: sn.dirs(n)[0] for n in ("l1", "l2")}
    active = sn.prepare("a", "l2")
    view1 = sn.view("v1", "l1")
    view2 = sn.view("v2", "l2")
    empty = sn.prepare("e")
    assert sn.mounts("a") == active
    with pytest.raises(FailedPrecondition, match="committed"):
        sn.mounts("l1")
    if sn.name == "native":
        for m, key, ro in ((active, "a", False), (view1, "v1", True), (view2, "v2", True), (empty, "e", False)):
            assert m == [Mount("bind", sn.dirs(key)[0], ["ro" if ro else "rw", "rbind"])]
        return
    own = sn.dirs("a")[0]
    (m,) = active
    assert m.type == "overlay" and m.option("upperdir") == own
    assert m.option("workdir") == os.path.join(os.path.dirname(own), "work")
    assert m.option("lowerdir") == f"{fs['l2']}:{fs['l1']}"
    assert view1 == [Mount("bind", fs["l1"], ["ro", "rbind"])]
    (v2,) = view2
    assert v2.type == "overlay" and v2.option("upperdir") is None and v2.option("lowerdir") == f"{fs['l2']}:{fs['l1']}"
    assert empty == [Mount("bind", sn.dirs("e")[0], ["rw", "rbind"])]


def test_native_prepare_copies_the_parent(tmp_path):
    sn = new_snapshotter("native", str(tmp_path / "n"))
    commit_layer(sn, "l1", "", layer(("d/f", b"data"), ("g", b"g")))
    sn.prepare("a", "l1")
    own, parents = sn.dirs("a")
    assert describe_tree(own) == describe_tree(parents[0])
    assert os.stat(os.path.join(own, "g")).st_ino != os.stat(os.path.join(parents[0], "g")).st_ino
    sn.close()


def test_persistence_and_crash_cleanup(tmp_path):
    root = str(tmp_path / "o")
    sn = new_snapshotter("overlayfs", root)
    commit_layer(sn, "l1", "", layer(("f", b"1")))
    sn.prepare("a", "l1", {"k": "v"})
    sn.close()
    # leftovers of a crash: a half-made snapshot and one being deleted
    os.makedirs(os.path.join(root, "snapshots", "new-abc", "fs"))
    os.makedirs(os.path.join(root, "snapshots", "rm-7", "fs"))
    os.makedirs(os.path.join(root, "snapshots", "99", "fs"))
    sn = new_snapshotter("overlayfs", root)
    assert sn.stat("a").labels == {"k": "v"} and sn.stat("l1").kind == Kind.COMMITTED
    assert sorted(os.listdir(os.path.join(root, "snapshots"))) == sorted(
        str(i) for i in sn.db.ids())
    con = sqlite3.connect(os.path.join(root, "metadata.db"))
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    sn.close()


def test_failed_fill_leaves_nothing(tmp_path, monkeypatch):
    sn = new_snapshotter("native", str(tmp_path / "n"))
    commit_layer(sn, "l1", "", layer(("f", b"1")))
    import skiff.images.snapshots.native as native

    def boom(src, dst, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(native, "copy_tree", boom)
    with pytest.raises(Exception, match="No space left"):
        sn.prepare("a", "l1")
    with pytest.raises(NotFound):
        sn.stat("a")
    assert sorted(os.listdir(os.path.join(sn.root, "snapshots"))) == [str(sn.db.get("l1").id)]
    sn.close()


def test_unknown_snapshotter(tmp_path):
    with pytest.raises(InvalidArgument, match="unknown"):
        new_snapshotter("zfs", str(tmp_path))


# --- fsutil ---------------------------------------------------------------------------------

def test_copy_tree_preserves_everything(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"content")
    os.link(src / "d" / "f", src / "hl")
    os.symlink("/etc/passwd", src / "link")
    os.mkfifo(src / "fifo")
    os.chmod(src / "d" / "f", 0o4751)
    os.setxattr(src / "d" / "f", "user.k", b"v")
    with open(src / "sparse", "wb") as f:
        f.truncate(50 << 20)
        f.write(b"head")
    os.utime(src / "d", ns=(1, 123_456_789_012))
    dst = tmp_path / "dst"
    dst.mkdir()
    copy_tree(str(src), str(dst))
    assert describe_tree(str(src)) == describe_tree(str(dst))
    assert os.stat(dst / "d").st_mtime_ns == 123_456_789_012
    assert os.stat(dst / "sparse").st_blocks * 512 < 1 << 20
    assert os.stat(dst / "hl").st_ino == os.stat(dst / "d" / "f").st_ino
    assert os.readlink(dst / "link") == "/etc/passwd"
    assert disk_usage(str(dst))[1] == disk_usage(str(src))[1]


# --- mount.py with a recording seam ---------------------------------------------------------------

def test_parse_options():
    flags, prop, data = parse_options(["ro", "nosuid", "rbind", "rprivate", "lowerdir=/a", "rw"])
    assert flags == sc.MS_NOSUID | sc.MS_BIND | sc.MS_REC
    assert prop == sc.MS_PRIVATE | sc.MS_REC
    assert data == ["lowerdir=/a"]


def test_mount_all_bind_ro_is_bind_then_remount(tmp_path):
    rec = RecordingSyscalls()
    mount_all([Mount("bind", "/src", ["ro", "rbind", "nosuid"])], str(tmp_path), syscalls=rec)
    assert rec.calls == [
        ("mount", "/src", str(tmp_path), None, sc.MS_BIND | sc.MS_REC, None),
        ("mount", None, str(tmp_path), None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID, None),
    ]


def test_mount_all_overlay_short_options(tmp_path):
    rec = RecordingSyscalls()
    m = Mount("overlay", "overlay", ["index=off", "workdir=/s/1/work", "upperdir=/s/1/fs", "lowerdir=/s/2/fs"])
    mount_all([m], str(tmp_path), syscalls=rec)
    assert rec.calls == [("mount", "overlay", str(tmp_path), "overlay", 0,
                          "index=off,workdir=/s/1/work,upperdir=/s/1/fs,lowerdir=/s/2/fs")]


def test_mount_all_long_overlay_chdirs_in_its_own_fs_context(tmp_path):
    base = "/var/lib/skiff/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"
    lowers = [f"{base}/{i}/fs" for i in range(200, 70, -1)]  # 130 layers
    m = Mount("overlay", "overlay", ["index=off", f"workdir={base}/201/work", f"upperdir={base}/201/fs",
                                      "lowerdir=" + ":".join(lowers)])
    assert len(",".join(m.options)) > PAGE_SIZE
    rec = RecordingSyscalls()
    cwd = os.getcwd()
    mount_all([m], str(tmp_path), syscalls=rec)
    assert os.getcwd() == cwd
    assert rec.names() == ["unshare", "chdir", "mount"]
    assert rec.calls[0] == ("unshare", 0x200)
    assert rec.calls[1] == ("chdir", base)
    data = rec.calls[2][5]
    assert data.startswith("index=off,workdir=201/work,upperdir=201/fs,lowerdir=200/fs:199/fs:")
    assert len(data) < PAGE_SIZE and rec.calls[2][2] == str(tmp_path)


def test_compact_refuses_what_cannot_shrink():
    assert compact_overlay_data(["lowerdir=relative:paths"]) is None
    assert compact_overlay_data(["lowerdir=/a/x:/b/y"]) is None  # common directory is /
    common, data = compact_overlay_data(["lowerdir=/s/a"])
    assert common == "/s" and data == ["lowerdir=a"]


def test_mount_failure_unmounts_what_was_mounted(tmp_path):
    rec = RecordingSyscalls()

    class Failing(RecordingSyscalls):
        n = 0

        def mount(self, *a):
            self.n += 1
            if self.n == 2:
                raise OSError(errno.EINVAL, "Invalid argument")
            rec.mount(*a)

        def umount2(self, target, flags):
            rec.umount2(target, flags)
    with pytest.raises(OSError, match="mount overlay overlay on .*: Invalid argument"):
        mount_all([Mount("bind", "/a", ["rbind"]), Mount("overlay", "overlay", ["lowerdir=/x:/y"])],
                  str(tmp_path), syscalls=Failing())
    assert rec.names() == ["mount", "umount2"]


def test_unmount_all_until_nothing_is_left(tmp_path):
    class Stack(RecordingSyscalls):
        left = 3

        def umount2(self, target, flags):
            self._rec("umount2", target, flags)
            if self.left == 0:
                raise OSError(errno.EINVAL, "Invalid argument")
            self.left -= 1
    s = Stack()
    assert unmount_all(str(tmp_path), syscalls=s) == 3
    assert len(s.calls) == 4
    busy = RecordingSyscalls(fail={"umount2": errno.EBUSY})
    with pytest.raises(OSError, match="unmount .*: Device or resource busy"):
        unmount_all(str(tmp_path), syscalls=busy, retries=2, delay=0)
    assert len(busy.calls) == 3


def test_remove_a_snapshot_with_read_only_directories(sn):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as t:
        ti = tarfile.TarInfo("locked")
        ti.type, ti.mode = tarfile.DIRTYPE, 0o555
        t.addfile(ti)
        ti = tarfile.TarInfo("locked/f")
        ti.size = 1
        t.addfile(ti, io.BytesIO(b"x"))
        ti = tarfile.TarInfo("sealed")
        ti.type, ti.mode = tarfile.DIRTYPE, 0o000
        t.addfile(ti)
    commit_layer(sn, "l", "", data.getvalue())
    sn.remove("l")
    assert os.listdir(os.path.join(sn.root, "snapshots")) == []
