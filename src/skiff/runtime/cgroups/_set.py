"""Writing ``linux.resources`` into cgroup files (v1 controllers and/or the cgroup v2 directory).

Each resource goes to the v1 hierarchy of its controller when one is mounted, else to the
cgroup v2 directory (pure v2, or the unified hierarchy of a hybrid host, where e.g. hugetlb
lives on this project's test machine). A value the host cannot apply raises ``CgroupError``
naming the field; zero values mean "unset" where runc reads them so (memory limits, cpu
shares/quota/period), and nothing is written for them.
"""

from __future__ import annotations

import errno as _errno
import os

from ._resources import P
from ._util import CgroupError, read, read_opt, read_uint, write

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._manager import Manager


def apply(m: Manager, r: dict, *, update: bool) -> None:
    if "cpu" in r and ("cpus" in r["cpu"] or "mems" in r["cpu"]):
        _cpuset(m, r["cpu"])
    if "devices" in r:
        _devices(m, r["devices"])
    if "memory" in r:
        _memory(m, r["memory"], update)
    if "cpu" in r:
        _cpu(m, r["cpu"])
    if "pids" in r:
        _pids(m, r["pids"])
    if "blockIO" in r:
        _blkio(m, r["blockIO"])
    if "hugepageLimits" in r:
        _hugetlb(m, r["hugepageLimits"])
    if "network" in r:
        _network(m, r["network"])
    if "rdma" in r:
        _rdma(m, r["rdma"])
    if "unified" in r:
        _unified(m, r["unified"])


def _field(where: str, e: CgroupError) -> CgroupError:
    return CgroupError(f"{where}: {e}", e.errno)


def _w(where: str, path: str, value: str) -> None:
    """Write, prefixing an error with the field it came from."""
    try:
        write(path, value)
    except CgroupError as e:
        raise _field(where, e) from None


def _has(path: str) -> bool:
    return os.path.exists(path)


# --- devices ---------------------------------------------------------------------------------

def _devices(m: Manager, rules: list[dict]) -> None:
    from ._devices import WHERE, attach_program, parse_rules, v1_writes

    parsed = parse_rules(rules)
    d = m.v1("devices")
    if d is not None:
        for f, line in v1_writes(parsed):
            _w(WHERE, f"{d}/{f}", line)
        return
    if m.unified is None:
        raise CgroupError(f"{WHERE}: no devices controller and no cgroup v2 hierarchy on this host")
    attach_program(m.syscalls, m.unified, parsed)


# --- memory ----------------------------------------------------------------------------------

def _memory(m: Manager, mem: dict, update: bool) -> None:
    d = m.v1("memory")
    if d is not None:
        _memory_v1(d, mem)
    elif mem:
        _memory_v2(m.v2_dir("memory", f"{P}.memory"), mem, update)


def _memory_v1(d: str, mem: dict) -> None:
    W = f"{P}.memory"
    limit, swap = mem.get("limit", 0), mem.get("swap", 0)
    memsw = f"{d}/memory.memsw.limit_in_bytes"
    if limit == -1 and swap == 0 and _has(memsw):
        swap = -1  # "unlimited memory" also lifts the memory+swap limit (as runc does)
    if swap and not _has(memsw):
        if swap != -1:
            raise CgroupError(f"{W}.swap: this kernel does not account swap (no {memsw}; boot with "
                              "swapaccount=1)")
        swap = 0  # nothing to lift
    if limit and swap:
        current = read_uint(f"{d}/memory.limit_in_bytes")
        # the kernel wants limit <= memsw at every moment: order the two writes for that
        if swap == -1 or current < swap:
            _w(f"{W}.swap", memsw, str(swap))
            _memory_limit_v1(d, limit)
        else:
            _memory_limit_v1(d, limit)
            _w(f"{W}.swap", memsw, str(swap))
    else:
        if limit:
            _memory_limit_v1(d, limit)
        if swap:
            _w(f"{W}.swap", memsw, str(swap))
    if mem.get("reservation", 0):
        _w(f"{W}.reservation", f"{d}/memory.soft_limit_in_bytes", str(mem["reservation"]))
    for key, f in (("kernel", "memory.kmem.limit_in_bytes"), ("kernelTCP", "memory.kmem.tcp.limit_in_bytes")):
        v = mem.get(key, 0)
        if not v:
            continue
        if _has(f"{d}/{f}"):
            _w(f"{W}.{key}", f"{d}/{f}", str(v))
        elif v != -1:
            raise CgroupError(f"{W}.{key}: this kernel has no {f} (kernel memory limits are not "
                              "supported)")
    sw = mem.get("swappiness", -1)
    if sw != -1:
        _w(f"{W}.swappiness", f"{d}/memory.swappiness", str(sw))
    if "disableOOMKiller" in mem:
        _w(f"{W}.disableOOMKiller", f"{d}/memory.oom_control", "1" if mem["disableOOMKiller"] else "0")
    if "useHierarchy" in mem:
        _w(f"{W}.useHierarchy", f"{d}/memory.use_hierarchy", "1" if mem["useHierarchy"] else "0")
    # checkBeforeUpdate: the v1 kernel itself refuses a limit below the usage


def _memory_limit_v1(d: str, limit: int) -> None:
    f = f"{d}/memory.limit_in_bytes"
    try:
        write(f, str(limit))
    except CgroupError as e:
        if e.errno != _errno.EBUSY:
            raise _field(f"{P}.memory.limit", e) from None
        usage = read_opt(f"{d}/memory.usage_in_bytes")
        peak = read_opt(f"{d}/memory.max_usage_in_bytes")
        raise CgroupError(f"{P}.memory.limit: cannot set {f} to {limit}: below the current usage "
                          f"{usage} (peak {peak})", e.errno) from None


def _v2num(v: int) -> str:
    return "max" if v == -1 else str(v)


def _memory_v2(d: str, mem: dict, update: bool) -> None:
    W = f"{P}.memory"
    for key in ("kernel", "kernelTCP"):
        if mem.get(key, 0) not in (0, -1):
            raise CgroupError(f"{W}.{key}: cgroup v2 has no kernel memory limits")
    if mem.get("swappiness", -1) != -1:
        raise CgroupError(f"{W}.swappiness: cgroup v2 has no per-cgroup swappiness")
    if mem.get("disableOOMKiller"):
        raise CgroupError(f"{W}.disableOOMKiller: cgroup v2 cannot disable the OOM killer")
    if mem.get("useHierarchy") is False:
        raise CgroupError(f"{W}.useHierarchy: cgroup v2 is always hierarchical")
    limit, swap = mem.get("limit", 0), mem.get("swap", 0)
    if swap and not limit and update:
        cur = read(f"{d}/memory.max").strip()
        limit_for_swap = -1 if cur == "max" else int(cur)
    else:
        limit_for_swap = limit
    # OCI swap is the memory+swap limit; v2 memory.swap.max is the swap alone
    swap_text = ""  # nothing to write
    if limit_for_swap == -1 and swap == 0:
        if limit == -1:
            swap_text = "max"  # "unlimited memory" also lifts the swap limit (as runc does)
    elif swap == -1:
        swap_text = "max"
    elif swap == 0:
        pass
    elif limit_for_swap == -1:
        swap_text = str(swap)
    elif limit_for_swap == 0:
        raise CgroupError(f"{W}.swap: cannot set a memory+swap limit without a memory limit")
    elif swap < limit_for_swap:
        raise CgroupError(f"{W}.swap: {swap} is below memory.limit {limit_for_swap} (swap is the "
                          "memory+swap limit)")
    else:
        swap_text = str(swap - limit_for_swap)
    if mem.get("checkBeforeUpdate") and limit > 0:
        usage = read_uint(f"{d}/memory.current")
        if limit < usage:
            raise CgroupError(f"{W}.limit: {limit} is below the current usage {usage} "
                              "(checkBeforeUpdate)")
    if swap_text:
        f = f"{d}/memory.swap.max"
        if _has(f):
            _w(f"{W}.swap", f, swap_text)
        elif swap_text not in ("max", "0"):
            raise CgroupError(f"{W}.swap: this kernel does not account swap (no {f})")
    if limit:
        _w(f"{W}.limit", f"{d}/memory.max", _v2num(limit))
    if mem.get("reservation", 0):
        _w(f"{W}.reservation", f"{d}/memory.low", _v2num(mem["reservation"]))


# --- cpu -------------------------------------------------------------------------------------

def _cpuset(m: Manager, cpu: dict) -> None:
    W = f"{P}.cpu"
    d = m.v1("cpuset")
    if d is None:
        d = m.v2_dir("cpuset", f"{W}.cpus" if "cpus" in cpu else f"{W}.mems")
    # mems first: a cgroup must keep at least one node and one cpu at every moment
    for key in ("mems", "cpus"):
        if key in cpu and cpu[key] != "":
            _w(f"{W}.{key}", f"{d}/cpuset.{key}", cpu[key])


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000], linearly (runc <= 1.2, crun)."""
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def _cpu(m: Manager, cpu: dict) -> None:
    if not any(k in cpu for k in ("shares", "quota", "burst", "period", "realtimeRuntime",
                                  "realtimePeriod", "idle")):
        return
    d = m.v1("cpu")
    if d is not None:
        _cpu_v1(d, cpu)
    else:
        _cpu_v2(m, cpu)


def _cpu_v1(d: str, cpu: dict) -> None:
    W = f"{P}.cpu"
    shares = cpu.get("shares", 0)
    if shares:
        f = f"{d}/cpu.shares"
        _w(f"{W}.shares", f, str(shares))
        got = read_uint(f)
        if got != shares:
            raise CgroupError(f"{W}.shares: the kernel set {f} to {got}, not {shares} "
                              "(the range is 2-262144)")
    period, quota = cpu.get("period", 0), cpu.get("quota", 0)
    fp, fq = f"{d}/cpu.cfs_period_us", f"{d}/cpu.cfs_quota_us"
    if period:
        try:
            write(fp, str(period))
        except CgroupError as e:
            # a new period can conflict with the old quota (or a parent's): quota first, then retry
            if e.errno != _errno.EINVAL or not quota:
                raise _field(f"{W}.period", e) from None
            _w(f"{W}.quota", fq, str(quota))
            _w(f"{W}.period", fp, str(period))
            quota = 0
    if quota:
        _w(f"{W}.quota", fq, str(quota))
    if "burst" in cpu:
        _w(f"{W}.burst", f"{d}/cpu.cfs_burst_us", str(cpu["burst"]))
    if cpu.get("realtimePeriod", 0):
        _w(f"{W}.realtimePeriod", f"{d}/cpu.rt_period_us", str(cpu["realtimePeriod"]))
    if cpu.get("realtimeRuntime", 0):
        _w(f"{W}.realtimeRuntime", f"{d}/cpu.rt_runtime_us", str(cpu["realtimeRuntime"]))
    if "idle" in cpu:
        _w(f"{W}.idle", f"{d}/cpu.idle", str(cpu["idle"]))


def _cpu_v2(m: Manager, cpu: dict) -> None:
    W = f"{P}.cpu"
    for key in ("realtimePeriod", "realtimeRuntime"):
        if cpu.get(key, 0):
            raise CgroupError(f"{W}.{key}: cgroup v2 has no real-time group scheduling limits")
    d = m.v2_dir("cpu", W)
    if "idle" in cpu:
        _w(f"{W}.idle", f"{d}/cpu.idle", str(cpu["idle"]))
    if cpu.get("shares", 0):
        _w(f"{W}.shares", f"{d}/cpu.weight", str(shares_to_weight(cpu["shares"])))
    quota, period = cpu.get("quota", 0), cpu.get("period", 0)
    burst_later = False
    if "burst" in cpu:
        try:
            write(f"{d}/cpu.max.burst", str(cpu["burst"]))
        except CgroupError as e:
            # a larger burst can be refused against the old quota: retry after the quota
            if e.errno != _errno.EINVAL or not quota:
                raise _field(f"{W}.burst", e) from None
            burst_later = True
    if quota or period:
        if not quota or not period:
            cur = read(f"{d}/cpu.max").split()
            if not quota:
                quota = -1 if cur[0] == "max" else int(cur[0])
            if not period:
                period = int(cur[1]) if len(cur) > 1 else 100000
        _w(f"{W}.quota" if quota else f"{W}.period", f"{d}/cpu.max", f"{_v2num(quota)} {period}")
    if burst_later:
        _w(f"{W}.burst", f"{d}/cpu.max.burst", str(cpu["burst"]))


# --- pids ------------------------------------------------------------------------------------

def _pids(m: Manager, pids: dict) -> None:
    W = f"{P}.pids.limit"
    d = m.v1("pids") or m.v2_dir("pids", W)
    # 0 is a real limit (no new tasks), as the runtime spec says; -1 is "max"
    _w(W, f"{d}/pids.max", _v2num(pids["limit"]))


# --- block I/O -------------------------------------------------------------------------------

_THROTTLES = (("throttleReadBpsDevice", "read_bps_device", "rbps"),
              ("throttleWriteBpsDevice", "write_bps_device", "wbps"),
              ("throttleReadIOPSDevice", "read_iops_device", "riops"),
              ("throttleWriteIOPSDevice", "write_iops_device", "wiops"))


def _blkio(m: Manager, blk: dict) -> None:
    d = m.v1("blkio")
    if d is not None:
        _blkio_v1(d, blk)
    elif blk:
        _io_v2(m.v2_dir("io", f"{P}.blockIO"), blk)


def _blkio_v1(d: str, blk: dict) -> None:
    W = f"{P}.blockIO"
    # kernels without CFQ have no blkio.weight; BFQ's weight files take its place (as in runc)
    if _has(f"{d}/blkio.weight"):
        wf, wdf = "blkio.weight", "blkio.weight_device"
    else:
        wf, wdf = "blkio.bfq.weight", "blkio.bfq.weight_device"
    if "weight" in blk:
        if not _has(f"{d}/{wf}"):
            raise CgroupError(f"{W}.weight: this kernel's blkio controller has no weight file "
                              f"(neither blkio.weight nor blkio.bfq.weight in {d})")
        _w(f"{W}.weight", f"{d}/{wf}", str(blk["weight"]))
    if "leafWeight" in blk:
        if not _has(f"{d}/blkio.leaf_weight"):
            raise CgroupError(f"{W}.leafWeight: this kernel's blkio controller has no "
                              f"blkio.leaf_weight (a CFQ-only setting) in {d}")
        _w(f"{W}.leafWeight", f"{d}/blkio.leaf_weight", str(blk["leafWeight"]))
    for i, wd in enumerate(blk.get("weightDevice", [])):
        dev = f"{wd['major']}:{wd['minor']}"
        if "weight" in wd:
            if not _has(f"{d}/{wdf}"):
                raise CgroupError(f"{W}.weightDevice[{i}].weight: this kernel's blkio controller has "
                                  f"no per-device weight file in {d}")
            _w(f"{W}.weightDevice[{i}].weight", f"{d}/{wdf}", f"{dev} {wd['weight']}")
        if "leafWeight" in wd:
            if not _has(f"{d}/blkio.leaf_weight_device"):
                raise CgroupError(f"{W}.weightDevice[{i}].leafWeight: this kernel's blkio controller "
                                  f"has no blkio.leaf_weight_device in {d}")
            _w(f"{W}.weightDevice[{i}].leafWeight", f"{d}/blkio.leaf_weight_device",
               f"{dev} {wd['leafWeight']}")
    for key, fname, _ in _THROTTLES:
        for i, td in enumerate(blk.get(key, [])):
            _w(f"{W}.{key}[{i}]", f"{d}/blkio.throttle.{fname}",
               f"{td['major']}:{td['minor']} {td['rate']}")


def blkio_to_io_weight(w: int) -> int:
    """blkio weight [10, 1000] to io.weight [1, 10000], linearly (as runc and crun do)."""
    return 1 + (w - 10) * 9999 // 990


def _io_v2(d: str, blk: dict) -> None:
    W = f"{P}.blockIO"
    bfq = _has(f"{d}/io.bfq.weight")
    if "leafWeight" in blk:
        raise CgroupError(f"{W}.leafWeight: cgroup v2 has no leaf weights")
    if "weight" in blk:
        if bfq:
            _w(f"{W}.weight", f"{d}/io.bfq.weight", str(blk["weight"]))
        else:
            _w(f"{W}.weight", f"{d}/io.weight", str(blkio_to_io_weight(blk["weight"])))
    for i, wd in enumerate(blk.get("weightDevice", [])):
        if "leafWeight" in wd:
            raise CgroupError(f"{W}.weightDevice[{i}].leafWeight: cgroup v2 has no leaf weights")
        dev = f"{wd['major']}:{wd['minor']}"
        if bfq:
            _w(f"{W}.weightDevice[{i}].weight", f"{d}/io.bfq.weight", f"{dev} {wd['weight']}")
        else:
            _w(f"{W}.weightDevice[{i}].weight", f"{d}/io.weight",
               f"{dev} {blkio_to_io_weight(wd['weight'])}")
    for key, _, io_key in _THROTTLES:
        for i, td in enumerate(blk.get(key, [])):
            rate = str(td["rate"]) if td["rate"] else "max"
            _w(f"{W}.{key}[{i}]", f"{d}/io.max", f"{td['major']}:{td['minor']} {io_key}={rate}")


# --- hugetlb ---------------------------------------------------------------------------------

def _sizes(d: str, suffix: str) -> list[str]:
    try:
        names = os.listdir(d)
    except OSError:
        return []
    out = []
    for n in names:
        parts = n.split(".")
        if len(parts) == 3 and parts[0] == "hugetlb" and "." + parts[2] == suffix:
            out.append(parts[1])
    return sorted(out)


def _hugetlb(m: Manager, limits: list[dict]) -> None:
    if not limits:
        return
    W = f"{P}.hugepageLimits"
    d = m.v1("hugetlb")
    if d is not None:
        limit_suffix, rsvd_suffix = ".limit_in_bytes", ".rsvd.limit_in_bytes"
    else:
        d = m.v2_dir("hugetlb", W)
        limit_suffix, rsvd_suffix = ".max", ".rsvd.max"
    for i, h in enumerate(limits):
        size, value = h["pageSize"], str(h["limit"])
        f = f"{d}/hugetlb.{size}{limit_suffix}"
        if not _has(f):
            raise CgroupError(f"{W}[{i}].pageSize: no huge page size {size} on this host (no {f}; "
                              f"sizes: {', '.join(_sizes(d, limit_suffix)) or 'none'})")
        _w(f"{W}[{i}]", f, value)
        rsvd = f"{d}/hugetlb.{size}{rsvd_suffix}"
        if _has(rsvd):  # reservation accounting, when the kernel has it (the spec prefers it)
            _w(f"{W}[{i}]", rsvd, value)


# --- network, rdma ---------------------------------------------------------------------------

def _network(m: Manager, net: dict) -> None:
    W = f"{P}.network"
    if "classID" in net:
        d = m.v1("net_cls")
        if d is None:
            raise CgroupError(f"{W}.classID: the net_cls controller is not available ("
                              + ("cgroup v2 has none" if m.mode == "v2" else "no v1 net_cls hierarchy is mounted")
                              + ")")
        _w(f"{W}.classID", f"{d}/net_cls.classid", str(net["classID"]))
    if net.get("priorities"):
        d = m.v1("net_prio")
        if d is None:
            raise CgroupError(f"{W}.priorities: the net_prio controller is not available ("
                              + ("cgroup v2 has none" if m.mode == "v2" else "no v1 net_prio hierarchy is mounted")
                              + ")")
        for i, p in enumerate(net["priorities"]):
            _w(f"{W}.priorities[{i}]", f"{d}/net_prio.ifpriomap", f"{p['name']} {p['priority']}")


def _rdma(m: Manager, rdma: dict) -> None:
    if not rdma:
        return
    W = f"{P}.rdma"
    d = m.v1("rdma") or m.v2_dir("rdma", W)
    for dev, e in rdma.items():
        parts = [dev]
        if "hcaHandles" in e:
            parts.append(f"hca_handle={e['hcaHandles']}")
        if "hcaObjects" in e:
            parts.append(f"hca_object={e['hcaObjects']}")
        _w(f"{W}.{dev}", f"{d}/rdma.max", " ".join(parts))


# --- unified ---------------------------------------------------------------------------------

def _unified(m: Manager, unified: dict) -> None:
    W = f"{P}.unified"
    if not unified:
        return
    d = m.unified
    if d is None:
        raise CgroupError(f"{W}: this host has no cgroup v2 hierarchy (cgroup v1 only)")
    offered = m.v2_controllers()
    for key, value in unified.items():
        ctrl = key.split(".", 1)[0]
        if ctrl in offered:
            m.v2_dir(ctrl, f"{W}.{key}")  # enables it down to the container's cgroup
        f = f"{d}/{key}"
        try:
            write(f, value)
        except CgroupError as e:
            if e.errno == _errno.ENOENT and ctrl not in offered and ctrl != "cgroup":
                raise CgroupError(f"{W}.{key}: no such file {f}: the {ctrl} controller is not "
                                  f"available in the cgroup v2 hierarchy (it offers: "
                                  f"{' '.join(offered) or 'none'})", e.errno) from None
            raise _field(f"{W}.{key}", e) from None
