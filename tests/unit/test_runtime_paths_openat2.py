"""paths.open_beneath's one-call path (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS):
taken for paths that exist, and every other case left to the step-by-step walk, whose results
and errors stay the same."""

from __future__ import annotations

import errno
import os

import pytest

from skiff.runtime import paths


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/f").write_text("x")
    os.symlink("/etc", root / "a/link")
    os.symlink("f", root / "a/b/flink")
    return str(root)


def one_call_used(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = paths._open_in_one_call

    def spy(dir_fd, rel, want_dir):
        fd = real(dir_fd, rel, want_dir)
        calls.append(fd)
        return fd

    monkeypatch.setattr(paths, "_open_in_one_call", spy)
    return calls


def same_file(fd: int, path: str) -> bool:
    a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def test_existing_file_and_dir_open_in_one_call(tree, monkeypatch):
    calls = one_call_used(monkeypatch)
    fd = paths.open_beneath(tree, tree + "/a/b/f")
    try:
        assert same_file(fd, tree + "/a/b/f")
    finally:
        os.close(fd)
    fd = paths.open_beneath(tree, tree + "/a/b", create="dir")
    try:
        assert same_file(fd, tree + "/a/b")
    finally:
        os.close(fd)
    assert len(calls) == 2 and all(c >= 0 for c in calls)


def test_missing_parts_are_created_by_the_walk(tree, monkeypatch):
    calls = one_call_used(monkeypatch)
    fd = paths.open_beneath(tree, tree + "/a/new/dir", create="dir")
    os.close(fd)
    fd = paths.open_beneath(tree, tree + "/a/new/file", create="file")
    os.close(fd)
    assert os.path.isdir(tree + "/a/new/dir") and os.path.isfile(tree + "/a/new/file")
    assert calls == [-1, -1]


@pytest.mark.parametrize("rel", ["/a/link/passwd", "/a/b/flink", "/a/link"])
def test_symlinks_are_refused_with_the_walks_error(tree, monkeypatch, rel):
    calls = one_call_used(monkeypatch)
    with pytest.raises(OSError) as e:
        paths.open_beneath(tree, tree + rel)
    assert e.value.errno == errno.ELOOP and "is a symlink" in str(e.value)
    assert calls == [-1]


def test_without_openat2_the_walk_does_everything(tree, monkeypatch):
    monkeypatch.setattr(paths, "_openat2", [None])
    fd = paths.open_beneath(tree, tree + "/a/b/f")
    try:
        assert same_file(fd, tree + "/a/b/f")
    finally:
        os.close(fd)


def test_dot_dot_and_the_root_itself_skip_the_one_call(tree, monkeypatch):
    calls = one_call_used(monkeypatch)
    fd = paths.open_beneath(tree, tree)
    os.close(fd)
    with pytest.raises(OSError) as e:
        paths.open_beneath(tree, tree + "/a/../a")
    assert e.value.errno == errno.EINVAL
    assert calls == []
