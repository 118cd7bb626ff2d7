"""apply_layer / write_diff without root: formats, metadata, whiteouts, hostile archives, bad input.

Every test runs twice (the ``layer_source`` fixture): layers handed over as an in-memory stream
(the streaming path) and as a regular file (the path for content-store blobs: headers read with
pread, data copied inside the kernel, the digest computed by a second thread).

Every hostile case runs in a sandbox: the layer's root is ``sandbox/root`` next to
``sandbox/outside`` (a decoy tree); after the apply, nothing outside ``root`` may have changed
(the decoy, the sandbox itself, and the host's /etc/passwd are compared before and after).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile

import pytest
import zstandard

from skiff.images.errors import DigestMismatch, InvalidArgument
from skiff.images.layers import InvalidLayer, LayerError, apply_layer, clean_name, write_diff
from skiff.images.snapshots.fsutil import describe_tree

AS_ROOT = os.geteuid() == 0


@pytest.fixture(autouse=True, params=["stream", "file"])
def layer_source(request, monkeypatch):
    """``file``: each in-memory layer given to ``apply_layer`` is written to a file outside the
    test's directories first and applied from there (uncompressed ones take the blob path)."""
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


# --- building archives -----------------------------------------------------------------------

def reg(name: str, data: bytes = b"", mode: int = 0o644, mtime: int = 1_600_000_000, **kw) -> tuple:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    ti.mtime = mtime
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, data


def dirm(name: str, mode: int = 0o755, mtime: int = 1_500_000_000, **kw) -> tuple:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = mode
    ti.mtime = mtime
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, None


def sym(name: str, target: str) -> tuple:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.SYMTYPE
    ti.linkname = target
    ti.mode = 0o777
    return ti, None


def hard(name: str, target: str) -> tuple:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.LNKTYPE
    ti.linkname = target
    return ti, None


def special(name: str, kind: bytes, major: int = 0, minor: int = 0, mode: int = 0o644) -> tuple:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.devmajor, ti.devminor = major, minor
    ti.mode = mode
    return ti, None


def wh(path: str) -> tuple:
    d, b = os.path.split(path)
    return reg(os.path.join(d, ".wh." + b))


def opq(d: str) -> tuple:
    return reg(os.path.join(d, ".wh..wh..opq"))


def make_tar(members: list[tuple], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def apply(data: bytes, root: str, **kw) -> object:
    os.makedirs(root, exist_ok=True)
    return apply_layer(io.BytesIO(data), root, **kw)


def tree(root: str, **kw) -> dict:
    """describe_tree with the root's mtime left out: unless a layer has a root entry, that is
    the time the directory was created or last written, not part of the layer."""
    t = describe_tree(root, **kw)
    kind, mode, uid, gid, _mtime, *rest = t[""]
    t[""] = (kind, mode, uid, gid, None, *rest)
    return t


@pytest.fixture
def sandbox(tmp_path):
    """(root, check): check() asserts nothing outside root changed."""
    sb = tmp_path / "sandbox"
    root = sb / "root"
    outside = sb / "outside"
    os.makedirs(root)
    os.makedirs(outside / "etc")
    (outside / "etc" / "passwd").write_text("decoy\n")
    (outside / "secret").write_text("secret\n")
    with open("/etc/passwd", "rb") as f:
        host_passwd = hashlib.sha256(f.read()).hexdigest()
    before_outside = describe_tree(str(outside))
    before_sb = sorted(os.listdir(sb))
    before_tmp = sorted(os.listdir(tmp_path))

    def check() -> None:
        assert describe_tree(str(outside)) == before_outside
        assert sorted(os.listdir(sb)) == before_sb
        assert sorted(os.listdir(tmp_path)) == before_tmp
        with open("/etc/passwd", "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == host_passwd
        # nothing below root is a way out either: every symlink's text is kept, but the
        # tree holds only entries created inside root
        for dirpath, _dirs, _files in os.walk(root):
            assert os.path.realpath(dirpath).startswith(os.path.realpath(root))
    return str(root), check


# --- basics ----------------------------------------------------------------------------------

def test_regular_tree_metadata_and_diff_id(tmp_path):
    members = [
        dirm("etc", mode=0o750, mtime=1_000_000_001),
        reg("etc/hosts", b"127.0.0.1 localhost\n", mode=0o640, mtime=1_000_000_002),
        reg("bin/su", b"\x7fELF", mode=0o4755),
        reg("tmpdir/x", b"x"),
        dirm("tmpdir", mode=0o1777),
        sym("bin/sh", "busybox"),
        hard("bin/su2", "bin/su"),
        special("run/fifo", tarfile.FIFOTYPE, mode=0o600),
        dirm("ro", mode=0o555),
        reg("ro/file", b"inside a read-only dir"),
    ]
    data = make_tar(members)
    root = str(tmp_path / "r")
    got = apply(data, root)
    assert got.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert got.size == len(data)
    assert got.compression == "none"
    assert got.compressed_digest == got.diff_id
    t = tree(root)
    assert t["etc"][:2] == ("dir", 0o750)
    assert t["etc"][4] == 1_000_000_001  # directory mtime set after its content
    assert t["etc/hosts"][1] == 0o640 and t["etc/hosts"][4] == 1_000_000_002
    assert t["etc/hosts"][6][:2] == (20, hashlib.sha256(b"127.0.0.1 localhost\n").hexdigest())
    assert t["bin/su"][1] == 0o4755  # setuid kept
    assert t["tmpdir"][1] == 0o1777
    assert t["bin/sh"][0] == "symlink" and t["bin/sh"][6][0] == "busybox"
    assert t["bin/su2"][6][2] == t["bin/su"][6][2] == "bin/su"  # one inode
    assert t["run/fifo"][:2] == ("fifo", 0o600)
    assert t["ro"][1] == 0o555 and t["ro/file"][0] == "file"
    assert t["bin"][1] == 0o755  # implied directory


def test_timestamps_nanoseconds_and_atime(tmp_path):
    ti, data = reg("f", b"1")
    ti.pax_headers = {"mtime": "1700000000.123456789", "atime": "1600000000.5"}
    root = str(tmp_path / "r")
    apply(make_tar([(ti, data)]), root)
    st = os.lstat(os.path.join(root, "f"))
    assert st.st_mtime_ns == 1_700_000_000_123_456_789
    assert st.st_atime_ns == 1_600_000_000_500_000_000
    ti2, _ = reg("g", b"")
    ti2.mtime = 12345
    apply(make_tar([(ti2, b"")]), root)
    st = os.lstat(os.path.join(root, "g"))
    assert st.st_mtime_ns == st.st_atime_ns == 12345 * 10**9


def test_symlink_times_not_followed(tmp_path):
    root = str(tmp_path / "r")
    ti, _ = sym("l", "target")
    ti.mtime = 42
    apply(make_tar([reg("target", b"t", mtime=7), (ti, None)]), root)
    assert os.lstat(os.path.join(root, "l")).st_mtime == 42
    assert os.lstat(os.path.join(root, "target")).st_mtime == 7


def test_user_xattrs_from_pax(tmp_path):
    ti, data = reg("f", b"x")
    ti.pax_headers = {"SCHILY.xattr.user.note": "héllo", "SCHILY.xattr.user.bin": "\udcff\x01a"}
    root = str(tmp_path / "r")
    apply(make_tar([(ti, data), dirm("d", pax_headers={"SCHILY.xattr.user.dir": "yes"})]), root)
    assert os.getxattr(os.path.join(root, "f"), "user.note") == "héllo".encode()
    assert os.getxattr(os.path.join(root, "f"), "user.bin") == b"\xff\x01a"
    assert os.getxattr(os.path.join(root, "d"), "user.dir") == b"yes"


def test_libarchive_xattrs(tmp_path):
    ti, data = reg("f", b"x")
    ti.pax_headers = {"LIBARCHIVE.xattr.user.a%20b": "aGk"}  # base64 "hi", unpadded
    root = str(tmp_path / "r")
    apply(make_tar([(ti, data)]), root)
    assert os.getxattr(os.path.join(root, "f"), "user.a b") == b"hi"


def test_overlay_xattrs_in_a_layer_are_refused(tmp_path):
    ti, data = reg("f", b"x")
    ti.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc"}
    with pytest.raises(InvalidLayer, match="reserved for the overlay"):
        apply(make_tar([(ti, data)]), str(tmp_path / "r"))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_formats_and_long_names(tmp_path, fmt):
    long_dir = "/".join(["d" * 60] * 4)
    long_name = f"{long_dir}/{'f' * 200}"
    members = [reg("short", b"s"), sym("l" * 150, "t" * 180)] if fmt != tarfile.USTAR_FORMAT else [reg("short", b"s")]
    if fmt != tarfile.USTAR_FORMAT:
        members.append(reg(long_name, b"long"))
    root = str(tmp_path / "r")
    apply(make_tar(members, fmt), root)
    assert open(os.path.join(root, "short"), "rb").read() == b"s"
    if fmt != tarfile.USTAR_FORMAT:
        assert open(os.path.join(root, long_name), "rb").read() == b"long"
        assert os.readlink(os.path.join(root, "l" * 150)) == "t" * 180


def test_component_longer_than_255_is_an_error(tmp_path):
    with pytest.raises(LayerError, match="File name too long"):
        apply(make_tar([reg("x" * 300, b"")]), str(tmp_path / "r"))


def test_root_entry_sets_root_attributes(tmp_path):
    root = str(tmp_path / "r")
    apply(make_tar([dirm("./", mode=0o711, mtime=99), reg("./a", b"a")]), root)
    st = os.stat(root)
    assert stat.S_IMODE(st.st_mode) == 0o711 and st.st_mtime == 99
    assert os.path.exists(os.path.join(root, "a"))


def test_root_entry_must_be_a_directory(tmp_path):
    with pytest.raises(InvalidLayer, match="root must be a directory"):
        apply(make_tar([reg(".", b"x")]), str(tmp_path / "r"))


# --- compression -----------------------------------------------------------------------------

def test_gzip_zstd_and_none_give_the_same_tree_and_diff_id(tmp_path):
    data = make_tar([dirm("a"), reg("a/b", os.urandom(300_000)), reg("c", b"c" * 5000)])
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    trees = []
    for name, blob in [("none", data), ("gzip", gzip.compress(data)),
                       ("zstd", zstandard.ZstdCompressor().compress(data))]:
        root = str(tmp_path / name)
        got = apply(blob, root)
        assert got.compression == name
        assert got.diff_id == expected
        assert got.size == len(data)
        assert got.compressed_digest == "sha256:" + hashlib.sha256(blob).hexdigest()
        assert got.compressed_size == len(blob)
        trees.append(tree(root))
    assert trees[0] == trees[1] == trees[2]


def test_concatenated_gzip_members_and_zero_padding(tmp_path):
    data = make_tar([reg("a", b"a" * 10000), reg("b", b"b")])
    blob = gzip.compress(data[:3000]) + gzip.compress(data[3000:]) + b"\0" * 100
    got = apply(blob, str(tmp_path / "r"))
    assert got.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert open(tmp_path / "r" / "b", "rb").read() == b"b"


def test_gzip_trailing_garbage_is_an_error(tmp_path):
    data = make_tar([reg("a", b"a")])
    with pytest.raises(InvalidLayer, match="trailing data"):
        apply(gzip.compress(data) + b"garbage", str(tmp_path / "r"))


def test_truncated_gzip_is_an_error(tmp_path):
    blob = gzip.compress(make_tar([reg("a", os.urandom(100_000))]))
    with pytest.raises(InvalidLayer, match="gzip stream: truncated"):
        apply(blob[: len(blob) // 2], str(tmp_path / "r"))


def test_truncated_zstd_is_an_error(tmp_path):
    blob = zstandard.ZstdCompressor().compress(make_tar([reg("a", os.urandom(100_000))]))
    with pytest.raises(InvalidLayer):
        apply(blob[: len(blob) // 2], str(tmp_path / "r"))


def test_compressed_digest_is_checked(tmp_path):
    blob = gzip.compress(make_tar([reg("a", b"a")]))
    with pytest.raises(DigestMismatch, match="expected sha256:0000"):
        apply(blob, str(tmp_path / "r"), compressed_digest="sha256:" + "0" * 64)
    ok = "sha256:" + hashlib.sha256(blob).hexdigest()
    assert apply(blob, str(tmp_path / "r2"), compressed_digest=ok).compressed_digest == ok


def test_zstd_bomb_is_streamed(tmp_path):
    """A small zstd blob that expands to 256 MiB of one file: written in pieces, no blow-up."""
    size = 256 << 20
    ti = tarfile.TarInfo("big")
    ti.size = size
    header = ti.tobuf(tarfile.PAX_FORMAT)
    cctx = zstandard.ZstdCompressor(level=3)
    chunker = cctx.chunker(chunk_size=1 << 16)
    parts = [*chunker.compress(header)]
    zero = b"\0" * (1 << 20)
    for _ in range(size // len(zero)):
        parts.extend(chunker.compress(zero))
    parts.extend(chunker.compress(b"\0" * 1024))
    parts.extend(chunker.finish())
    blob = b"".join(parts)
    assert len(blob) < 1 << 20
    got = apply(blob, str(tmp_path / "r"))
    assert os.path.getsize(tmp_path / "r" / "big") == size
    assert got.size == len(header) + size + 1024


# --- bad input ---------------------------------------------------------------------------------

def test_empty_stream_is_an_empty_layer(tmp_path):
    got = apply(b"", str(tmp_path / "r"))
    assert got.size == 0 and got.diff_id == "sha256:" + hashlib.sha256(b"").hexdigest()
    assert os.listdir(tmp_path / "r") == []


def test_end_marker_only(tmp_path):
    got = apply(b"\0" * 1024, str(tmp_path / "r"))
    assert got.size == 1024 and os.listdir(tmp_path / "r") == []


def test_not_a_tar(tmp_path):
    with pytest.raises(InvalidLayer, match="not a tar archive"):
        apply(b"this is not a tar archive at all" * 40, str(tmp_path / "r"))


def test_corrupt_header_in_the_middle_is_an_error_not_the_end(tmp_path):
    data = bytearray(make_tar([reg("a", b"a" * 10), reg("b", b"b"), reg("c", b"c")]))
    # the second header starts after the first member's pax-less header and one data block
    data[1024 + 148:1024 + 156] = b"0000000\0"  # break its checksum
    with pytest.raises(InvalidLayer, match="bad tar header at byte 1024"):
        apply(bytes(data), str(tmp_path / "r"))


def test_truncated_member_data(tmp_path):
    data = make_tar([reg("a", b"a" * 5000)])
    with pytest.raises(InvalidLayer, match="truncated"):
        apply(data[:2048], str(tmp_path / "r"))


def test_truncated_header(tmp_path):
    data = make_tar([reg("a", b"a"), reg("b", b"b")])
    with pytest.raises(InvalidLayer, match="truncated tar header"):
        apply(data[:1024 + 100], str(tmp_path / "r"))


def test_unknown_entry_type(tmp_path):
    ti, _ = reg("x", b"")
    ti.type = b"Z"
    with pytest.raises(InvalidLayer, match="unsupported tar entry type"):
        apply(make_tar([(ti, b"")]), str(tmp_path / "r"))


def test_bad_whiteout_names(tmp_path):
    for name in (".wh.", "d/.wh..", "d/.wh.."):
        with pytest.raises(InvalidLayer, match="malformed whiteout"):
            apply(make_tar([reg(name)]), str(tmp_path / "r"))


def test_bad_mode_arguments(tmp_path):
    with pytest.raises(InvalidArgument):
        apply_layer(io.BytesIO(b""), str(tmp_path), whiteout="aufs")
    with pytest.raises(InvalidArgument):
        apply_layer(io.BytesIO(b""), str(tmp_path), lowers=["/x"])


def test_clean_name():
    assert clean_name("./a/../b/", "m") == "b"
    assert clean_name("/etc/passwd", "m") == "etc/passwd"
    assert clean_name("//x//y", "m") == "x/y"
    assert clean_name(".", "m") == ""
    for bad in ("..", "../x", "a/../../x", "/../x"):
        with pytest.raises(InvalidLayer, match="leaves the root"):
            clean_name(bad, "m")


# --- hostile archives ---------------------------------------------------------------------------

def test_dotdot_paths_are_refused(sandbox):
    root, check = sandbox
    for name in ("../outside/secret", "a/../../outside/x", "../../../../../../tmp/pwned"):
        with pytest.raises(InvalidLayer, match="leaves the root"):
            apply(make_tar([reg(name, b"pwned")]), root)
        check()


def test_absolute_paths_land_inside(sandbox):
    root, check = sandbox
    apply(make_tar([reg("/etc/passwd", b"inside"), reg("//tmp/x", b"x")]), root)
    assert open(os.path.join(root, "etc/passwd")).read() == "inside"
    assert open(os.path.join(root, "tmp/x")).read() == "x"
    check()


def test_symlink_to_root_then_file_through_it(sandbox):
    root, check = sandbox
    apply(make_tar([sym("escape", "/"), reg("escape/etc/passwd", b"pwned"),
                    sym("up", "../../.."), reg("up/outside/secret", b"pwned"),
                    sym("abs", os.path.dirname(root) + "/outside"), reg("abs/secret", b"pwned")]), root)
    # each write followed the link the way the container sees it: inside the root
    assert open(os.path.join(root, "etc/passwd")).read() == "pwned"
    assert open(os.path.join(root, "outside/secret")).read() == "pwned"
    assert open(os.path.join(root, os.path.dirname(root).lstrip("/"), "outside/secret")).read() == "pwned"
    check()


def test_symlink_at_the_entry_name_is_replaced_not_followed(sandbox):
    root, check = sandbox
    target = os.path.join(os.path.dirname(root), "outside", "secret")
    apply(make_tar([sym("f", target), reg("f", b"replaced")]), root)
    assert not os.path.islink(os.path.join(root, "f"))
    assert open(os.path.join(root, "f")).read() == "replaced"
    check()


def test_symlink_chain_and_loop(sandbox):
    root, check = sandbox
    apply(make_tar([sym("a", "b"), sym("b", "c"), sym("c", "../../../d"), reg("a/x", b"x")]), root)
    assert open(os.path.join(root, "d/x")).read() == "x"
    with pytest.raises(InvalidLayer, match="too many levels of symbolic links"):
        apply(make_tar([sym("l1", "l2"), sym("l2", "l1"), reg("l1/x", b"x")]), root)
    check()


def test_directory_replaced_by_symlink_mid_archive(sandbox):
    root, check = sandbox
    outside = os.path.join(os.path.dirname(root), "outside")
    apply(make_tar([dirm("a"), reg("a/f", b"1"), sym("a", outside), reg("a/secret", b"pwned"),
                    dirm("a/sub"), reg("a/sub/g", b"g")]), root)
    assert os.path.islink(os.path.join(root, "a"))
    inside = os.path.join(root, outside.lstrip("/"))
    assert open(os.path.join(inside, "secret")).read() == "pwned"
    assert open(os.path.join(inside, "sub/g")).read() == "g"
    check()


def test_hardlinks_to_outside_are_refused(sandbox):
    root, check = sandbox
    for target in ("../outside/secret", "../../../../etc/passwd"):
        with pytest.raises(InvalidLayer, match="leaves the root"):
            apply(make_tar([hard("h", target)]), root)
    # absolute and through a symlink: resolved inside the root, where nothing is there
    with pytest.raises(InvalidLayer, match="does not exist"):
        apply(make_tar([hard("h", "/etc/passwd")]), root)
    with pytest.raises(InvalidLayer, match="does not exist"):
        apply(make_tar([sym("s", "/"), hard("h", "s/etc/shadow")]), root)
    check()


def test_hardlink_to_a_symlink_links_the_symlink_itself(sandbox):
    root, check = sandbox
    apply(make_tar([sym("s", "/etc/passwd"), hard("h", "s")]), root)
    assert os.readlink(os.path.join(root, "h")) == "/etc/passwd"
    assert os.lstat(os.path.join(root, "h")).st_ino == os.lstat(os.path.join(root, "s")).st_ino
    check()


def test_hardlink_to_a_directory_is_refused(sandbox):
    root, check = sandbox
    with pytest.raises(InvalidLayer, match="is a directory"):
        apply(make_tar([dirm("d"), hard("h", "d")]), root)
    check()


def test_hardlink_then_write_through_it_does_not_escape(sandbox):
    root, check = sandbox
    apply(make_tar([reg("a", b"orig"), hard("b", "a"), reg("b", b"new")]), root)
    # the second "b" replaced the link (new inode), "a" is unchanged
    assert open(os.path.join(root, "a")).read() == "orig"
    assert open(os.path.join(root, "b")).read() == "new"
    check()


def test_device_nodes_need_privilege(sandbox):
    """As root the node is created (as Docker does); without CAP_MKNOD the layer fails."""
    root, check = sandbox
    layer = make_tar([special("dev/sda", tarfile.BLKTYPE, 8, 0)])
    if AS_ROOT:
        apply(layer, root)
        st = os.lstat(os.path.join(root, "dev/sda"))
        assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(8, 0)
    else:
        with pytest.raises(LayerError, match="need CAP_MKNOD"):
            apply(layer, root)
    check()


def test_whiteout_form_device_in_a_layer_is_refused(sandbox):
    root, check = sandbox
    with pytest.raises(InvalidLayer, match="whiteout form"):
        apply(make_tar([special("x", tarfile.CHRTYPE, 0, 0)]), root)
    check()


def test_huge_declared_size_with_missing_data(sandbox):
    root, check = sandbox
    ti = tarfile.TarInfo("huge")
    ti.size = 1 << 40
    data = ti.tobuf(tarfile.PAX_FORMAT) + b"x" * 4096
    with pytest.raises(InvalidLayer, match="truncated"):
        apply(data, root)
    check()


def test_whiteout_names_cannot_climb(sandbox):
    root, check = sandbox
    os.makedirs(os.path.join(root, "keep"))
    with pytest.raises(InvalidLayer, match="leaves the root"):
        apply(make_tar([reg("../.wh.outside")]), root)
    apply(make_tar([sym("s", "/"), reg("s/.wh.keep")]), root)  # follows s inside the root
    assert not os.path.exists(os.path.join(root, "keep"))
    check()


# --- sparse files --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_members_stay_sparse(tmp_path, fmt):
    src = tmp_path / "src"
    src.mkdir()
    size = 64 << 20
    with open(src / "sparse", "wb") as f:
        f.truncate(size)
        f.seek(10 << 20)
        f.write(b"data in the middle")
        f.seek(size - 5)
        f.write(b"tail!")
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", "-C", str(src), f"--format={fmt}", "--sparse", "-cf", str(archive), "sparse"],
                   check=True)
    root = str(tmp_path / "r")
    os.makedirs(root)
    with open(archive, "rb") as f:
        got = apply_layer(f, root)
    assert got.size == os.path.getsize(archive)
    out = os.path.join(root, "sparse")
    st = os.stat(out)
    assert st.st_size == size
    assert st.st_blocks * 512 < 1 << 20  # holes kept
    with open(out, "rb") as f:
        f.seek(10 << 20)
        assert f.read(18) == b"data in the middle"
        f.seek(size - 5)
        assert f.read() == b"tail!"
        f.seek(5 << 20)
        assert f.read(16) == b"\0" * 16


def test_sparse_file_of_a_terabyte(tmp_path):
    """A 1 TiB sparse member with a few bytes of data: no terabyte read or written."""
    ti = tarfile.TarInfo("tb")
    ti.type = tarfile.REGTYPE
    size = 1 << 40
    payload = b"end"
    ti.size = 512
    ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "tb",
                      "GNU.sparse.realsize": str(size)}
    sparse_map = f"1\n{size - 3}\n3\n".encode().ljust(512, b"\0")
    ti.size = len(sparse_map) + 512
    body = sparse_map + payload.ljust(512, b"\0")
    blob = ti.tobuf(tarfile.PAX_FORMAT) + body + b"\0" * 1024
    root = str(tmp_path / "r")
    apply(blob, root)
    st = os.stat(os.path.join(root, "tb"))
    assert st.st_size == size
    assert st.st_blocks * 512 <= 1 << 16
    with open(os.path.join(root, "tb"), "rb") as f:
        f.seek(size - 3)
        assert f.read() == b"end"


def test_bad_sparse_map(tmp_path):
    ti = tarfile.TarInfo("s")
    ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "s",
                      "GNU.sparse.realsize": "100"}
    sparse_map = b"1\n90\n50\n".ljust(512, b"\0")  # runs past the end of the file
    ti.size = 1024
    blob = ti.tobuf(tarfile.PAX_FORMAT) + sparse_map + b"x" * 512 + b"\0" * 1024
    with pytest.raises(InvalidLayer, match="bad sparse map"):
        apply(blob, str(tmp_path / "r"))


# --- whiteouts, delete mode ----------------------------------------------------------------------

def base_layer() -> bytes:
    return make_tar([dirm("a"), reg("a/1", b"1"), reg("a/2", b"2"), dirm("a/sub"), reg("a/sub/x", b"x"),
                     dirm("b"), reg("b/keep", b"k"), reg("top", b"t"), sym("link", "a")])


def test_whiteouts_delete_mode(tmp_path):
    root = str(tmp_path / "r")
    apply(base_layer(), root)
    apply(make_tar([wh("a/1"), wh("a/sub"), wh("top"), wh("link"), wh("missing"), wh("nodir/x")]), root)
    t = tree(root)
    assert set(t) == {"", "a", "a/2", "b", "b/keep"}


def test_opaque_delete_mode_keeps_this_layers_entries(tmp_path):
    root = str(tmp_path / "r")
    apply(base_layer(), root)
    # the opaque marker after and before new entries of the same layer
    apply(make_tar([dirm("a"), reg("a/new", b"n"), opq("a"), opq("b"), reg("b/new2", b"m")]), root)
    t = tree(root)
    assert sorted(k for k in t if k.startswith("a/")) == ["a/new"]
    assert sorted(k for k in t if k.startswith("b/")) == ["b/new2"]


def test_whiteout_and_file_of_the_same_layer(tmp_path):
    """A whiteout hides lower content only; the layer's own entry of that name stays."""
    root = str(tmp_path / "r")
    apply(base_layer(), root)
    apply(make_tar([reg("top", b"new top"), wh("top"), wh("a"), reg("a/fresh", b"f")]), root)
    assert open(os.path.join(root, "top")).read() == "new top"
    assert sorted(os.listdir(os.path.join(root, "a"))) == ["fresh"]


def test_aufs_metadata_is_skipped(tmp_path):
    root = str(tmp_path / "r")
    apply(make_tar([dirm(".wh..wh.plnk"), reg(".wh..wh.plnk/123.456", b"x"), reg("f", b"f")]), root)
    assert os.listdir(root) == ["f"]


def test_oci_mode_keeps_whiteout_files(tmp_path):
    root = str(tmp_path / "r")
    apply(make_tar([reg(".wh.x"), opq("d")]), root, whiteout="oci")
    assert os.path.exists(os.path.join(root, ".wh.x"))
    assert os.path.exists(os.path.join(root, "d/.wh..wh..opq"))


def test_file_replaces_directory_and_back(tmp_path):
    root = str(tmp_path / "r")
    apply(base_layer(), root)
    apply(make_tar([reg("a", b"now a file"), dirm("top"), reg("top/in", b"i")]), root)
    assert open(os.path.join(root, "a")).read() == "now a file"
    assert os.listdir(os.path.join(root, "top")) == ["in"]


def test_directory_entry_merges(tmp_path):
    root = str(tmp_path / "r")
    apply(base_layer(), root)
    apply(make_tar([dirm("a", mode=0o700, mtime=5), reg("a/3", b"3")]), root)
    t = tree(root)
    assert {"a/1", "a/2", "a/3"} <= set(t)
    assert t["a"][1] == 0o700 and t["a"][4] == 5


def test_file_below_a_file_is_an_error(tmp_path):
    root = str(tmp_path / "r")
    apply(base_layer(), root)
    with pytest.raises(InvalidLayer, match="top is not a directory"):
        apply(make_tar([reg("top/x", b"x")]), root)


# --- whiteouts, overlay mode (user xattrs, no mount) ---------------------------------------------

def test_overlay_mode_writes_overlay_whiteouts(tmp_path):
    lower = str(tmp_path / "lower")
    upper = str(tmp_path / "upper")
    apply(base_layer(), lower)
    apply(make_tar([wh("a/1"), opq("b"), reg("b/new", b"n"), wh("top"), reg("a/sub/y", b"y"),
                    wh("missing")]),
          upper, whiteout="overlay", lowers=[lower], overlay_xattr="user")
    st = os.lstat(os.path.join(upper, "a/1"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(os.path.join(upper, "b"), "user.overlay.opaque") == b"y"
    assert os.path.exists(os.path.join(upper, "b/new"))
    assert stat.S_ISCHR(os.lstat(os.path.join(upper, "top")).st_mode)
    assert not os.path.lexists(os.path.join(upper, "missing"))  # nothing below to hide
    # a/sub was copied up with the lower's attributes to hold y (its mtime then moves, as
    # a kernel copy-up's would)
    up, low = os.stat(os.path.join(upper, "a/sub")), os.stat(os.path.join(lower, "a/sub"))
    assert (up.st_mode, up.st_uid, up.st_gid) == (low.st_mode, low.st_uid, low.st_gid)
    assert os.listdir(os.path.join(upper, "a/sub")) == ["y"]


def test_overlay_mode_follows_lower_symlinks_inside_the_merged_view(tmp_path):
    lower = str(tmp_path / "lower")
    upper = str(tmp_path / "upper")
    apply(make_tar([dirm("usr"), dirm("usr/lib"), sym("lib", "usr/lib"), sym("root", "/")]), lower)
    apply(make_tar([reg("lib/libc.so", b"c"), reg("root/etc/x", b"x")]),
          upper, whiteout="overlay", lowers=[lower], overlay_xattr="user")
    assert open(os.path.join(upper, "usr/lib/libc.so")).read() == "c"
    assert not os.path.lexists(os.path.join(upper, "lib"))
    assert open(os.path.join(upper, "etc/x")).read() == "x"


def test_overlay_mode_hardlink_to_a_lower_file_copies_it_up(tmp_path):
    lower = str(tmp_path / "lower")
    upper = str(tmp_path / "upper")
    apply(make_tar([dirm("d"), reg("d/f", b"lower data", mode=0o751)]), lower)
    apply(make_tar([hard("g", "d/f")]), upper, whiteout="overlay", lowers=[lower], overlay_xattr="user")
    a, b = os.lstat(os.path.join(upper, "d/f")), os.lstat(os.path.join(upper, "g"))
    assert a.st_ino == b.st_ino and stat.S_IMODE(a.st_mode) == 0o751
    assert open(os.path.join(upper, "g")).read() == "lower data"


def test_overlay_mode_whiteout_then_recreate_is_opaque(tmp_path):
    lower = str(tmp_path / "lower")
    upper = str(tmp_path / "upper")
    apply(base_layer(), lower)
    apply(make_tar([wh("a"), reg("a/again", b"x")]), upper, whiteout="overlay", lowers=[lower],
          overlay_xattr="user")
    assert os.getxattr(os.path.join(upper, "a"), "user.overlay.opaque") == b"y"
    assert os.listdir(os.path.join(upper, "a")) == ["again"]


def test_overlay_mode_opaque_root_whites_out_each_lower_entry(tmp_path):
    lower = str(tmp_path / "lower")
    upper = str(tmp_path / "upper")
    apply(base_layer(), lower)
    apply(make_tar([opq(""), reg("only", b"o")]), upper, whiteout="overlay", lowers=[lower],
          overlay_xattr="user")
    for n in ("a", "b", "top", "link"):
        st = os.lstat(os.path.join(upper, n))
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert open(os.path.join(upper, "only")).read() == "o"


# --- write_diff ------------------------------------------------------------------------------

def read_members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return t.getmembers()


def copy_of(src: str, dst: str) -> str:
    from skiff.images.snapshots.fsutil import copy_tree
    os.makedirs(dst)
    copy_tree(src, dst)
    return dst


def test_compare_diff_round_trip(tmp_path):
    lower = str(tmp_path / "lower")
    apply(base_layer(), lower)
    upper = copy_of(lower, str(tmp_path / "upper"))
    # changes: delete a file and a dir, modify, add, chmod, new hardlinks, replace a dir with a file
    os.unlink(os.path.join(upper, "a/1"))
    import shutil
    shutil.rmtree(os.path.join(upper, "a/sub"))
    with open(os.path.join(upper, "a/2"), "wb") as f:
        f.write(b"2 changed")
    os.chmod(os.path.join(upper, "b/keep"), 0o600)
    os.mkdir(os.path.join(upper, "new"))
    with open(os.path.join(upper, "new/f"), "wb") as f:
        f.write(b"new")
    os.link(os.path.join(upper, "new/f"), os.path.join(upper, "new/f2"))
    os.unlink(os.path.join(upper, "top"))
    os.mkdir(os.path.join(upper, "top"))
    os.setxattr(os.path.join(upper, "new/f"), "user.x", b"1")
    out = io.BytesIO()
    d = write_diff([lower], upper, out, mode="compare")
    blob = out.getvalue()
    assert d.diff_id == "sha256:" + hashlib.sha256(blob).hexdigest() and d.size == len(blob)
    names = [m.name for m in read_members(blob)]
    for i, n in enumerate(names):  # a directory comes before what it holds
        parent = os.path.dirname(n)
        assert not parent or parent in names[:i]
    assert "a/.wh.1" in names and "a/.wh.sub" in names
    assert "b/keep" in names and "b" in names  # the parent of a change comes with it
    assert "a/2" in names and "new/f2" in names
    assert "link" not in names and "b/.wh.keep" not in names
    links = {m.name: m.linkname for m in read_members(blob) if m.islnk()}
    assert links == {"new/f2": "new/f"}
    target = copy_of(lower, str(tmp_path / "target"))
    apply(blob, target)
    assert tree(target) == tree(upper)


def test_compare_diff_against_nothing_is_the_whole_tree(tmp_path):
    src = str(tmp_path / "src")
    apply(base_layer(), src)
    out = io.BytesIO()
    write_diff([], src, out, mode="compare")
    again = str(tmp_path / "again")
    apply(out.getvalue(), again)
    assert tree(again) == tree(src)


def test_compare_diff_detects_same_second_rewrites(tmp_path):
    lower = str(tmp_path / "lower")
    apply(make_tar([reg("f", b"aaaa", mtime=1000)]), lower)
    upper = copy_of(lower, str(tmp_path / "upper"))
    with open(os.path.join(upper, "f"), "r+b") as f:
        f.write(b"bbbb")
    os.utime(os.path.join(upper, "f"), (1000, 1000))
    out = io.BytesIO()
    write_diff([lower], upper, out, mode="compare")
    assert [m.name for m in read_members(out.getvalue())] == ["f"]


def test_overlay_diff_from_an_upper_dir(tmp_path):
    lower = str(tmp_path / "lower")
    upper = str(tmp_path / "upper")
    apply(base_layer(), lower)
    layer = make_tar([wh("a/1"), opq("b"), reg("b/new", b"n"), reg("c", b"c"), hard("c2", "c")])
    apply(layer, upper, whiteout="overlay", lowers=[lower], overlay_xattr="user")
    out = io.BytesIO()
    d = write_diff([lower], upper, out, mode="overlay", overlay_xattr="user", compression="gzip")
    blob = gzip.decompress(out.getvalue())
    assert d.diff_id == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert d.digest == "sha256:" + hashlib.sha256(out.getvalue()).hexdigest()
    assert d.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    members = read_members(blob)
    names = [m.name for m in members]
    assert names == ["a", "a/.wh.1", "b", "b/.wh..wh..opq", "b/new", "c", "c2"]
    assert members[-1].islnk() and members[-1].linkname == "c"
    for m in members:  # overlay's own xattrs never leave
        assert not any("overlay" in k for k in m.pax_headers)
    # applied to the lower tree in delete mode it gives the merged view
    merged = copy_of(lower, str(tmp_path / "merged"))
    apply(blob, merged)
    t = tree(merged)
    assert "a/1" not in t and sorted(k for k in t if k.startswith("b/")) == ["b/new"]
    assert t["c"][6][2] == t["c2"][6][2]


def test_write_diff_argument_errors(tmp_path):
    with pytest.raises(InvalidArgument, match="compression"):
        write_diff([], str(tmp_path), io.BytesIO(), compression="lz4")
    with pytest.raises(InvalidArgument, match="one lower tree"):
        write_diff([str(tmp_path), str(tmp_path)], str(tmp_path), io.BytesIO(), mode="compare")
    with pytest.raises(InvalidArgument, match="not a directory"):
        write_diff([], str(tmp_path / "nope"), io.BytesIO())
