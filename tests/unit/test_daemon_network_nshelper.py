"""The network namespace helper (skiff.daemon.network.nshelper): its calls through the syscall
seam and its line protocol (issue 8)."""

from __future__ import annotations

import errno
import io

from skiff.daemon.network import nshelper
from skiff.runtime.syscalls import RecordingSyscalls


def test_make_unshares_binds_and_returns(tmp_path):
    sc = RecordingSyscalls()
    path = str(tmp_path / "ns1")
    nshelper.make(sc, path, 7)
    assert sc.calls == [("unshare", nshelper.CLONE_NEWNET),
                        ("mount", "/proc/self/ns/net", path, None, nshelper.MS_BIND, None),
                        ("setns", 7, nshelper.CLONE_NEWNET)]
    assert (tmp_path / "ns1").exists()


def test_failed_mount_returns_to_its_namespace_and_removes_the_file(tmp_path):
    sc = RecordingSyscalls()
    sc.fail["mount"] = errno.EPERM
    path = str(tmp_path / "ns2")
    out = io.StringIO()
    nshelper.serve(sc, io.StringIO(path + "\n"), out, 9)
    assert sc.names() == ["unshare", "mount", "setns"]
    assert out.getvalue() == f"error network namespace {path}: mount: Operation not permitted\n"
    assert not (tmp_path / "ns2").exists()


def test_protocol_one_answer_per_line(tmp_path):
    sc = RecordingSyscalls()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    out = io.StringIO()
    nshelper.serve(sc, io.StringIO(f"{a}\n{a}\nrelative\n{b}\n"), out, 3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "ok" and lines[3] == "ok"
    assert lines[1].startswith(f"error network namespace {a}: ") and lines[1].endswith("File exists")
    assert lines[2] == "error network namespace relative: 'relative': not an absolute path"
    assert sc.names() == ["unshare", "mount", "setns"] * 2
