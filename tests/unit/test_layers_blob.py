"""apply_layer's path for uncompressed layers in regular files (content-store blobs).

Headers are read with pread, member data is copied from the blob inside the kernel
(copy_file_range, else sendfile, else pread/write) and a second thread hashes the blob. The
streaming path (an in-memory stream) is the reference: the same layer applied both ways gives
the same tree, the same ``Applied`` and the same errors. tests/unit/test_layers.py runs all of
its tests both ways too.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import subprocess
import tarfile
import tempfile
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skiff.images import layers
from skiff.images.errors import DigestMismatch
from skiff.images.layers import InvalidLayer, LayerError, apply_layer
from skiff.images.snapshots.fsutil import describe_tree
from unit.test_layers_props import EXAMPLES, entries, layer_stacks, to_tar


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def reg(name: str, data: bytes = b"", mode: int = 0o644, mtime: int = 1_600_000_000, **kw) -> tuple:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), mode, mtime
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, data


def dirm(name: str, mode: int = 0o755, **kw) -> tuple:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, 1_500_000_000
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, None


def both(tmp_path, data: bytes, *, prefix: bytes = b"", **kw):
    """Apply ``data`` as a stream into ``tmp/s`` and from a file into ``tmp/f``; returns
    (outcome, tree) for each: outcome is the Applied or the error's type and message."""
    out = []
    blob = tmp_path / "blob"
    blob.write_bytes(prefix + data)
    for how in ("s", "f"):
        root = tmp_path / how
        root.mkdir()
        try:
            if how == "s":
                got: object = apply_layer(io.BytesIO(data), str(root), **kw)
            else:
                with open(blob, "rb") as f:
                    f.seek(len(prefix))
                    got = apply_layer(f, str(root), **kw)
        except LayerError as e:
            got = (type(e).__name__, str(e))
        out.append((got, describe_tree(str(root), mtimes=True)))
    return out


def norm(tree: dict) -> dict:
    """Directories' times left out: one the layer does not list has the time it was last
    written to (tests/unit/test_layers.py checks those the layer sets, both ways). Overlay
    whiteouts (0/0 character devices) are made at the time of the apply, which may fall in
    another second on the second way."""
    return {k: (v[:4] + (None,) + v[5:] if v[0] == "dir" or (v[0] == "char" and v[6][:2] == (0, 0)) else v)
            for k, v in tree.items()}


def same_both_ways(tmp_path, data: bytes, **kw):
    (a, ta), (b, tb) = both(tmp_path, data, **kw)
    assert a == b
    assert norm(ta) == norm(tb)
    return a, ta


@pytest.fixture
def no_stream_reader(monkeypatch):
    """Fail the test if the streaming reader is used."""
    def refuse(*a, **kw):
        raise AssertionError("the streaming LayerReader was used for a regular file")
    monkeypatch.setattr(layers, "LayerReader", refuse)


def test_regular_file_takes_the_blob_path(tmp_path, no_stream_reader):
    data = make_tar([dirm("d"), reg("d/a", b"hello"), reg("d/b", b"x" * 70000), reg("top", b"")])
    (tmp_path / "l").write_bytes(data)
    (tmp_path / "r").mkdir()
    with open(tmp_path / "l", "rb") as f:
        got = apply_layer(f, str(tmp_path / "r"))
        assert f.tell() == len(data)  # consumed, as the streaming path leaves it
    assert got.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (got.size, got.compressed_size, got.compression) == (len(data), len(data), "none")
    assert (tmp_path / "r/d/b").read_bytes() == b"x" * 70000


def test_compressed_files_and_pipes_stream(tmp_path):
    import gzip
    data = make_tar([reg("a", b"hello")])
    (tmp_path / "l.gz").write_bytes(gzip.compress(data))
    (tmp_path / "r").mkdir()
    with open(tmp_path / "l.gz", "rb") as f:
        assert apply_layer(f, str(tmp_path / "r")).compression == "gzip"
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    (tmp_path / "p").mkdir()
    with open(r, "rb") as f:
        got = apply_layer(f, str(tmp_path / "p"))
    assert got.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


def test_metadata_modes_owners_times_xattrs(tmp_path):
    members = [dirm("d", 0o750), reg("d/suid", b"#!", 0o4755), reg("d/sgid", b"x", 0o2711),
               reg("d/sticky", b"", 0o1644), reg("d/open", b"o", 0o666), reg("d/none", b"n", 0),
               reg("d/ro", b"r", 0o444, mtime=7)]
    ti, data = reg("d/x", b"xattr")
    ti.pax_headers = {"SCHILY.xattr.user.k": "v", "mtime": "1600000000.123456789", "atime": "5.5"}
    members.append((ti, data))
    _, t = same_both_ways(tmp_path, make_tar(members))
    assert t["d/suid"][1] == 0o4755 and t["d/sgid"][1] == 0o2711 and t["d/sticky"][1] == 0o1644
    assert t["d/open"][1] == 0o666 and t["d/none"][1] == 0 and t["d/ro"][4] == 7
    assert t["d/x"][5] == (("user.k", b"v"),)
    assert os.stat(tmp_path / "f/d/x").st_mtime_ns == 1_600_000_000_123_456_789


def test_keep_setid_false_drops_setuid_and_setgid_both_ways(tmp_path):
    """The host-side policy (builtin.make_bundle): setuid/setgid dropped from files (the
    fast path's inline ones too) and directories, the sticky bit and permissions kept."""
    members = [dirm("d", 0o2755), reg("d/suid", b"#!", 0o4755), reg("d/sgid", b"x", 0o2711),
               reg("d/both", b"x" * 200_000, 0o6750), reg("d/sticky", b"", 0o1644), reg("d/plain", b"p", 0o640)]
    ti, data = reg("d/pax", b"pax", 0o4700)
    ti.pax_headers = {"mtime": "1600000000.5"}
    members.append((ti, data))
    _, t = same_both_ways(tmp_path, make_tar(members), keep_setid=False)
    assert (t["d"][1], t["d/suid"][1], t["d/sgid"][1], t["d/both"][1]) == (0o755, 0o755, 0o711, 0o750)
    assert (t["d/sticky"][1], t["d/plain"][1], t["d/pax"][1]) == (0o1644, 0o640, 0o700)
    (tmp_path / "default").mkdir()
    _, t = same_both_ways(tmp_path / "default", make_tar(members))  # the default keeps them
    assert (t["d"][1], t["d/suid"][1], t["d/both"][1]) == (0o2755, 0o4755, 0o6750)


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_allow_devices_false_refuses_device_members_both_ways(tmp_path, kind):
    dev = tarfile.TarInfo("dev/null")
    dev.type, dev.devmajor, dev.devminor, dev.mode = kind, 1, 3, 0o666
    data = make_tar([dirm("dev"), reg("dev/before", b"b"), (dev, None), reg("after", b"a")])
    (a, _), (b, tb) = both(tmp_path, data, allow_devices=False)
    assert a == b == ("InvalidLayer", "layer: member 'dev/null': device nodes are refused")
    assert "dev/null" not in tb and "after" not in tb


def test_modes_do_not_depend_on_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        _, t = same_both_ways(tmp_path, make_tar([reg("a", b"a", 0o644), reg("b", b"b", 0o777),
                                                  reg("c", b"c", 0o4711)]))
    finally:
        os.umask(old)
    assert (t["a"][1], t["b"][1], t["c"][1]) == (0o644, 0o777, 0o4711)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_and_links(tmp_path, fmt):
    long_dir = "d" * 60 + "/" + "e" * 60  # ustar: in the prefix field
    members = [dirm("d" * 60), dirm(long_dir), reg(long_dir + "/" + "f" * 60, b"long"),
               reg("short", b"s")]
    ti = tarfile.TarInfo("link")
    ti.type, ti.linkname = tarfile.LNKTYPE, long_dir + "/" + "f" * 60
    if fmt == tarfile.USTAR_FORMAT:  # ustar has no room for a long link target
        ti.linkname = "short"
    members.append((ti, None))
    ti = tarfile.TarInfo("sym")
    ti.type, ti.linkname = tarfile.SYMTYPE, "x" * 150 if fmt != tarfile.USTAR_FORMAT else "x"
    members.append((ti, None))
    _, t = same_both_ways(tmp_path, make_tar(members, fmt))
    target = "short" if fmt == tarfile.USTAR_FORMAT else long_dir + "/" + "f" * 60
    assert t["link"][6] == t[target][6]  # one inode
    assert os.stat(tmp_path / "f/link").st_nlink == 2


def test_non_ascii_and_pax_names(tmp_path):
    long = "a" * 100 + "/" + "b" * 200
    members = [reg("é/ünïcode", b"u"), reg(long, b"p"), reg("sp ace/ tab\t", b"t")]
    _, t = same_both_ways(tmp_path, make_tar(members))
    assert long in t and "é/ünïcode" in t


def test_hardlinks_and_replacements(tmp_path):
    members = [reg("a", b"1"), (lambda ti: (ti, None))(_hard("b", "a")), reg("a", b"2"),
               dirm("d"), reg("d/f", b"first"), reg("d/f", b"second"),
               (lambda ti: (ti, None))(_sym("d/s", "/etc")), reg("d/s", b"not through the link")]
    _, t = same_both_ways(tmp_path, make_tar(members))
    assert (tmp_path / "f/a").read_bytes() == b"2" and (tmp_path / "f/b").read_bytes() == b"1"
    assert (tmp_path / "f/d/f").read_bytes() == b"second"
    assert not os.path.islink(tmp_path / "f/d/s")


def _hard(name: str, target: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = tarfile.LNKTYPE, target
    return ti


def _sym(name: str, target: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = tarfile.SYMTYPE, target
    return ti


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_members(tmp_path, fmt):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(1 << 20)
        f.write(b"middle")
        f.seek(8 << 20)
        f.write(b"end")
    archive = tmp_path / "s.tar"
    subprocess.run(["tar", "-C", str(src), f"--format={fmt}", "--sparse", "-cf", str(archive), "sparse"],
                   check=True)
    data = archive.read_bytes()
    same_both_ways(tmp_path, data)
    out = tmp_path / "f/sparse"
    assert out.read_bytes() == (src / "sparse").read_bytes()
    assert os.stat(out).st_blocks * 512 < 1 << 20  # holes stay holes


def test_member_running_past_the_end_of_the_blob(tmp_path):
    data = make_tar([reg("ok", b"fine"), reg("big", b"y" * 5000)])
    cut = data[:data.index(b"y" * 5000) + 1000]  # the data of "big" stops after 1000 bytes
    (a, _), (b, _) = both(tmp_path, cut)
    assert a == b
    assert a[0] == "InvalidLayer" and "'big'" in a[1] and "truncated" in a[1]
    assert (tmp_path / "f/ok").read_bytes() == b"fine"


def test_declared_size_far_past_the_end(tmp_path):
    ti, _ = reg("huge")
    ti.size = 1 << 40
    data = ti.tobuf(tarfile.PAX_FORMAT) + b"z" * 512
    (a, _), (b, _) = both(tmp_path, data)
    assert a == b and a[0] == "InvalidLayer" and "truncated" in a[1]


@pytest.mark.parametrize("cut", [0, 100, 512, 700, 1024])
def test_truncated_anywhere_agrees_with_the_stream(tmp_path, cut):
    data = make_tar([reg("a", b"a" * 600), reg("b", b"b")])
    (a, _), (b, _) = both(tmp_path, data[:len(data) - 2048 - cut] if cut else data[:-1024])
    assert a == b


def test_corrupt_header_in_the_middle(tmp_path):
    data = bytearray(make_tar([reg("a", b"a"), reg("b", b"b")]))
    data[1024 + 148] ^= 0x01  # the checksum of the second header
    (a, _), (b, _) = both(tmp_path, bytes(data))
    assert a == b and a[0] == "InvalidLayer" and "bad tar header" in a[1]


def test_garbage_in_unused_number_fields_is_refused_like_tarfile(tmp_path):
    data = bytearray(make_tar([reg("a", b"a"), reg("b", b"b")], tarfile.USTAR_FORMAT))
    hdr = 1024
    data[hdr + 329:hdr + 337] = b"zzzzzzz\0"  # devmajor of a regular file
    block = bytes(data[hdr:hdr + 512])
    chk = sum(block[:148]) + 256 + sum(block[156:])
    data[hdr + 148:hdr + 156] = b"%06o\0 " % chk
    (a, _), (b, _) = both(tmp_path, bytes(data))
    assert a == b and a[0] == "InvalidLayer"


def test_layer_at_an_offset_of_its_file(tmp_path):
    data = make_tar([reg("a", b"offset")])
    (a, _), (b, tb) = both(tmp_path, data, prefix=b"\x1f\x8b junk before the layer " * 40)
    assert a == b and (tmp_path / "f/a").read_bytes() == b"offset"


def test_digests_checked(tmp_path):
    data = make_tar([reg("a", b"digest")])
    (tmp_path / "l").write_bytes(data)
    for i, algo in enumerate(("sha256", "sha512")):
        root = tmp_path / f"r{i}"
        root.mkdir()
        want = f"{algo}:" + hashlib.new(algo, data).hexdigest()
        with open(tmp_path / "l", "rb") as f:
            got = apply_layer(f, str(root), compressed_digest=want)
        assert got.compressed_digest == want
        assert got.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    with open(tmp_path / "l", "rb") as f, pytest.raises(DigestMismatch, match="expected sha256:0"):
        apply_layer(f, str(tmp_path / "r0"), compressed_digest="sha256:" + "0" * 64)


@pytest.mark.parametrize("broken", ["copy_file_range", "copy_file_range+sendfile"])
def test_copy_fallbacks(tmp_path, monkeypatch, broken):
    def fail(*a, **kw):
        raise OSError(errno.EXDEV if "copy" in broken else errno.EINVAL, "not here")

    def fail_sendfile(*a, **kw):
        raise OSError(errno.EINVAL, "not here")
    monkeypatch.setattr(layers.os, "copy_file_range", fail)
    if "sendfile" in broken:
        monkeypatch.setattr(layers.os, "sendfile", fail_sendfile)
    big = os.urandom(3 << 20)
    same_both_ways(tmp_path, make_tar([reg("big", big), reg("small", b"s")]))
    assert (tmp_path / "f/big").read_bytes() == big


def test_copy_errors_that_are_not_about_support_are_errors(tmp_path, monkeypatch):
    def fail(*a, **kw):
        raise OSError(errno.EIO, "input/output error")
    monkeypatch.setattr(layers.os, "copy_file_range", fail)
    _s, (f, _) = both(tmp_path, make_tar([dirm("d"), reg("d/x", b"1"), reg("d/y", b"2")]))
    assert f == ("LayerError", "layer: member 'd/x': input/output error")


def test_directories_in_a_lower_tree_and_whiteouts(tmp_path):
    data = make_tar([dirm("etc"), reg("etc/a", b"1"), reg("etc/.wh.b"), reg("etc/c", b"3"),
                     reg("x/.wh..wh..opq"), reg("x/new", b"n"), reg(".wh..wh.plnk/123", b"aufs")])
    for how in ("s", "f"):
        root = tmp_path / how
        os.makedirs(root / "etc")
        os.makedirs(root / "x/old")
        (root / "etc/b").write_text("gone")
    (tmp_path / "l").write_bytes(data)
    apply_layer(io.BytesIO(data), str(tmp_path / "s"))
    with open(tmp_path / "l", "rb") as f:
        apply_layer(f, str(tmp_path / "f"))
    assert norm(describe_tree(str(tmp_path / "s"))) == norm(describe_tree(str(tmp_path / "f")))
    assert sorted(os.listdir(tmp_path / "f/etc")) == ["a", "c"]
    assert os.listdir(tmp_path / "f/x") == ["new"]
    assert not os.path.exists(tmp_path / "f/.wh..wh.plnk")


def test_many_directories_beyond_the_descriptor_cache(tmp_path):
    members = []
    for i in range(300):
        members += [dirm(f"d{i}"), reg(f"d{i}/a", b"a"), reg(f"d{i}/b", b"b")]
    members += [reg(f"d{i}/c", b"c") for i in range(300)]  # back to directories long left
    _, t = same_both_ways(tmp_path, make_tar(members))
    assert len(t) == 1 + 300 * 4


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(stack=layer_stacks, mode=st.sampled_from(["delete", "overlay", "oci"]))
def test_blob_path_agrees_with_the_stream(stack, mode):
    """Random layer stacks: streamed and from files, every layer gives the same Applied and
    the stack the same tree (delete mode on one directory, overlay mode over lowers)."""
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for how in ("s", "f"):
            dirs: list[str] = []
            outcomes = []
            for i, layer in enumerate(stack):
                data = to_tar(layer)
                if mode == "overlay":
                    root = os.path.join(tmp, f"{how}{i}")
                else:
                    root = os.path.join(tmp, how)
                os.makedirs(root, exist_ok=True)
                kw: dict = {"whiteout": mode}
                if mode == "overlay":
                    kw.update(lowers=list(reversed(dirs)), overlay_xattr="user")
                try:
                    if how == "s":
                        outcomes.append(apply_layer(io.BytesIO(data), root, **kw))
                    else:
                        path = os.path.join(tmp, f"layer{i}")
                        with open(path, "wb") as f:
                            f.write(data)
                        with open(path, "rb") as f:
                            outcomes.append(apply_layer(f, root, **kw))
                except LayerError as e:
                    outcomes.append((type(e).__name__, str(e)))
                dirs.append(root)
            trees = [norm(describe_tree(d, skip_overlay_xattrs=False)) for d in dict.fromkeys(dirs)]
            results[how] = (outcomes, trees)
        assert results["s"] == results["f"]


HOSTILE = st.sampled_from(["../x", "/abs", "a/../../x", "l/x", "l", "a", "a/b", "./a", "..", "/", "",
                           ".wh..wh..opq", ".wh.a", "a/.wh.b", "l/../../etc/passwd"])


@settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=st.lists(st.tuples(st.sampled_from(["file", "dir", "symlink", "hardlink"]), HOSTILE,
                                  HOSTILE | st.sampled_from(["/", "..", "/etc", "../outside"])),
                        max_size=10))
def test_hostile_names_never_escape_from_a_file(members):
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        outside = os.path.join(tmp, "outside")
        os.makedirs(root)
        os.makedirs(outside)
        with open(os.path.join(outside, "secret"), "w") as f:
            f.write("s")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for kind, name, target in members:
                ti = tarfile.TarInfo(name)
                if kind == "file":
                    ti.size = 3
                    t.addfile(ti, io.BytesIO(b"bad"))
                    continue
                ti.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
                ti.linkname = target
                t.addfile(ti)
        with tempfile.NamedTemporaryFile() as layer:
            layer.write(buf.getvalue())
            layer.flush()
            with open(layer.name, "rb") as f:
                try:
                    apply_layer(f, root)
                except LayerError:
                    pass
        assert sorted(os.listdir(tmp)) == ["outside", "root"]
        assert os.listdir(outside) == ["secret"]
        assert open(os.path.join(outside, "secret")).read() == "s"
        secret_ino = os.stat(os.path.join(outside, "secret")).st_ino
        for dirpath, _dirs, files in os.walk(root):
            assert os.path.realpath(dirpath).startswith(os.path.realpath(root))
            for name in files:
                p = os.path.join(dirpath, name)
                if not os.path.islink(p):
                    assert os.stat(p).st_ino != secret_ino
                    assert not stat.S_ISCHR(os.stat(p).st_mode)


@SETTINGS
@given(layer=entries())
def test_invalid_layer_errors_name_the_member(layer):
    """Cut each random layer in the middle of its last member's data: both paths refuse it
    with the same message."""
    data = to_tar(layer)
    end = len(data) - 1024  # without the end marker
    with tempfile.TemporaryDirectory() as tmp:
        for cut in (end - 1, end - 300, end - 511):
            if cut <= 0:
                continue
            outcomes = []
            for how in ("s", "f"):
                root = os.path.join(tmp, f"{how}{cut}")
                os.mkdir(root)
                try:
                    if how == "s":
                        outcomes.append(apply_layer(io.BytesIO(data[:cut]), root))
                    else:
                        path = os.path.join(tmp, "cut")
                        with open(path, "wb") as f:
                            f.write(data[:cut])
                        with open(path, "rb") as f:
                            outcomes.append(apply_layer(f, root))
                except LayerError as e:
                    outcomes.append((type(e).__name__, str(e)))
            assert outcomes[0] == outcomes[1]


def test_blob_changed_while_applied_is_an_error(tmp_path, monkeypatch):
    data = make_tar([reg("a", b"a")])
    (tmp_path / "l").write_bytes(data)
    (tmp_path / "r").mkdir()
    real_fstat = os.fstat
    calls = []

    def fstat(fd):
        st = real_fstat(fd)
        if fd == blob_fd:
            calls.append(1)
            if len(calls) > 1:  # after the apply: pretend the file grew
                return os.stat_result((*st[:6], st.st_size + 1, *st[7:]))
        return st
    with open(tmp_path / "l", "rb") as f:
        blob_fd = f.fileno()
        monkeypatch.setattr(layers.os, "fstat", fstat)
        with pytest.raises(LayerError, match="changed while it was applied"):
            apply_layer(f, str(tmp_path / "r"))


def test_invalid_layer_is_invalid(tmp_path):
    (tmp_path / "l").write_bytes(b"not a tar archive, only text" * 30)
    (tmp_path / "r").mkdir()
    with open(tmp_path / "l", "rb") as f, pytest.raises(InvalidLayer, match="not a tar archive"):
        apply_layer(f, str(tmp_path / "r"))


def test_a_default_acl_of_a_lower_directory_does_not_decide_modes(tmp_path):
    """A directory already in the tree (delete mode: the merged tree of lower layers) with a
    default ACL would give new files the ACL's modes: the archive's modes are set all the same."""
    import struct
    # version 2; USER_OBJ rwx, GROUP_OBJ r-x, OTHER ---
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF)
                                          for tag, perm in ((0x01, 7), (0x04, 5), (0x20, 0)))
    data = make_tar([reg("d/a", b"a", 0o644), reg("d/b", b"b", 0o644), reg("d/c", b"c", 0o755)])
    for how in ("s", "f"):
        (tmp_path / how / "d").mkdir(parents=True)
        try:
            os.setxattr(tmp_path / how / "d", "system.posix_acl_default", acl)
        except OSError as e:
            pytest.skip(f"no POSIX ACLs on {tmp_path}: {e.strerror}")
    (tmp_path / "l").write_bytes(data)
    apply_layer(io.BytesIO(data), str(tmp_path / "s"))
    with open(tmp_path / "l", "rb") as f:
        apply_layer(f, str(tmp_path / "f"))
    for how in ("s", "f"):
        assert [stat.S_IMODE(os.stat(tmp_path / how / "d" / n).st_mode) for n in "abc"] == [0o644, 0o644, 0o755]


def test_pseudo_files_and_unreadable_descriptors_are_streamed(tmp_path):
    """A regular file that tells no size (procfs) is read as a stream; a file opened for
    writing cannot be read by position either: the stream reports the error."""
    data = make_tar([reg("a", b"a")])
    (tmp_path / "l").write_bytes(data)
    (tmp_path / "r").mkdir()
    with open("/proc/self/status", "rb") as f, pytest.raises(InvalidLayer, match="not a tar archive"):
        apply_layer(f, str(tmp_path / "r"))
    with open(tmp_path / "l", "ab") as f, pytest.raises((LayerError, OSError)):
        apply_layer(f, str(tmp_path / "r"))  # type: ignore[arg-type]


# --- the inline paths for plain files (the stream's and the blob's) -------------------------

def sym(name: str, target: str) -> tuple:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, target, 1_500_000_000
    return ti, None


def link(name: str, target: str) -> tuple:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = tarfile.LNKTYPE, target
    return ti, None


@pytest.mark.parametrize("how", ["stream", "gzip"])
def test_streams_take_the_inline_path_for_plain_files(tmp_path, monkeypatch, how):
    """After the first plain file of a directory, the others of that directory are written
    without _Extractor.member; the result is the general path's."""
    import gzip

    calls: list[str] = []
    real = layers._Extractor.member

    def counting(self, reader, tar, info):
        calls.append(info.name)
        return real(self, reader, tar, info)

    members = [dirm("d", 0o750), *(reg(f"d/f{i}", b"x" * i, 0o640, mtime=1_600_000_000 + i) for i in range(40)),
               reg("d/suid", b"s", 0o4755), reg("d/owned", b"o", uid=1234, gid=4321), reg("top", b"t")]
    data = make_tar(members, tarfile.USTAR_FORMAT)
    ref = tmp_path / "ref"
    ref.mkdir()
    with open(tmp_path / "l", "wb") as f:
        f.write(data)
    with open(tmp_path / "l", "rb") as f:
        want = apply_layer(f, str(ref))
    monkeypatch.setattr(layers._Extractor, "member", counting)
    (tmp_path / "r").mkdir()
    stream = io.BytesIO(gzip.compress(data) if how == "gzip" else data)
    got = apply_layer(stream, str(tmp_path / "r"))
    assert calls == ["d", "d/f0", "top"]
    assert (got.diff_id, got.size) == (want.diff_id, want.size)
    assert describe_tree(str(tmp_path / "r")) == describe_tree(str(ref))
    t = describe_tree(str(tmp_path / "r"))
    assert t["d/suid"][1] == 0o4755 and t["d/f7"][1] == 0o640 and t["d/f7"][4] == 1_600_000_007
    if os.geteuid() == 0:
        assert t["d/owned"][2:4] == (1234, 4321)


def test_inline_paths_never_write_through_links(tmp_path):
    """A directory the inline path knows, replaced by a symlink to outside, and a name in it
    that a lower layer made a symlink to outside: nothing is written outside, any way."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    lower = make_tar([dirm("e"), sym("e/b", str(outside / "secret")), sym("e/c", "../../outside/secret")])
    upper = make_tar([dirm("d"), reg("d/a", b"1"), reg("d/a2", b"2"), sym("d", str(outside)),
                      reg("d/b", b"through"), reg("d/secret", b"through"),
                      dirm("e"), reg("e/a", b"1"), reg("e/b", b"replaced"), reg("e/c", b"replaced")])
    results = []
    for how in ("s", "f", "g"):
        root = tmp_path / how
        root.mkdir()
        apply_layer(io.BytesIO(lower), str(root))
    import gzip
    for how, src in (("s", io.BytesIO(upper)), ("g", io.BytesIO(gzip.compress(upper)))):
        results.append(apply_layer(src, str(tmp_path / how)))
    (tmp_path / "l").write_bytes(upper)
    with open(tmp_path / "l", "rb") as f:
        results.append(apply_layer(f, str(tmp_path / "f")))
    assert len({r.diff_id for r in results}) == 1
    assert sorted(os.listdir(tmp_path / "outside")) == ["secret"]
    assert (outside / "secret").read_text() == "s"
    trees = [describe_tree(str(tmp_path / how)) for how in ("s", "f", "g")]
    assert trees[0] == trees[1] == trees[2]
    for how in ("s", "f", "g"):
        root = tmp_path / how
        assert os.readlink(root / "d") == str(outside)
        assert (root / str(outside).lstrip("/") / "b").read_text() == "through"  # inside the root
        assert (root / "e/b").read_text() == "replaced" and not (root / "e/b").is_symlink()
        assert (root / "e/c").read_text() == "replaced" and not (root / "e/c").is_symlink()


def test_large_files_in_a_directory_the_inline_path_knows(tmp_path):
    """Files copied inside the kernel by the blob's inline path, with owners, modes and
    times set through the descriptor; links to them, later replacements and the
    directory's own attributes come out as in the stream."""
    big = os.urandom(300_000)
    members = [dirm("d", 0o755), reg("d/first", b"f"),
               reg("d/big", big, 0o644, mtime=1_234_567_890),
               reg("d/suid", big[::-1], 0o4750, mtime=7),
               reg("d/owned", big[:270_000], 0o600, uid=1234, gid=4321),
               link("d/link", "d/big"),
               reg("d/replaced", big, 0o644), reg("d/replaced", b"short", 0o600),
               reg("d/again", big[:262_144], 0o644), reg("d/again", big[:280_000], 0o640, mtime=99),
               dirm("d", 0o555)]
    a, t = same_both_ways(tmp_path, make_tar(members, tarfile.USTAR_FORMAT))
    assert isinstance(a, layers.Applied)
    assert (tmp_path / "f/d/big").read_bytes() == big and t["d/big"][4] == 1_234_567_890
    assert t["d/suid"][1] == 0o4750 and t["d/suid"][4] == 7
    assert os.path.samefile(tmp_path / "f/d/link", tmp_path / "f/d/big")
    assert (tmp_path / "f/d/replaced").read_bytes() == b"short" and t["d/replaced"][1] == 0o600
    assert (tmp_path / "f/d/again").read_bytes() == big[:280_000] and t["d/again"][1:5:3] == (0o640, 99)
    assert t["d"][1] == 0o555
    if os.geteuid() == 0:
        assert t["d/owned"][2:4] == (1234, 4321)


def test_copy_errors_of_inline_files_name_the_member_and_leak_nothing(tmp_path, monkeypatch):
    real = os.copy_file_range

    def fail_large(src, dst, count, *a):
        if count >= 256 << 10:
            raise OSError(errno.EIO, "input/output error")
        return real(src, dst, count, *a)

    monkeypatch.setattr(layers.os, "copy_file_range", fail_large)
    data = make_tar([dirm("d"), reg("d/a", b"a"), reg("d/big", os.urandom(400_000)),
                     *(reg(f"d/more{i}", os.urandom(300_000)) for i in range(12)), reg("d/z", b"z")])
    (tmp_path / "l").write_bytes(data)
    (tmp_path / "r").mkdir()
    fds = len(os.listdir("/proc/self/fd"))
    with open(tmp_path / "l", "rb") as f, pytest.raises(LayerError) as e:
        apply_layer(f, str(tmp_path / "r"))
    assert str(e.value) == "layer: member 'd/big': input/output error"
    assert len(os.listdir("/proc/self/fd")) == fds
    assert not [t for t in threading.enumerate() if t.name.startswith("skiff-layer")]
