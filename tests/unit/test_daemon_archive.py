"""skiff.daemon.containers.archive on plain directories standing in for a container's root:
Go FileMode bits, path stat, tars out, hostile uploads in, overlay changes."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import tarfile

import pytest

from skiff.daemon.api.errors import Conflict, InvalidParameter, NotFound
from skiff.daemon.containers import archive as ar


def _tar(*members: tuple[str, str, object]) -> io.BytesIO:
    """members: (type, name, data-or-linkname); type one of file/dir/sym/hard/fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for kind, name, arg in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if kind == "file":
                data = arg if isinstance(arg, bytes) else str(arg).encode()
                info.size = len(data)
                info.mode = 0o640
                t.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(arg)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(arg)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            t.addfile(info)
    buf.seek(0)
    return buf


@pytest.fixture
def tree(tmp_path):
    """A container root and, beside it, a 'host' directory nothing may reach."""
    root = tmp_path / "root"
    host = tmp_path / "host"
    for d in (root / "etc", root / "tmp", root / "data", host):
        d.mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:container\n")
    (host / "secret").write_text("host secret\n")
    os.chmod(root / "tmp", 0o1777)
    (root / "tmp" / "x").symlink_to("/")
    (root / "tmp" / "up").symlink_to("../../../../../../../../")
    (root / "tmp" / "hostdir").symlink_to(str(host))
    (root / "tmp" / "pr").symlink_to("/proc/1/root")
    (root / "link-to-passwd").symlink_to("etc/passwd")
    return root, host


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return t.getnames()


def _read(root, path: str) -> bytes:
    out = io.BytesIO()
    e = ar.open_entry(str(root), ar.clean_container_path(path), "c")
    try:
        ar.write_archive(e, out)
    finally:
        e.close()
    return out.getvalue()


# -- stat ------------------------------------------------------------------------------------

def test_go_file_mode_bits():
    assert ar.go_file_mode(stat.S_IFDIR | 0o1777) == (1 << 31) | (1 << 20) | 0o777
    assert ar.go_file_mode(stat.S_IFREG | 0o4755) == (1 << 23) | 0o755
    assert ar.go_file_mode(stat.S_IFREG | 0o2755) == (1 << 22) | 0o755
    assert ar.go_file_mode(stat.S_IFLNK | 0o777) == (1 << 27) | 0o777
    assert ar.go_file_mode(stat.S_IFCHR | 0o666) == (1 << 26) | (1 << 21) | 0o666
    assert ar.go_file_mode(stat.S_IFBLK | 0o660) == (1 << 26) | 0o660
    assert ar.go_file_mode(stat.S_IFIFO | 0o644) == (1 << 25) | 0o644
    assert ar.go_file_mode(stat.S_IFSOCK | 0o755) == (1 << 24) | 0o755
    # the /tmp of docker-api-surface.md's capture
    assert ar.go_file_mode(stat.S_IFDIR | 0o1777) == 2148532735


def test_go_time():
    assert ar.go_time(1_600_000_000_000_000_000) == "2020-09-13T12:26:40Z"
    assert ar.go_time(1_600_000_000_120_000_000) == "2020-09-13T12:26:40.12Z"


def test_clean_container_path():
    assert ar.clean_container_path("etc/passwd") == "/etc/passwd"
    assert ar.clean_container_path("/a/../../b") == "/b"
    assert ar.clean_container_path("/tmp/") == "/tmp/"
    assert ar.clean_container_path("/tmp/.") == "/tmp/."
    assert ar.clean_container_path("/") == "/"
    with pytest.raises(InvalidParameter, match="empty"):
        ar.clean_container_path("")
    with pytest.raises(InvalidParameter, match="NUL"):
        ar.clean_container_path("/a\0b")


def test_stat_header_is_base64_json():
    h = ar.stat_header({"name": "tmp", "size": 1, "mode": 2, "mtime": "x", "linkTarget": ""})
    assert json.loads(base64.b64decode(h)) == {"name": "tmp", "size": 1, "mode": 2, "mtime": "x",
                                               "linkTarget": ""}


def test_path_stat_file_dir_and_symlink(tree):
    root, _ = tree
    st = ar.path_stat(str(root), "/etc/passwd", "c")
    assert st["name"] == "passwd" and st["size"] == len("root:x:0:0:container\n")
    assert st["mode"] == os.stat(root / "etc" / "passwd").st_mode & 0o777 and st["linkTarget"] == ""
    st = ar.path_stat(str(root), "/tmp", "c")
    assert st["mode"] == 2148532735
    st = ar.path_stat(str(root), "/link-to-passwd", "c")
    assert st["mode"] & (1 << 27) and st["linkTarget"] == "/etc/passwd"
    # symlinks leading out resolve inside the root
    assert ar.path_stat(str(root), "/tmp/x", "c")["linkTarget"] == "/"
    assert ar.path_stat(str(root), "/tmp/up", "c")["linkTarget"] == "/"
    # followed when the path asks for the directory
    assert ar.path_stat(str(root), "/tmp/x/", "c")["mode"] & (1 << 31)


def test_trailing_slash_on_a_file_is_refused(tree):
    root, _ = tree
    with pytest.raises(InvalidParameter, match="/etc/passwd/ in container c: not a directory"):
        ar.path_stat(str(root), "/etc/passwd/", "c")


def test_path_stat_not_found_as_docker(tree):
    root, host = tree
    with pytest.raises(NotFound, match=r"^Could not find the file /no/such in container c1$"):
        ar.path_stat(str(root), "/no/such", "c1")
    # the host directory exists, but not inside the container
    for p in (f"/tmp/x{host}/secret", f"/tmp/up{host}/secret", "/tmp/hostdir/secret",
              f"/tmp/pr{host}/secret"):
        with pytest.raises(NotFound):
            ar.path_stat(str(root), p, "c")


# -- reading ---------------------------------------------------------------------------------

def test_archive_of_file_and_dir(tree):
    root, _ = tree
    data = _read(root, "/etc/passwd")
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        assert t.getnames() == ["passwd"]
        f = t.extractfile("passwd")
        assert f is not None and f.read() == b"root:x:0:0:container\n"
    assert _names(_read(root, "/etc")) == ["etc", "etc/passwd"]
    assert _names(_read(root, "/etc/.")) == [".", "./passwd"]


def test_archive_never_reads_the_host_through_symlinks(tree):
    root, host = tree
    # the symlink itself is archived, not followed
    with tarfile.open(fileobj=io.BytesIO(_read(root, "/tmp/x"))) as t:
        (m,) = t.getmembers()
        assert m.issym() and m.linkname == "/"
    with tarfile.open(fileobj=io.BytesIO(_read(root, "/tmp/hostdir"))) as t:
        (m,) = t.getmembers()
        assert m.issym()
    # through a symlink in a parent: the container's tree, never the host's
    with tarfile.open(fileobj=io.BytesIO(_read(root, "/tmp/x/etc/passwd"))) as t:
        f = t.extractfile("passwd")
        assert f is not None and f.read() == b"root:x:0:0:container\n"
    with tarfile.open(fileobj=io.BytesIO(_read(root, "/tmp/up/etc/passwd"))) as t:
        f = t.extractfile("passwd")
        assert f is not None and f.read() == b"root:x:0:0:container\n"
    for p in ("/tmp/hostdir/secret", f"/tmp/x{host}", f"/tmp/pr{host}/secret", "/tmp/hostdir/"):
        with pytest.raises(NotFound):
            _read(root, p)


def test_archive_hard_links_and_export(tree):
    root, _ = tree
    os.link(root / "etc" / "passwd", root / "etc" / "passwd2")
    with tarfile.open(fileobj=io.BytesIO(_read(root, "/etc"))) as t:
        m = t.getmember("etc/passwd2")
        assert m.islnk() and m.linkname == "etc/passwd"
    out = io.BytesIO()
    ar.write_export(str(root), out)
    names = _names(out.getvalue())
    assert "etc/passwd" in names and "tmp/x" in names and not any(n.startswith(("/", "./")) for n in names)


# -- writing ---------------------------------------------------------------------------------

def _put(root, path, tar, **kw):
    return ar.extract_archive(str(root), ar.clean_container_path(path), "c", tar, **kw)


def test_extract_file_dir_symlink_hardlink(tree):
    root, _ = tree
    n = _put(root, "/tmp", _tar(("dir", "d", None), ("file", "d/f", "hello"), ("sym", "d/s", "f"),
                                ("hard", "d/h", "d/f"), ("fifo", "d/p", None)))
    assert n == 5
    assert (root / "tmp" / "d" / "f").read_text() == "hello"
    assert stat.S_IMODE(os.stat(root / "tmp" / "d" / "f").st_mode) == 0o640
    assert os.readlink(root / "tmp" / "d" / "s") == "f"
    assert os.stat(root / "tmp" / "d" / "h").st_ino == os.stat(root / "tmp" / "d" / "f").st_ino
    assert stat.S_ISFIFO(os.lstat(root / "tmp" / "d" / "p").st_mode)
    assert os.stat(root / "tmp" / "d").st_mtime == 1_600_000_000


def test_extract_owner_override(tree):
    root, _ = tree
    _put(root, "/tmp", _tar(("file", "o", "x")), owner=(1234, 5678))
    st = os.stat(root / "tmp" / "o")
    assert (st.st_uid, st.st_gid) == (1234, 5678)


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/../escape", "./../escape"])
def test_extract_refuses_climbing_names(tree, name):
    root, _ = tree
    with pytest.raises(InvalidParameter, match="leaves the extraction directory"):
        _put(root, "/tmp", _tar(("file", name, "pwned")))
    assert not (root / "escape").exists() and not (root.parent / "escape").exists()


def test_extract_absolute_names_stay_inside(tree):
    root, host = tree
    _put(root, "/tmp", _tar(("file", f"{host}/secret", "not the host")))
    assert (host / "secret").read_text() == "host secret\n"
    assert (root / "tmp" / str(host).lstrip("/") / "secret").read_text() == "not the host"


@pytest.mark.parametrize("link", ["/", "../../../../../../..", "/proc/1/root", "HOST"])
def test_extract_through_symlinks_stays_inside(tree, link):
    root, host = tree
    target = str(host) if link == "HOST" else link
    # a symlink the archive plants, then a member through it
    _put(root, "/tmp", _tar(("sym", "l", target), ("file", f"l{host}/secret", "pwned"),
                            ("file", "l/planted", "inside")))
    assert (host / "secret").read_text() == "host secret\n"
    assert not (host.parent / "planted").exists() and not os.path.exists("/planted")
    # a symlink already in the container
    _put(root, "/tmp/x", _tar(("file", f"{str(host).lstrip('/')}/secret", "pwned2")))
    assert (host / "secret").read_text() == "host secret\n"
    assert (root / str(host).lstrip("/") / "secret").read_text() == "pwned2"


def test_extract_into_symlinked_destination_stays_inside(tree):
    root, host = tree
    for dest in ("/tmp/hostdir", "/tmp/up", "/tmp/pr"):
        try:
            _put(root, dest, _tar(("file", "secret", "pwned")))
        except NotFound:
            pass   # /tmp/hostdir and /tmp/pr lead nowhere inside this root
    assert (host / "secret").read_text() == "host secret\n"
    assert (root / "secret").read_text() == "pwned"   # /tmp/up is the container's /


def test_extract_hardlink_escapes_refused(tree):
    root, host = tree
    with pytest.raises(InvalidParameter, match="leaves the extraction directory"):
        _put(root, "/tmp", _tar(("hard", "h", "../../etc/passwd")))
    with pytest.raises(InvalidParameter, match="does not exist"):
        _put(root, "/tmp", _tar(("hard", "h", f"x{host}/secret")))   # /tmp/x -> / is the container's /
    with pytest.raises(InvalidParameter, match="is a directory"):
        _put(root, "/", _tar(("hard", "h", "etc")))
    # through a symlink: resolved in the container, so it is the container's passwd
    _put(root, "/tmp", _tar(("hard", "h", "x/etc/passwd")))
    assert os.stat(root / "tmp" / "h").st_ino == os.stat(root / "etc" / "passwd").st_ino
    assert os.stat(host / "secret").st_nlink == 1


def test_extract_replaces_a_symlink_at_the_name_instead_of_writing_through(tree):
    root, host = tree
    (root / "tmp" / "trap").symlink_to(str(host / "secret"))
    _put(root, "/tmp", _tar(("file", "trap", "replaced")))
    assert (host / "secret").read_text() == "host secret\n"
    assert not os.path.islink(root / "tmp" / "trap") and (root / "tmp" / "trap").read_text() == "replaced"


def test_extract_destination_errors(tree):
    root, _ = tree
    with pytest.raises(NotFound, match="Could not find the file /nope in container c"):
        _put(root, "/nope", _tar(("file", "f", "x")))
    with pytest.raises(InvalidParameter, match="extraction point is not a directory"):
        _put(root, "/etc/passwd", _tar(("file", "f", "x")))
    with pytest.raises(InvalidParameter, match="not a tar archive|bad tar"):
        _put(root, "/tmp", io.BytesIO(b"this is not a tar" * 100))
    with pytest.raises(ar.Forbidden, match="read-only"):
        _put(root, "/tmp", _tar(("file", "f", "x")), writable=lambda p: False)


def test_extract_no_overwrite_dir_non_dir(tree):
    root, _ = tree
    with pytest.raises(Conflict, match="cannot overwrite directory '/etc' with non-directory"):
        _put(root, "/", _tar(("file", "etc", "x")), no_overwrite_dir_non_dir=True)
    with pytest.raises(Conflict, match="cannot overwrite non-directory '/etc/passwd' with directory"):
        _put(root, "/etc", _tar(("dir", "passwd", None)), no_overwrite_dir_non_dir=True)
    assert (root / "etc" / "passwd").read_text() == "root:x:0:0:container\n"
    _put(root, "/etc", _tar(("dir", "passwd", None)))   # without the option: replaced
    assert (root / "etc" / "passwd").is_dir()


def test_extract_refuses_overlay_xattrs(tree):
    root, _ = tree
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("d")
        info.type = tarfile.DIRTYPE
        info.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y"}
        t.addfile(info)
    buf.seek(0)
    with pytest.raises(InvalidParameter, match="trusted.overlay.opaque"):
        _put(root, "/tmp", buf)


# -- changes ---------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are 0/0 character devices (CAP_MKNOD)")
def test_overlay_changes(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for d in (lower / "etc", lower / "usr" / "bin", lower / "var" / "old", lower / "tmp", upper):
        d.mkdir(parents=True)
    (lower / "etc" / "passwd").write_text("a")
    (lower / "etc" / "group").write_text("g")
    (lower / "usr" / "bin" / "tool").write_text("t")
    (lower / "var" / "old" / "f").write_text("f")
    (lower / "var" / "old" / "g").write_text("g")
    # the container: modify /etc/passwd, delete /etc/group, add /new, replace /var/old (opaque)
    (upper / "etc").mkdir()
    (upper / "etc" / "passwd").write_text("b")
    os.mknod(upper / "etc" / "group", stat.S_IFCHR | 0o600, 0)
    (upper / "new").write_text("n")
    (upper / "var" / "old").mkdir(parents=True)
    os.setxattr(upper / "var" / "old", "trusted.overlay.opaque", b"y")
    (upper / "var" / "old" / "g").write_text("g2")
    # runc's mount points (Docker's init layer) are not reported
    (upper / "proc").mkdir()
    (upper / "etc" / "hostname").write_text("")
    got = ar.overlay_changes(str(upper), [str(lower)])
    kinds = {c["Path"]: c["Kind"] for c in got}
    assert kinds == {"/etc": 0, "/etc/passwd": 0, "/etc/group": 2, "/new": 1, "/var": 0, "/var/old": 0,
                     "/var/old/f": 2, "/var/old/g": 0}
    assert [c["Path"] for c in got] == sorted(kinds, key=lambda p: p.replace("/", "\0"))


def test_changes_of_a_layerless_snapshot(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").write_text("x")
    got = ar.overlay_changes(str(tmp_path), [])
    assert got == [{"Path": "/a", "Kind": 1}, {"Path": "/a/b", "Kind": 1}]


def test_mount_layers():
    class M:
        def __init__(self, type, source, options):
            self.type, self.source, self.options = type, source, options

    assert ar.mount_layers([M("overlay", "overlay", ["upperdir=/u", "lowerdir=/a:/b", "workdir=/w"])]) == \
        ("/u", ["/a", "/b"], "trusted")
    user = ar.mount_layers([M("overlay", "overlay", ["upperdir=/u", "lowerdir=/a", "userxattr"])])
    assert user is not None and user[2] == "user"
    assert ar.mount_layers([M("bind", "/s", ["rbind", "rw"])]) == ("/s", [], "trusted")
    assert ar.mount_layers([M("overlay", "overlay", ["lowerdir=/a:/b"])]) is None


# --- cancellation: a client that goes away cancels its handler ------------------------------

def test_a_mount_finished_after_the_caller_was_cancelled_is_undone():
    import asyncio
    import threading

    started, release = threading.Event(), threading.Event()
    unmounted: list[str] = []

    def mount(name: str) -> str:
        started.set()
        release.wait(5)
        return f"/mnt/{name}"

    async def main() -> None:
        task = asyncio.ensure_future(ar._mount_in_thread(mount, unmounted.append, "x"))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()          # it waits for the mount to end...
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert unmounted == ["/mnt/x"]  # ...and undoes it

    asyncio.run(main())


def test_stream_out_cancelled_mid_write_ends_its_producer():
    import asyncio

    ended: list[str] = []

    def produce(f) -> None:
        try:
            for _ in range(64):
                f.write(b"x" * 65536)
        except BrokenPipeError:
            ended.append("broken pipe")
            raise

    async def main() -> None:
        first = asyncio.Event()

        async def write(chunk: bytes) -> None:
            first.set()
            await asyncio.sleep(10)

        task = asyncio.ensure_future(ar._stream_out(produce, write, "test"))
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert ended == ["broken pipe"]   # the producer was awaited, not left writing

    asyncio.run(main())
