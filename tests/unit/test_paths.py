"""resolve_in_root and open_beneath against a tmp tree full of hostile symlinks (no root)."""

from __future__ import annotations

import errno
import os

import pytest

from skiff.runtime.paths import MAXSYMLINKS, fd_path, open_beneath, resolve_in_root


@pytest.fixture
def root(tmp_path) -> str:
    r = os.path.realpath(tmp_path / "rootfs")
    for d in ("etc", "usr/lib", "var/run", "proc"):
        os.makedirs(os.path.join(r, d))
    with open(os.path.join(r, "etc/passwd"), "w") as f:
        f.write("root:x:0:0::/:/bin/sh\n")
    return r


def link(root: str, path: str, target: str) -> None:
    os.symlink(target, os.path.join(root, path.lstrip("/")))


def test_plain_paths(root: str) -> None:
    assert resolve_in_root(root, "/") == root
    assert resolve_in_root(root, "") == root
    assert resolve_in_root(root, "/etc") == root + "/etc"
    assert resolve_in_root(root, "//etc///passwd/") == root + "/etc/passwd"
    assert resolve_in_root(root, "/./etc/./passwd") == root + "/etc/passwd"
    assert resolve_in_root(root, "etc/passwd") == root + "/etc/passwd"  # relative: from "/"
    assert resolve_in_root(root + "/", "/etc") == root + "/etc"
    # missing components are kept as written
    assert resolve_in_root(root, "/no/such/dir") == root + "/no/such/dir"
    # a file in the middle: the rest is lexical
    assert resolve_in_root(root, "/etc/passwd/x") == root + "/etc/passwd/x"


def test_dotdot_is_clamped_at_the_root(root: str) -> None:
    assert resolve_in_root(root, "/..") == root
    assert resolve_in_root(root, "/../../../etc/shadow") == root + "/etc/shadow"
    assert resolve_in_root(root, "/usr/lib/../../../../etc") == root + "/etc"
    assert resolve_in_root(root, "/missing/../etc") == root + "/etc"


def test_absolute_symlink_stays_inside(root: str) -> None:
    link(root, "/etc/evil", "/etc/shadow")
    assert resolve_in_root(root, "/etc/evil") == root + "/etc/shadow"
    link(root, "/hostetc", "/etc")
    assert resolve_in_root(root, "/hostetc/passwd") == root + "/etc/passwd"
    link(root, "/mnt", "/")
    assert resolve_in_root(root, "/mnt") == root
    assert resolve_in_root(root, "/mnt/x/y") == root + "/x/y"


def test_relative_symlink_escaping_upwards_is_clamped(root: str) -> None:
    link(root, "/usr/lib/up", "../../../../../..")
    assert resolve_in_root(root, "/usr/lib/up") == root
    assert resolve_in_root(root, "/usr/lib/up/etc/passwd") == root + "/etc/passwd"
    link(root, "/var/run/x", "../../etc")
    assert resolve_in_root(root, "/var/run/x/passwd") == root + "/etc/passwd"


def test_symlink_chains_and_dotdot_after_a_symlink(root: str) -> None:
    link(root, "/a", "b")
    link(root, "/b", "/usr/lib")
    assert resolve_in_root(root, "/a") == root + "/usr/lib"
    # ".." applies to where the symlink led, not to the link's own parent
    assert resolve_in_root(root, "/a/..") == root + "/usr"
    link(root, "/dangling", "/nowhere/deep")
    assert resolve_in_root(root, "/dangling/more") == root + "/nowhere/deep/more"


def test_magic_link_targets_are_read_as_text(root: str) -> None:
    # /proc/1/root in an image (or in the container's /proc once mounted) must resolve inside
    link(root, "/etc/escape", "/proc/1/root")
    assert resolve_in_root(root, "/etc/escape/etc/shadow") == root + "/proc/1/root/etc/shadow"
    os.makedirs(root + "/proc/1")
    link(root, "/proc/1/root", "/")  # what readlink(/proc/1/root) says
    assert resolve_in_root(root, "/etc/escape/etc/shadow") == root + "/etc/shadow"


def test_loops_fail_with_eloop(root: str) -> None:
    link(root, "/loop1", "loop2")
    link(root, "/loop2", "/loop1")
    with pytest.raises(OSError) as ei:
        resolve_in_root(root, "/loop1/x")
    assert ei.value.errno == errno.ELOOP
    assert "/loop1/x" in str(ei.value) and root in str(ei.value)
    link(root, "/self", "self")
    with pytest.raises(OSError) as ei:
        resolve_in_root(root, "/self")
    assert ei.value.errno == errno.ELOOP


def test_exactly_forty_hops_resolve_and_forty_one_fail(root: str) -> None:
    # l0 -> l1 -> ... -> l{n-1} -> /etc
    def chain(prefix: str, n: int) -> None:
        for i in range(n - 1):
            link(root, f"/{prefix}{i}", f"{prefix}{i + 1}")
        link(root, f"/{prefix}{n - 1}", "/etc")

    chain("ok", MAXSYMLINKS)
    assert resolve_in_root(root, "/ok0/passwd") == root + "/etc/passwd"
    chain("bad", MAXSYMLINKS + 1)
    with pytest.raises(OSError) as ei:
        resolve_in_root(root, "/bad0/passwd")
    assert ei.value.errno == errno.ELOOP


def test_open_beneath_creates_and_opens(root: str) -> None:
    fd = open_beneath(root, root + "/new/dir/here", create="dir")
    try:
        assert os.readlink(fd_path(fd)) == root + "/new/dir/here"
        assert os.path.isdir(root + "/new/dir/here")
    finally:
        os.close(fd)
    fd = open_beneath(root, root + "/files/a.conf", create="file")
    try:
        assert os.readlink(fd_path(fd)) == root + "/files/a.conf"
        assert os.path.isfile(root + "/files/a.conf")
    finally:
        os.close(fd)
    # existing file, no creation
    fd = open_beneath(root, root + "/etc/passwd")
    os.close(fd)
    # the root itself
    fd = open_beneath(root, root)
    try:
        assert os.readlink(fd_path(fd)) == root
    finally:
        os.close(fd)
    with pytest.raises(FileNotFoundError):
        open_beneath(root, root + "/absent")


def test_open_beneath_refuses_symlinks_swapped_in(root: str, tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    resolved = resolve_in_root(root, "/var/run/target")
    assert resolved == root + "/var/run/target"
    # the tree changes after the resolution: /var/run becomes a symlink to a host directory
    os.rmdir(root + "/var/run")
    os.symlink(str(outside), root + "/var/run")
    with pytest.raises(OSError) as ei:
        open_beneath(root, resolved, create="dir")
    assert ei.value.errno == errno.ELOOP
    assert not (outside / "target").exists()
    # the last component swapped for a symlink
    os.symlink(str(outside), root + "/etc/last")
    for create in ("", "file", "dir"):
        with pytest.raises(OSError) as ei:
            open_beneath(root, root + "/etc/last", create=create)
        assert ei.value.errno == errno.ELOOP, create


def test_open_beneath_rejects_paths_outside_the_root(root: str) -> None:
    with pytest.raises(OSError) as ei:
        open_beneath(root, "/etc/passwd")
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        open_beneath(root, root + "/../x")
    assert ei.value.errno == errno.EINVAL


def test_open_beneath_wants_a_directory_where_asked(root: str) -> None:
    with pytest.raises(NotADirectoryError):
        open_beneath(root, root + "/etc/passwd", create="dir")
    with pytest.raises(NotADirectoryError):
        open_beneath(root, root + "/etc/passwd/x", create="file")
