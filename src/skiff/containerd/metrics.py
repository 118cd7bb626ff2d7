"""Task metrics: the runtime's ``events --stats`` data as containerd's cgroup metrics messages.

containerd answers ``Tasks.Metrics`` with one ``types.Metric`` per task whose ``data`` is an
``Any`` of ``io.containerd.cgroups.v1.Metrics`` when the host's cgroups are legacy or hybrid
(v1 controllers), or ``io.containerd.cgroups.v2.Metrics`` when ``/sys/fs/cgroup`` is a
cgroup2 mount (unified). The source is the same either way: the ``data`` object of
``skiff-runc events --stats`` (runc's JSON shape, :mod:`skiff.runtime.cgroups._stats`), which
the shim returns from its ``stats`` call. Fields that shape does not carry stay zero:
v1 ``memory_oom_control``, ``rdma``, ``network``, ``cgroup_stats``; v2 ``rdma`` and the
``memory_events`` other than ``max``.
"""

from __future__ import annotations

import os
from typing import Any

from google.protobuf.any_pb2 import Any as AnyPB

_MAX = (1 << 64) - 1

# v1 MemoryStat field -> key of memory.stat (the same name where not listed)
_V1_MEMORY_KEYS = {"pg_pg_in": "pgpgin", "pg_pg_out": "pgpgout", "pg_fault": "pgfault",
                   "pg_maj_fault": "pgmajfault", "hierarchical_swap_limit": "hierarchical_memsw_limit",
                   "total_pg_pg_in": "total_pgpgin", "total_pg_pg_out": "total_pgpgout",
                   "total_pg_fault": "total_pgfault", "total_pg_maj_fault": "total_pgmajfault"}
_V1_MEMORY_ENTRIES = (("usage", "usage"), ("swap", "swap"), ("kernel", "kernel"), ("kernel_tcp", "kernelTCP"))
_V1_BLKIO = (("io_service_bytes_recursive", "ioServiceBytesRecursive"),
             ("io_serviced_recursive", "ioServicedRecursive"),
             ("io_queued_recursive", "ioQueueRecursive"),
             ("io_service_time_recursive", "ioServiceTimeRecursive"),
             ("io_wait_time_recursive", "ioWaitTimeRecursive"),
             ("io_merged_recursive", "ioMergedRecursive"),
             ("io_time_recursive", "ioTimeRecursive"),
             ("sectors_recursive", "sectorsRecursive"))


def cgroup_unified(root: str = "/sys/fs/cgroup") -> bool:
    """Whether ``root`` is a cgroup2 mount (its root has ``cgroup.controllers``): containerd's
    ``cgroups.Mode() == Unified``, which decides the metrics type."""
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def _u(value: Any) -> int:
    """A counter as uint64 (missing or negative values as 0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX else 0


def _device(major: int, minor: int, sys_root: str) -> str:
    """``/dev/NAME`` of a block device number, as containerd's v1 blkio entries carry it
    (``""`` when the kernel does not know it)."""
    try:
        with open(os.path.join(sys_root, "dev", "block", f"{major}:{minor}", "uevent")) as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    return "/dev/" + line[len("DEVNAME="):].strip()
    except FileNotFoundError:
        return ""
    return ""


def v1_metrics(api: Any, stats: dict, sys_root: str = "/sys") -> Any:
    """``io.containerd.cgroups.v1.Metrics`` from ``events --stats`` data."""
    pb = api.cgroups_v1
    m = pb.Metrics()
    for size, h in sorted((stats.get("hugetlb") or {}).items()):
        m.hugetlb.add(pagesize=size, usage=_u(h.get("usage")), max=_u(h.get("max")),
                      failcnt=_u(h.get("failcnt")))
    pids = stats.get("pids") or {}
    limit = _u(pids.get("limit"))
    # containerd reports an unlimited pids.max ("max") as 0
    m.pids.CopyFrom(pb.PidsStat(current=_u(pids.get("current")), limit=0 if limit == _MAX else limit))
    cpu = stats.get("cpu") or {}
    usage = cpu.get("usage") or {}
    m.cpu.usage.CopyFrom(pb.CPUUsage(total=_u(usage.get("total")), kernel=_u(usage.get("kernel")),
                                     user=_u(usage.get("user")),
                                     per_cpu=[_u(x) for x in usage.get("percpu") or []]))
    thr = cpu.get("throttling") or {}
    m.cpu.throttling.CopyFrom(pb.Throttle(periods=_u(thr.get("periods")),
                                          throttled_periods=_u(thr.get("throttledPeriods")),
                                          throttled_time=_u(thr.get("throttledTime"))))
    mem = stats.get("memory") or {}
    raw = mem.get("raw") or {}
    ms = m.memory
    for field in pb.MemoryStat.DESCRIPTOR.fields:
        if field.message_type is None:
            setattr(ms, field.name, _u(raw.get(_V1_MEMORY_KEYS.get(field.name, field.name))))
    for field, key in _V1_MEMORY_ENTRIES:
        e = mem.get(key) or {}
        getattr(ms, field).CopyFrom(pb.MemoryEntry(limit=_u(e.get("limit")), usage=_u(e.get("usage")),
                                                   max=_u(e.get("max")), failcnt=_u(e.get("failcnt"))))
    blkio = stats.get("blkio") or {}
    devices: dict[tuple[int, int], str] = {}
    for field, key in _V1_BLKIO:
        out = getattr(m.blkio, field)
        for e in blkio.get(key) or []:
            major, minor = _u(e.get("major")), _u(e.get("minor"))
            if (major, minor) not in devices:
                devices[major, minor] = _device(major, minor, sys_root)
            out.add(op=str(e.get("op", "")), device=devices[major, minor], major=major, minor=minor,
                    value=_u(e.get("value")))
    return m


# v2 MemoryStat field -> key of memory.stat (the same name where not listed; usage and limits
# come from the memory entries)
_V2_MEMORY_FROM_ENTRIES = ("usage", "usage_limit", "swap_usage", "swap_limit")


def v2_metrics(api: Any, stats: dict) -> Any:
    """``io.containerd.cgroups.v2.Metrics`` from ``events --stats`` data."""
    pb = api.cgroups_v2
    m = pb.Metrics()
    pids = stats.get("pids") or {}
    limit = _u(pids.get("limit"))
    m.pids.CopyFrom(pb.PidsStat(current=_u(pids.get("current")), limit=0 if limit == _MAX else limit))
    cpu = stats.get("cpu") or {}
    usage = cpu.get("usage") or {}
    thr = cpu.get("throttling") or {}
    m.cpu.CopyFrom(pb.CPUStat(usage_usec=_u(usage.get("total")) // 1000, user_usec=_u(usage.get("user")) // 1000,
                              system_usec=_u(usage.get("kernel")) // 1000, nr_periods=_u(thr.get("periods")),
                              nr_throttled=_u(thr.get("throttledPeriods")),
                              throttled_usec=_u(thr.get("throttledTime")) // 1000))
    mem = stats.get("memory") or {}
    raw = mem.get("raw") or {}
    ms = m.memory
    for field in pb.MemoryStat.DESCRIPTOR.fields:
        if field.name not in _V2_MEMORY_FROM_ENTRIES:
            setattr(ms, field.name, _u(raw.get(field.name)))
    u, swap = mem.get("usage") or {}, mem.get("swap") or {}
    ms.usage, ms.usage_limit = _u(u.get("usage")), _u(u.get("limit"))
    # the stats data reports swap as memory+swap (v1's meaning); v2's fields are swap alone
    if swap.get("usage"):
        ms.swap_usage = max(_u(swap.get("usage")) - ms.usage, 0)
        sl = _u(swap.get("limit"))
        ms.swap_limit = sl if sl == _MAX or ms.usage_limit == _MAX else max(sl - ms.usage_limit, 0)
    m.memory_events.max = _u(u.get("failcnt"))
    blkio = stats.get("blkio") or {}
    entries: dict[tuple[int, int], Any] = {}
    for key, prefix in (("ioServiceBytesRecursive", "bytes"), ("ioServicedRecursive", "ios")):
        for e in blkio.get(key) or []:
            field = {"Read": "r", "Write": "w"}.get(str(e.get("op")))
            if field is None:
                continue  # Discard: v2's IOEntry has no field for it
            major, minor = _u(e.get("major")), _u(e.get("minor"))
            if (major, minor) not in entries:
                entries[major, minor] = m.io.usage.add(major=major, minor=minor)
            setattr(entries[major, minor], field + prefix, _u(e.get("value")))
    for size, h in sorted((stats.get("hugetlb") or {}).items()):
        m.hugetlb.add(pagesize=size, current=_u(h.get("usage")), max=_u(h.get("max")))
    return m


def metrics_any(api: Any, stats: dict, *, unified: bool) -> AnyPB:
    """The ``data`` of a ``types.Metric``: v2 metrics on a unified host, else v1."""
    msg = v2_metrics(api, stats) if unified else v1_metrics(api, stats)
    # containerd's typeurl names gogo-registered types by their full name, without a prefix
    return AnyPB(type_url=msg.DESCRIPTOR.full_name, value=msg.SerializeToString())
