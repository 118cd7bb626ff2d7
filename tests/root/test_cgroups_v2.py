"""The cgroup manager's v2 code on a real cgroup2 mount: /sys/fs/cgroup/unified.

On this host the unified hierarchy holds only hugetlb, but everything cgroup v2 has in every
cgroup is real there: mkdir/rmdir, cgroup.procs, cgroup.freeze/cgroup.events, cgroup.kill, and
eBPF device programs. The manager is pointed at it as if it were a pure v2 host (a mountinfo
that lists only that mount). Controller files (memory.max...) are covered by the unit tests'
fake trees. Everything is undone at teardown, including the hugetlb controller that a pure-v2
``create`` enables in the root's cgroup.subtree_control.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

import pytest

from skiff.runtime.cgroups import DEFAULT_RULES, CgroupError, Manager, open_manager
from skiff.runtime.cgroups._devices import BPF_CGROUP_DEVICE, decide, parse_rules
from skiff.runtime.syscalls import LinuxSyscalls

pytestmark = pytest.mark.root

ROOT = "/sys/fs/cgroup/unified"
_n = itertools.count()

OPENER = r"""
import os, sys
for line in sys.stdin:
    path, mode = line.split()
    flags = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}[mode]
    try:
        os.close(os.open(path, flags))
        print("ok", flush=True)
    except OSError as e:
        print(e.errno, flush=True)
"""
TICK = r"""
import sys, time
sys.stdin.readline()
i = 0
while True:
    print(i, flush=True)
    i += 1
    time.sleep(0.01)
"""


class V2Box:
    def __init__(self, tmp_path) -> None:
        self.mountinfo = str(tmp_path / "mountinfo")
        with open(self.mountinfo, "w") as f:
            f.write(f"41 31 0:38 / {ROOT} rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw\n")
        self.own = str(tmp_path / "cgroup")
        with open(self.own, "w") as f:
            f.write("0::/\n")
        self.base = f"/skiff-test-{os.getpid()}-{next(_n)}"
        self.managers: list[Manager] = []
        self.procs: list[subprocess.Popen] = []
        with open(ROOT + "/cgroup.subtree_control") as f:
            self.controllers = f.read().split()

    def manager(self, name: str = "c") -> Manager:
        m = open_manager(f"{self.base}/{name}", name, cgroup_root=ROOT, mountinfo=self.mountinfo,
                         own_cgroup=self.own)
        self.managers.append(m)
        return m

    def spawn(self, code: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        self.procs.append(p)
        return p

    def close(self) -> None:
        errors: list[BaseException] = []
        for m in self.managers:
            try:
                if m.exists() and m.frozen():
                    m.thaw()
            except CgroupError as e:
                errors.append(e)
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
            for f in (p.stdin, p.stdout):
                if f is not None:
                    try:
                        f.close()
                    except BrokenPipeError:
                        pass
        for m in self.managers:
            try:
                m.destroy()
            except CgroupError as e:
                errors.append(e)
            left = [d for d in [*m.paths().values(), *m.created] if os.path.exists(d)]
            if left:
                errors.append(AssertionError(f"left behind: {left}"))
        with open(ROOT + "/cgroup.subtree_control") as f:
            for c in f.read().split():
                if c not in self.controllers:
                    with open(ROOT + "/cgroup.subtree_control", "w") as w:
                        w.write("-" + c)
        if errors:
            raise errors[0]


@pytest.fixture
def box(tmp_path):
    b = V2Box(tmp_path)
    try:
        yield b
    finally:
        b.close()


def ask(p: subprocess.Popen, path: str, mode: str) -> str:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(f"{path} {mode}\n")
    p.stdin.flush()
    return p.stdout.readline().strip()


def attached(m: Manager) -> list[int]:
    fd = os.open(m.paths()[""], os.O_RDONLY | os.O_DIRECTORY)
    try:
        return LinuxSyscalls().bpf_prog_query(fd, BPF_CGROUP_DEVICE)
    finally:
        os.close(fd)


def test_lifecycle_on_a_real_cgroup2(box: V2Box) -> None:
    m = box.manager()
    assert m.version == 2 and m.paths() == {"": f"{ROOT}{box.base}/c"}
    m.create()
    assert os.path.isdir(m.paths()[""])
    p = box.spawn(TICK)
    m.add(p.pid)
    assert m.pids() == [p.pid]
    with open(f"/proc/{p.pid}/cgroup") as f:
        assert f"0::{box.base}/c" in f.read()
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("go\n")
    p.stdin.flush()
    p.stdout.readline()
    m.freeze()
    assert m.frozen()
    with open(m.paths()[""] + "/cgroup.events") as f:
        assert "frozen 1" in f.read()
    m.thaw()
    assert not m.frozen()
    m.kill_all(signal.SIGKILL)  # cgroup.kill
    assert p.wait(timeout=10) == -signal.SIGKILL
    s = m.stats()
    assert s["cpu"]["usage"]["total"] > 0  # cpu.stat is there without the cpu controller
    m.destroy()
    assert not m.exists() and not os.path.exists(f"{ROOT}{box.base}")


def test_kill_all_sigterm_freezes_around_the_signals(box: V2Box) -> None:
    m = box.manager()
    m.create()
    p = box.spawn(TICK)
    m.add(p.pid)
    m.kill_all(signal.SIGTERM)
    assert p.wait(timeout=10) == -signal.SIGTERM
    assert not m.frozen()


def test_ebpf_device_rules_are_enforced(box: V2Box) -> None:
    m = box.manager()
    m.create()
    p = box.spawn(OPENER)
    m.add(p.pid)
    assert ask(p, "/dev/zero", "w") == "ok"  # no program yet
    m.set({"devices": [{"allow": False, "access": "rwm"},
                       {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                       {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rw"},
                       {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "w"}]})
    assert ask(p, "/dev/null", "rw") == "ok"
    assert ask(p, "/dev/zero", "r") == "ok"
    assert ask(p, "/dev/zero", "w") == "1"  # EPERM
    assert ask(p, "/dev/zero", "rw") == "1"
    assert ask(p, "/dev/full", "r") == "1"
    assert len(attached(m)) == 1
    # update: the new program replaces the old one, never leaving the cgroup without one
    m.update({"devices": [{"allow": False, "access": "rwm"},
                          {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "r"}]})
    assert len(attached(m)) == 1
    assert ask(p, "/dev/null", "r") == "1"
    assert ask(p, "/dev/full", "r") == "ok"


RULE_SETS = [
    [],
    [{"allow": True}],
    [{"allow": False}],
    [{"allow": False, "access": "rwm"}, *DEFAULT_RULES],
    [{"allow": True}, {"allow": False, "type": "c", "major": 1, "minor": 7}],
    [{"allow": True, "type": "c", "major": 1, "access": "rw"}, {"allow": True, "access": "m"},
     {"allow": False, "type": "c", "minor": 5, "access": "w"}],
]


@pytest.mark.parametrize("rules", RULE_SETS)
def test_kernel_accepts_the_program_and_agrees_with_the_reference(box: V2Box, rules: list[dict]) -> None:
    m = box.manager()
    m.create()
    p = box.spawn(OPENER)
    m.add(p.pid)
    m.set({"devices": rules})
    parsed = parse_rules(rules)
    for path, major, minor in (("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
                               ("/dev/urandom", 1, 9)):
        for mode in ("r", "w", "rw"):
            want = decide(parsed, "c", major, minor, mode)
            assert ask(p, path, mode) == ("ok" if want else "1"), (path, mode)


def test_destroy_of_a_cgroup_with_a_child_cgroup(box: V2Box) -> None:
    m = box.manager()
    m.create()
    os.mkdir(m.paths()[""] + "/inner")
    p = box.spawn(TICK)
    with open(m.paths()[""] + "/inner/cgroup.procs", "w") as f:
        f.write(str(p.pid))
    assert m.pids() == [p.pid]
    m.kill_all(signal.SIGKILL)
    p.wait(timeout=10)
    deadline = time.monotonic() + 5
    while m.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    m.destroy()
    assert not m.exists()
