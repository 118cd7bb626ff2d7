"""Checking ``linux.resources`` (config.json, or ``update --resources``) before anything is written.

``check`` refuses unknown keys and values of the wrong type or range, naming the field
(``linux.resources.cpu.shares: expected an unsigned integer, got str``), and returns the
object with ``null`` members dropped. The managers then only deal with valid values.
"""

from __future__ import annotations

from ._util import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

P = "linux.resources"

_I64 = (-(1 << 63), (1 << 63) - 1)
_U64 = (0, (1 << 64) - 1)
_U32 = (0, (1 << 32) - 1)
_U16 = (0, (1 << 16) - 1)

_MEMORY = {"limit": _I64, "reservation": _I64, "swap": _I64, "kernel": _I64, "kernelTCP": _I64,
           "swappiness": _I64, "disableOOMKiller": bool, "useHierarchy": bool,
           "checkBeforeUpdate": bool}
_CPU = {"shares": _U64, "quota": _I64, "burst": _U64, "period": _U64, "realtimeRuntime": _I64,
        "realtimePeriod": _U64, "cpus": str, "mems": str, "idle": _I64}
_PIDS = {"limit": _I64}
_DEV = {"major": _I64, "minor": _I64}
_WEIGHT_DEV = {**_DEV, "weight": _U16, "leafWeight": _U16}
_THROTTLE_DEV = {**_DEV, "rate": _U64}
_BLKIO = {"weight": _U16, "leafWeight": _U16, "weightDevice": [_WEIGHT_DEV],
          "throttleReadBpsDevice": [_THROTTLE_DEV], "throttleWriteBpsDevice": [_THROTTLE_DEV],
          "throttleReadIOPSDevice": [_THROTTLE_DEV], "throttleWriteIOPSDevice": [_THROTTLE_DEV]}
_HUGEPAGE = {"pageSize": str, "limit": _U64}
_NETWORK = {"classID": _U32, "priorities": [{"name": str, "priority": _U32}]}
_RDMA_ENTRY = {"hcaHandles": _U32, "hcaObjects": _U32}
_DEVICE_RULE = {"allow": bool, "type": str, "major": _I64, "minor": _I64, "access": str}

_TOP = {"memory": _MEMORY, "cpu": _CPU, "pids": _PIDS, "blockIO": _BLKIO,
        "hugepageLimits": [_HUGEPAGE], "network": _NETWORK, "devices": [_DEVICE_RULE]}
# "rdma" and "unified" are maps with free keys: checked by hand below

_REQUIRED = {id(_HUGEPAGE): ("pageSize", "limit"), id(_DEVICE_RULE): ("allow",),
             id(_WEIGHT_DEV): ("major", "minor"), id(_THROTTLE_DEV): ("major", "minor", "rate"),
             id(_PIDS): ("limit",)}


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _value(v: Any, spec: Any, where: str) -> Any:
    if spec is bool:
        if not isinstance(v, bool):
            raise CgroupError(f"{where}: expected a boolean, got {_tname(v)}")
        return v
    if spec is str:
        if not isinstance(v, str):
            raise CgroupError(f"{where}: expected a string, got {_tname(v)}")
        return v
    if isinstance(spec, tuple):
        if isinstance(v, bool) or not isinstance(v, int):
            kind = "an unsigned integer" if spec[0] == 0 else "an integer"
            raise CgroupError(f"{where}: expected {kind}, got {_tname(v)}")
        if not spec[0] <= v <= spec[1]:
            raise CgroupError(f"{where}: {v} is out of range [{spec[0]}, {spec[1]}]")
        return v
    if isinstance(spec, list):
        if not isinstance(v, list):
            raise CgroupError(f"{where}: expected an array, got {_tname(v)}")
        return [_value(x, spec[0], f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(spec, dict):
        return _object(v, spec, where)
    raise AssertionError(spec)


def _object(d: Any, spec: dict, where: str) -> dict:
    if not isinstance(d, dict):
        raise CgroupError(f"{where}: expected an object, got {_tname(d)}")
    out = {}
    for k, v in d.items():
        if k not in spec:
            raise CgroupError(f"{where}.{k}: unknown field (known: {', '.join(spec)})")
        if v is None:
            continue
        out[k] = _value(v, spec[k], f"{where}.{k}")
    for k in _REQUIRED.get(id(spec), ()):
        if k not in out:
            raise CgroupError(f"{where}.{k}: required")
    return out


def check(resources: Any) -> dict:
    """Validate a ``linux.resources`` object; return it without ``null`` members."""
    if resources is None:
        return {}
    if not isinstance(resources, dict):
        raise CgroupError(f"{P}: expected an object, got {_tname(resources)}")
    out: dict = {}
    for k, v in resources.items():
        where = f"{P}.{k}"
        if v is None:
            continue
        if k == "unified":
            if not isinstance(v, dict):
                raise CgroupError(f"{where}: expected an object, got {_tname(v)}")
            for uk, uv in v.items():
                if not isinstance(uv, str):
                    raise CgroupError(f"{where}.{uk}: expected a string, got {_tname(uv)}")
                if not uk or "/" in uk or uk in (".", ".."):
                    raise CgroupError(f"{where}: {uk!r} is not a file name")
            out[k] = dict(v)
        elif k == "rdma":
            if not isinstance(v, dict):
                raise CgroupError(f"{where}: expected an object, got {_tname(v)}")
            out[k] = {dev: _object(e, _RDMA_ENTRY, f"{where}.{dev}") for dev, e in v.items()}
        elif k in _TOP:
            out[k] = _value(v, _TOP[k], where)
        else:
            raise CgroupError(f"{where}: unknown field (known: {', '.join([*_TOP, 'rdma', 'unified'])})")
    _semantics(out)
    return out


def _semantics(r: dict) -> None:
    mem = r.get("memory", {})
    for k in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
        if mem.get(k, 0) < -1:
            raise CgroupError(f"{P}.memory.{k}: {mem[k]} is not a byte count or -1 (unlimited)")
    sw = mem.get("swappiness")
    if sw is not None and not -1 <= sw <= 100:
        raise CgroupError(f"{P}.memory.swappiness: {sw} is out of range [0, 100]")
    cpu = r.get("cpu", {})
    quota, burst = cpu.get("quota", 0), cpu.get("burst")
    if burst is not None and quota > 0 and burst > quota:
        raise CgroupError(f"{P}.cpu.burst: {burst} is larger than cpu.quota {quota}")
    if cpu.get("quota", 0) < -1:
        raise CgroupError(f"{P}.cpu.quota: {quota} is not a time in microseconds or -1")
    for k in ("cpus", "mems"):
        if k in cpu and not _is_cpu_list(cpu[k]):
            raise CgroupError(f"{P}.cpu.{k}: {cpu[k]!r} is not a list such as '0-3,7'")
    if r.get("pids", {}).get("limit", 0) < -1:
        raise CgroupError(f"{P}.pids.limit: {r['pids']['limit']} is not a count or -1 (unlimited)")
    for i, h in enumerate(r.get("hugepageLimits", [])):
        if not _is_page_size(h["pageSize"]):
            raise CgroupError(f"{P}.hugepageLimits[{i}].pageSize: {h['pageSize']!r} is not a size "
                              "such as 2MB, 64KB or 1GB")
    blk = r.get("blockIO", {})
    for k in ("weight", "leafWeight"):
        if blk.get(k) == 0:
            # 0 means "not set", as runc reads it: dockerd sends blockIO.weight 0 for every
            # container started without --blkio-weight
            del blk[k]
        if k in blk and not 10 <= blk[k] <= 1000:
            raise CgroupError(f"{P}.blockIO.{k}: {blk[k]} is out of range [10, 1000]")
    for i, wd in enumerate(blk.get("weightDevice", [])):
        if "weight" not in wd and "leafWeight" not in wd:
            raise CgroupError(f"{P}.blockIO.weightDevice[{i}]: needs weight or leafWeight")
        for k in ("weight", "leafWeight"):
            if k in wd and not 10 <= wd[k] <= 1000:
                raise CgroupError(f"{P}.blockIO.weightDevice[{i}].{k}: {wd[k]} is out of range [10, 1000]")
    for k, v in blk.items():
        if isinstance(v, list):
            for i, dev in enumerate(v):
                if dev["major"] < 0 or dev["minor"] < 0:
                    raise CgroupError(f"{P}.blockIO.{k}[{i}]: major and minor must not be negative")
    for dev, e in r.get("rdma", {}).items():
        if not e:
            raise CgroupError(f"{P}.rdma.{dev}: needs hcaHandles or hcaObjects")
        if not dev or any(c.isspace() for c in dev):
            raise CgroupError(f"{P}.rdma: {dev!r} is not a device name")
    for i, p in enumerate(r.get("network", {}).get("priorities", [])):
        if not p["name"] or any(c.isspace() for c in p["name"]):
            raise CgroupError(f"{P}.network.priorities[{i}].name: {p['name']!r} is not an interface name")


def _is_cpu_list(s: str) -> bool:
    if s == "":
        return True
    for part in s.split(","):
        a, dash, b = part.partition("-")
        if not a.isdigit() or (dash and not b.isdigit()) or (dash and int(b) < int(a)):
            return False
    return True


def _is_page_size(s: str) -> bool:
    return (len(s) >= 3 and s[-1] == "B" and s[-2] in "KMG" and s[:-2].isdigit()
            and s[0] != "0")
