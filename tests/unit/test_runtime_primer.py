"""The cgroup-attach primer of skiff-runc (cli._prime_cgroup_attach): which cgroup.procs its
helper process writes, that it writes "0", that primer_pending/wait_primer reap it, and that
nothing starts when no candidate exists. Pointed at a temporary tree instead of /proc and
/sys/fs/cgroup."""

from __future__ import annotations

import os

import pytest

from skiff.runtime import cli


@pytest.fixture(autouse=True)
def no_primer_left():
    yield
    cli.wait_primer()
    assert cli._primer == 0


def tree(tmp_path, cgroup_lines: str, files: list[str]) -> tuple[str, str]:
    proc = tmp_path / "cgroup"
    proc.write_text(cgroup_lines)
    root = tmp_path / "fs"
    for f in files:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")
    return str(proc), str(root)


def test_hybrid_host_writes_the_unified_hierarchy_first(tmp_path):
    proc, root = tree(tmp_path, "2:pids:/a\n1:name=systemd:/a\n0::/a/b\n",
                      ["unified/a/b/cgroup.procs", "pids/a/cgroup.procs", "systemd/a/cgroup.procs"])
    cli._prime_cgroup_attach(proc, root)
    pid = cli._primer
    assert pid > 0
    cli.wait_primer()
    assert not cli.primer_pending() and cli._primer == 0
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped
    assert (tmp_path / "fs/unified/a/b/cgroup.procs").read_text() == "0\n"
    assert (tmp_path / "fs/pids/a/cgroup.procs").read_text() == ""


def test_pure_v2_host_writes_the_cgroup_of_the_runtime(tmp_path):
    proc, root = tree(tmp_path, "0::/user.slice/x\n", ["user.slice/x/cgroup.procs"])
    cli._prime_cgroup_attach(proc, root)
    cli.wait_primer()
    assert (tmp_path / "fs/user.slice/x/cgroup.procs").read_text() == "0\n"


def test_v1_only_host_uses_the_first_hierarchy_that_exists(tmp_path):
    # the root cgroup ("/") of a named hierarchy: the path ends without a doubled slash
    proc, root = tree(tmp_path, "3:cpu,cpuacct:/\n2:name=systemd:/\n", ["systemd/cgroup.procs"])
    cli._prime_cgroup_attach(proc, root)
    cli.wait_primer()
    assert (tmp_path / "fs/systemd/cgroup.procs").read_text() == "0\n"


def test_primer_pending_reaps_the_helper_once_it_is_done(tmp_path):
    proc, root = tree(tmp_path, "0::/\n", ["unified/cgroup.procs"])
    cli._prime_cgroup_attach(proc, root)
    pid = cli._primer
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # done, not reaped yet
    assert cli.primer_pending() is False and cli._primer == 0
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_nothing_to_write_starts_nothing(tmp_path):
    proc, root = tree(tmp_path, "0::/\n5:pids:/x\n", [])
    cli._prime_cgroup_attach(proc, root)
    assert cli._primer == 0 and not cli.primer_pending()
    cli.wait_primer()  # nothing to reap: returns at once


def test_unreadable_proc_file_starts_nothing(tmp_path):
    cli._prime_cgroup_attach(str(tmp_path / "missing"), str(tmp_path))
    assert cli._primer == 0


def test_a_failing_write_is_not_reported(tmp_path, capfd):
    # /dev/full as the "cgroup.procs" of a v1 hierarchy: its writes fail (ENOSPC); the helper's
    # stdio is /dev/null, so nothing reaches the runtime's (the container's) stderr
    proc, root = tree(tmp_path, "1:pids:/\n", [])
    (tmp_path / "fs/pids").mkdir(parents=True)
    os.symlink("/dev/full", tmp_path / "fs/pids/cgroup.procs")
    cli._prime_cgroup_attach(proc, root)
    assert cli._primer > 0
    cli.wait_primer()
    assert capfd.readouterr() == ("", "")


def test_no_shell_starts_nothing(tmp_path, monkeypatch):
    proc, root = tree(tmp_path, "0::/\n", ["unified/cgroup.procs"])
    monkeypatch.setattr(cli, "PRIMER_SHELL", str(tmp_path / "no-such-shell"))
    cli._prime_cgroup_attach(proc, root)
    assert cli._primer == 0


def test_main_reaps_the_primer_of_a_verb_that_fails_before_forking(tmp_path, capsys):
    # `create` of a bundle without config.json fails before any fork
    rc = cli.main(["--root", str(tmp_path / "root"), "create", "--bundle", str(tmp_path), "c1"])
    assert rc == 1 and "config.json" in capsys.readouterr().err
    assert cli._primer == 0
