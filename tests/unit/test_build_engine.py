"""The pure parts of skiffd's builder: the build context (hostile tars, symlink resolution,
hashes), COPY semantics on plain directories, the cache keys and cache-from rules, build
arguments, and the strings moby writes in ``history[].created_by``."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
from pathlib import Path

import pytest

from skiff.daemon.build import cache, fsops
from skiff.daemon.build.builder import (
    BuildArgs,
    go_duration,
    go_quote_list,
    healthcheck_comment,
    shape_config,
    validate_platform,
)
from skiff.daemon.build.context import BuildContext, ContextError, ContextWriter, clean_member
from tar_util import tar_of

UID, GID = os.getuid(), os.getgid()


def member(name: str, data: bytes | None = None, *, kind: bytes = tarfile.REGTYPE, link: str = "",
           mode: int = 0o644, uid: int = UID, gid: int = GID) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.linkname = link
    ti.uid, ti.gid = uid, gid
    ti.mtime = 1_600_000_000
    return ti, data


def make_ctx(tmp_path: Path, members: list, raw: bytes | None = None) -> BuildContext:
    d = tmp_path / f"ctx{len(list(tmp_path.iterdir()))}"
    d.mkdir()
    w = ContextWriter(str(d / "context.tar"))
    w.write(raw if raw is not None else tar_of(members))
    w.finish()
    return BuildContext.index(str(d), w.path, w.size, w.scan.digests)


# --- the context ------------------------------------------------------------------------------------

def test_clean_member():
    assert clean_member("./a/../b/") == "b"
    assert clean_member("/etc/passwd") == "etc/passwd"
    assert clean_member("./") == ""
    for bad in ("..", "../x", "a/../../x"):
        with pytest.raises(ValueError):
            clean_member(bad)


@pytest.mark.parametrize("members, words", [
    ([member("../escape", b"x")], "leaves the context"),
    ([member("a/../../escape", b"x")], "leaves the context"),
    ([member("hl", kind=tarfile.LNKTYPE, link="../../etc/passwd")], "leaves the context"),
    ([member("hl", kind=tarfile.LNKTYPE, link="missing")], "not a regular file listed before it"),
    ([member("d", kind=tarfile.DIRTYPE), member("hl", kind=tarfile.LNKTYPE, link="d")],
     "not a regular file listed before it"),
    ([member("up", kind=tarfile.SYMTYPE, link="/"), member("up/etc/x", b"x")], "its parent is not a directory"),
    ([member("f", b"x"), member("f/g", b"y")], "its parent is not a directory"),
    ([member("s", kind=tarfile.SYMTYPE, link="")], "empty target"),
])
def test_hostile_members_are_refused(tmp_path, members, words):
    with pytest.raises(ContextError, match=words):
        make_ctx(tmp_path, members)


def test_not_a_tar_and_truncated(tmp_path):
    with pytest.raises(ContextError, match="not a tar archive|bad tar archive"):
        make_ctx(tmp_path, [], raw=b"hello, this is not a tar" * 40)
    whole = tar_of([member("a", b"x" * 1000)])
    with pytest.raises(ContextError, match="truncated data"):
        make_ctx(tmp_path, [], raw=whole[:512 + 600])


def test_tar_without_padding_or_trailer(tmp_path):
    """The docker CLI's tar for ``-f /outside/Dockerfile`` ends right after the last data."""
    whole = tar_of([member("Dockerfile", b"FROM busybox\n"), member(".dockerfile.abc", b"FROM scratch\n")])
    cut = whole[:512 + 512 + 512 + 512 + len(b"FROM scratch\n")]
    # PAX headers make the offsets longer: cut right after the second file's data instead
    t = tarfile.open(fileobj=io.BytesIO(whole))
    last = t.getmembers()[-1]
    cut = whole[:last.offset_data + last.size]
    ctx = make_ctx(tmp_path, [], raw=cut)
    assert ctx.read_file(ctx.entries[".dockerfile.abc"]) == b"FROM scratch\n"


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress, lambda b: b])
def test_compressed_contexts(tmp_path, compress):
    raw = tar_of([member("Dockerfile", b"FROM busybox\n"), member("dir/f", b"data")])
    ctx = make_ctx(tmp_path, [], raw=compress(raw))
    assert sorted(ctx.entries) == ["", "Dockerfile", "dir", "dir/f"]
    assert ctx.read_file(ctx.entries["dir/f"]) == b"data"
    assert ctx.entries["dir"].kind == "dir" and ctx.entries["dir"].mtime == -1   # implicit parent


def test_truncated_gzip(tmp_path):
    data = gzip.compress(tar_of([member("a", os.urandom(5000))]))
    with pytest.raises(ContextError, match="truncated"):
        make_ctx(tmp_path, [], raw=data[:len(data) // 2])


def test_resolution_stays_in_the_context(tmp_path):
    ctx = make_ctx(tmp_path, [
        member("real/file", b"x"),
        member("abs", kind=tarfile.SYMTYPE, link="/real"),
        member("up", kind=tarfile.SYMTYPE, link="../../../../"),
        member("loop", kind=tarfile.SYMTYPE, link="loop"),
        member("out", kind=tarfile.SYMTYPE, link="/etc/passwd")])
    assert ctx.resolve("abs/file") == "real/file"             # absolute targets start at the context
    assert ctx.resolve("up/real/file") == "real/file"         # .. stops at its root
    assert ctx.resolve("out") == "etc/passwd"                 # not the host's: nothing there
    assert ctx.lookup("abs/file").path == "real/file"
    with pytest.raises(ContextError, match="file not found in build context or excluded by .dockerignore"):
        ctx.lookup("out")
    with pytest.raises(ContextError, match="too many levels"):
        ctx.lookup("loop")
    for bad in ("../x", "a/../../x", "/../x"):
        if bad == "/../x":       # an absolute path is inside the context (moby cleans it from /)
            with pytest.raises(ContextError, match="file not found"):
                ctx.lookup(bad)
            continue
        with pytest.raises(ContextError, match="forbidden path outside the build context"):
            ctx.lookup(bad)


def test_glob_and_ignore(tmp_path):
    ctx = make_ctx(tmp_path, [member("a.txt", b"a"), member("b.txt", b"b"), member("c.md", b"c"),
                              member("sub/d.txt", b"d"), member("Dockerfile", b"FROM x\n"),
                              member(".dockerignore", b"b.txt\nDockerfile\n")])
    assert ctx.glob("*.txt") == ["a.txt", "b.txt"]
    assert ctx.glob("*/*.txt") == ["sub/d.txt"]
    assert ctx.glob("[ab].txt") == ["a.txt", "b.txt"]
    ctx.apply_ignore(["b.txt", "Dockerfile"])
    assert ctx.glob("*.txt") == ["a.txt"]
    with pytest.raises(ContextError, match="excluded by .dockerignore"):
        ctx.lookup("Dockerfile")


def test_hashes_follow_content_mode_and_owner(tmp_path):
    def h(members, path="d"):
        c = make_ctx(tmp_path, members)
        return c.hash(c.lookup(path))
    base = [member("d/f", b"one"), member("d/g", b"two")]
    same = h(base)
    assert same.startswith("dir:") and same == h([member("d/f", b"one"), member("d/g", b"two")])
    assert h([member("d/f", b"ONE"), member("d/g", b"two")]) != same
    assert h([member("d/f", b"one", mode=0o600), member("d/g", b"two")]) != same
    assert h([member("d/f", b"one", uid=UID + 1), member("d/g", b"two")]) != same
    assert h([member("d/f", b"one"), member("d/h", b"two")]) != same
    f = h([member("f", b"one")], "f")
    assert f.startswith("file:") and f == h([member("f", b"one")], "f") != h([member("f", b"one!")], "f")


# --- COPY semantics on plain directories -------------------------------------------------------------

def do_copy(ctx: BuildContext, root: Path, sources: list[str], dest: str, chmod: int | None = None) -> None:
    items = fsops.collect(ctx, sources, "COPY")
    fsops.copy_items(str(root), dest, items, owner=(UID, GID), chmod=chmod, what="COPY")


@pytest.fixture
def tree(tmp_path):
    ctx = make_ctx(tmp_path, [
        member("dir", kind=tarfile.DIRTYPE, mode=0o750), member("dir/f1", b"f1", mode=0o640),
        member("dir/sub", kind=tarfile.DIRTYPE, mode=0o755), member("dir/sub/f2", b"f2"),
        member("dir/link", kind=tarfile.SYMTYPE, link="f1"), member("a.txt", b"a"), member("b.txt", b"b"),
        member("alink", kind=tarfile.SYMTYPE, link="a.txt")])
    root = tmp_path / "root"
    root.mkdir()
    (root / "existing").mkdir()
    return ctx, root


def test_copy_directory_copies_its_contents(tree):
    ctx, root = tree
    do_copy(ctx, root, ["dir"], "/new")
    assert sorted(os.listdir(root / "new")) == ["f1", "link", "sub"]
    assert stat.S_IMODE(os.stat(root / "new").st_mode) == 0o750          # the source directory's mode
    assert stat.S_IMODE(os.stat(root / "new/f1").st_mode) == 0o640
    assert os.readlink(root / "new/link") == "f1"                         # symlinks inside: as symlinks
    assert (root / "new/sub/f2").read_bytes() == b"f2"
    assert os.stat(root / "new/f1").st_mtime == 1_600_000_000


def test_copy_file_destinations(tree):
    ctx, root = tree
    do_copy(ctx, root, ["a.txt"], "/x/y")            # no slash, not a directory: that name
    assert (root / "x/y").read_bytes() == b"a"
    do_copy(ctx, root, ["a.txt"], "/existing")        # an existing directory: inside it
    assert (root / "existing/a.txt").read_bytes() == b"a"
    do_copy(ctx, root, ["a.txt"], "/made/")           # a trailing slash: a directory
    assert (root / "made/a.txt").read_bytes() == b"a"
    do_copy(ctx, root, ["*.txt"], "/multi/")
    assert sorted(os.listdir(root / "multi")) == ["a.txt", "b.txt"]
    do_copy(ctx, root, ["alink"], "/followed")        # a symlink named as the source: followed
    assert (root / "followed").read_bytes() == b"a" and not os.path.islink(root / "followed")
    do_copy(ctx, root, ["b.txt"], "/x/y", chmod=0o700)   # replaces, --chmod
    assert (root / "x/y").read_bytes() == b"b" and stat.S_IMODE(os.stat(root / "x/y").st_mode) == 0o700


def test_copy_never_writes_outside_the_root(tree, tmp_path):
    ctx, root = tree
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), root / "evil")           # an image's symlink to a host path
    os.symlink("../../../..", root / "up")
    do_copy(ctx, root, ["a.txt"], "/evil/")
    do_copy(ctx, root, ["a.txt"], "/up/escaped")
    assert os.listdir(outside) == []
    assert (root / str(outside).lstrip("/") / "a.txt").read_bytes() == b"a"   # followed inside the root
    assert (root / "escaped").read_bytes() == b"a"
    # a file where a directory is needed
    (root / "file").write_text("x")
    with pytest.raises(fsops.CopyError, match="not a directory"):
        do_copy(ctx, root, ["a.txt"], "/file/sub/")


def test_copy_errors(tree):
    ctx, root = tree
    with pytest.raises(fsops.CopyError, match="no source files were specified"):
        do_copy(ctx, root, ["*.none"], "/d/")
    with pytest.raises(ContextError, match="file not found in build context"):
        do_copy(ctx, root, ["missing"], "/d/")


def test_chown_names_from_the_target(tmp_path):
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1234:1234::/home/app:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nstaff:x:50:\n")
    assert fsops.parse_chown(str(root), "app:staff") == (1234, 50)
    assert fsops.parse_chown(str(root), "10:20") == (10, 20)
    assert fsops.parse_chown(str(root), "77") == (77, 77)
    with pytest.raises(fsops.CopyError, match="unable to find user nobody: no matching entries in passwd file"):
        fsops.parse_chown(str(root), "nobody")
    with pytest.raises(fsops.CopyError, match="unable to find group app: no matching entries in group file"):
        fsops.parse_chown(str(root), "app")


def test_add_archive_is_confined(tmp_path):
    evil = tar_of([member("../../outside-file", b"x")])
    good = tar_of([member("inner/x", b"x")])
    ctx = make_ctx(tmp_path, [member("evil.tar", evil), member("good.tar.gz", gzip.compress(good)),
                              member("plain.txt", b"not an archive at all" * 30)])
    assert fsops.archive_kind(ctx, ctx.entries["good.tar.gz"]) == "gzip"
    assert fsops.archive_kind(ctx, ctx.entries["evil.tar"]) == "none"
    assert fsops.archive_kind(ctx, ctx.entries["plain.txt"]) == ""
    root = tmp_path / "root"
    root.mkdir()
    items = fsops.collect(ctx, ["good.tar.gz"], "ADD")
    items[0].archive = "gzip"
    fsops.copy_items(str(root), "/d/", items, owner=None, chmod=None, what="ADD")
    assert (root / "d/inner/x").read_bytes() == b"x"
    items = fsops.collect(ctx, ["evil.tar"], "ADD")
    items[0].archive = "none"
    with pytest.raises(fsops.CopyError):
        fsops.copy_items(str(root), "/d/", items, owner=None, chmod=None, what="ADD")
    assert not (tmp_path / "outside-file").exists() and not (root / "outside-file").exists()


def test_workdir_and_mount_points(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert fsops.make_workdir(str(root), "/a/b") is True
    assert fsops.make_workdir(str(root), "/a/b") is False
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/hostname").write_text("base\n")
    for d in ("etc", "proc", "dev", "sys", "data"):
        (upper / d).mkdir(parents=True)
    for f in ("etc/hosts", "etc/resolv.conf"):
        (upper / f).write_text("")
    (upper / "data/kept").write_text("")
    fsops.strip_mount_points(str(upper), [str(lower)])
    assert sorted(os.listdir(upper)) == ["data"]


# --- cache, build args, created_by ------------------------------------------------------------------

def test_cache_key():
    a = shape_config({"Cmd": ["/bin/sh", "-c", "#(nop) ", "ENV A=1"], "Env": ["A=1"], "Image": "sha256:p"})
    b = shape_config({"Image": "sha256:p", "Env": ["A=1"], "Cmd": ["/bin/sh", "-c", "#(nop) ", "ENV A=1"]})
    assert cache.cache_key(a) == cache.cache_key(b)
    assert cache.cache_key(a) != cache.cache_key({**a, "Image": "sha256:q"})
    assert cache.created_by(a) == "/bin/sh -c #(nop)  ENV A=1"


def test_cache_from_sources():
    h = [{"created_by": "base"}, {"created_by": "/bin/sh -c #(nop)  ENV A=1", "empty_layer": True},
         {"created_by": "/bin/sh -c echo hi"}]
    source = {"history": h, "rootfs": {"diff_ids": ["sha256:l0", "sha256:l1"]}}
    parent = {"history": h[:1], "rootfs": {"diff_ids": ["sha256:l0"]}}
    env_step = {"Cmd": ["/bin/sh", "-c", "#(nop) ", "ENV A=1"]}
    assert cache.valid_parent(source, parent) and cache.valid_parent(source, None)
    assert not cache.valid_parent(source, {"history": [{"created_by": "other"}], "rootfs": {"diff_ids": ["sha256:l0"]}})
    assert cache.source_match([source], parent, env_step) == (0, False)
    assert cache.source_match([source], parent, {"Cmd": ["/bin/sh", "-c", "other"]}) is None
    after_env = {"history": h[:2], "rootfs": {"diff_ids": ["sha256:l0"]}}
    assert cache.source_match([source], after_env, {"Cmd": ["/bin/sh", "-c", "echo hi"]}) == (0, True)
    assert cache.layer_for_history(source, 1) is None and cache.layer_for_history(source, 2) == 1


def test_build_args():
    args = BuildArgs({"A": "from-cli", "HTTP_PROXY": "http://p", "UNUSED": "1", "NULL": None})
    args.meta["M"] = "meta"
    args.add_arg("A", "default")
    args.add_arg("M", None)          # ARG M in a stage: the meta ARG's value
    args.add_arg("D", "dflt")
    assert args.all_allowed() == {"A": "from-cli", "M": "meta", "D": "dflt", "HTTP_PROXY": "http://p"}
    assert sorted(args.filter_allowed(["D=set-by-env"])) == ["A=from-cli", "HTTP_PROXY=http://p", "M=meta"]
    assert args.referenced_or_not_builtin("A") and not args.referenced_or_not_builtin("HTTP_PROXY")
    assert args.unused() == ["NULL", "UNUSED"]


def test_moby_strings():
    assert go_quote_list(["/bin/sh", "-c", 'echo "hi"\tx']) == '["/bin/sh" "-c" "echo \\"hi\\"\\tx"]'
    assert go_quote_list([]) == "[]"
    assert [go_duration(n) for n in (0, 5_000_000_000, 300_000_000_000, 1_500_000_000, 3_723_000_000_000,
                                     2_000_000)] == ["0s", "5s", "5m0s", "1.5s", "1h2m3s", "2ms"]
    assert healthcheck_comment({"Test": ["CMD-SHELL", "curl -f x || exit 1"], "Interval": 300_000_000_000,
                                "Timeout": 3_000_000_000, "Retries": 3}) == \
        '&{["CMD-SHELL" "curl -f x || exit 1"] "5m0s" "3s" "0s" \'\\x03\'}'
    assert healthcheck_comment({"Test": ["NONE"]}) == '&{["NONE"] "0s" "0s" "0s" \'\\x00\'}'


def test_shape_and_platform():
    c = shape_config({"Env": ["A=1"], "Cmd": ["sh"], "Labels": {}, "ExposedPorts": {}})
    assert list(c)[:6] == ["Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr"]
    assert "ExposedPorts" not in c and c["Labels"] == {} and c["Volumes"] is None
    validate_platform("linux/amd64")
    validate_platform("")
    from skiff.daemon.api.errors import InvalidParameter
    with pytest.raises(InvalidParameter, match="not supported"):
        validate_platform("linux/arm64")


# --- POST /build's parameters -------------------------------------------------------------------------

def test_build_options():
    import base64
    import json

    from multidict import CIMultiDict, MultiDict

    from skiff.daemon.api.build import parse_options
    from skiff.daemon.api.errors import InvalidParameter
    q = MultiDict([("t", "app"), ("t", "reg.example:5000/x/y:2"), ("t", "app"), ("buildargs", '{"A":"1","B":null}'),
                   ("labels", '{"l":"v"}'), ("cachefrom", '["c1"]'), ("extrahosts", "h1:1.2.3.4"),
                   ("extrahosts", "h2:5.6.7.8"), ("memory", "67108864"), ("cpusetcpus", "0"),
                   ("networkmode", "none"), ("target", "t1"), ("dockerfile", "sub/Df"), ("platform", "linux/amd64")])
    auth = base64.urlsafe_b64encode(json.dumps({"reg.example:5000": {"username": "u"}}).encode()).decode()
    o = parse_options(q, CIMultiDict({"X-Registry-Config": auth}))
    assert o.tags == ["docker.io/library/app:latest", "reg.example:5000/x/y:2"]
    assert o.buildargs == {"A": "1", "B": None} and o.labels == {"l": "v"} and o.cachefrom == ["c1"]
    assert o.host_config == {"NetworkMode": "none", "ExtraHosts": ["h1:1.2.3.4", "h2:5.6.7.8"],
                             "Memory": 67108864, "CpusetCpus": "0"}
    assert (o.rm, o.forcerm, o.nocache, o.pull, o.target, o.dockerfile) == (True, False, False, False, "t1", "sub/Df")
    assert o.registry_auth == {"reg.example:5000": {"username": "u"}}
    assert parse_options(MultiDict([("rm", "0")]), {}).rm is False
    assert parse_options(MultiDict([("rm", "0"), ("forcerm", "1")]), {}).rm is True
    for bad, words in ((("platform", "linux/arm64"), "not supported"), (("squash", "1"), "experimental"),
                       (("remote", "https://x/y.git"), "remote build contexts"), (("version", "2"), "BuildKit"),
                       (("t", "x@sha256:" + "a" * 64), "cannot contain a digest"), (("buildargs", "{"), "not JSON"),
                       (("buildargs", '{"A": 1}'), "string or null"), (("memory", "lots"), "not an integer"),
                       (("isolation", "hyperv"), "Unsupported isolation")):
        with pytest.raises(InvalidParameter, match=words):
            parse_options(MultiDict([bad]), {})


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_hashes_made_while_receiving_match(tmp_path, fmt):
    """The data hashed as the body streams in gives the same hashes as reading the file again."""
    long = "d/" + "n" * 150 if fmt != tarfile.USTAR_FORMAT else "d/short"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in ((long, os.urandom(70_000)), ("d/empty", b""), ("d/ü-ñ", b"unicode name"),
                           ("d/x", os.urandom(513))):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.uid, ti.gid = UID, GID
            t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    streamed = make_ctx(tmp_path, [], raw=raw)
    assert len(streamed.data_digests) == 4
    d = tmp_path / "plain"
    d.mkdir()
    (d / "c.tar").write_bytes(raw)
    reread = BuildContext.index(str(d), str(d / "c.tar"))
    assert reread.data_digests == {}
    for path in (long, "d/empty", "d/ü-ñ", "d/x", "d"):
        assert streamed.hash(streamed.lookup(path)) == reread.hash(reread.lookup(path))
