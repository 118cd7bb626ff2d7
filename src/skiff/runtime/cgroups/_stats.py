"""Statistics in the shape of the ``data`` object of runc's ``events --stats``.

Every member is present (zeros and empty lists where a controller or counter is missing),
so readers need no special cases. Times are nanoseconds, sizes bytes; a limit of "max"
reads as 2**64-1, as runc reports it.
"""

from __future__ import annotations

import os

from ._util import parse_cpu_list, read, read_keyed, read_keyed_opt, read_opt, read_uint, read_uint_opt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._manager import Manager

_BLKIO_KEYS = ("ioServiceBytesRecursive", "ioServicedRecursive", "ioQueueRecursive",
               "ioServiceTimeRecursive", "ioWaitTimeRecursive", "ioMergedRecursive",
               "ioTimeRecursive", "sectorsRecursive")


def _entry() -> dict:
    return {"limit": 0, "usage": 0, "max": 0, "failcnt": 0}


def empty() -> dict:
    return {
        "cpu": {"usage": {"total": 0, "percpu": [], "percpu_kernel": [], "percpu_user": [],
                          "kernel": 0, "user": 0},
                "throttling": {"periods": 0, "throttledPeriods": 0, "throttledTime": 0}},
        "cpuset": {"cpus": [], "mems": []},
        "memory": {"cache": 0, "usage": _entry(), "swap": _entry(), "kernel": _entry(),
                   "kernelTCP": _entry(), "raw": {}},
        "pids": {"current": 0, "limit": 0},
        "blkio": {k: [] for k in _BLKIO_KEYS},
        "hugetlb": {},
    }


def collect(m: Manager) -> dict:
    s = empty()
    u = m.unified
    v2 = set(m.v2_controllers()) if u is not None and os.path.isdir(u) else set()

    def has_v2(c: str) -> bool:
        # a controller's files appear in the container's cgroup once it is enabled above it
        return c in v2 and u is not None and any(n.startswith(c + ".") for n in os.listdir(u))

    d = m.v1("cpuacct")
    if d is not None:
        _cpuacct_v1(d, s["cpu"]["usage"])
    elif u is not None and os.path.isdir(u):
        _cpu_v2(u, s["cpu"])
    d = m.v1("cpu")
    if d is not None:
        _throttling(read_keyed_opt(d + "/cpu.stat"), s["cpu"]["throttling"], 1)
    d = m.v1("cpuset")
    if d is not None:
        _cpuset(d, s["cpuset"], "")
    elif has_v2("cpuset"):
        assert u is not None
        _cpuset(u, s["cpuset"], ".effective")
    d = m.v1("memory")
    if d is not None:
        _memory_v1(d, s["memory"])
    elif has_v2("memory"):
        assert u is not None
        _memory_v2(u, s["memory"])
    d = m.v1("pids")
    if d is None and has_v2("pids"):
        d = u
    if d is not None:
        s["pids"] = {"current": read_uint(d + "/pids.current"), "limit": read_uint(d + "/pids.max")}
    d = m.v1("blkio")
    if d is not None:
        _blkio_v1(d, s["blkio"])
    elif has_v2("io"):
        assert u is not None
        _io_v2(u, s["blkio"])
    d = m.v1("hugetlb")
    if d is not None:
        _hugetlb(d, s["hugetlb"], v1=True)
    elif has_v2("hugetlb"):
        assert u is not None
        _hugetlb(u, s["hugetlb"], v1=False)
    return s


# --- cpu -------------------------------------------------------------------------------------

def _ints(text: str | None) -> list[int]:
    return [int(x) for x in text.split()] if text else []


def _cpuacct_v1(d: str, usage: dict) -> None:
    usage["total"] = read_uint(d + "/cpuacct.usage")
    usage["percpu"] = _ints(read_opt(d + "/cpuacct.usage_percpu"))
    usage["percpu_kernel"] = _ints(read_opt(d + "/cpuacct.usage_percpu_sys"))
    usage["percpu_user"] = _ints(read_opt(d + "/cpuacct.usage_percpu_user"))
    sys_ns, user_ns = read_opt(d + "/cpuacct.usage_sys"), read_opt(d + "/cpuacct.usage_user")
    if sys_ns is not None and user_ns is not None:
        usage["kernel"], usage["user"] = int(sys_ns), int(user_ns)
    else:  # older kernels: clock ticks in cpuacct.stat
        st = read_keyed(d + "/cpuacct.stat")
        hz = os.sysconf("SC_CLK_TCK")
        usage["kernel"] = st.get("system", 0) * 1_000_000_000 // hz
        usage["user"] = st.get("user", 0) * 1_000_000_000 // hz


def _throttling(st: dict[str, int], t: dict, unit_ns: int) -> None:
    t["periods"] = st.get("nr_periods", 0)
    t["throttledPeriods"] = st.get("nr_throttled", 0)
    if "throttled_usec" in st:
        t["throttledTime"] = st["throttled_usec"] * 1000
    else:
        t["throttledTime"] = st.get("throttled_time", 0) * unit_ns


def _cpu_v2(d: str, cpu: dict) -> None:
    st = read_keyed(d + "/cpu.stat")  # usage is a core file: there even without the cpu controller
    usage = cpu["usage"]
    usage["total"] = st.get("usage_usec", 0) * 1000
    usage["user"] = st.get("user_usec", 0) * 1000
    usage["kernel"] = st.get("system_usec", 0) * 1000
    _throttling(st, cpu["throttling"], 1)


def _cpuset(d: str, out: dict, suffix: str) -> None:
    for key in ("cpus", "mems"):
        text = read_opt(f"{d}/cpuset.{key}{suffix}")
        out[key] = parse_cpu_list(text) if text else []
    if not suffix:
        for f, key in (("cpu_exclusive", "cpu_exclusive"), ("mem_exclusive", "mem_exclusive"),
                       ("mem_hardwall", "mem_hardwall"), ("memory_migrate", "memory_migrate"),
                       ("memory_spread_page", "memory_spread_page"),
                       ("memory_spread_slab", "memory_spread_slab"),
                       ("memory_pressure", "memory_pressure"),
                       ("sched_load_balance", "sched_load_balance")):
            out[key] = read_uint_opt(f"{d}/cpuset.{f}")
        level = read_opt(f"{d}/cpuset.sched_relax_domain_level")
        out["sched_relax_domain_level"] = int(level) if level else 0


# --- memory ----------------------------------------------------------------------------------

def _mem_entry_v1(d: str, prefix: str) -> dict:
    e = _entry()
    if not os.path.exists(f"{d}/{prefix}.usage_in_bytes"):
        return e  # e.g. no swap accounting
    e["usage"] = read_uint(f"{d}/{prefix}.usage_in_bytes")
    e["max"] = read_uint_opt(f"{d}/{prefix}.max_usage_in_bytes")
    e["limit"] = read_uint_opt(f"{d}/{prefix}.limit_in_bytes")
    e["failcnt"] = read_uint_opt(f"{d}/{prefix}.failcnt")
    return e


def _memory_v1(d: str, mem: dict) -> None:
    raw = read_keyed(d + "/memory.stat")
    mem["raw"] = raw
    mem["cache"] = raw.get("cache", 0)
    mem["usage"] = _mem_entry_v1(d, "memory")
    mem["swap"] = _mem_entry_v1(d, "memory.memsw")
    mem["kernel"] = _mem_entry_v1(d, "memory.kmem")
    mem["kernelTCP"] = _mem_entry_v1(d, "memory.kmem.tcp")


def _memory_v2(d: str, mem: dict) -> None:
    raw = read_keyed(d + "/memory.stat")
    mem["raw"] = raw
    mem["cache"] = raw.get("file", 0)
    usage = mem["usage"]
    usage["usage"] = read_uint(d + "/memory.current")
    usage["limit"] = read_uint(d + "/memory.max")
    usage["max"] = read_uint_opt(d + "/memory.peak")
    # v2 has no failcnt; the count of times the usage hit memory.max is its counterpart
    usage["failcnt"] = read_keyed_opt(d + "/memory.events").get("max", 0)
    swap = mem["swap"]
    if os.path.exists(d + "/memory.swap.current"):
        # v1 reports memory+swap: add the memory figures so readers see the same meaning
        swap["usage"] = read_uint(d + "/memory.swap.current") + usage["usage"]
        lim = read_uint(d + "/memory.swap.max")
        swap["limit"] = lim if lim == (1 << 64) - 1 or usage["limit"] == (1 << 64) - 1 \
            else lim + usage["limit"]
        swap["failcnt"] = read_keyed_opt(d + "/memory.swap.events").get("max", 0)


# --- block I/O -------------------------------------------------------------------------------

def _blkio_file(path: str) -> list[dict]:
    """``8:0 Read 123`` (or ``8:0 123``) lines; the ``Total`` line is left out."""
    text = read_opt(path)
    out: list[dict] = []
    if not text:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        op, value = (parts[1], parts[2]) if len(parts) >= 3 else ("", parts[1])
        out.append({"major": int(major), "minor": int(minor), "op": op, "value": int(value)})
    return out


def _blkio_v1(d: str, out: dict) -> None:
    # CFQ's files when the kernel has them, else BFQ's, else the throttling layer's (which
    # counts every bio of the cgroup)
    for key, name in (("ioServiceBytesRecursive", "io_service_bytes_recursive"),
                      ("ioServicedRecursive", "io_serviced_recursive")):
        for prefix in ("blkio.", "blkio.bfq.", "blkio.throttle."):
            entries = _blkio_file(f"{d}/{prefix}{name}")
            if entries:
                out[key] = entries
                break
    for key, name in (("ioQueueRecursive", "io_queued_recursive"),
                      ("ioServiceTimeRecursive", "io_service_time_recursive"),
                      ("ioWaitTimeRecursive", "io_wait_time_recursive"),
                      ("ioMergedRecursive", "io_merged_recursive"),
                      ("ioTimeRecursive", "time_recursive"),
                      ("sectorsRecursive", "sectors_recursive")):
        out[key] = _blkio_file(f"{d}/blkio.{name}")


def _io_v2(d: str, out: dict) -> None:
    text = read(d + "/io.stat")
    ops = (("rbytes", "ioServiceBytesRecursive", "Read"), ("wbytes", "ioServiceBytesRecursive", "Write"),
           ("dbytes", "ioServiceBytesRecursive", "Discard"), ("rios", "ioServicedRecursive", "Read"),
           ("wios", "ioServicedRecursive", "Write"), ("dios", "ioServicedRecursive", "Discard"))
    for line in text.splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        for k, key, op in ops:
            if k in kv:
                out[key].append({"major": int(major), "minor": int(minor), "op": op,
                                 "value": int(kv[k])})


# --- hugetlb ---------------------------------------------------------------------------------

def _hugetlb(d: str, out: dict, *, v1: bool) -> None:
    suffix = ".limit_in_bytes" if v1 else ".max"
    for n in sorted(os.listdir(d)):
        parts = n.split(".")
        if len(parts) != 3 or parts[0] != "hugetlb" or "." + parts[2] != suffix:
            continue
        size = parts[1]
        base = f"{d}/hugetlb.{size}"
        if v1:
            out[size] = {"usage": read_uint(base + ".usage_in_bytes"),
                         "max": read_uint_opt(base + ".max_usage_in_bytes"),
                         "failcnt": read_uint_opt(base + ".failcnt")}
        else:
            out[size] = {"usage": read_uint(base + ".current"), "max": 0,
                         "failcnt": read_keyed_opt(base + ".events").get("max", 0)}
