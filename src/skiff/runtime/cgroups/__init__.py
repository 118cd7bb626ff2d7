"""The cgroup manager of skiff-runc: cgroupfs, v1, pure v2 and hybrid hosts.

Layout. ``open_manager`` reads mountinfo for the cgroup mounts at or below ``cgroup_root``:
a cgroup2 mount at the root is pure v2; v1 mounts are v1, and v1 plus a cgroup2 mount (at
``<root>/unified``) is hybrid, which counts as version 1. A Manager holds one directory per v1
hierarchy (``paths()`` keys: controller names, co-mounted ones sharing a directory, and named
hierarchies such as ``name=systemd``, as runc joins them) and, on v2 and hybrid hosts, the
cgroup v2 directory under the key ``""``. Processes are put in all of them.

cgroupsPath (runc's cgroupfs semantics): ``/a/b`` is below each hierarchy's mount point;
``a/b`` is below the runtime's own cgroup of each hierarchy (from ``/proc/self/cgroup``);
``""`` is like runc: ``<own cgroup>/<container id>``. ``..`` never climbs above the start.
systemd cgroups (``--systemd-cgroup`` or ``slice:prefix:name``) are refused.

Resources go to a controller's v1 hierarchy when it is mounted, else to the cgroup v2
directory (on hybrid hosts that is how hugetlb, bound to cgroup2, is reached; its controller
is then enabled in ``cgroup.subtree_control`` down from the root, only when asked for). On
pure v2, ``create`` enables every controller the hierarchy offers (one that cannot be enabled
is reported by ``set`` when a resource needs it). Decisions where the spec or host leaves room:

- values runc reads as "unset" write nothing: memory limit/reservation/swap 0, cpu
  shares/quota/period 0; pids limit 0 is a real limit (the spec says so; runc writes 1);
- memory.kernel/kernelTCP are written when the kernel has the v1 file (Linux 6.x accepts but
  ignores kmem.limit_in_bytes; kmem.tcp works); without the file, -1 is accepted and a real
  limit is an error; v2 refuses swappiness, disableOOMKiller and real-time cpu values;
- v2 cpu.weight = 1 + (shares - 2) * 9999 / 262142 (the linear mapping of runc <= 1.2 and crun);
- v1 blkio without CFQ uses BFQ's weight files as runc does; leaf weights need CFQ's files;
- devices: v1 writes ``a`` to devices.deny then each rule in order; v2 attaches an eBPF
  program (see ``_devices``). ``set`` applies only the rules it is given: runc also allows
  its ``DEFAULT_RULES`` after the config's rules (not ``linux.devices``: those only get a
  node), which ``with_default_devices`` adds. ``update`` rewrites v1 rules the same way
  (deny-all first).
- destroy removes the container's directories and child cgroups (EBUSY retried for 2 s) and
  the parents ``create`` made, when nothing else uses them.

Every cgroup file is read and written through ``_util.read``/``write``, so errors name the
file, the value and the reason, prefixed with the resource field when one is being set.
``CgroupError`` is an ``OSError`` (``errno`` set when a system call failed). Kernel calls other
than file I/O (kill, bpf) go through the ``syscalls=`` object (``skiff.runtime.syscalls``).
"""

from __future__ import annotations

from ._manager import Manager, load_manager, open_manager
from ._util import CgroupError

# What runc allows in every container after the config's own rules (libcontainer/specconv):
# mknod of any device, the standard character devices, ptys and /dev/net/tun.
DEFAULT_RULES: list[dict] = [
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},    # /dev/null
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},    # /dev/random
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},    # /dev/full
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},    # /dev/tty
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},    # /dev/zero
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},    # /dev/urandom
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},              # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},    # /dev/ptmx
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # /dev/net/tun
]
# the device path of each DEFAULT_RULES entry, where runc gives it one
_DEFAULT_RULE_PATHS = ("", "", "/dev/null", "/dev/random", "/dev/full", "/dev/tty", "/dev/zero",
                       "/dev/urandom", "", "", "")


__all__ = ["DEFAULT_RULES", "CgroupError", "Manager", "load_manager", "open_manager", "preload",
           "with_default_devices"]


def preload() -> None:
    """Import what ``Manager.set`` uses, ahead of time (the runtime does it while it would wait
    anyway, see ``skiff.runtime.launch.create``)."""
    from . import _devices, _resources, _set  # noqa: F401


def with_default_devices(resources: dict | None, linux_devices: list | tuple = ()) -> dict:
    """``resources`` with the device rules runc (1.1, and its main branch) applies: the
    config's own rules, then ``DEFAULT_RULES``. ``linux.devices`` entries (objects with a
    ``path``: skiff.oci.spec.Device) get a node in the container but no rule: access to them
    is what ``linux.resources.devices`` allows. As runc, a default rule whose device has its
    own ``linux.devices`` entry (e.g. ``/dev/null``) is left out: the config's entry wins."""
    out = dict(resources or {})
    rules = list(out.get("devices") or [])
    listed = {d.path for d in linux_devices}
    rules.extend(r for r, path in zip(DEFAULT_RULES, _DEFAULT_RULE_PATHS, strict=True)
                 if not path or path not in listed)
    out["devices"] = rules
    return out
