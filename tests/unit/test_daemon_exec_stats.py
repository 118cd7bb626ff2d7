"""Stats, top and update helpers of skiffd (no root): cgroup v1 and v2 metrics messages into
Docker's stats object, ps output filtering, update bodies and their checks."""

from __future__ import annotations

import pytest

from skiff.containerd.protos import load
from skiff.daemon.api.errors import ApiError, Conflict, InvalidParameter
from skiff.daemon.containers import stats as st

MiB = 1 << 20


def _v1():
    pb = load().cgroups_v1
    m = pb.Metrics()
    m.cpu.usage.total = 5_000_000
    m.cpu.usage.kernel = 1_000_000
    m.cpu.usage.user = 4_000_000
    m.cpu.usage.per_cpu.extend([3_000_000, 2_000_000])
    m.cpu.throttling.periods = 7
    m.cpu.throttling.throttled_periods = 2
    m.cpu.throttling.throttled_time = 99
    m.memory.usage.usage = 10 * MiB
    m.memory.usage.limit = 64 * MiB
    m.memory.usage.max = 12 * MiB
    m.memory.cache = 3 * MiB
    m.memory.total_inactive_file = 2 * MiB
    m.memory.pg_fault = 11
    m.pids.current = 3
    m.pids.limit = 8
    m.blkio.io_service_bytes_recursive.add(op="Read", major=8, minor=0, value=4096)
    m.blkio.io_service_bytes_recursive.add(op="Write", major=8, minor=0, value=512)
    return m


def test_stats_from_v1_metrics():
    s = st.from_metrics(_v1(), machine_memory=1 << 34)
    cpu = s["cpu_stats"]
    assert cpu["cpu_usage"] == {"total_usage": 5_000_000, "percpu_usage": [3_000_000, 2_000_000],
                                "usage_in_kernelmode": 1_000_000, "usage_in_usermode": 4_000_000}
    assert cpu["throttling_data"] == {"periods": 7, "throttled_periods": 2, "throttled_time": 99}
    mem = s["memory_stats"]
    assert mem["usage"] == 10 * MiB and mem["limit"] == 64 * MiB and mem["max_usage"] == 12 * MiB
    assert mem["stats"]["cache"] == 3 * MiB and mem["stats"]["total_inactive_file"] == 2 * MiB
    assert mem["stats"]["pgfault"] == 11 and "failcnt" not in mem        # zero: omitted as Go does
    assert s["pids_stats"] == {"current": 3, "limit": 8}
    blk = s["blkio_stats"]
    assert blk["io_service_bytes_recursive"] == [{"major": 8, "minor": 0, "op": "Read", "value": 4096},
                                                 {"major": 8, "minor": 0, "op": "Write", "value": 512}]
    assert blk["io_serviced_recursive"] is None and set(blk) == {k for k, _ in st._V1_BLKIO}


def test_stats_v1_unlimited_memory_shows_machine_memory():
    m = _v1()
    m.memory.usage.limit = 9223372036854771712
    assert st.from_metrics(m, machine_memory=8 << 30)["memory_stats"]["limit"] == 8 << 30


def test_stats_from_fabricated_v2_metrics():
    pb = load().cgroups_v2
    m = pb.Metrics()
    m.cpu.usage_usec = 1500
    m.cpu.user_usec = 1000
    m.cpu.system_usec = 500
    m.cpu.nr_periods = 4
    m.cpu.nr_throttled = 1
    m.cpu.throttled_usec = 20
    m.memory.usage = 5 * MiB
    m.memory.usage_limit = 64 * MiB
    m.memory.inactive_file = MiB
    m.memory.anon = 4 * MiB
    m.memory_events.oom = 2
    m.pids.current = 2
    m.io.usage.add(major=254, minor=1, rbytes=100, wbytes=200, rios=1, wios=2)
    s = st.from_metrics(m, machine_memory=1 << 34)
    cpu = s["cpu_stats"]
    # µs to ns; v2 has no per-CPU usage
    assert cpu["cpu_usage"] == {"total_usage": 1_500_000, "usage_in_kernelmode": 500_000,
                                "usage_in_usermode": 1_000_000}
    assert cpu["throttling_data"] == {"periods": 4, "throttled_periods": 1, "throttled_time": 20_000}
    mem = s["memory_stats"]
    assert mem["usage"] == 5 * MiB and mem["limit"] == 64 * MiB and mem["failcnt"] == 2
    assert mem["stats"]["inactive_file"] == MiB and mem["stats"]["anon"] == 4 * MiB
    assert "cache" not in mem["stats"]                   # v2's keys only, as dockerd
    assert s["pids_stats"] == {"current": 2}
    assert s["blkio_stats"]["io_service_bytes_recursive"] == [
        {"major": 254, "minor": 1, "op": "read", "value": 100},
        {"major": 254, "minor": 1, "op": "write", "value": 200}]


def test_unknown_metrics_type_refused():
    with pytest.raises(ApiError, match="unknown type"):
        st.from_metrics(load().cgroups_v2.CPUStat(), 0)


def test_empty_stats_shape():
    s = st.empty_stats("/web", "abc")
    assert s["read"] == "0001-01-01T00:00:00Z" and s["name"] == "/web" and s["id"] == "abc"
    assert s["memory_stats"] == {} and s["pids_stats"] == {}
    assert s["cpu_stats"]["cpu_usage"]["total_usage"] == 0 and "percpu_usage" not in s["cpu_stats"]["cpu_usage"]


def test_system_cpu_usage_from_proc_stat(tmp_path):
    p = tmp_path / "stat"
    p.write_text("cpu  100 5 50 1000 10 1 2 7 0 0\ncpu0 50 2 25 500 5 0 1 0 0 0\nintr 1\n")
    # user..softirq = 1168 ticks (steal not counted)
    assert st.system_cpu_usage(str(p)) == 1168 * 1_000_000_000 // st._CLK_TCK
    p.write_text("intr 1\n")
    with pytest.raises(ApiError, match="no cpu line"):
        st.system_cpu_usage(str(p))


PS = """UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init splash
root         200     100  0 10:01 ?        00:00:00 sleep 300
root         201     200  0 10:01 pts/0    00:00:00 sh -c echo  two  spaces
"""


def test_parse_ps_output_keeps_container_pids():
    top = st.parse_ps_output(PS, {200, 201})
    assert top["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert top["Processes"] == [
        ["root", "200", "100", "0", "10:01", "?", "00:00:00", "sleep 300"],
        ["root", "201", "200", "0", "10:01", "pts/0", "00:00:00", "sh -c echo two spaces"]]


def test_parse_ps_output_threads_and_errors():
    out = "PID LWP CMD\n200 - sleep\n- 201 thread\n300 - other\n- 301 thread2\n"
    assert st.parse_ps_output(out, {200})["Processes"] == [["200", "-", "sleep"], ["-", "201", "thread"]]
    with pytest.raises(ApiError, match="Couldn't find PID field"):
        st.parse_ps_output("USER CMD\nroot x\n", {1})
    with pytest.raises(ApiError, match="Unexpected pid 'x'"):
        st.parse_ps_output("PID CMD\nx y\n", {1})


def test_validate_ps_args():
    st.validate_ps_args("-o pid=PID,comm")
    with pytest.raises(InvalidParameter, match='specifying "user=PID" is not allowed'):
        st.validate_ps_args("-o user=PID")


CLI_UPDATE = {  # what docker update -m 128m sends (every Resources field)
    "CpuShares": 0, "Memory": 134217728, "CgroupParent": "", "BlkioWeight": 0, "BlkioWeightDevice": None,
    "BlkioDeviceReadBps": None, "BlkioDeviceWriteBps": None, "BlkioDeviceReadIOps": None,
    "BlkioDeviceWriteIOps": None, "CpuPeriod": 0, "CpuQuota": 0, "CpuRealtimePeriod": 0,
    "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "", "Devices": None, "DeviceCgroupRules": None,
    "DeviceRequests": None, "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": None,
    "NanoCpus": 0, "OomKillDisable": None, "PidsLimit": None, "Ulimits": None, "CpuCount": 0,
    "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
    "RestartPolicy": {"Name": "", "MaximumRetryCount": 0}}


def test_parse_update_cli_body():
    res, policy = st.parse_update(CLI_UPDATE)
    assert res == {"Memory": 134217728} and policy is None
    res, policy = st.parse_update({**CLI_UPDATE, "Memory": 0, "PidsLimit": 0,
                                   "RestartPolicy": {"Name": "always"}})
    assert res == {"PidsLimit": -1} and policy == {"Name": "always"}


def test_parse_update_refusals():
    with pytest.raises(InvalidParameter, match="Ulimits cannot be updated"):
        st.parse_update({"Ulimits": [{"Name": "nofile", "Soft": 1, "Hard": 1}]})
    with pytest.raises(InvalidParameter, match="unknown field"):
        st.parse_update({"Memroy": 1})
    with pytest.raises(InvalidParameter, match="Memory: expected an integer"):
        st.parse_update({"Memory": "1g"})


def test_merge_update_conflicts_as_dockerd():
    h = {"Memory": 64 * MiB, "MemorySwap": 128 * MiB, "NanoCpus": 10**9}
    with pytest.raises(Conflict, match="update the memoryswap at the same time"):
        st.merge_update(h, {"Memory": 256 * MiB})
    assert st.merge_update(h, {"Memory": 256 * MiB, "MemorySwap": 512 * MiB})["MemorySwap"] == 512 * MiB
    assert st.merge_update(h, {"Memory": 100 * MiB})["Memory"] == 100 * MiB
    with pytest.raises(Conflict, match="CPU Period cannot be updated as NanoCPUs"):
        st.merge_update(h, {"CpuPeriod": 100000})
    with pytest.raises(Conflict, match="Nano CPUs cannot be updated as CPU Quota"):
        st.merge_update({"CpuQuota": 50000}, {"NanoCpus": 10**9})


def test_changed_sections_for_tasks_update():
    new_res = {"memory": {"limit": 1, "swap": 2, "disableOOMKiller": False}, "cpu": {"shares": 5}}
    assert st._changed_sections({"Memory": 1}, new_res) == {"memory": {"limit": 1, "swap": 2}}
    assert st._changed_sections({"PidsLimit": -1, "CpuShares": 5}, new_res) == {
        "pids": {"limit": -1}, "cpu": {"shares": 5}}
