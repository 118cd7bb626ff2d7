"""Unit tests of the cgroup manager against fake cgroupfs trees (no root needed).

``FakeCgroupFS`` builds a tree of ordinary files in a temporary directory, with a mountinfo
and a /proc/self/cgroup describing it (v1, hybrid or pure v2), and plays the kernel's part
where the manager depends on it: a new directory gets its controller's files, rmdir works
on a directory that holds them, writing cgroup.freeze updates cgroup.events. Every write the
manager makes is also logged, in order, for files the kernel treats as a stream of commands
(devices.allow, io.max, cgroup.subtree_control).
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from skiff.runtime import cgroups
from skiff.runtime.cgroups import CgroupError, _manager, _set, _util, load_manager, open_manager
from skiff.runtime.syscalls import RecordingSyscalls

UNLIMITED = "9223372036854771712"

V1_FILES: dict[str, dict[str, str]] = {
    "cpu": {"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1",
            "cpu.cfs_burst_us": "0", "cpu.rt_period_us": "1000000", "cpu.rt_runtime_us": "0",
            "cpu.idle": "0", "cpu.stat": "nr_periods 7\nnr_throttled 3\nthrottled_time 5000\n"},
    "cpuacct": {"cpuacct.usage": "3000", "cpuacct.usage_percpu": "1000 2000 ",
                "cpuacct.usage_percpu_sys": "100 200 ", "cpuacct.usage_percpu_user": "900 1800 ",
                "cpuacct.usage_sys": "300", "cpuacct.usage_user": "2700",
                "cpuacct.stat": "user 1\nsystem 2\n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": "", "cpuset.cpu_exclusive": "0",
               "cpuset.sched_load_balance": "1", "cpuset.sched_relax_domain_level": "-1"},
    "memory": {"memory.limit_in_bytes": UNLIMITED, "memory.soft_limit_in_bytes": UNLIMITED,
               "memory.memsw.limit_in_bytes": UNLIMITED, "memory.usage_in_bytes": "4096",
               "memory.max_usage_in_bytes": "8192", "memory.failcnt": "2",
               "memory.memsw.usage_in_bytes": "4096", "memory.memsw.max_usage_in_bytes": "8192",
               "memory.memsw.failcnt": "0", "memory.kmem.limit_in_bytes": UNLIMITED,
               "memory.kmem.usage_in_bytes": "100", "memory.kmem.tcp.limit_in_bytes": UNLIMITED,
               "memory.kmem.tcp.usage_in_bytes": "0", "memory.swappiness": "60",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n",
               "memory.use_hierarchy": "1", "memory.stat": "cache 12288\nrss 4096\n",
               "cgroup.event_control": ""},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm"},
    "freezer": {"freezer.state": "THAWED"},
    "blkio": {"blkio.bfq.weight": "100", "blkio.bfq.weight_device": "",
              "blkio.throttle.read_bps_device": "", "blkio.throttle.write_bps_device": "",
              "blkio.throttle.read_iops_device": "", "blkio.throttle.write_iops_device": "",
              "blkio.throttle.io_service_bytes_recursive": "8:0 Read 10\n8:0 Write 20\nTotal 30\n",
              "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
              "blkio.bfq.io_service_bytes_recursive": "Total 0\n"},
    "pids": {"pids.max": "max", "pids.current": "2"},
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": UNLIMITED, "hugetlb.2MB.usage_in_bytes": "0",
                "hugetlb.2MB.max_usage_in_bytes": "0", "hugetlb.2MB.failcnt": "0"},
    "name=systemd": {},
}
V2_CORE = {"cgroup.controllers": "", "cgroup.subtree_control": "", "cgroup.freeze": "0",
           "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.kill": "",
           "cpu.stat": "usage_usec 5\nuser_usec 3\nsystem_usec 2\n"}
V2_FILES: dict[str, dict[str, str]] = {
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0",
            "cpu.stat": "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 4\nnr_throttled 1\n"
                        "throttled_usec 7\n"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": "", "cpuset.cpus.effective": "0-1",
               "cpuset.mems.effective": "0"},
    "memory": {"memory.max": "max", "memory.swap.max": "max", "memory.low": "0", "memory.high": "max",
               "memory.current": "65536", "memory.peak": "131072", "memory.swap.current": "0",
               "memory.stat": "anon 4096\nfile 8192\n", "memory.events": "max 1\noom 1\noom_kill 2\n"},
    "io": {"io.weight": "default 100", "io.max": "", "io.stat": "8:0 rbytes=10 wbytes=20 rios=1 wios=2\n"},
    "pids": {"pids.max": "max", "pids.current": "1"},
    "hugetlb": {"hugetlb.2MB.max": "max", "hugetlb.2MB.rsvd.max": "max",
                "hugetlb.2MB.current": "0", "hugetlb.2MB.events": "max 0\n"},
}
V1_LAYOUT = ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "name=systemd"]


def _put(d: str, files: dict[str, str]) -> None:
    for name, content in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(content)


class FakeCgroupFS:
    """A fake /sys/fs/cgroup (see the module docstring)."""

    def __init__(self, tmp, mode: str, *, v1: list[str] | None = None, comount: bool = False,
                 v2_controllers: str = "cpuset cpu io memory hugetlb pids", own: dict | None = None,
                 mount_root: str = "/") -> None:
        os.makedirs(tmp, exist_ok=True)
        self.root = str(tmp / "sys" / "fs" / "cgroup")
        self.mode = mode
        self.mounts: dict[str, list[str]] = {}  # mount point -> v1 controllers, or ["<v2>"]
        os.makedirs(self.root)
        lines = []
        n = 30
        if mode in ("v1", "hybrid"):
            groups = [[c] for c in (v1 or V1_LAYOUT)]
            if comount:
                groups = [g for g in groups if g[0] not in ("cpu", "cpuacct")] + [["cpu", "cpuacct"]]
            for g in groups:
                name = ",".join(c.replace("name=", "") for c in g)
                mnt = f"{self.root}/{name}"
                self.mounts[mnt] = g
                n += 1
                lines.append(f"{n} 29 0:{n} {mount_root} {mnt} rw,nosuid,nodev,noexec,relatime shared:9 "
                             f"- cgroup cgroup rw,{','.join(g)}")
            if mode == "hybrid":
                mnt = f"{self.root}/unified"
                self.mounts[mnt] = ["<v2>"]
                lines.append(f"{n + 1} 29 0:{n + 1} / {mnt} rw,relatime - cgroup2 cgroup2 rw")
        else:
            self.mounts[self.root] = ["<v2>"]
            lines.append(f"{n} 29 0:{n} / {self.root} rw,relatime - cgroup2 cgroup2 rw")
        self.v2_controllers = v2_controllers if mode == "v2" else "hugetlb"
        lines.insert(0, f"29 1 0:27 / {os.path.dirname(self.root)} rw - tmpfs tmpfs rw")
        lines.append("50 1 0:50 / /proc rw - proc proc rw")
        self.mountinfo = str(tmp / "mountinfo")
        with open(self.mountinfo, "w") as f:
            f.write("\n".join(lines) + "\n")
        own = own or {}
        self.own_cgroup = str(tmp / "self-cgroup")
        with open(self.own_cgroup, "w") as f:
            entries = []
            v1_groups = [g for g in self.mounts.values() if g != ["<v2>"]]
            for i, g in enumerate(v1_groups):
                entries.append(f"{i + 1}:{','.join(g)}:{own.get(g[0], '/')}")
            entries.append(f"0::{own.get('', '/')}")
            f.write("\n".join(reversed(entries)) + "\n")
        for mnt in self.mounts:
            os.makedirs(mnt, exist_ok=True)
            self._populate(mnt, root=True)
        self.log: list[tuple[str, str]] = []
        self.transform: dict[str, str] = {}  # value written -> value the "kernel" keeps

    def _mount_of(self, path: str) -> str | None:
        best = None
        for mnt in self.mounts:
            if (path == mnt or path.startswith(mnt + "/")) and (best is None or len(mnt) > len(best)):
                best = mnt
        return best

    def _populate(self, d: str, root: bool = False) -> None:
        mnt = self._mount_of(d)
        assert mnt is not None
        ctrls = self.mounts[mnt]
        _put(d, {"cgroup.procs": "", "tasks": ""} if ctrls != ["<v2>"] else {"cgroup.procs": ""})
        if ctrls == ["<v2>"]:
            _put(d, V2_CORE)
            if root:
                _put(d, {"cgroup.controllers": self.v2_controllers})
            for c in self.v2_controllers.split():
                if not root:
                    _put(d, V2_FILES.get(c, {}))
            return
        for c in ctrls:
            files = dict(V1_FILES[c])
            if root:
                files.pop("freezer.state", None)
                files.pop("pids.max", None)
                if c == "cpuset":
                    files.update({"cpuset.cpus": "0-1", "cpuset.mems": "0"})
            _put(d, files)

    def install(self, monkeypatch) -> FakeCgroupFS:
        real_mkdir, real_rmdir, real_write = os.mkdir, os.rmdir, _util.write

        def mkdir(path, mode=0o777, *a, **k):
            real_mkdir(path, mode, *a, **k)
            p = os.fspath(path)
            if self._mount_of(p):
                self._populate(p)

        def rmdir(path, *a, **k):
            p = os.fspath(path)
            if self._mount_of(p) and p not in self.mounts:
                with os.scandir(p) as it:
                    entries = list(it)
                if any(e.is_dir() for e in entries):
                    raise OSError(16, "Device or resource busy", p)  # the kernel's answer
                if self.busy.get(p, 0) > 0:
                    self.busy[p] -= 1
                    raise OSError(16, "Device or resource busy", p)
                for e in entries:
                    os.unlink(e.path)
            real_rmdir(path, *a, **k)

        def write(path: str, value: str) -> None:
            if not path.startswith(self.root + "/"):
                real_write(path, value)  # another fake's file
                return
            self.log.append((path, value))
            real_write(path, self.transform.get(value, value))
            if path.endswith("/cgroup.freeze") and self.freezer_works:
                events = os.path.join(os.path.dirname(path), "cgroup.events")
                with open(events, "w") as f:
                    f.write(f"populated 0\nfrozen {value}\n")

        self.busy: dict[str, int] = {}
        self.freezer_works = True
        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "rmdir", rmdir)
        for mod in (_set, _manager, _util):
            monkeypatch.setattr(mod, "write", write)
        return self

    def open(self, path: str, cid: str = "c1", **kw) -> cgroups.Manager:
        return open_manager(path, cid, cgroup_root=self.root, mountinfo=self.mountinfo,
                            own_cgroup=self.own_cgroup, **kw)

    def created(self, path: str, **kw) -> cgroups.Manager:
        """A manager whose directories exist, with the write log cleared."""
        m = self.open(path, **kw)
        m.create()
        self.log.clear()
        return m

    def writes(self, suffix: str) -> list[str]:
        return [v for p, v in self.log if p.endswith(suffix)]


def cat(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


@pytest.fixture
def v1(tmp_path, monkeypatch) -> FakeCgroupFS:
    return FakeCgroupFS(tmp_path / "v1", "v1", v1=[*V1_LAYOUT, "hugetlb"]).install(monkeypatch)


@pytest.fixture
def hybrid(tmp_path, monkeypatch) -> FakeCgroupFS:
    return FakeCgroupFS(tmp_path / "hybrid", "hybrid").install(monkeypatch)


@pytest.fixture
def v2(tmp_path, monkeypatch) -> FakeCgroupFS:
    return FakeCgroupFS(tmp_path / "v2", "v2").install(monkeypatch)


# --- detection and paths ---------------------------------------------------------------------

def test_v1_absolute_path_is_below_each_mount_point(v1: FakeCgroupFS) -> None:
    m = v1.open("/skiff/c1")
    assert m.version == 1 and m.mode == "v1"
    p = m.paths()
    assert p["memory"] == f"{v1.root}/memory/skiff/c1"
    assert p["cpu"] == f"{v1.root}/cpu/skiff/c1"
    assert p["name=systemd"] == f"{v1.root}/systemd/skiff/c1"
    assert "" not in p


def test_comounted_controllers_share_a_directory(tmp_path, monkeypatch) -> None:
    fs = FakeCgroupFS(tmp_path, "v1", comount=True).install(monkeypatch)
    p = fs.open("/x").paths()
    assert p["cpu"] == p["cpuacct"] == f"{fs.root}/cpu,cpuacct/x"


def test_relative_path_is_below_the_runtimes_own_cgroup_per_controller(tmp_path, monkeypatch) -> None:
    fs = FakeCgroupFS(tmp_path, "hybrid", own={"memory": "/process_api/abc", "": "/u"}).install(monkeypatch)
    p = fs.open("a/b").paths()
    assert p["memory"] == f"{fs.root}/memory/process_api/abc/a/b"
    assert p["pids"] == f"{fs.root}/pids/a/b"
    assert p[""] == f"{fs.root}/unified/u/a/b"


def test_empty_path_is_own_cgroup_slash_container_id_as_runc(tmp_path, monkeypatch) -> None:
    fs = FakeCgroupFS(tmp_path, "v2", own={"": "/user.slice/sess"}).install(monkeypatch)
    m = fs.open("", "mybox")
    assert m.paths() == {"": f"{fs.root}/user.slice/sess/mybox"}
    with pytest.raises(CgroupError, match="container id"):
        fs.open("", "a/b")


def test_dotdot_cannot_climb_out(v1: FakeCgroupFS) -> None:
    assert v1.open("/../../etc").paths()["pids"] == f"{v1.root}/pids/etc"
    assert v1.open("../../x/../y").paths()["pids"] == f"{v1.root}/pids/y"


def test_mount_showing_a_subtree(tmp_path, monkeypatch) -> None:
    # inside a container without a cgroup namespace: the mount's root is the outer cgroup
    fs = FakeCgroupFS(tmp_path, "v1", own={"pids": "/docker/abc/inner"},
                      mount_root="/docker/abc").install(monkeypatch)
    assert fs.open("x").paths()["pids"] == f"{fs.root}/pids/inner/x"
    assert fs.open("/x").paths()["pids"] == f"{fs.root}/pids/x"


def test_detects_v2_and_hybrid(tmp_path, monkeypatch) -> None:
    v2 = FakeCgroupFS(tmp_path / "a", "v2").install(monkeypatch)
    m = v2.open("/x")
    assert (m.version, m.mode, m.paths()) == (2, "v2", {"": f"{v2.root}/x"})
    hy = FakeCgroupFS(tmp_path / "b", "hybrid")
    m = hy.open("/x")
    assert (m.version, m.mode) == (1, "hybrid")
    assert m.paths()[""] == f"{hy.root}/unified/x"


def test_refused_paths_and_hosts(tmp_path, v1: FakeCgroupFS) -> None:
    with pytest.raises(CgroupError, match="systemd cgroups are not supported"):
        v1.open("/x", systemd=True)
    with pytest.raises(CgroupError, match="systemd cgroups are not supported"):
        v1.open("system.slice:docker:abc")
    with pytest.raises(CgroupError, match="root cgroup"):
        v1.open("/")
    with pytest.raises(CgroupError, match="own cgroup"):
        v1.open("a/..")
    empty = tmp_path / "empty-mountinfo"
    empty.write_text("22 1 0:21 / /proc rw - proc proc rw\n")
    with pytest.raises(CgroupError, match="no cgroup filesystem is mounted"):
        open_manager("/x", "c", cgroup_root=v1.root, mountinfo=str(empty))
    with pytest.raises(CgroupError, match="read .*nonexistent"):
        open_manager("/x", "c", cgroup_root=v1.root, mountinfo=str(tmp_path / "nonexistent"))


def test_mountinfo_escapes(tmp_path) -> None:
    mi = tmp_path / "mi"
    root = tmp_path / "my cg"
    mi.write_text(f"31 1 0:31 / {str(root).replace(' ', chr(92) + '040')}/pids rw - cgroup cgroup rw,pids\n")
    m = open_manager("/x", "c", cgroup_root=str(root), mountinfo=str(mi))
    assert m.paths() == {"pids": f"{root}/pids/x"}


def test_state_round_trip(v1: FakeCgroupFS) -> None:
    m = v1.open("/skiff/c1")
    m.create()
    st = json.loads(json.dumps(m.state()))
    m2 = load_manager(st)
    assert (m2.paths(), m2.mode, m2.version, m2.created) == (m.paths(), m.mode, 1, m.created)
    with pytest.raises(CgroupError, match="malformed"):
        load_manager({"mode": "v3", "paths": {}, "mountpoints": {}})
    with pytest.raises(CgroupError, match="missing"):
        load_manager({"mode": "v1"})


# --- create, add, destroy --------------------------------------------------------------------

def test_create_makes_every_directory_and_destroy_removes_them(v1: FakeCgroupFS) -> None:
    m = v1.open("/skiff/c1")
    assert not m.exists()
    m.create()
    assert m.exists()
    for d in set(m.paths().values()):
        assert os.path.isdir(d)
    assert f"{v1.root}/pids/skiff" in m.created and f"{v1.root}/pids/skiff/c1" in m.created
    os.mkdir(m.paths()["pids"] + "/nested")  # a cgroup the container made
    m.destroy()
    assert not m.exists()
    assert not os.path.exists(f"{v1.root}/pids/skiff")
    m.destroy()  # idempotent


def test_destroy_keeps_parents_it_did_not_make_or_that_others_use(v1: FakeCgroupFS) -> None:
    os.mkdir(f"{v1.root}/pids/pre")
    a, b = v1.open("/pre/shared/a", "a"), v1.open("/pre/shared/b", "b")
    a.create()
    b.create()
    a.destroy()
    assert os.path.isdir(f"{v1.root}/pids/pre/shared/b")
    b.destroy()
    # made by a, but in use when a was destroyed; b did not make it: it stays, as runc leaves
    # every parent
    assert os.path.isdir(f"{v1.root}/pids/pre/shared")
    assert os.path.isdir(f"{v1.root}/pids/pre")


def test_create_survives_a_parent_removed_meanwhile(v1: FakeCgroupFS, monkeypatch) -> None:
    """Another container's runtime removes the shared, empty /skiff between our mkdir of it and
    of our own cgroup: mkdir -p starts over."""
    real_mkdir = os.mkdir
    removed: list[str] = []

    def racing_mkdir(path, mode=0o777):
        real_mkdir(path, mode)
        if path.endswith("/pids/skiff") and not removed:
            os.rmdir(path)
            removed.append(path)
    monkeypatch.setattr(_util.os, "mkdir", racing_mkdir)
    m = v1.open("/skiff/c1")
    m.create()
    assert removed and os.path.isdir(m.paths()["pids"])
    assert f"{v1.root}/pids/skiff" in m.created


def test_a_failed_create_removes_what_it_made(v1: FakeCgroupFS, monkeypatch) -> None:
    real_mkdir = os.mkdir

    def failing_mkdir(path, mode=0o777):
        if path.endswith("/memory/skiff/c1"):
            raise PermissionError(13, "Permission denied", path)
        real_mkdir(path, mode)
    monkeypatch.setattr(_util.os, "mkdir", failing_mkdir)
    m = v1.open("/skiff/c1")
    with pytest.raises(CgroupError, match=r"mkdir .*/memory/skiff/c1: [Pp]ermission denied"):
        m.create()
    left = [d for d in m.created if os.path.exists(d)]
    assert left == [] and m.created, m.created


def test_destroy_retries_ebusy(v1: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    v1.busy[m.paths()["pids"]] = 3  # tasks still exiting: rmdir says EBUSY three times
    m.destroy()
    assert not os.path.exists(m.paths()["pids"])


def test_destroy_gives_up_on_lasting_ebusy(v1: FakeCgroupFS, monkeypatch) -> None:
    m = v1.open("/c")
    m.create()
    v1.busy[m.paths()["pids"]] = 10**9
    monkeypatch.setattr(_util.time, "monotonic", iter(range(0, 10**6, 1)).__next__)
    with pytest.raises(CgroupError, match=r"rmdir .*pids/c: Device or resource busy"):
        m.destroy()


def test_create_initialises_v1_cpuset_from_parents(v1: FakeCgroupFS) -> None:
    m = v1.open("/a/b")
    m.create()
    assert cat(f"{v1.root}/cpuset/a/cpuset.cpus") == "0-1"
    assert cat(f"{v1.root}/cpuset/a/b/cpuset.cpus") == "0-1"
    assert cat(f"{v1.root}/cpuset/a/b/cpuset.mems") == "0"


def test_cpuset_with_empty_parent_is_an_error(v1: FakeCgroupFS) -> None:
    with open(f"{v1.root}/cpuset/cpuset.mems", "w"):
        pass
    with pytest.raises(CgroupError, match=r"cpuset/cpuset.mems is empty"):
        v1.open("/a").create()


def test_add_writes_the_pid_to_every_hierarchy(hybrid: FakeCgroupFS) -> None:
    m = hybrid.open("/c")
    m.create()
    m.add(4242)
    dirs = set(m.paths().values())
    assert len(dirs) == 10  # 9 v1 hierarchies and the unified one
    for d in dirs:
        assert cat(d + "/cgroup.procs") == "4242"


def test_v2_create_enables_the_controllers_down_to_the_parent(v2: FakeCgroupFS) -> None:
    m = v2.open("/a/b/c")
    m.create()
    enabled = [(p[len(v2.root):], v) for p, v in v2.log if p.endswith("cgroup.subtree_control")]
    assert ("/cgroup.subtree_control", "+memory") in enabled
    assert ("/a/b/cgroup.subtree_control", "+pids") in enabled
    assert not any(p.startswith("/a/b/c/") for p, _ in enabled)


def test_hybrid_create_enables_nothing_in_the_unified_hierarchy(hybrid: FakeCgroupFS) -> None:
    hybrid.open("/a").create()
    assert hybrid.writes("cgroup.subtree_control") == []


# --- resources on v1 -------------------------------------------------------------------------

def test_v1_memory(v1: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    d = m.paths()["memory"]
    m.set({"memory": {"limit": 50 << 20, "swap": 100 << 20, "reservation": 30 << 20, "swappiness": 10,
                      "kernelTCP": 1 << 20, "disableOOMKiller": True}})
    assert cat(d + "/memory.limit_in_bytes") == str(50 << 20)
    assert cat(d + "/memory.memsw.limit_in_bytes") == str(100 << 20)
    assert cat(d + "/memory.soft_limit_in_bytes") == str(30 << 20)
    assert cat(d + "/memory.swappiness") == "10"
    assert cat(d + "/memory.kmem.tcp.limit_in_bytes") == str(1 << 20)
    assert cat(d + "/memory.oom_control") == "1"
    # from unlimited, the limit comes down first: the kernel wants limit <= memsw throughout
    names = [p.rsplit("/", 1)[1] for p, _ in v1.log if "limit_in_bytes" in p]
    assert names[:2] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_v1_memory_order_of_limit_and_swap_writes(v1: FakeCgroupFS) -> None:
    m = v1.created("/c")
    m.set({"memory": {"limit": 100 << 20, "swap": 200 << 20}})
    v1.log.clear()
    m.update({"memory": {"limit": 10 << 20, "swap": 20 << 20}})  # lowering: limit first
    assert [p.rsplit("/", 1)[1] for p, _ in v1.log] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    v1.log.clear()
    m.update({"memory": {"limit": 300 << 20, "swap": 400 << 20}})  # raising: swap first
    assert [p.rsplit("/", 1)[1] for p, _ in v1.log] == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]


def test_v1_unlimited_memory_lifts_swap_too(v1: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    m.set({"memory": {"limit": -1}})
    assert v1.writes("memory.memsw.limit_in_bytes") == ["-1"]
    assert v1.writes("memory.limit_in_bytes") == ["-1"]


def test_v1_memory_zero_means_unset(v1: FakeCgroupFS) -> None:
    m = v1.created("/c")
    m.set({"memory": {"limit": 0, "reservation": 0, "swap": 0}})
    assert v1.log == []


def test_v1_swap_without_swap_accounting(v1: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    os.unlink(m.paths()["memory"] + "/memory.memsw.limit_in_bytes")
    with pytest.raises(CgroupError, match=r"memory.swap: this kernel does not account swap"):
        m.set({"memory": {"limit": 1 << 20, "swap": 2 << 20}})
    m.set({"memory": {"limit": -1, "swap": -1}})  # nothing to lift: fine


def test_v1_kernel_memory_needs_the_file(v1: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    d = m.paths()["memory"]
    m.set({"memory": {"kernel": 1 << 20}})
    assert cat(d + "/memory.kmem.limit_in_bytes") == str(1 << 20)
    os.unlink(d + "/memory.kmem.limit_in_bytes")
    m.set({"memory": {"kernel": -1}})
    with pytest.raises(CgroupError, match=r"memory.kernel: this kernel has no memory.kmem.limit_in_bytes"):
        m.set({"memory": {"kernel": 1 << 20}})


def test_v1_memory_limit_below_usage_is_explained(v1: FakeCgroupFS, monkeypatch) -> None:
    m = v1.open("/c")
    m.create()
    real = _util.write

    def busy(path: str, value: str) -> None:
        if path.endswith("memory.limit_in_bytes"):
            raise CgroupError(f"write {value!r} to {path}: Device or resource busy", 16)
        real(path, value)

    monkeypatch.setattr(_set, "write", busy)
    with pytest.raises(CgroupError, match=r"memory.limit: cannot set .* below the current usage 4096 "
                                          r"\(peak 8192\)"):
        m.set({"memory": {"limit": 1024}})


def test_v1_cpu(v1: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    d = m.paths()["cpu"]
    m.set({"cpu": {"shares": 512, "quota": 50000, "period": 100000, "burst": 1000,
                   "realtimePeriod": 1000000, "realtimeRuntime": 950000, "idle": 0,
                   "cpus": "1", "mems": "0"}})
    for f, v in (("cpu.shares", "512"), ("cpu.cfs_quota_us", "50000"), ("cpu.cfs_period_us", "100000"),
                 ("cpu.cfs_burst_us", "1000"), ("cpu.rt_period_us", "1000000"),
                 ("cpu.rt_runtime_us", "950000"), ("cpu.idle", "0")):
        assert cat(f"{d}/{f}") == v, f
    assert cat(m.paths()["cpuset"] + "/cpuset.cpus") == "1"
    assert v1.writes("cpuset.mems")[-1] == "0"


def test_v1_cpu_shares_clamped_by_the_kernel(v1: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    v1.transform["1000000"] = "262144"  # what the kernel keeps
    with pytest.raises(CgroupError, match=r"cpu.shares: the kernel set .*cpu.shares to 262144, not 1000000"):
        m.set({"cpu": {"shares": 1000000}})


def test_pids_limit_values(v1: FakeCgroupFS, v2: FakeCgroupFS) -> None:
    for fs in (v1, v2):
        m = fs.open("/c")
        m.create()
        f = m.paths()["pids" if fs is v1 else ""] + "/pids.max"
        m.set({"pids": {"limit": 100}})
        assert cat(f) == "100"
        m.update({"pids": {"limit": -1}})
        assert cat(f) == "max"
        m.update({"pids": {"limit": 0}})  # a real limit, as the spec says
        assert cat(f) == "0"


def test_v1_blkio_uses_bfq_weight_without_cfq(v1: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    d = m.paths()["blkio"]
    m.set({"blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 300}],
                       "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                       "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 30}]}})
    assert cat(d + "/blkio.bfq.weight") == "500"
    assert cat(d + "/blkio.bfq.weight_device") == "8:0 300"
    assert cat(d + "/blkio.throttle.read_bps_device") == "8:0 1000"
    assert cat(d + "/blkio.throttle.write_iops_device") == "8:16 30"
    with pytest.raises(CgroupError, match=r"blockIO.leafWeight: .*no blkio.leaf_weight"):
        m.set({"blockIO": {"leafWeight": 500}})
    with pytest.raises(CgroupError, match=r"weightDevice\[0\].leafWeight: .*no blkio.leaf_weight_device"):
        m.set({"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "leafWeight": 300}]}})
    _put(d, {"blkio.weight": "500"})  # a kernel with CFQ: its file wins
    m.set({"blockIO": {"weight": 700}})
    assert cat(d + "/blkio.weight") == "700"
    os.unlink(d + "/blkio.weight")
    os.unlink(d + "/blkio.bfq.weight")
    with pytest.raises(CgroupError, match=r"blockIO.weight: .*neither blkio.weight nor blkio.bfq.weight"):
        m.set({"blockIO": {"weight": 500}})


def test_v1_devices_rules_in_order_after_deny_all(v1: FakeCgroupFS) -> None:
    m = v1.created("/c")
    m.set({"devices": [{"allow": False, "access": "rwm"},
                       {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                       {"allow": True, "type": "c", "major": 136},
                       {"allow": False, "type": "b", "minor": 0, "access": "m"},
                       {"allow": True, "type": "a", "major": 10, "access": "r"}]})
    got = [(p.rsplit("/", 1)[1], v) for p, v in v1.log]
    assert got == [("devices.deny", "a"), ("devices.deny", "a"), ("devices.allow", "c 1:3 rw"),
                   ("devices.allow", "c 136:* rwm"), ("devices.deny", "b *:0 m"),
                   ("devices.allow", "b 10:* r"), ("devices.allow", "c 10:* r")]


def test_hugetlb_v1_and_hybrid(v1: FakeCgroupFS, hybrid: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    m.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    assert cat(m.paths()["hugetlb"] + "/hugetlb.2MB.limit_in_bytes") == str(4 << 20)
    with pytest.raises(CgroupError, match=r"hugepageLimits\[0\].pageSize: no huge page size 1GB .*sizes: 2MB"):
        m.set({"hugepageLimits": [{"pageSize": "1GB", "limit": 0}]})
    h = hybrid.open("/a/c")
    h.create()
    h.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]})
    u = h.paths()[""]
    assert cat(u + "/hugetlb.2MB.max") == cat(u + "/hugetlb.2MB.rsvd.max") == str(4 << 20)
    assert [(p[len(hybrid.root):], v) for p, v in hybrid.log if "subtree" in p] == [
        ("/unified/cgroup.subtree_control", "+hugetlb"), ("/unified/a/cgroup.subtree_control", "+hugetlb")]


def test_hybrid_resource_without_v1_hierarchy_or_v2_controller(hybrid: FakeCgroupFS) -> None:
    m = hybrid.open("/c")
    m.create()
    with pytest.raises(CgroupError, match=r"rdma: the rdma controller is not available in the cgroup v2 "
                                          r"hierarchy .*offers: hugetlb.*no v1 hierarchy"):
        m.set({"rdma": {"mlx5_0": {"hcaHandles": 3}}})
    with pytest.raises(CgroupError, match=r"network.classID: the net_cls controller is not available "
                                          r"\(no v1 net_cls hierarchy is mounted\)"):
        m.set({"network": {"classID": 1}})
    with pytest.raises(CgroupError, match=r"network.priorities: the net_prio controller"):
        m.set({"network": {"priorities": [{"name": "eth0", "priority": 5}]}})
    with pytest.raises(CgroupError, match=r"unified.memory.max: .*memory controller is not available"):
        m.set({"unified": {"memory.max": "10"}})


def test_unified_on_v1_only_host(v1: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    with pytest.raises(CgroupError, match=r"unified: this host has no cgroup v2 hierarchy"):
        m.set({"unified": {"pids.max": "10"}})


def test_refuses_unknown_keys_and_bad_values(v1: FakeCgroupFS) -> None:
    m = v1.created("/c")
    cases = [
        ({"bogus": {}}, r"linux.resources.bogus: unknown field"),
        ({"memory": {"limt": 1}}, r"memory.limt: unknown field"),
        ({"cpu": {"shares": "1024"}}, r"cpu.shares: expected an unsigned integer, got str"),
        ({"cpu": {"shares": -1}}, r"cpu.shares: -1 is out of range"),
        ({"memory": {"disableOOMKiller": 1}}, r"disableOOMKiller: expected a boolean"),
        ({"memory": {"limit": -5}}, r"memory.limit: -5 is not a byte count"),
        ({"memory": {"swappiness": 101}}, r"swappiness: 101 is out of range"),
        ({"pids": {}}, r"pids.limit: required"),
        ({"cpu": {"cpus": "0-x"}}, r"cpu.cpus: '0-x' is not a list"),
        ({"cpu": {"quota": 1000, "burst": 2000}}, r"cpu.burst: 2000 is larger than cpu.quota"),
        ({"blockIO": {"weight": 5}}, r"blockIO.weight: 5 is out of range \[10, 1000\]"),
        ({"blockIO": {"weightDevice": [{"major": 8, "minor": 0}]}}, r"needs weight or leafWeight"),
        ({"hugepageLimits": [{"pageSize": "2XB", "limit": 1}]}, r"pageSize: '2XB' is not a size"),
        ({"devices": [{"access": "r"}]}, r"devices\[0\].allow: required"),
        ({"devices": [{"allow": True, "type": "x"}]}, r"devices\[0\].type: 'x' is not a, b or c"),
        ({"devices": [{"allow": True, "access": "rx"}]}, r"devices\[0\].access: 'rx'"),
        ({"unified": {"../x": "1"}}, r"unified: '../x' is not a file name"),
        ({"unified": {"pids.max": 5}}, r"unified.pids.max: expected a string"),
        ([], r"linux.resources: expected an object"),
    ]
    for res, msg in cases:
        with pytest.raises(CgroupError, match=msg):
            m.set(res)
    assert v1.log == []  # nothing was written for any of them
    m.set({"memory": None, "cpu": {"shares": None}})  # null members are absent members


def test_write_errors_name_field_file_and_value(v1: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    os.unlink(m.paths()["pids"] + "/pids.max")
    with pytest.raises(CgroupError) as e:
        m.set({"pids": {"limit": 10}})
    assert str(e.value) == (f"linux.resources.pids.limit: write '10' to {m.paths()['pids']}/pids.max: "
                            "no such file (the kernel or this hierarchy does not provide it)")
    assert e.value.errno == 2 and isinstance(e.value, OSError)


# --- resources on v2 -------------------------------------------------------------------------

@pytest.mark.parametrize("shares,weight", [(2, 1), (1024, 39), (262144, 10000), (1, 1), (10**6, 10000),
                                           (512, 20)])
def test_v2_cpu_weight_from_shares(v2: FakeCgroupFS, shares: int, weight: int) -> None:
    m = v2.open("/c")
    m.create()
    m.set({"cpu": {"shares": shares}})
    assert cat(m.paths()[""] + "/cpu.weight") == str(weight)
    assert weight == 1 + ((min(max(shares, 2), 262144) - 2) * 9999) // 262142


def test_v2_cpu_max(v2: FakeCgroupFS) -> None:
    m = v2.open("/c")
    m.create()
    f = m.paths()[""] + "/cpu.max"
    m.set({"cpu": {"quota": 50000, "period": 100000}})
    assert cat(f) == "50000 100000"
    m.update({"cpu": {"period": 200000}})  # keeps the quota
    assert cat(f) == "50000 200000"
    m.update({"cpu": {"quota": 10000}})  # keeps the period
    assert cat(f) == "10000 200000"
    m.update({"cpu": {"quota": -1}})
    assert cat(f) == "max 200000"
    m.update({"cpu": {"burst": 5000, "idle": 1}})
    assert cat(m.paths()[""] + "/cpu.max.burst") == "5000"
    assert cat(m.paths()[""] + "/cpu.idle") == "1"
    with pytest.raises(CgroupError, match=r"cpu.realtimeRuntime: cgroup v2 has no real-time"):
        m.set({"cpu": {"realtimeRuntime": 1000}})


def test_v2_memory_and_swap_conversion(v2: FakeCgroupFS) -> None:
    m = v2.open("/c")
    m.create()
    d = m.paths()[""]
    m.set({"memory": {"limit": 100 << 20, "swap": 300 << 20, "reservation": 50 << 20}})
    assert cat(d + "/memory.max") == str(100 << 20)
    assert cat(d + "/memory.swap.max") == str(200 << 20)  # OCI swap = memory + swap
    assert cat(d + "/memory.low") == str(50 << 20)
    m.update({"memory": {"limit": 100 << 20, "swap": 100 << 20}})
    assert cat(d + "/memory.swap.max") == "0"
    m.update({"memory": {"limit": -1}})
    assert cat(d + "/memory.max") == "max" and cat(d + "/memory.swap.max") == "max"
    _put(d, {"memory.max": str(64 << 20)})
    m.update({"memory": {"swap": 96 << 20}})  # update of swap alone: against the current limit
    assert cat(d + "/memory.swap.max") == str(32 << 20)
    bad = [({"swap": 1 << 20, "limit": 2 << 20}, r"memory.swap: 1048576 is below memory.limit"),
           ({"swappiness": 10}, r"swappiness: cgroup v2 has no per-cgroup swappiness"),
           ({"disableOOMKiller": True}, r"disableOOMKiller: cgroup v2 cannot"),
           ({"kernel": 1 << 20}, r"memory.kernel: cgroup v2 has no kernel memory limits"),
           ({"limit": 1024, "checkBeforeUpdate": True}, r"memory.limit: 1024 is below the current usage 65536")]
    for mem, msg in bad:
        with pytest.raises(CgroupError, match=msg):
            m.set({"memory": mem})
    with pytest.raises(CgroupError, match=r"without a memory limit"):
        m.set({"memory": {"swap": 1 << 20}})
    m.set({"memory": {"kernel": -1, "kernelTCP": 0, "swappiness": -1, "disableOOMKiller": False}})


def test_v2_io(v2: FakeCgroupFS) -> None:
    m = v2.open("/c")
    m.create()
    d = m.paths()[""]
    m.set({"blockIO": {"weight": 10, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                       "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 0}]}})
    assert cat(d + "/io.weight") == "1"
    assert v2.writes("/io.max") == ["8:0 rbps=1000", "8:0 wiops=max"]
    m.set({"blockIO": {"weight": 1000, "weightDevice": [{"major": 8, "minor": 0, "weight": 505}]}})
    assert v2.writes("/io.weight")[-2:] == ["10000", "8:0 5000"]
    _put(d, {"io.bfq.weight": "100"})
    m.set({"blockIO": {"weight": 300}})
    assert cat(d + "/io.bfq.weight") == "300"
    with pytest.raises(CgroupError, match=r"blockIO.leafWeight: cgroup v2 has no leaf weights"):
        m.set({"blockIO": {"leafWeight": 300}})


def test_v2_cpuset_hugetlb_unified(v2: FakeCgroupFS) -> None:
    m = v2.open("/c")
    m.create()
    d = m.paths()[""]
    m.set({"cpu": {"cpus": "0-1", "mems": "0"}, "hugepageLimits": [{"pageSize": "2MB", "limit": 2 << 20}],
           "unified": {"memory.high": "123456", "pids.max": "7"}})
    assert cat(d + "/cpuset.cpus") == "0-1" and cat(d + "/cpuset.mems") == "0"
    assert cat(d + "/hugetlb.2MB.max") == str(2 << 20)
    assert cat(d + "/memory.high") == "123456" and cat(d + "/pids.max") == "7"
    with pytest.raises(CgroupError, match=r"network.classID: .*cgroup v2 has none"):
        m.set({"network": {"classID": 1}})


def test_v2_controller_not_offered(tmp_path, monkeypatch) -> None:
    fs = FakeCgroupFS(tmp_path, "v2", v2_controllers="memory pids").install(monkeypatch)
    m = fs.open("/c")
    m.create()
    with pytest.raises(CgroupError, match=r"cpu: the cpu controller is not available in the cgroup v2 "
                                          r"hierarchy at .* \(it offers: memory pids\)$"):
        m.set({"cpu": {"shares": 1024}})


def test_v2_enable_failure_explains_internal_processes(v2: FakeCgroupFS, monkeypatch) -> None:
    m = v2.open("/busy/c")
    m.create()
    real = _util.write

    def refuse(path: str, value: str) -> None:
        if path.endswith("/busy/cgroup.subtree_control"):
            raise CgroupError(f"write {value!r} to {path}: Device or resource busy", 16)
        real(path, value)

    _put(f"{v2.root}/busy", {"cgroup.subtree_control": ""})
    monkeypatch.setattr(_manager, "write", refuse)
    with pytest.raises(CgroupError, match=r"pids.limit: enable the pids controller: .*busy/cgroup.subtree_control"
                                          r".*has processes of its own"):
        m.set({"pids": {"limit": 5}})


def test_v2_devices_load_attach_then_detach_old(v2: FakeCgroupFS) -> None:
    rec = RecordingSyscalls()
    rec.bpf_attached = [41, 42]
    m = v2.open("/c", syscalls=rec)
    m.create()
    m.set({"devices": [{"allow": False, "access": "rwm"},
                       {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]})
    names = rec.names()
    assert names == ["bpf_prog_query", "bpf_prog_load", "bpf_prog_attach", "bpf_prog_get_fd_by_id",
                     "bpf_prog_detach", "bpf_prog_get_fd_by_id", "bpf_prog_detach"]
    load = rec.calls[1]
    assert load[1] == 15 and len(load[2]) % 8 == 0  # BPF_PROG_TYPE_CGROUP_DEVICE, whole insns
    assert rec.calls[2] == ("bpf_prog_attach", 6, 2)  # BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI
    assert [c[1] for c in rec.calls if c[0] == "bpf_prog_get_fd_by_id"] == [41, 42]


def test_v2_devices_load_failure_is_reported(v2: FakeCgroupFS) -> None:
    rec = RecordingSyscalls(fail={"bpf_prog_load": 1})
    m = v2.open("/c", syscalls=rec)
    m.create()
    with pytest.raises(CgroupError, match=r"linux.resources.devices: load the eBPF device program "
                                          r"\(\d+ instructions\) for .*/c: .*Operation not permitted"):
        m.set({"devices": [{"allow": True}]})
    assert "bpf_prog_attach" not in rec.names()


# --- freezer ---------------------------------------------------------------------------------

def test_v1_freeze_thaw(v1: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    m.freeze()
    assert m.frozen() and cat(m.paths()["freezer"] + "/freezer.state") == "FROZEN"
    m.thaw()
    assert not m.frozen()


def test_v1_freeze_that_never_completes_thaws_again(v1: FakeCgroupFS, monkeypatch) -> None:
    m = v1.open("/c")
    m.create()
    v1.transform["FROZEN"] = "FREEZING"
    monkeypatch.setattr(_manager, "FREEZE_TIMEOUT", 0.2)
    with pytest.raises(CgroupError, match=r"freezer.state: still FREEZING 0.2s after writing FROZEN "
                                          r"\(thawed again\)"):
        m.freeze()
    assert v1.writes("freezer.state")[-1] == "THAWED"
    assert v1.writes("freezer.state").count("FROZEN") >= 2  # written again while waiting


def test_v2_freeze_thaw_and_timeout(v2: FakeCgroupFS, monkeypatch) -> None:
    m = v2.open("/c")
    m.create()
    d = m.paths()[""]
    m.freeze()
    assert m.frozen() and cat(d + "/cgroup.freeze") == "1"
    m.thaw()
    assert not m.frozen()
    v2.freezer_works = False  # the kernel never reports frozen
    monkeypatch.setattr(_manager, "FREEZE_TIMEOUT", 0.1)
    with pytest.raises(CgroupError, match=r"cgroup.events: no 'frozen 1' 0.1s after writing 1"):
        m.freeze()
    assert cat(d + "/cgroup.freeze") == "0"


def test_hybrid_uses_the_v1_freezer(hybrid: FakeCgroupFS) -> None:
    m = hybrid.open("/c")
    m.create()
    m.freeze()
    assert hybrid.writes("freezer.state")[0] == "FROZEN" and hybrid.writes("cgroup.freeze") == []


# --- processes -------------------------------------------------------------------------------

def test_pids_is_recursive_and_deduplicated(hybrid: FakeCgroupFS) -> None:
    m = hybrid.open("/c")
    m.create()
    p = m.paths()
    _put(p["pids"], {"cgroup.procs": "10\n11\n"})
    _put(p[""], {"cgroup.procs": "10\n"})
    os.mkdir(p["pids"] + "/sub")
    _put(p["pids"] + "/sub", {"cgroup.procs": "12\n"})
    assert m.pids() == [10, 11, 12]
    m.destroy()
    with pytest.raises(CgroupError, match="its cgroup does not exist"):
        m.pids()


def test_kill_all_v1_freezes_signals_thaws(v1: FakeCgroupFS) -> None:
    rec = RecordingSyscalls()
    m = v1.open("/c", syscalls=rec)
    m.create()
    _put(m.paths()["pids"], {"cgroup.procs": "10\n11\n"})
    m.kill_all(signal.SIGTERM)
    assert rec.calls == [("kill", 10, 15), ("kill", 11, 15)]
    assert v1.writes("freezer.state") == ["FROZEN", "THAWED"]


def test_kill_all_leaves_a_paused_container_frozen(v1: FakeCgroupFS) -> None:
    rec = RecordingSyscalls()
    m = v1.open("/c", syscalls=rec)
    m.create()
    _put(m.paths()["pids"], {"cgroup.procs": "10\n"})
    m.freeze()
    m.kill_all(signal.SIGKILL)
    assert rec.calls == [("kill", 10, 9)] and m.frozen()


def test_kill_all_gone_process_is_fine_other_errors_are_not(v1: FakeCgroupFS) -> None:
    m = v1.open("/c", syscalls=RecordingSyscalls(fail={"kill": 3}))  # ESRCH
    m.create()
    _put(m.paths()["pids"], {"cgroup.procs": "10\n"})
    m.kill_all(signal.SIGTERM)
    m = v1.open("/c", syscalls=RecordingSyscalls(fail={"kill": 1}))  # EPERM
    with pytest.raises(CgroupError, match=r"kill -15 10 \(container c1\): .*Operation not permitted"):
        m.kill_all(signal.SIGTERM)
    assert v1.writes("freezer.state")[-1] == "THAWED"


def test_kill_all_sigkill_uses_cgroup_kill(hybrid: FakeCgroupFS, v2: FakeCgroupFS) -> None:
    for fs in (hybrid, v2):
        rec = RecordingSyscalls()
        m = fs.open("/c", syscalls=rec)
        m.create()
        _put(m.paths()[""], {"cgroup.procs": "10\n"})
        if fs is hybrid:
            _put(m.paths()["pids"], {"cgroup.procs": "11\n"})  # in a v1 cgroup only
        m.kill_all(signal.SIGKILL)
        assert fs.writes("cgroup.kill") == ["1"]
        # hybrid: then every listed process too (the v1 cgroups may hold processes the v2 one
        # does not; those cgroup.kill got are gone by then, ESRCH, ignored)
        assert rec.calls == ([] if fs is v2 else [("kill", 10, 9), ("kill", 11, 9)])
        rec.calls.clear()
        m.kill_all(signal.SIGHUP)
        assert rec.calls == ([("kill", 10, 1)] if fs is v2 else [("kill", 10, 1), ("kill", 11, 1)])


# --- oom, stats ------------------------------------------------------------------------------

def test_oom_kill_count_and_event_fd(v1: FakeCgroupFS, v2: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    assert m.oom_kill_count() == 4
    fd = m.oom_event_fd()
    assert fd is not None
    try:
        efd, cfd = v1.writes("cgroup.event_control")[0].split()
        assert int(efd) == fd and int(cfd) >= 0
    finally:
        os.close(fd)
    m2 = v2.open("/c")
    m2.create()
    assert m2.oom_kill_count() == 2 and m2.oom_event_fd() is None


def test_stats_v1(v1: FakeCgroupFS) -> None:
    m = v1.open("/c")
    m.create()
    s = m.stats()
    assert s["cpu"]["usage"] == {"total": 3000, "percpu": [1000, 2000], "percpu_kernel": [100, 200],
                                 "percpu_user": [900, 1800], "kernel": 300, "user": 2700}
    assert s["cpu"]["throttling"] == {"periods": 7, "throttledPeriods": 3, "throttledTime": 5000}
    assert s["memory"]["usage"] == {"limit": int(UNLIMITED), "usage": 4096, "max": 8192, "failcnt": 2}
    assert s["memory"]["cache"] == 12288 and s["memory"]["raw"] == {"cache": 12288, "rss": 4096}
    assert s["memory"]["kernel"]["usage"] == 100
    assert s["pids"] == {"current": 2, "limit": (1 << 64) - 1}
    assert s["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 10}, {"major": 8, "minor": 0, "op": "Write", "value": 20}]
    assert len(s["blkio"]["ioServicedRecursive"]) == 2
    assert s["hugetlb"] == {"2MB": {"usage": 0, "max": 0, "failcnt": 0}}
    assert s["cpuset"]["cpus"] == [0, 1] and s["cpuset"]["sched_relax_domain_level"] == -1
    json.dumps(s)


def test_stats_v2(v2: FakeCgroupFS) -> None:
    m = v2.open("/c")
    m.create()
    _put(m.paths()[""], {"memory.max": str(1 << 30), "memory.swap.max": str(1 << 30),
                         "memory.swap.current": "4096"})
    s = m.stats()
    assert s["cpu"]["usage"]["total"] == 5000 and s["cpu"]["usage"]["user"] == 3000
    assert s["cpu"]["throttling"] == {"periods": 4, "throttledPeriods": 1, "throttledTime": 7000}
    assert s["memory"]["usage"] == {"limit": 1 << 30, "usage": 65536, "max": 131072, "failcnt": 1}
    assert s["memory"]["swap"]["usage"] == 65536 + 4096 and s["memory"]["swap"]["limit"] == 2 << 30
    assert s["memory"]["cache"] == 8192
    assert s["pids"] == {"current": 1, "limit": (1 << 64) - 1}
    assert {"major": 8, "minor": 0, "op": "Write", "value": 2} in s["blkio"]["ioServicedRecursive"]
    assert s["hugetlb"]["2MB"]["usage"] == 0
    assert s["cpuset"]["cpus"] == [0, 1]


def test_stats_shape_is_complete_without_controllers(tmp_path, monkeypatch) -> None:
    fs = FakeCgroupFS(tmp_path, "v1", v1=["pids"]).install(monkeypatch)
    m = fs.open("/c")
    m.create()
    s = m.stats()
    assert set(s) == {"cpu", "cpuset", "memory", "pids", "blkio", "hugetlb"}
    assert s["memory"]["usage"] == {"limit": 0, "usage": 0, "max": 0, "failcnt": 0}
    assert s["pids"]["current"] == 2


def test_with_default_devices_appends_runcs_rules() -> None:
    from skiff.oci.spec import Device

    res = cgroups.with_default_devices({"devices": [{"allow": False, "access": "rwm"}], "pids": {"limit": 5}},
                                       [Device("c", "/dev/fuse", 10, 229), Device("p", "/dev/fifo")])
    assert res["pids"] == {"limit": 5}
    # as runc: linux.devices get nodes, not rules; the config's rules, then runc's defaults
    assert res["devices"][0] == {"allow": False, "access": "rwm"}
    assert res["devices"][1:] == cgroups.DEFAULT_RULES
    assert len(cgroups.DEFAULT_RULES) == 11


def test_with_default_devices_drops_defaults_the_config_lists_itself() -> None:
    from skiff.oci.spec import Device

    res = cgroups.with_default_devices(None, [Device("c", "/dev/null", 1, 3)])
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} not in res["devices"]
    assert res["devices"] == [r for r in cgroups.DEFAULT_RULES if r.get("minor") != 3 or r["major"] != 1]


def test_import_cost_stays_low() -> None:
    import subprocess
    import sys

    code = ("import sys; import skiff.runtime.cgroups; "
            "print(' '.join(m for m in ('re', 'typing', 'dataclasses', 'subprocess', 'enum', 'ctypes', "
            "'inspect', 'logging', 'socket') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path[:0] = " + repr(sys.path) + "; " + code],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == []
