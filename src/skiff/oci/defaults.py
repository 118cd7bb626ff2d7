"""The default config.json that ``skiff-runc spec`` writes.

The content follows what runc's ``spec`` command documents and writes (the reference output
of an OCI runtime's ``spec`` verb): a shell as root in a read-only ``rootfs``, runc's small
default capability set, the standard mounts, and fresh pid/network/ipc/uts/mount/cgroup
namespaces. The rootless variant is the one ``spec --rootless`` writes: a user namespace that
maps container root to the calling user, no network namespace (an unprivileged user cannot
configure one), ``/sys`` bind-mounted (sysfs cannot be mounted without owning the network
namespace), no ``uid=``/``gid=`` mount options (those ids are not mapped) and no cgroup
resources (an unprivileged user cannot write the cgroup tree).
"""

from __future__ import annotations

import os

OCI_VERSION = "1.2.0"

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

_MASKED = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
]

_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def _mounts(rootless: bool) -> list[dict]:
    nosuid_noexec_nodev = ["nosuid", "noexec", "nodev"]
    devpts_opts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if not rootless:
        devpts_opts.append("gid=5")  # the "tty" group; not mapped in a rootless user namespace
    if rootless:
        sys_mount = {"destination": "/sys", "type": "none", "source": "/sys",
                     "options": ["rbind", *nosuid_noexec_nodev, "ro"]}
    else:
        sys_mount = {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                     "options": [*nosuid_noexec_nodev, "ro"]}
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": devpts_opts},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": [*nosuid_noexec_nodev, "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": list(nosuid_noexec_nodev)},
        sys_mount,
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": [*nosuid_noexec_nodev, "relatime", "ro"]},
    ]


def default_config(*, rootless: bool = False, args: list[str] | None = None,
                   terminal: bool = True) -> dict:
    """Return a fresh default config.json document (a new dict on every call)."""
    ns_types = ["pid", "network", "ipc", "uts", "mount", "cgroup"]
    if rootless:
        ns_types.remove("network")
        ns_types.append("user")
    linux: dict = {}
    if rootless:
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    else:
        # Deny every device by default; the runtime then allows the standard ones.
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    linux["namespaces"] = [{"type": t} for t in ns_types]
    linux["maskedPaths"] = list(_MASKED)
    linux["readonlyPaths"] = list(_READONLY)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args) if args is not None else ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": list(_CAPS),
                "effective": list(_CAPS),
                "permitted": list(_CAPS),
                "ambient": list(_CAPS),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "skiff",
        "mounts": _mounts(rootless),
        "linux": linux,
    }
