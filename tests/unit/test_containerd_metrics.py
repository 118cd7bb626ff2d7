"""skiff.containerd.metrics: events --stats data as containerd's cgroup v1 / v2 metrics."""

from __future__ import annotations

from skiff.containerd import protos
from skiff.containerd.metrics import cgroup_unified, metrics_any, v1_metrics, v2_metrics
from skiff.runtime.cgroups._stats import empty

api = protos.load()
MAX = (1 << 64) - 1


def sample() -> dict:
    s = empty()
    s["cpu"]["usage"].update(total=5_000_123, kernel=2_000_000, user=3_000_999, percpu=[1_000_123, 4_000_000])
    s["cpu"]["throttling"].update(periods=7, throttledPeriods=2, throttledTime=9_000)
    s["memory"]["usage"].update(usage=4096 * 100, limit=64 << 20, max=4096 * 120, failcnt=3)
    s["memory"]["swap"].update(usage=4096 * 150, limit=128 << 20)
    s["memory"]["raw"] = {"cache": 4096, "rss": 8192, "pgpgin": 11, "total_pgmajfault": 5,
                          "hierarchical_memory_limit": 64 << 20, "hierarchical_memsw_limit": 128 << 20,
                          "anon": 8192, "file": 4096, "pgfault": 12}
    s["pids"].update(current=3, limit=MAX)
    s["blkio"]["ioServiceBytesRecursive"] = [{"major": 8, "minor": 0, "op": "Read", "value": 512},
                                            {"major": 8, "minor": 0, "op": "Write", "value": 1024}]
    s["blkio"]["ioServicedRecursive"] = [{"major": 8, "minor": 0, "op": "Read", "value": 1},
                                        {"major": 8, "minor": 0, "op": "Discard", "value": 9}]
    s["hugetlb"] = {"2MB": {"usage": 2 << 20, "max": 4 << 20, "failcnt": 1}}
    return s


def test_v1_fields(tmp_path):
    dev = tmp_path / "dev" / "block" / "8:0"
    dev.mkdir(parents=True)
    (dev / "uevent").write_text("MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n")
    m = v1_metrics(api, sample(), sys_root=str(tmp_path))
    assert (m.cpu.usage.total, m.cpu.usage.kernel, m.cpu.usage.user) == (5_000_123, 2_000_000, 3_000_999)
    assert list(m.cpu.usage.per_cpu) == [1_000_123, 4_000_000]
    assert (m.cpu.throttling.periods, m.cpu.throttling.throttled_periods, m.cpu.throttling.throttled_time) == (7, 2, 9_000)
    assert (m.memory.usage.usage, m.memory.usage.limit, m.memory.usage.max, m.memory.usage.failcnt) == \
        (409600, 64 << 20, 491520, 3)
    assert (m.memory.swap.usage, m.memory.swap.limit) == (4096 * 150, 128 << 20)
    assert (m.memory.cache, m.memory.rss, m.memory.pg_pg_in, m.memory.total_pg_maj_fault) == (4096, 8192, 11, 5)
    assert (m.memory.hierarchical_memory_limit, m.memory.hierarchical_swap_limit) == (64 << 20, 128 << 20)
    assert (m.pids.current, m.pids.limit) == (3, 0)  # unlimited ("max") is 0, as containerd says
    assert [(e.op, e.device, e.major, e.minor, e.value) for e in m.blkio.io_service_bytes_recursive] == \
        [("Read", "/dev/sda", 8, 0, 512), ("Write", "/dev/sda", 8, 0, 1024)]
    assert [(e.op, e.value) for e in m.blkio.io_serviced_recursive] == [("Read", 1), ("Discard", 9)]
    assert [(h.pagesize, h.usage, h.max, h.failcnt) for h in m.hugetlb] == [("2MB", 2 << 20, 4 << 20, 1)]


def test_v1_unknown_device_and_bad_values(tmp_path):
    s = sample()
    s["pids"]["limit"] = 100
    s["memory"]["raw"]["rss"] = -1  # not a uint64: reported as 0
    m = v1_metrics(api, s, sys_root=str(tmp_path))
    assert m.pids.limit == 100 and m.memory.rss == 0
    assert {e.device for e in m.blkio.io_service_bytes_recursive} == {""}


def test_v2_fields():
    m = v2_metrics(api, sample())
    assert (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec) == (5000, 3000, 2000)
    assert (m.cpu.nr_periods, m.cpu.nr_throttled, m.cpu.throttled_usec) == (7, 2, 9)
    assert (m.memory.usage, m.memory.usage_limit) == (409600, 64 << 20)
    # the stats data counts memory+swap; v2 reports swap alone
    assert (m.memory.swap_usage, m.memory.swap_limit) == (4096 * 50, 64 << 20)
    assert (m.memory.anon, m.memory.file, m.memory.pgfault) == (8192, 4096, 12)
    assert m.memory_events.max == 3
    assert (m.pids.current, m.pids.limit) == (3, 0)
    assert [(e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios) for e in m.io.usage] == [(8, 0, 512, 1024, 1, 0)]
    assert [(h.pagesize, h.current, h.max) for h in m.hugetlb] == [("2MB", 2 << 20, 4 << 20)]


def test_any_type_follows_the_cgroup_mode(tmp_path):
    assert not cgroup_unified(str(tmp_path))
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    assert cgroup_unified(str(tmp_path))
    for unified, name, mod in ((False, "io.containerd.cgroups.v1.Metrics", api.cgroups_v1),
                               (True, "io.containerd.cgroups.v2.Metrics", api.cgroups_v2)):
        a = metrics_any(api, sample(), unified=unified)
        assert a.type_url == name
        assert mod.Metrics.FromString(a.value).pids.current == 3
