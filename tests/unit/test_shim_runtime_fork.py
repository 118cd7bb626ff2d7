"""skiff.shim.runtime_fork: which runtimes run in a fork of the shim, and that the forked child
looks like an exec'd launcher (stdio, close-on-exec fds, signals, exit status)."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

import skiff
from skiff import launchers
from skiff.shim import runtime_fork

SRC = os.path.dirname(os.path.dirname(os.path.abspath(skiff.__file__)))


@pytest.fixture
def launcher(tmp_path):
    """A lean skiff-runc launcher of this source tree, as `python -m skiff.launchers` writes it."""
    return launchers.install(str(tmp_path))[0]


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_can_fork_only_this_trees_lean_launcher(tmp_path, launcher):
    runtime_fork.preload()
    assert runtime_fork.can_fork(launcher)
    # another source tree's launcher, a console script, another program: spawned, not forked
    other = tmp_path / "other-runc"
    other.write_text(open(launcher).read().replace(repr(SRC), repr("/opt/other/src")))
    other.chmod(0o755)
    assert not runtime_fork.can_fork(str(other))
    script = tmp_path / "script-runc"
    script.write_text(f"#!{sys.executable}\nfrom skiff.runtime.cli import main\nmain()\n")
    script.chmod(0o755)
    assert not runtime_fork.can_fork(str(script))
    assert not runtime_fork.can_fork("/bin/true")
    assert not runtime_fork.can_fork(str(tmp_path / "missing"))


def test_can_fork_rechecks_a_changed_file(tmp_path, launcher):
    runtime_fork.preload()
    assert runtime_fork.can_fork(launcher)
    with open(launcher, "a") as f:
        f.write("# changed: now it also does something else\nimport this\n")
    os.utime(launcher, ns=(1, 1))
    # still this tree's launcher with the same main call: allowed
    assert runtime_fork.can_fork(launcher)
    text = open(launcher).read().replace("from skiff.runtime.cli import main", "from mine import main")
    open(launcher, "w").write(text)
    os.utime(launcher, ns=(2, 2))
    assert not runtime_fork.can_fork(launcher)


def _run(argv, monkeypatch=None, fake_main=None):
    """fork_runtime with pipes as stdout/stderr; returns (exit code, stdout, stderr)."""
    if fake_main is not None:
        import skiff.runtime.cli as cli

        monkeypatch.setattr(cli, "main", fake_main)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = runtime_fork.fork_runtime(argv, [null, out_w, err_w])
    finally:
        for fd in (null, out_w, err_w):
            os.close(fd)
    chunks = {out_r: b"", err_r: b""}
    for fd in chunks:
        while data := os.read(fd, 65536):
            chunks[fd] += data
        os.close(fd)
    return _wait(pid), chunks[out_r].decode(), chunks[err_r].decode()


def test_fork_runtime_runs_the_real_cli(launcher):
    code, out, _ = _run([launcher, "--version"])
    assert code == 0
    assert out.startswith("skiff-runc version ")
    code, out, err = _run([launcher, "no-such-verb"])
    assert code != 0
    assert "no-such-verb" in err


def test_fork_runtime_child_is_like_an_exec(monkeypatch, launcher):
    keep_r, keep_w = os.pipe()
    os.set_inheritable(keep_r, True)    # an exec'd launcher would have these too
    os.set_inheritable(keep_w, True)
    hide_r, hide_w = os.pipe2(os.O_CLOEXEC)
    old = signal.signal(signal.SIGTERM, lambda *a: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])

    def fake_main(args):
        fds = sorted(int(x) for x in os.listdir("/proc/self/fd"))
        print(json.dumps({"args": args, "argv0": sys.argv[0], "fds": fds,
                          "term": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
                          "pipe": signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN,
                          "mask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))}))
        sys.stderr.write("to stderr\n")
        return 3

    try:
        code, out, err = _run([launcher, "state", "x"], monkeypatch, fake_main)
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR1])
        for fd in (keep_r, keep_w, hide_r, hide_w):
            os.close(fd)
    assert code == 3
    assert err == "to stderr\n"
    seen = json.loads(out)
    assert seen["args"] == ["state", "x"]
    assert seen["argv0"] == launcher
    assert keep_r in seen["fds"] and keep_w in seen["fds"]
    assert hide_r not in seen["fds"] and hide_w not in seen["fds"]
    assert seen["term"] and seen["pipe"]
    assert seen["mask"] == []


def test_fork_runtime_uncaught_exception_exits_1_with_traceback(monkeypatch, launcher):
    def fake_main(args):
        raise RuntimeError("broken runtime")

    code, _, err = _run([launcher, "create", "x"], monkeypatch, fake_main)
    assert code == 1
    assert "RuntimeError: broken runtime" in err
