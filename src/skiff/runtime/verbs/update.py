"""``update``: change the resources of a running container (JSON from ``-r``, or runc's flags)."""

from __future__ import annotations

import sys

from skiff import fastjson as json
from skiff.runtime.flags import Flag, UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context

FLAGS = [
    Flag("--resources,-r"),
    Flag("--blkio-weight"), Flag("--cpu-period"), Flag("--cpu-quota"), Flag("--cpu-burst"),
    Flag("--cpu-share"), Flag("--cpu-rt-period"), Flag("--cpu-rt-runtime"), Flag("--cpuset-cpus"),
    Flag("--cpuset-mems"), Flag("--kernel-memory"), Flag("--kernel-memory-tcp"), Flag("--memory"),
    Flag("--cpu-idle"), Flag("--memory-reservation"), Flag("--memory-swap"), Flag("--pids-limit"),
    Flag("--l3-cache-schema"), Flag("--mem-bw-schema"),
]
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_bytes(value: str, flag: str) -> int:
    """``1024``, ``512k``, ``100m``, ``1g`` (docker's RAMInBytes units); ``-1`` is unlimited."""
    v = value.strip().lower()
    if v == "-1":
        return -1
    num = v.rstrip("bkmgtpi")
    unit = v[len(num):].rstrip("ib") or ""
    if v.endswith("b") and not unit:
        unit = "b"
    try:
        n = float(num)
    except ValueError:
        raise UsageError(f"invalid value for {flag}: {value!r}") from None
    if unit not in _UNITS:
        raise UsageError(f"invalid unit in {flag}: {value!r}")
    return int(n * _UNITS[unit])


def _int(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"invalid value for {flag}: {value!r} is not an integer") from None


def resources_from_flags(opts: dict) -> dict:
    res: dict = {}

    def put(section: str, key: str, value: object) -> None:
        res.setdefault(section, {})[key] = value

    for flag, section, key in (("memory", "memory", "limit"), ("memory_reservation", "memory", "reservation"),
                               ("memory_swap", "memory", "swap"), ("kernel_memory", "memory", "kernel"),
                               ("kernel_memory_tcp", "memory", "kernelTCP")):
        if opts[flag] is not None:
            put(section, key, parse_bytes(opts[flag], "--" + flag.replace("_", "-")))
    for flag, key in (("cpu_period", "period"), ("cpu_quota", "quota"), ("cpu_burst", "burst"),
                      ("cpu_share", "shares"), ("cpu_rt_period", "realtimePeriod"),
                      ("cpu_rt_runtime", "realtimeRuntime"), ("cpu_idle", "idle")):
        if opts[flag] is not None:
            put("cpu", key, _int(opts[flag], "--" + flag.replace("_", "-")))
    if opts["cpuset_cpus"] is not None:
        put("cpu", "cpus", opts["cpuset_cpus"])
    if opts["cpuset_mems"] is not None:
        put("cpu", "mems", opts["cpuset_mems"])
    if opts["pids_limit"] is not None:
        put("pids", "limit", _int(opts["pids_limit"], "--pids-limit"))
    if opts["blkio_weight"] is not None:
        put("blockIO", "weight", _int(opts["blkio_weight"], "--blkio-weight"))
    if opts["l3_cache_schema"] is not None or opts["mem_bw_schema"] is not None:
        raise UsageError("Intel RDT (--l3-cache-schema, --mem-bw-schema) is not supported by skiff-runc")
    return res


def _merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run(ctx: Context, args: list[str]) -> int:
    from skiff.runtime import state
    from skiff.runtime.cgroups import CgroupError, load_manager
    from skiff.runtime.cli import RuntimeFailure

    opts, pos = parse(args, FLAGS, positional_max=1)
    if not pos:
        raise UsageError('"update" requires exactly 1 argument (the container id)')
    st = state.load(ctx.root, pos[0])
    if st.status() in ("stopped", "creating"):
        raise RuntimeFailure(f"container {st.id} is not running")
    if opts["resources"] is not None:
        src = opts["resources"]
        try:
            text = sys.stdin.read() if src == "-" else open(src).read()
            res = json.loads(text)
        except OSError as e:
            raise RuntimeFailure(f"update: read resources {src}: {e.strerror}") from None
        except ValueError as e:
            raise RuntimeFailure(f"update: resources from {src} are not valid JSON: {e}") from None
        if not isinstance(res, dict):
            raise RuntimeFailure(f"update: resources from {src} must be a JSON object")
    else:
        res = resources_from_flags(opts)
    # as runc: update never rewrites device rules (a v1 rewrite starts with "deny all", which
    # would briefly cut a running container off from /dev/null)
    res.pop("devices", None)
    try:
        load_manager(st.cgroup).update(res)
    except CgroupError as e:
        raise RuntimeFailure(f"update {st.id}: {e}") from None
    linux = st.config.setdefault("linux", {})
    linux["resources"] = _merge(linux.get("resources") or {}, res)
    st.save()
    return 0
