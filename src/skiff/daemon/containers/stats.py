"""Resource usage and limits of containers: ``top``, ``stats`` and ``update``.

``top`` runs the host's ``ps`` with the caller's arguments (default ``-ef``) and keeps the rows
of the container's processes (containerd's ``ListPids``), as dockerd does.

``stats`` turns containerd's task metrics (``io.containerd.cgroups.v1.Metrics`` on hosts with
v1 controllers, ``io.containerd.cgroups.v2.Metrics`` on unified ones) into the Engine API's stats
object (moby's ``StatsJSON``): the fields the docker CLI computes CPU %, memory, block I/O and
PIDs from. ``system_cpu_usage`` (the host's CPU time in ns, from ``/proc/stat``) and
``online_cpus`` are sampled next to each reading. A container that is not running gives the
empty object (name and id only), as dockerd does. skiffd has no container networks yet, so
``networks`` is absent (as with ``--network none``).

``update`` changes a container's resources (and restart policy): the record and the stored
OCI spec (applied at the next start), and when it runs the live cgroup through containerd's
``Tasks.Update``; validation as dockerd's.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import AsyncGenerator
from typing import Any

from skiff.daemon.api.errors import ApiError, Conflict, InvalidParameter, NotFound
from skiff.daemon.containers.model import Container, rfc3339

log = logging.getLogger("skiff.daemon.stats")

INTERVAL = 1.0               # seconds between two samples (dockerd's collector interval)
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

V1_MEMORY_KEYS = (
    "cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pgpgin", "pgpgout", "pgfault",
    "pgmajfault", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable",
    "hierarchical_memory_limit", "hierarchical_memsw_limit", "total_cache", "total_rss",
    "total_rss_huge", "total_mapped_file", "total_dirty", "total_writeback", "total_pgpgin",
    "total_pgpgout", "total_pgfault", "total_pgmajfault", "total_inactive_anon", "total_active_anon",
    "total_inactive_file", "total_active_file", "total_unevictable")
# memory.stat key -> containerd's v1 MemoryStat field, where they differ
_V1_FIELD = {"pgpgin": "pg_pg_in", "pgpgout": "pg_pg_out", "pgfault": "pg_fault",
             "pgmajfault": "pg_maj_fault", "hierarchical_memsw_limit": "hierarchical_swap_limit",
             "total_pgpgin": "total_pg_pg_in", "total_pgpgout": "total_pg_pg_out",
             "total_pgfault": "total_pg_fault", "total_pgmajfault": "total_pg_maj_fault"}
V2_MEMORY_KEYS = (
    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty",
    "file_writeback", "anon_thp", "inactive_anon", "active_anon", "inactive_file", "active_file",
    "unevictable", "slab_reclaimable", "slab_unreclaimable", "pgfault", "pgmajfault",
    "workingset_refault", "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan",
    "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc",
    "thp_collapse_alloc")
_V1_BLKIO = (("io_service_bytes_recursive", "io_service_bytes_recursive"),
             ("io_serviced_recursive", "io_serviced_recursive"),
             ("io_queue_recursive", "io_queued_recursive"),
             ("io_service_time_recursive", "io_service_time_recursive"),
             ("io_wait_time_recursive", "io_wait_time_recursive"),
             ("io_merged_recursive", "io_merged_recursive"),
             ("io_time_recursive", "io_time_recursive"),
             ("sectors_recursive", "sectors_recursive"))


# --- the stats object ------------------------------------------------------------------------

def _cpu_stats(total: int = 0, percpu: list[int] | None = None, kernel: int = 0, user: int = 0,
               periods: int = 0, throttled_periods: int = 0, throttled_time: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {"total_usage": total}
    if percpu:
        usage["percpu_usage"] = list(percpu)
    usage["usage_in_kernelmode"] = kernel
    usage["usage_in_usermode"] = user
    return {"cpu_usage": usage,
            "throttling_data": {"periods": periods, "throttled_periods": throttled_periods,
                                "throttled_time": throttled_time}}


def _blkio(entries: dict[str, Any] | None = None) -> dict[str, Any]:
    return {k: (entries or {}).get(k) for k, _ in _V1_BLKIO}


def empty_stats(name: str, cid: str) -> dict[str, Any]:
    """dockerd's stats of a container that is not running: zero values, name and id."""
    return {"read": rfc3339(0), "preread": rfc3339(0), "pids_stats": {}, "blkio_stats": _blkio(),
            "num_procs": 0, "storage_stats": {}, "cpu_stats": _cpu_stats(),
            "precpu_stats": _cpu_stats(), "memory_stats": {}, "name": name, "id": cid}


def _omit_zero(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v}


def from_v1(m: Any, machine_memory: int) -> dict[str, Any]:
    """Stats fields from an ``io.containerd.cgroups.v1.Metrics`` message."""
    out: dict[str, Any] = {}
    blk: dict[str, Any] = {}
    for key, field in _V1_BLKIO:
        entries = [{"major": int(e.major), "minor": int(e.minor), "op": str(e.op), "value": int(e.value)}
                   for e in getattr(m.blkio, field)]
        blk[key] = entries or None
    out["blkio_stats"] = _blkio(blk)
    u, t = m.cpu.usage, m.cpu.throttling
    out["cpu_stats"] = _cpu_stats(int(u.total), [int(x) for x in u.per_cpu], int(u.kernel), int(u.user),
                                  int(t.periods), int(t.throttled_periods), int(t.throttled_time))
    mem = m.memory
    raw = {k: int(getattr(mem, _V1_FIELD.get(k, k))) for k in V1_MEMORY_KEYS}
    limit = int(mem.usage.limit)
    if machine_memory > 0 and limit > machine_memory:
        limit = machine_memory          # no limit: the machine's memory, as dockerd shows
    out["memory_stats"] = _omit_zero({"usage": int(mem.usage.usage), "max_usage": int(mem.usage.max),
                                      "stats": raw, "failcnt": int(mem.usage.failcnt), "limit": limit})
    out["pids_stats"] = _omit_zero({"current": int(m.pids.current), "limit": int(m.pids.limit)})
    return out


def from_v2(m: Any, machine_memory: int) -> dict[str, Any]:
    """Stats fields from an ``io.containerd.cgroups.v2.Metrics`` message (moby's statsV2: CPU
    times in µs become ns, no per-CPU usage, memory.stat's v2 keys, I/O bytes read/written)."""
    out: dict[str, Any] = {}
    isbr: list[dict[str, Any]] = []
    for e in m.io.usage:
        isbr.append({"major": int(e.major), "minor": int(e.minor), "op": "read", "value": int(e.rbytes)})
        isbr.append({"major": int(e.major), "minor": int(e.minor), "op": "write", "value": int(e.wbytes)})
    out["blkio_stats"] = _blkio({"io_service_bytes_recursive": isbr} if isbr else None)
    c = m.cpu
    out["cpu_stats"] = _cpu_stats(int(c.usage_usec) * 1000, None, int(c.system_usec) * 1000,
                                  int(c.user_usec) * 1000, int(c.nr_periods), int(c.nr_throttled),
                                  int(c.throttled_usec) * 1000)
    mem = m.memory
    limit = int(mem.usage_limit)
    if machine_memory > 0 and limit > machine_memory:
        limit = machine_memory
    ms = {"usage": int(mem.usage), "stats": {k: int(getattr(mem, k)) for k in V2_MEMORY_KEYS},
          "limit": limit}
    if m.HasField("memory_events"):
        ms["failcnt"] = int(m.memory_events.oom)
    out["memory_stats"] = _omit_zero(ms)
    out["pids_stats"] = _omit_zero({"current": int(m.pids.current), "limit": int(m.pids.limit)})
    return out


def from_metrics(m: Any, machine_memory: int) -> dict[str, Any]:
    name = m.DESCRIPTOR.full_name
    if name == "io.containerd.cgroups.v1.Metrics":
        return from_v1(m, machine_memory)
    if name == "io.containerd.cgroups.v2.Metrics":
        return from_v2(m, machine_memory)
    raise ApiError(f"containerd sent task metrics of an unknown type {name!r}")


def system_cpu_usage(proc_stat: str = "/proc/stat") -> int:
    """The host's CPU time in ns: the first line of /proc/stat (user nice system idle iowait irq
    softirq), as dockerd samples it."""
    with open(proc_stat) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "cpu":
                if len(parts) < 8:
                    raise ApiError(f"{proc_stat}: invalid cpu line {line.strip()!r}")
                ticks = sum(int(x) for x in parts[1:8])
                return ticks * 1_000_000_000 // _CLK_TCK
    raise ApiError(f"{proc_stat}: no cpu line")


def online_cpus() -> int:
    return int(os.sysconf("SC_NPROCESSORS_ONLN"))


def machine_memory(meminfo: str = "/proc/meminfo") -> int:
    with open(meminfo) as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


# --- top -------------------------------------------------------------------------------------

_PS_ARG_KV = re.compile(r"\s+([^\s]*)=\s*(PID[^\s]*)")


def validate_ps_args(ps_args: str) -> None:
    """dockerd refuses to let a ``ps -o`` column other than ``pid`` be renamed to PID*."""
    for key, value in _PS_ARG_KV.findall(" " + ps_args):
        if key != "pid":
            raise InvalidParameter(f'specifying "{key}={value}" is not allowed')


def parse_ps_output(output: str, pids: set[int]) -> dict[str, Any]:
    """Titles and the rows of ``pids`` from ps output (a row's last column keeps its spaces;
    thread rows, PID "-", follow the process row they belong to)."""
    lines = output.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise ApiError("Couldn't find PID field in ps output")
    pid_index = titles.index("PID")
    processes: list[list[str]] = []
    keep_threads = False
    for line in lines[1:]:
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) <= pid_index:
            continue
        if fields[pid_index] == "-":
            if keep_threads:
                processes.append(_row(fields, len(titles)))
            continue
        try:
            pid = int(fields[pid_index])
        except ValueError:
            raise ApiError(f"Unexpected pid '{fields[pid_index]}' in ps output") from None
        keep_threads = pid in pids
        if keep_threads:
            processes.append(_row(fields, len(titles)))
    return {"Titles": titles, "Processes": processes}


def _row(fields: list[str], ncols: int) -> list[str]:
    return fields[:ncols - 1] + [" ".join(fields[ncols - 1:])]


async def run_ps(args: list[str], pids: list[int]) -> str:
    """``ps ARGS -q PIDS``; without ``-q`` when that fails (some options do not go with it)."""
    import asyncio

    async def ps(argv: list[str]) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            "ps", *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode or 0, out, err

    try:
        rc, out, err = await ps([*args, "-q", ",".join(str(p) for p in pids)])
        if rc != 0:
            rc, out, err = await ps(args)
    except OSError as e:
        raise ApiError(f"ps: cannot run: {e.strerror or e}") from None
    if rc != 0:
        first = err.decode(errors="replace").split("\n", 1)[0].strip()
        raise ApiError(f"ps: {first or f'exit status {rc}'}")
    return out.decode(errors="replace")


# --- update ----------------------------------------------------------------------------------

UPDATABLE = ("CpuShares", "Memory", "BlkioWeight", "CpuPeriod", "CpuQuota", "CpusetCpus",
             "CpusetMems", "MemoryReservation", "MemorySwap", "NanoCpus", "PidsLimit")
_INT_FIELDS = ("CpuShares", "Memory", "BlkioWeight", "CpuPeriod", "CpuQuota", "MemoryReservation",
               "MemorySwap", "NanoCpus")
# Resources fields that skiffd does not change on a running container: refused unless empty
NOT_UPDATABLE = ("CgroupParent", "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
                 "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "CpuRealtimePeriod",
                 "CpuRealtimeRuntime", "Devices", "DeviceCgroupRules", "DeviceRequests",
                 "KernelMemory", "KernelMemoryTCP", "MemorySwappiness", "OomKillDisable", "Init",
                 "Ulimits", "CpuCount", "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth")


def parse_update(body: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(resources to change, restart policy or None) from an update body; the CLI sends every
    Resources field, zero meaning "unchanged"."""
    if not isinstance(body, dict):
        raise InvalidParameter("update: the body must be a JSON object")
    unknown = sorted(set(body) - set(UPDATABLE) - set(NOT_UPDATABLE) - {"RestartPolicy"})
    if unknown:
        raise InvalidParameter(f"update: unknown field(s) {', '.join(unknown)}")
    for k in NOT_UPDATABLE:
        v = body.get(k)
        if v not in (None, 0, "", [], {}, False) and not (k == "MemorySwappiness" and v == -1):
            raise InvalidParameter(f"update: {k} cannot be updated by skiffd (it updates "
                                   f"{', '.join(UPDATABLE)} and RestartPolicy)")
    res: dict[str, Any] = {}
    for k in _INT_FIELDS:
        v = body.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidParameter(f"update: {k}: expected an integer, got {v!r}")
        if v != 0:
            res[k] = v
    for k in ("CpusetCpus", "CpusetMems"):
        v = body.get(k)
        if v is None:
            continue
        if not isinstance(v, str):
            raise InvalidParameter(f"update: {k}: expected a string, got {v!r}")
        if v:
            res[k] = v
    pl = body.get("PidsLimit")
    if pl is not None:
        if isinstance(pl, bool) or not isinstance(pl, int):
            raise InvalidParameter(f"update: PidsLimit: expected an integer, got {pl!r}")
        # 0 and negative values mean unlimited when updating (dockerd stores -1 then)
        res["PidsLimit"] = pl if pl > 0 else -1
    rp = body.get("RestartPolicy")
    policy = None
    if isinstance(rp, dict) and rp.get("Name"):
        policy = rp
    elif rp is not None and not isinstance(rp, dict):
        raise InvalidParameter(f"update: RestartPolicy: expected an object, got {rp!r}")
    return res, policy


def merge_update(current: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    """The HostConfig after the update (moby's UpdateContainer checks); Conflict when the
    update contradicts what is set."""
    h = dict(current)
    if res.get("NanoCpus", 0) > 0 and (h.get("CpuPeriod") or 0) > 0:
        raise Conflict("Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set")
    if res.get("NanoCpus", 0) > 0 and (h.get("CpuQuota") or 0) > 0:
        raise Conflict("Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set")
    if res.get("CpuPeriod", 0) > 0 and (h.get("NanoCpus") or 0) > 0:
        raise Conflict("Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set")
    if res.get("CpuQuota", 0) > 0 and (h.get("NanoCpus") or 0) > 0:
        raise Conflict("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set")
    mem = res.get("Memory", 0)
    cur_swap = h.get("MemorySwap") or 0
    if mem and cur_swap > 0 and mem > cur_swap and not res.get("MemorySwap"):
        raise Conflict("Memory limit should be smaller than already set memoryswap limit, update "
                       "the memoryswap at the same time")
    for k, v in res.items():
        h[k] = v
    return h


class ResourceService:
    """top, stats and update over the containers backend (``ContainerService``)."""

    def __init__(self, containers: Any) -> None:
        self.cs = containers
        self.cd = containers.cd
        self._machine_memory: int | None = None

    def _running(self, c: Container) -> None:
        if c.state.status == "restarting":
            raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
        if c.state.status not in ("running", "paused"):
            raise Conflict(f"Container {c.id} is not running")

    # -- top -------------------------------------------------------------------------------------
    async def top(self, ref: str, ps_args: str = "") -> dict[str, Any]:
        c = self.cs.get(ref)
        ps_args = ps_args or "-ef"
        validate_ps_args(ps_args)
        self._running(c)
        pids = await self.cd.pids(c.id)
        out = await run_ps([a for a in ps_args.split(" ") if a], pids)
        result = parse_ps_output(out, set(pids))
        self.cs.publish(c, "top")
        return result

    # -- stats -----------------------------------------------------------------------------------
    def machine_memory(self) -> int:
        if self._machine_memory is None:
            self._machine_memory = machine_memory()
        return self._machine_memory

    async def sample(self, c: Container) -> dict[str, Any] | None:
        """One reading of a running container (None when it is not running)."""
        if c.state.status not in ("running", "paused"):
            return None
        try:
            m = await self.cd.metrics(c.id)
        except NotFound:
            return None
        s = from_metrics(m, self.machine_memory())
        s["read"] = rfc3339(time.time_ns())
        s["num_procs"] = 0
        s["storage_stats"] = {}
        s["cpu_stats"]["system_cpu_usage"] = system_cpu_usage()
        s["cpu_stats"]["online_cpus"] = online_cpus()
        return s

    async def stats(self, ref: str, stream: bool, one_shot: bool) -> AsyncGenerator[bytes, None]:
        """The stats objects to send, each a JSON line: one (``stream`` false; after two samples
        a second apart unless ``one_shot``), or one per second until the caller stops."""
        import asyncio

        c = self.cs.get(ref)
        if not stream and c.state.status not in ("running", "paused"):
            yield _line(empty_stats(c.name, c.id))
            return
        pre_cpu: dict[str, Any] = _cpu_stats()
        pre_read = rfc3339(0)
        first = not one_shot
        while True:
            s = await self.sample(c)
            if s is None:
                s = empty_stats(c.name, c.id)
            else:
                s = {"read": s.pop("read"), "preread": pre_read, **s}
                s["precpu_stats"] = pre_cpu
                s["name"], s["id"] = c.name, c.id
            cpu = s["cpu_stats"]
            read = s["read"]
            if not stream and first:
                first = False               # prime precpu_stats, as dockerd does
            else:
                yield _line(_ordered(s))
                if not stream:
                    return
            pre_cpu, pre_read = cpu, read
            await asyncio.sleep(INTERVAL)

    # -- update ----------------------------------------------------------------------------------
    async def update(self, ref: str, body: Any) -> dict[str, Any]:
        from skiff.daemon import specgen
        from skiff.daemon.containers.backend import SPEC_FILE
        from skiff.daemon.containers.etcfiles import write_file
        from skiff.daemon.containers.monitor import validate_restart_policy

        c = self.cs.get(ref)
        res, policy = parse_update(body)
        si = specgen.sysinfo()
        if policy is not None:
            if policy.get("Name") != "no" and c.auto_remove:
                raise Conflict(f"Cannot update container {c.id}: Restart policy cannot be updated "
                               "because AutoRemove is enabled for the container")
            policy = validate_restart_policy(policy, False)
        async with self.cs.lock(c.id):
            if c.state.status in ("removing", "dead"):
                raise Conflict(f'Cannot update container {c.id}: container is marked for removal '
                               'and cannot be "update"')
            try:
                new_host = merge_update(c.host_config, res)
            except Conflict as e:
                raise Conflict(f"Cannot update container {c.id}: {e}") from None
            warnings = specgen.validate_resources(new_host, si) if res else []
            resources = None
            spec: dict[str, Any] = {}
            if res:
                spec = self.cs.container_spec(c)
                new_res, _ = specgen.resources_spec(new_host, si, bool(new_host.get("Privileged")))
                linux = spec.setdefault("linux", {})
                merged = dict(linux.get("resources") or {})
                for k in ("memory", "cpu", "pids", "blockIO"):
                    if k in new_res:
                        merged[k] = new_res[k]
                    else:
                        merged.pop(k, None)
                linux["resources"] = merged
                resources = _changed_sections(res, new_res)
            old_host = c.host_config
            c.host_config = new_host
            if policy is not None:
                c.host_config["RestartPolicy"] = policy
            try:
                if resources is not None:
                    write_file(os.path.join(self.cs.dir(c.id), SPEC_FILE), json.dumps(spec))
                    await self.cd.update_container_spec(c.id, spec)
                    if c.state.status in ("running", "paused") and resources:
                        await self.cd.update_resources(c.id, resources)
                self.cs.save(c)
            except (ApiError, OSError) as e:
                c.host_config = old_host
                raise ApiError(f"Cannot update container {c.id}: {e}") from None
            if policy is not None:
                self.cs.restart_policy_changed(c)
        self.cs.publish(c, "update")
        return {"Warnings": list(warnings or [])}


def _changed_sections(res: dict[str, Any], new_res: dict[str, Any]) -> dict[str, Any]:
    """The OCI linux.resources sections the update touches (for Tasks.Update)."""
    sections = {"Memory": "memory", "MemorySwap": "memory", "MemoryReservation": "memory",
                "CpuShares": "cpu", "CpuPeriod": "cpu", "CpuQuota": "cpu", "NanoCpus": "cpu",
                "CpusetCpus": "cpu", "CpusetMems": "cpu", "PidsLimit": "pids", "BlkioWeight": "blockIO"}
    out: dict[str, Any] = {}
    for k in res:
        sec = sections[k]
        if sec == "pids" and sec not in new_res:
            out["pids"] = {"limit": -1}
        elif sec in new_res:
            val = dict(new_res[sec])
            if sec == "memory":
                val.pop("disableOOMKiller", None)
            out[sec] = val
    return out


_ORDER = ("read", "preread", "pids_stats", "blkio_stats", "num_procs", "storage_stats", "cpu_stats",
          "precpu_stats", "memory_stats", "name", "id")


def _ordered(s: dict[str, Any]) -> dict[str, Any]:
    return {k: s[k] for k in _ORDER if k in s} | {k: v for k, v in s.items() if k not in _ORDER}


def _line(s: dict[str, Any]) -> bytes:
    return (json.dumps(s) + "\n").encode()
