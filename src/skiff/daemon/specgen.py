"""Docker's container create body (``Config`` + ``HostConfig``) -> an OCI runtime spec.

What dockerd does, from moby's ``daemon/oci_linux.go``, ``daemon/daemon_unix.go``,
``oci/defaults.go`` and ``volume/mounts``; the result is the ``config.json`` that skiff-runc,
runc and crun accept:

- ``validate_create(config, host)`` checks a create body as dockerd's
  ``verifyContainerSettings`` does and refuses what skiffd does not implement; it returns
  dockerd-style warnings. Errors are ``InvalidParameter`` (400) with dockerd's wording where
  clients may match it.
- ``merge_config(config, image_config)`` fills a create body's Config from the image (moby's
  ``merge``), once, at create; ``adapt_host_config(host)`` fills the HostConfig defaults
  dockerd stores (ShmSize, IpcMode, CgroupnsMode, MemorySwap, OomKillDisable).
- ``build_spec(SpecInput)`` builds the spec for a container whose Config is already merged.
- ``resolve_user(rootfs, user, group_add)`` reads the container's ``/etc/passwd`` and
  ``/etc/group`` without leaving the rootfs (names are resolved at start, as dockerd does);
  without it only a numeric ``uid[:gid]`` can be used (and root gets no supplementary groups).
- ``exec_process(...)`` is the process of ``docker exec``; ``stop_signal``, ``merged_command``,
  ``default_hostname`` answer the daemon's other questions.

The caller (the containers backend) checks ``HostConfig.Runtime`` against its runtimes, the
log driver, and applies the daemon's ``init`` default when ``HostConfig.Init`` is null.

Where the output differs from dockerd 20.10's config.json on purpose: no ``hooks`` (no
libnetwork), empty capability lists instead of an empty object, no ``cpu.shares: 0`` /
``blockIO.weight: 0`` placeholders, ``pids`` left out for "unlimited" (crun 1.8 cannot write
-1 on cgroup v1; a new cgroup is unlimited anyway), and newer moby's masked paths
(``/proc/interrupts``, ``/sys/devices/virtual/powercap``, per-CPU ``thermal_throttle``).
Read-only bind mounts use ``ro`` (not ``rro``), which every runtime here knows.

Host facts (bounding set, cgroup layout, swap accounting, CPUs, devices) come from a
``SysInfo``; ``SysInfo.detect()`` reads this host, tests build their own.

Not here yet, refused clearly: ``Links``, volume drivers other than ``local``, ``MacAddress``
(issue 8, networking), container port ranges as PortBindings keys (as dockerd: clients send one
key per port; a HostPort range is taken), AppArmor profiles other than
``unconfined``, SELinux labels, user namespace remapping, GPUs (``DeviceRequests``), Windows-only
fields. Network modes (issue 8): ``default``/``bridge`` and user-defined network names get the
namespace ``skiff.daemon.network`` makes at start (the spec names its path), ``none`` a new one
with loopback only, ``host`` none, ``container:<ref>`` the other container's (put in the spec at
start by the containers backend); published ports are checked here (``_check_ports``). Volumes (named, anonymous, image ``VOLUME``s,
``VolumesFrom``) are parsed here and resolved to host directories by ``skiff.daemon.volumes``,
which hands them in as ``SpecInput.volume_mounts``.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import os
import posixpath
import re
import signal as _signal
import stat as _stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skiff.daemon.api.errors import InvalidParameter

OCI_VERSION = "1.0.2-dev"  # what Docker 20.10 writes; every runtime here accepts it
DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
MIN_MEMORY = 6291456  # dockerd's floor: "Minimum memory limit allowed is 6MB"
DEFAULT_CGROUP_PARENT = "/skiff"
INIT_IN_CONTAINER = "/sbin/docker-init"
DEFAULT_INIT_PATH = "/usr/bin/tini-static"

#: Docker's default capability set (bounding = effective = permitted), in Docker's order.
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# c 1:5 zero, 1:3 null, 1:9 urandom, 1:8 random, 5:0 tty, 5:1 console; 10:229 fuse denied
_DEFAULT_DEVICE_RULES = (
    (False, None, None, None), (True, "c", 1, 5), (True, "c", 1, 3), (True, "c", 1, 9),
    (True, "c", 1, 8), (True, "c", 5, 0), (True, "c", 5, 1), (False, "c", 10, 229),
)

#: sysctls dockerd sets in a container with its own network namespace, when the kernel has them
DEFAULT_NET_SYSCTLS = (("net.ipv4.ping_group_range", "0 2147483647"),
                       ("net.ipv4.ip_unprivileged_port_start", "0"))

_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                          "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                          "kernel.shm_rmid_forced"})
_ULIMITS = frozenset({"as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue",
                      "nice", "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending",
                      "stack"})
_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_TMPFS_FLAGS = {  # option -> (flag group, for de-duplication as moby's MergeTmpfsOptions)
    "ro": "rdonly", "rw": "rdonly", "suid": "nosuid", "nosuid": "nosuid", "dev": "nodev",
    "nodev": "nodev", "exec": "noexec", "noexec": "noexec", "sync": "sync", "async": "sync",
    "dirsync": "dirsync", "remount": "remount", "mand": "mand", "nomand": "mand",
    "atime": "noatime", "noatime": "noatime", "diratime": "nodiratime",
    "nodiratime": "nodiratime", "bind": "prop", "rbind": "prop", "unbindable": "prop",
    "runbindable": "prop", "private": "prop", "rprivate": "prop", "shared": "prop",
    "rshared": "prop", "slave": "prop", "rslave": "prop", "relatime": "relatime",
    "norelatime": "relatime", "strictatime": "strictatime", "nostrictatime": "strictatime",
}
_TMPFS_DATA = frozenset({"size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"})
_DEVICE_RULE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")

_NETWORK_LATER = "not supported yet (issue 8: networking and volumes)"


def _bad(msg: str) -> InvalidParameter:
    return InvalidParameter(msg)


# --- host facts ------------------------------------------------------------------------------

def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _cap_names(mask: int) -> list[str]:
    from skiff.runtime.caps import NAMES

    return [n for i, n in enumerate(NAMES) if mask >> i & 1]


def device_info(path: str) -> dict | None:
    """The OCI ``linux.devices`` entry for the device node at ``path`` (symlinks not followed),
    or None when ``path`` is not a character or block device. ``OSError`` if it is missing."""
    st = os.lstat(path)
    if _stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif _stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {"path": path, "type": kind, "major": os.major(st.st_rdev),
            "minor": os.minor(st.st_rdev), "fileMode": _stat.S_IMODE(st.st_mode),
            "uid": st.st_uid, "gid": st.st_gid}


def devices_at(path_on_host: str) -> list[dict]:
    """The devices at a host path, each an OCI ``linux.devices`` entry whose ``path`` is
    relative to ``path_on_host``: ``""`` for the node itself (a symlink is followed once, as
    dockerd does), ``"sub/name"`` for every device node under a directory. Raises ``OSError``
    when the path does not exist; an empty list when it holds no device."""
    resolved = os.path.realpath(path_on_host) if os.path.islink(path_on_host) else path_on_host
    d = device_info(resolved)
    if d is not None:
        d["path"] = ""
        return [d]
    out: list[dict] = []
    if os.path.isdir(resolved):
        for dirpath, dirnames, filenames in os.walk(resolved):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    d = device_info(full)
                except OSError:
                    continue
                if d is not None:
                    d["path"] = os.path.relpath(full, resolved)
                    out.append(d)
    return out


_HOST_DEV_SKIP = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})


def host_devices(root: str = "/dev") -> list[dict]:
    """Every device node under ``/dev`` for a privileged container (containerd's
    ``HostDevices``: no pts, shm, mqueue, fd, console)."""
    out: list[dict] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not (dirpath == root and d in _HOST_DEV_SKIP))
        for name in sorted(filenames):
            if dirpath == root and name == "console":
                continue
            try:
                d = device_info(os.path.join(dirpath, name))
            except OSError:
                continue
            if d is not None:
                out.append(d)
    return out


@dataclass
class SysInfo:
    """What the host offers. ``detect()`` reads this host; tests construct one."""

    caps: list[str]                 # the bounding set dockerd could grant (privileged = all)
    cgroup_unified: bool = False    # pure cgroup v2 (False: v1 or hybrid; v1 controllers rule)
    swap_limit: bool = True         # memory+swap can be limited (memsw / memory.swap.max)
    blkio_weight: bool = True       # blkio.weight (or its bfq twin) / io.weight exists
    ncpus: int = 1
    arch: str = "amd64"             # Docker's name, for seccomp
    kernel: str | None = None       # release, for seccomp minKernel (None: the running one)
    sysctls: frozenset[str] = frozenset(n for n, _ in DEFAULT_NET_SYSCTLS)
    extra_masked: tuple[str, ...] = ()      # per-CPU thermal_throttle dirs that exist
    devices_at: Callable[[str], list[dict]] = devices_at
    host_devices: Callable[[], list[dict]] = host_devices
    path_exists: Callable[[str], bool] = os.path.exists

    @classmethod
    def detect(cls) -> SysInfo:
        from skiff.oci.seccomp_default import native_arch

        mask = 0
        for line in _read("/proc/self/status").splitlines():
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
        unified = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        if unified:
            swap = os.path.exists("/sys/fs/cgroup/memory.swap.max") or any(
                os.path.exists(os.path.join(d, "memory.swap.max"))
                for d in ("/sys/fs/cgroup/system.slice", "/sys/fs/cgroup/init.scope"))
        else:
            swap = os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
        if unified:
            blkio = "io" in _read("/sys/fs/cgroup/cgroup.controllers").split()
        else:
            blkio = any(os.path.exists(f"/sys/fs/cgroup/blkio/blkio.{f}")
                        for f in ("weight", "bfq.weight"))
        sysctls = frozenset(n for n, _ in DEFAULT_NET_SYSCTLS
                            if os.path.exists("/proc/sys/" + n.replace(".", "/")))
        thermal = []
        for n in range(os.cpu_count() or 1):
            p = f"/sys/devices/system/cpu/cpu{n}/thermal_throttle"
            if os.path.exists(p):
                thermal.append(p)
        return cls(caps=_cap_names(mask), cgroup_unified=unified, swap_limit=swap,
                   blkio_weight=blkio,
                   ncpus=os.cpu_count() or 1, arch=native_arch(), kernel=os.uname().release,
                   sysctls=sysctls, extra_masked=tuple(thermal))


_SYSINFO: SysInfo | None = None


def sysinfo() -> SysInfo:
    """This host's ``SysInfo``, read once per process."""
    global _SYSINFO
    if _SYSINFO is None:
        _SYSINFO = SysInfo.detect()
    return _SYSINFO


# --- small parsers ---------------------------------------------------------------------------

def _signal_map() -> dict[str, int]:
    m = {s.name[3:]: int(s) for s in _signal.Signals if s.name.startswith("SIG")
         and not s.name.startswith("SIG_")}
    lo, hi = int(_signal.SIGRTMIN), int(_signal.SIGRTMAX)
    for i in range(1, hi - lo):
        m[f"RTMIN+{i}"] = lo + i
        m[f"RTMAX-{i}"] = hi - i
    return m


def parse_signal(raw: str | int) -> int:
    """A signal as Docker accepts it: a number, or a name with or without ``SIG``."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw <= 0:
            raise _bad(f"Invalid signal: {raw}")
        return raw
    s = str(raw)
    if s.isdigit():
        if int(s) == 0:
            raise _bad(f"Invalid signal: {s}")
        return int(s)
    name = s.upper()
    if name.startswith("SIG"):
        name = name[3:]
    n = _signal_map().get(name)
    if n is None:
        raise _bad(f"Invalid signal: {s}")
    return n


def stop_signal(config: dict, image_config: dict | None = None) -> int:
    """The signal that stops the container: Config.StopSignal, else the image's, else
    SIGTERM (an unparsable value falls back to SIGTERM, as dockerd's ``StopSignal``)."""
    for c in (config, image_config or {}):
        raw = (c or {}).get("StopSignal")
        if raw:
            try:
                return parse_signal(raw)
            except InvalidParameter:
                break
    return int(_signal.SIGTERM)


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_memory(s: str | int) -> int:
    """``64m``, ``1.5g``, ``1024`` (bytes) -> bytes, as Docker's ``RAMInBytes`` (binary units;
    ``kb``/``mib`` suffixes accepted)."""
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtpKMGTP]?)(?:i?[bB])?\s*", s)
    if m is None:
        raise _bad(f"invalid size: '{s}'")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def default_env(hostname: str, tty: bool) -> list[str]:
    """The variables dockerd puts before the container's own."""
    env = ["PATH=" + DEFAULT_PATH_ENV, "HOSTNAME=" + hostname]
    if tty:
        env.append("TERM=xterm")
    return env


def replace_or_append_env(defaults: list[str], overrides: list[str]) -> list[str]:
    """moby's ReplaceOrAppendEnvValues: ``K=V`` replaces or appends; a bare ``K`` unsets."""
    out = list(defaults)
    index = {e.split("=", 1)[0]: i for i, e in enumerate(out)}
    for v in overrides or []:
        k, eq, _ = v.partition("=")
        if not eq:
            if k in index:
                out[index[k]] = None  # type: ignore[call-overload]
            continue
        if k in index:
            out[index[k]] = v
        else:
            index[k] = len(out)
            out.append(v)
    return [e for e in out if e is not None]


# --- the command -----------------------------------------------------------------------------

def merge_config(config: dict, image_config: dict | None) -> dict:
    """moby's ``merge`` + ``mergeAndVerifyConfig``: the create body's Config completed from the
    image's config (User, ExposedPorts, Env, Labels, Cmd/Entrypoint, Healthcheck, WorkingDir,
    Volumes, StopSignal). Returns a new dict; do it once, at create (it is not idempotent for
    ``--entrypoint ""``). Raises InvalidParameter "no command specified"."""
    c = dict(config)
    img = image_config or {}
    if not c.get("User"):
        c["User"] = img.get("User") or ""
    ports = dict(c.get("ExposedPorts") or {})
    for p in img.get("ExposedPorts") or {}:
        ports.setdefault(p, {})
    c["ExposedPorts"] = ports if ports or c.get("ExposedPorts") is not None else None
    env = list(c.get("Env") or [])
    if not env:
        env = list(img.get("Env") or [])
    else:
        keys = {e.split("=", 1)[0] for e in env}
        env += [e for e in img.get("Env") or [] if e.split("=", 1)[0] not in keys]
    c["Env"] = env
    labels = dict(c.get("Labels") or {})
    for k, v in (img.get("Labels") or {}).items():
        labels.setdefault(k, v)
    c["Labels"] = labels
    if not c.get("Entrypoint"):
        if not c.get("Cmd"):
            c["Cmd"] = img.get("Cmd")
        if c.get("Entrypoint") is None:
            c["Entrypoint"] = img.get("Entrypoint")
    ih = img.get("Healthcheck")
    if ih:
        uh = c.get("Healthcheck")
        if not uh:
            c["Healthcheck"] = dict(ih)
        else:
            uh = dict(uh)
            for k in ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
                if not uh.get(k) and ih.get(k):
                    uh[k] = ih[k]
            c["Healthcheck"] = uh
    if not c.get("WorkingDir"):
        c["WorkingDir"] = img.get("WorkingDir") or ""
    vols = dict(c.get("Volumes") or {})
    vols.update(img.get("Volumes") or {})
    c["Volumes"] = vols
    if not c.get("StopSignal"):
        c["StopSignal"] = img.get("StopSignal") or ""
    ep = c.get("Entrypoint")
    if isinstance(ep, list) and len(ep) == 1 and ep[0] == "":
        c["Entrypoint"] = None
    if not c.get("Entrypoint") and not c.get("Cmd"):
        raise _bad("no command specified")
    return c


def _as_list(v: Any, what: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):  # the API takes "a string or an array of strings"
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _bad(f"{what}: expected a string or an array of strings")
    return list(v)


def command_of(config: dict) -> list[str]:
    """The process args of a merged Config: Entrypoint + Cmd (``[""]`` is no entrypoint)."""
    ep = _as_list(config.get("Entrypoint"), "Entrypoint")
    if ep == [""]:
        ep = []
    return ep + _as_list(config.get("Cmd"), "Cmd")


def merged_command(config: dict, image_config: dict | None) -> tuple[list[str], str]:
    """(args, error) for a create body's Config over an image: what the container runs, or
    dockerd's error text ("no command specified") with empty args."""
    try:
        return command_of(merge_config(config, image_config)), ""
    except InvalidParameter as e:
        return [], str(e)


# --- validation ------------------------------------------------------------------------------

def normalize_caps(names: list[str] | None, what: str, si: SysInfo) -> list[str]:
    """CapAdd/CapDrop as dockerd normalises them: upper case, ``CAP_`` prefix, ``ALL`` kept;
    unknown names and capabilities the host lacks are refused."""
    from skiff.runtime.caps import CAPS

    out = []
    for c in names or []:
        if not isinstance(c, str):
            raise _bad(f"invalid {what}: expected capability names, got {c!r}")
        c = c.upper()
        if c == "ALL":
            out.append(c)
            continue
        if not c.startswith("CAP_"):
            c = "CAP_" + c
        if c not in CAPS:
            raise _bad(f'invalid {what}: unknown capability: "{c}"')
        if c not in si.caps:
            raise _bad(f"invalid {what}: capability not supported by your kernel or not "
                       f'available in the current environment: "{c}"')
        out.append(c)
    return out


def capabilities(host: dict, si: SysInfo) -> list[str]:
    """moby's TweakCapabilities over Docker's default set; privileged = the host's set."""
    if host.get("Privileged"):
        return list(si.caps)
    adds = normalize_caps(host.get("CapAdd"), "CapAdd", si)
    drops = normalize_caps(host.get("CapDrop"), "CapDrop", si)
    if not adds and not drops:
        return list(DEFAULT_CAPS)
    if "ALL" in adds:
        return [c for c in si.caps if c not in drops]
    if "ALL" in drops:
        caps = []
        for c in adds:
            if c not in caps:
                caps.append(c)
        return caps
    caps = [c for c in DEFAULT_CAPS if c not in drops]
    for c in adds:
        if c not in caps:
            caps.append(c)
    return caps


@dataclass
class SecurityOptions:
    no_new_privileges: bool = False
    seccomp: str = ""          # "" default, "unconfined", or a profile's JSON text
    writable_cgroups: bool | None = None


def parse_security_opt(opts: list[str] | None) -> SecurityOptions:
    """HostConfig.SecurityOpt as dockerd's parseSecurityOpt, minus what skiffd lacks."""
    so = SecurityOptions()
    for opt in opts or []:
        if not isinstance(opt, str):
            raise _bad(f"invalid --security-opt: {opt!r}")
        if opt == "no-new-privileges":
            so.no_new_privileges = True
            continue
        if opt == "writable-cgroups":
            so.writable_cgroups = True
            continue
        if opt == "disable":  # label=disable: no SELinux labelling, which skiffd never does
            continue
        if "=" in opt:
            k, v = opt.split("=", 1)
        elif ":" in opt:
            k, v = opt.split(":", 1)
        else:
            raise _bad(f'invalid --security-opt 1: "{opt}"')
        if k == "label":
            if v == "disable":
                continue
            raise _bad(f'security-opt "{opt}": SELinux labels are not supported by skiffd')
        if k == "apparmor":
            if v == "unconfined":
                continue
            raise _bad(f'security-opt "{opt}": AppArmor profiles are not supported by skiffd '
                       "(only apparmor=unconfined)")
        if k == "seccomp":
            if v not in ("unconfined", "builtin"):
                try:
                    json.loads(v)
                except ValueError as e:
                    raise _bad(f"Decoding seccomp profile failed: {e}") from None
            so.seccomp = "" if v == "builtin" else v
            continue
        if k in ("no-new-privileges", "writable-cgroups"):
            b = _parse_bool(v)
            if b is None:
                raise _bad(f'invalid --security-opt 2: "{opt}"')
            if k == "no-new-privileges":
                so.no_new_privileges = b
            else:
                so.writable_cgroups = b
            continue
        raise _bad(f'invalid --security-opt 2: "{opt}"')
    return so


def _parse_bool(v: str) -> bool | None:  # Go's strconv.ParseBool
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def _int(host: dict, key: str) -> int:
    v = host.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"HostConfig.{key}: expected an integer, got {v!r}")
    return v


def _container_mode(v: str) -> bool:
    return v.startswith("container:")


def _network_private(mode: str) -> bool:
    return mode != "host" and not _container_mode(mode)


def _check_ports(config: dict, host: dict) -> None:
    """Published ports (issue 8): valid bindings, and only on the bridge network."""
    from skiff.daemon.network.ports import PortError, parse

    try:
        maps = parse(host, config.get("ExposedPorts"))
    except PortError as e:
        raise _bad(str(e)) from None
    nm = host.get("NetworkMode") or "default"
    if maps and (nm == "none" or _container_mode(nm)):
        raise _bad("conflicting options: port publishing and the container type network mode")


def _check_sysctl(key: str, host: dict) -> None:
    """runc's rule: only sysctls of a namespace the container has its own of."""
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if (host.get("IpcMode") or "") == "host":
            raise _bad(f'sysctl "{key}" is not allowed in the host\'s IPC namespace')
        return
    if key.startswith("net."):
        if (host.get("NetworkMode") or "") == "host":
            raise _bad(f'sysctl "{key}" is not allowed in the host\'s network namespace')
        return
    if key in ("kernel.domainname", "kernel.hostname"):
        if (host.get("UTSMode") or "") == "host":
            raise _bad(f'sysctl "{key}" is not allowed in the host\'s UTS namespace')
        if key == "kernel.hostname":
            raise _bad('sysctl "kernel.hostname" conflicts with the container\'s hostname; '
                       "set Config.Hostname instead")
        return
    raise _bad(f'sysctl "{key}" is not in a separate kernel namespace: only IPC (kernel.msg*, '
               "kernel.sem, kernel.shm*, fs.mqueue.*) and network (net.*) sysctls are allowed")


def parse_tmpfs_options(data: str) -> list[str]:
    """A ``--tmpfs`` option string -> the mount options dockerd gives the runtime: noexec,
    nosuid, nodev, rprivate, then the user's, de-duplicated (the last wins)."""
    opts = ["noexec", "nosuid", "nodev", "rprivate"]
    if data:
        opts += data.split(",")
    out: list[str] = []
    seen: set[str] = set()
    for o in reversed(opts):
        if o == "defaults":
            continue
        group = _TMPFS_FLAGS.get(o)
        if group is None:
            k, eq, _ = o.partition("=")
            if not eq or k not in _TMPFS_DATA:
                raise _bad(f'Invalid tmpfs option "{o}"')
            group = "=" + k
        if group not in seen:
            seen.add(group)
            out.insert(0, o)
    return out


def _clean_abs(p: str, what: str, *, allow_root: bool = False) -> str:
    if not isinstance(p, str) or not p.startswith("/"):
        raise _bad(f"invalid mount path: '{p}' mount path must be absolute")
    c = posixpath.normpath(p)
    if c.startswith("//"):
        c = "/" + c.lstrip("/")
    if c == "/" and not allow_root:
        raise _bad(f"invalid specification: destination can't be '/' ({what})")
    return c


@dataclass
class _Mount:
    destination: str
    kind: str                    # "bind" or "tmpfs"
    source: str = ""
    options: list[str] = field(default_factory=list)
    propagation: str = ""        # bind propagation asked for (shared/slave set rootfsPropagation)
    fallback: bool = False       # rslave chosen by skiffd, not asked for: root propagation kept
    # --- volumes (issue 8, skiff.daemon.volumes): kind "volume"; name "" = anonymous
    name: str = ""
    nocopy: bool = False
    vol_labels: dict[str, str] = field(default_factory=dict)
    vol_driver: str = ""
    vol_options: dict[str, str] = field(default_factory=dict)
    ro: bool = False


def _valid_mode(mode: str) -> bool:
    counts: dict[str, int] = {}
    for o in mode.split(","):
        if o in ("ro", "rw"):
            g = "rw"
        elif o in ("z", "Z"):
            g = "label"
        elif o in _PROPAGATIONS:
            g = "prop"
        elif o in ("nocopy",):
            g = "copy"
        elif o in ("consistent", "cached", "delegated", "default"):
            g = "consistency"
        else:
            return False
        counts[g] = counts.get(g, 0) + 1
    return all(n <= 1 for n in counts.values())


def _has_propagation(raw: str) -> bool:
    parts = raw.split(":")
    return len(parts) == 3 and any(m in _PROPAGATIONS for m in parts[2].split(","))


def _parse_bind(raw: str) -> _Mount:
    """A ``Binds`` entry ``/host:/ctr[:mode]``, ``name:/ctr[:mode]`` (a named volume) or
    ``/ctr`` (an anonymous volume)."""
    if not isinstance(raw, str) or not raw:
        raise _bad(f"invalid volume specification: '{raw}'")
    arr = raw.split(":", 3)
    mode = ""
    if len(arr) == 1:   # issue 8: an anonymous volume
        return _Mount(_clean_abs(arr[0], raw), "volume")
    if len(arr) == 2:
        if _valid_mode(arr[1]):
            raise _bad(f"invalid volume specification: '{raw}'")
        src, dst = arr
    elif len(arr) == 3:
        src, dst, mode = arr
    else:
        raise _bad(f"invalid volume specification: '{raw}'")
    if mode and not _valid_mode(mode):
        raise _bad(f"invalid mode: {mode}")
    modes = mode.split(",") if mode else []
    dst_c = _clean_abs(dst, raw)
    if not src.startswith("/"):   # issue 8: a named volume
        if not src:
            raise _bad(f"invalid volume specification: '{raw}'")
        if any(m in _PROPAGATIONS for m in modes):
            raise _bad(f"invalid volume specification '{raw}': propagation applies to bind "
                       "mounts only")
        return _Mount(dst_c, "volume", name=src, nocopy="nocopy" in modes, ro="ro" in modes)
    if "nocopy" in modes:
        raise _bad(f"invalid volume specification '{raw}': nocopy applies to volumes only")
    prop = next((m for m in modes if m in _PROPAGATIONS), "rprivate")
    opts = ["rbind"]
    if "ro" in modes:
        opts.append("ro")
    opts.append(prop)
    return _Mount(dst_c, "bind", posixpath.normpath(src), opts, prop)


def _parse_api_mount(m: Any, i: int, si: SysInfo) -> _Mount:
    """A ``HostConfig.Mounts`` entry of type bind or tmpfs."""
    if not isinstance(m, dict):
        raise _bad(f"invalid mount config: Mounts[{i}] is not an object")
    typ = m.get("Type") or ""
    target = m.get("Target") or ""

    def err(msg: str) -> InvalidParameter:
        return _bad(f'invalid mount config for type "{typ}": {msg}')

    if typ in ("npipe", "cluster", "image"):
        raise err(f"{typ} mounts are not supported by skiffd")
    if typ not in ("bind", "tmpfs", "volume"):
        raise err("mount type unknown")
    if typ == "volume":   # issue 8
        if not target:
            raise err("field Target must not be empty")
        try:
            dst = _clean_abs(target, target)
        except InvalidParameter as e:
            raise err(str(e)) from None
        for k in ("BindOptions", "TmpfsOptions"):
            if m.get(k):
                raise err(f"field {k} must not be specified")
        vo = m.get("VolumeOptions") or {}
        if vo.get("Subpath"):
            raise err("VolumeOptions.Subpath is not supported by skiffd")
        dc = vo.get("DriverConfig") or {}
        return _Mount(dst, "volume", name=m.get("Source") or "", nocopy=bool(vo.get("NoCopy")),
                      vol_labels=dict(vo.get("Labels") or {}), vol_driver=dc.get("Name") or "",
                      vol_options=dict(dc.get("Options") or {}), ro=bool(m.get("ReadOnly")))
    if m.get("VolumeOptions"):
        raise err("field VolumeOptions must not be specified")
    if not target:
        raise err("field Target must not be empty")
    try:
        dst = _clean_abs(target, target)
    except InvalidParameter as e:
        raise err(str(e)) from None
    ro = bool(m.get("ReadOnly"))
    if typ == "bind":
        if m.get("TmpfsOptions"):
            raise err("field TmpfsOptions must not be specified")
        src = m.get("Source") or ""
        if not src:
            raise err("field Source must not be empty")
        if not src.startswith("/"):
            raise err(f"invalid mount path: '{src}' mount path must be absolute")
        bo = m.get("BindOptions") or {}
        prop = bo.get("Propagation") or ""
        if prop and prop not in _PROPAGATIONS:
            raise err(f"invalid propagation mode: {prop}")
        for k in ("ReadOnlyNonRecursive", "ReadOnlyForceRecursive"):
            if bo.get(k):
                raise err(f"BindOptions.{k} is not supported by skiffd")
        if not bo.get("CreateMountpoint") and not si.path_exists(src):
            raise err(f"bind source path does not exist: {src}")
        opts = ["bind" if bo.get("NonRecursive") else "rbind"]
        if ro:
            opts.append("ro")
        prop = prop or "rprivate"
        opts.append(prop)
        return _Mount(dst, "bind", posixpath.normpath(src), opts, prop)
    # tmpfs
    if m.get("Source"):
        raise err("field Source must not be specified")
    if m.get("BindOptions"):
        raise err("field BindOptions must not be specified")
    to = m.get("TmpfsOptions") or {}
    raw = ["ro"] if ro else []
    if to.get("Mode"):
        raw.append(f"mode={int(to['Mode']):o}")
    size = to.get("SizeBytes") or 0
    if size:
        if size < 0:
            raise err("TmpfsOptions.SizeBytes must not be negative")
        for suffix, div in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % div == 0:
                raw.append(f"size={size // div}{suffix}")
                break
        else:
            raw.append(f"size={size}")
    for opt in to.get("Options") or []:
        if not isinstance(opt, list) or not 1 <= len(opt) <= 2:
            raise err("invalid option array length")
        if opt[0] not in ("exec", "noexec"):
            raise err("invalid option: " + str(opt[0]))
        raw.append(opt[0] if len(opt) == 1 else f"{opt[0]}={opt[1]}")
    return _Mount(dst, "tmpfs", "tmpfs", parse_tmpfs_options(",".join(raw)))


def user_mounts(host: dict, si: SysInfo, data_root: str = "") -> list[_Mount]:
    """Binds, Mounts and Tmpfs as mounts, checked; duplicate destinations refused."""
    out: list[_Mount] = []
    binds = host.get("Binds") or []
    if not isinstance(binds, list):
        raise _bad("HostConfig.Binds: expected an array of strings")
    for raw in binds:
        m = _parse_bind(raw)
        if data_root and m.propagation == "rprivate" and not _has_propagation(raw) and (
                data_root + "/").startswith(m.source.rstrip("/") + "/"):
            # dockerd: a bind of a directory holding the data root is rslave, so the
            # container's mounts there do not pin the daemon's
            m.options[-1] = m.propagation = "rslave"
            m.fallback = True
        out.append(m)
    mounts = host.get("Mounts") or []
    if not isinstance(mounts, list):
        raise _bad("HostConfig.Mounts: expected an array")
    for i, m in enumerate(mounts):
        out.append(_parse_api_mount(m, i, si))
    tmpfs = host.get("Tmpfs") or {}
    if not isinstance(tmpfs, dict):
        raise _bad("HostConfig.Tmpfs: expected an object")
    for dest, data in tmpfs.items():
        d = _clean_abs(dest, dest)
        if not isinstance(data, str):
            raise _bad(f"HostConfig.Tmpfs[{dest!r}]: expected a string of options")
        out.append(_Mount(d, "tmpfs", "tmpfs", parse_tmpfs_options(data)))
    seen: set[str] = set()
    for m in out:
        if m.destination in seen:
            raise _bad(f"Duplicate mount point: {m.destination}")
        seen.add(m.destination)
    return out


def parse_device_rule(rule: str) -> dict:
    """A DeviceCgroupRules entry (``c 1:3 rwm``, ``a *:* rwm``) -> an OCI device rule."""
    m = _DEVICE_RULE.match(rule or "")
    if m is None:
        raise _bad(f"invalid device cgroup rule format: '{rule}'")
    d: dict = {"allow": True, "type": m.group(1)}
    if m.group(2) != "*":
        d["major"] = int(m.group(2))
    if m.group(3) != "*":
        d["minor"] = int(m.group(3))
    d["access"] = m.group(4)
    return d


# Fields skiffd refuses when set to anything but their zero value, with the reason.
_REFUSED = {
    "VolumeDriver": "volume drivers other than local are not supported by skiffd",
    "Links": f"legacy container links: {_NETWORK_LATER}",
    "DeviceRequests": "DeviceRequests (GPUs) are not supported by skiffd",
    "StorageOpt": "StorageOpt is not supported by the overlayfs snapshotter",
    "KernelMemory": "KernelMemory is not supported (kernel memory limits were removed from "
                    "the Engine API in v1.42 and from cgroup v2)",
    "KernelMemoryTCP": "KernelMemoryTCP is not supported by skiffd",
    "CpuRealtimePeriod": "CpuRealtimePeriod: the CPU real-time scheduler is not supported by "
                         "skiffd",
    "CpuRealtimeRuntime": "CpuRealtimeRuntime: the CPU real-time scheduler is not supported "
                          "by skiffd",
    "CpuCount": "CpuCount is Windows only",
    "CpuPercent": "CpuPercent is Windows only",
    "Cgroup": "Cgroup (joining another container's cgroup) is not supported by skiffd",
    "ContainerIDFile": None,  # the CLI writes that file itself; accepted whatever it is
}


#: The create body's fields (Engine API v1.47), and old ones a client may still send; a field
#: outside these with a value is refused rather than ignored.
HOSTCONFIG_FIELDS = frozenset({
    "Annotations", "AutoRemove", "Binds", "BlkioDeviceReadBps", "BlkioDeviceReadIOps",
    "BlkioDeviceWriteBps", "BlkioDeviceWriteIOps", "BlkioWeight", "BlkioWeightDevice", "CapAdd",
    "CapDrop", "Cgroup", "CgroupParent", "CgroupnsMode", "ConsoleSize", "ContainerIDFile",
    "CpuCount", "CpuPercent", "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime",
    "CpuShares", "CpusetCpus", "CpusetMems", "DeviceCgroupRules", "DeviceRequests", "Devices",
    "Dns", "DnsOptions", "DnsSearch", "ExtraHosts", "GroupAdd", "IOMaximumBandwidth",
    "IOMaximumIOps", "Init", "IpcMode", "Isolation", "KernelMemoryTCP", "Links", "LogConfig",
    "MaskedPaths", "Memory", "MemoryReservation", "MemorySwap", "MemorySwappiness", "Mounts",
    "NanoCpus", "NetworkMode", "OomKillDisable", "OomScoreAdj", "PidMode", "PidsLimit",
    "PortBindings", "Privileged", "PublishAllPorts", "ReadonlyPaths", "ReadonlyRootfs",
    "RestartPolicy", "Runtime", "SecurityOpt", "ShmSize", "StorageOpt", "Sysctls", "Tmpfs",
    "UTSMode", "Ulimits", "UsernsMode", "VolumeDriver", "VolumesFrom",
    "KernelMemory",  # before v1.42
})
CONFIG_FIELDS = frozenset({
    "ArgsEscaped", "AttachStderr", "AttachStdin", "AttachStdout", "Cmd", "Domainname",
    "Entrypoint", "Env", "ExposedPorts", "Healthcheck", "Hostname", "Image", "Labels",
    "MacAddress", "NetworkDisabled", "OnBuild", "OpenStdin", "Shell", "StdinOnce", "StopSignal",
    "StopTimeout", "Tty", "User", "Volumes", "WorkingDir",
    "HostConfig", "NetworkingConfig",  # the rest of a create body, when given whole
})


def _empty(v: Any) -> bool:
    return v in (None, 0, "", [], {}, False)


def validate_create(config: dict, host: dict | None, *, si: SysInfo | None = None) -> list[str]:
    """Check a create body's Config and HostConfig as dockerd does, and refuse what skiffd
    does not implement. Call it on the body as received, before ``merge_config`` (an image's
    own VOLUMEs are not refused). Returns dockerd-style warnings (the create response's
    ``Warnings``); raises InvalidParameter."""
    si = si or sysinfo()
    config = config or {}
    host = host or {}
    warnings: list[str] = []
    if not isinstance(config, dict) or not isinstance(host, dict):
        raise _bad("invalid create body: Config and HostConfig must be objects")
    for fields, doc, what in ((CONFIG_FIELDS, config, "Config"),
                              (HOSTCONFIG_FIELDS, host, "HostConfig")):
        for k in sorted(doc):
            if k not in fields and not _empty(doc[k]):
                raise _bad(f"unknown {what} field {k!r}: not part of Engine API v1.47, and "
                           "skiffd does not ignore options")
    # --- Config
    hn = config.get("Hostname") or ""
    if len(hn.encode()) > 64:
        raise _bad(f'hostname "{hn}" is too long (maximum 64 bytes)')
    wd = config.get("WorkingDir") or ""
    if wd and not wd.startswith("/"):
        raise _bad(f"the working directory '{wd}' is invalid, it needs to be an absolute path")
    if config.get("StopSignal"):
        parse_signal(config["StopSignal"])
    for e in config.get("Env") or []:
        if not isinstance(e, str) or e.split("=", 1)[0] == "":
            raise _bad(f"invalid environment variable: {e}")
    _as_list(config.get("Cmd"), "Cmd")
    _as_list(config.get("Entrypoint"), "Entrypoint")
    hc = config.get("Healthcheck") or {}
    for k in ("Interval", "Timeout", "StartPeriod", "StartInterval"):
        v = hc.get(k) or 0
        if v and v < 1_000_000:
            raise _bad(f"{k} in Healthcheck cannot be less than 1ms")
    if (hc.get("Retries") or 0) < 0:
        raise _bad("Retries in Healthcheck cannot be negative")
    for v in config.get("Volumes") or {}:   # issue 8: anonymous volumes
        _clean_abs(v, v)
    if config.get("MacAddress"):
        raise _bad(f"MacAddress: {_NETWORK_LATER}")
    if config.get("User"):
        _check_user_syntax(config["User"])
    # --- HostConfig: what is not there yet
    for key, why in _REFUSED.items():
        v = host.get(key)
        if key == "VolumeDriver" and v == "local":   # issue 8 volumes: the one driver
            continue
        if why and not _empty(v):
            raise _bad(why)
    _check_ports(config, host)      # issue 8 networking
    if host.get("IOMaximumIOps") or host.get("IOMaximumBandwidth"):
        raise _bad("Invalid QoS settings: linux does not support Maximum IO Bandwidth or "
                   "Maximum IO IOps")
    for key in ("BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps",
                "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps"):
        for d in host.get(key) or []:
            if not isinstance(d, dict) or not d.get("Path"):
                raise _bad(f"HostConfig.{key}: each entry needs a Path")
    iso = (host.get("Isolation") or "").lower()
    if iso not in ("", "default"):
        raise _bad(f"invalid isolation '{host['Isolation']}' on linux")
    un = host.get("UsernsMode") or ""
    if un not in ("", "host"):
        raise _bad(f"invalid USER mode: {un}")
    # --- restart policy, AutoRemove
    rp = host.get("RestartPolicy") or {}
    name = rp.get("Name") or ""
    count = rp.get("MaximumRetryCount") or 0
    if name in ("always", "unless-stopped", "no"):
        if count:
            msg = "invalid restart policy: maximum retry count can only be used with 'on-failure'"
            raise _bad(msg + (" and cannot be negative" if count < 0 else ""))
    elif name == "on-failure":
        if count < 0:
            raise _bad("invalid restart policy: maximum retry count cannot be negative")
    elif name != "":
        raise _bad(f"invalid restart policy: unknown policy '{name}'; use one of 'no', "
                   "'always', 'on-failure', or 'unless-stopped'")
    if host.get("AutoRemove") and name not in ("", "no"):
        raise _bad("can't create 'AutoRemove' container with restart policy")
    # --- log config (the driver itself is the logger's to check)
    lc = host.get("LogConfig") or {}
    if not isinstance(lc, dict) or not isinstance(lc.get("Config") or {}, dict):
        raise _bad("HostConfig.LogConfig: expected {Type, Config}")
    # --- capabilities, security options
    normalize_caps(host.get("CapAdd"), "CapAdd", si)
    normalize_caps(host.get("CapDrop"), "CapDrop", si)
    so = parse_security_opt(host.get("SecurityOpt"))
    if so.seccomp not in ("", "unconfined"):
        from skiff.oci.seccomp_default import ProfileError, to_oci

        try:
            to_oci(json.loads(so.seccomp), set(DEFAULT_CAPS), si.arch, si.kernel)
        except ProfileError as e:
            raise _bad(f"Decoding seccomp profile failed: {e}") from None
    # --- namespaces
    nm = host.get("NetworkMode") or "default"
    if nm not in ("default", "bridge", "none", "host"):
        if _container_mode(nm):
            if not nm[len("container:"):]:
                raise _bad(f"invalid network mode {nm!r}: no container given")
            if config.get("Hostname"):
                raise _bad("conflicting options: hostname and the network mode")
        elif not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", nm):
            raise _bad(f"invalid network mode {nm!r}")
    for key, valid in (("IpcMode", ("", "none", "private", "shareable", "host")),
                       ("PidMode", ("", "host")), ("UTSMode", ("", "host")),
                       ("CgroupnsMode", ("", "private", "host"))):
        v = host.get(key) or ""
        if v in valid:
            continue
        what = {"IpcMode": "IPC", "PidMode": "PID", "UTSMode": "UTS",
                "CgroupnsMode": "cgroup namespace"}[key]
        if _container_mode(v) and key in ("IpcMode", "PidMode"):
            raise _bad(f"{key} {v}: sharing another container's {what} namespace is not "
                       "supported by skiffd yet")
        raise _bad(f"invalid {what} mode: {v}")
    if (host.get("UTSMode") or "") == "host" and config.get("Hostname"):
        raise _bad("Conflicting options: hostname and the UTS mode")
    if nm == "host" and host.get("PortBindings"):
        warnings.append("Published ports are discarded when using host network mode")
    # --- resources
    warnings += validate_resources(host, si)
    if _int(host, "ShmSize") < 0:
        raise _bad("SHM size can not be less than 0")
    oom = _int(host, "OomScoreAdj")
    if not -1000 <= oom <= 1000:
        raise _bad(f"Invalid value {oom}, range for oom score adj is [-1000, 1000]")
    for u in host.get("Ulimits") or []:
        _rlimit(u)
    sysctls = host.get("Sysctls") or {}
    if not isinstance(sysctls, dict):
        raise _bad("HostConfig.Sysctls: expected an object")
    for k, v in sysctls.items():
        if not isinstance(v, str):
            raise _bad(f'sysctl "{k}": the value must be a string')
        _check_sysctl(k, host)
    for k in (host.get("Annotations") or {}):
        if k == "":
            raise _bad("invalid Annotations: the empty string is not permitted as an "
                       "annotation key")
    for d in host.get("Devices") or []:
        _device_mapping(d)
    for r in host.get("DeviceCgroupRules") or []:
        parse_device_rule(r)
    for key in ("MaskedPaths", "ReadonlyPaths"):
        for p in host.get(key) or []:
            if not isinstance(p, str) or not p.startswith("/"):
                raise _bad(f"HostConfig.{key}: '{p}' must be an absolute path")
    user_mounts(host, si)
    cp = host.get("CgroupParent") or ""
    if ".." in cp.split("/"):
        raise _bad(f"invalid CgroupParent '{cp}': '..' is not allowed")
    return warnings


def validate_resources(host: dict, si: SysInfo) -> list[str]:
    w: list[str] = []
    mem = _int(host, "Memory")
    swap = _int(host, "MemorySwap")
    res = _int(host, "MemoryReservation")
    if mem < 0:
        raise _bad(f"invalid Memory {mem}: must not be negative")
    if mem and mem < MIN_MEMORY:
        raise _bad("Minimum memory limit allowed is 6MB")
    if mem > 0 and swap > 0 and swap < mem:
        raise _bad("Minimum memoryswap limit should be larger than memory limit, see usage")
    if mem == 0 and swap > 0:
        raise _bad("You should always set the Memory limit when using Memoryswap limit, see "
                   "usage")
    if swap < -1:
        raise _bad(f"invalid MemorySwap {swap}: use -1 for unlimited swap")
    if mem > 0 and swap != -1 and not si.swap_limit:
        w.append("Your kernel does not support swap limit capabilities or the cgroup is not "
                 "mounted. Memory limited without swap.")
    sw = host.get("MemorySwappiness")
    if sw is not None and sw != -1:
        if not isinstance(sw, int) or not 0 <= sw <= 100:
            raise _bad(f"Invalid value: {sw}, valid memory swappiness range is 0-100")
        if si.cgroup_unified:
            w.append("Your kernel does not support memory swappiness capabilities or the "
                     "cgroup is not mounted. Memory swappiness discarded.")
    if res < 0:
        raise _bad(f"invalid MemoryReservation {res}: must not be negative")
    if res and res < MIN_MEMORY:
        raise _bad("Minimum memory reservation allowed is 6MB")
    if mem > 0 and res > 0 and mem < res:
        raise _bad("Minimum memory limit can not be less than memory reservation limit, see "
                   "usage")
    if host.get("OomKillDisable"):
        if si.cgroup_unified:
            raise _bad("OomKillDisable is not supported on cgroup v2 (the kernel cannot disable "
                       "the OOM killer of a cgroup)")
        if mem == 0:
            w.append("OOM killer is disabled for the container, but no memory limit is set, "
                     "this can result in the system running out of resources.")
    pl = host.get("PidsLimit")
    if pl is not None and (isinstance(pl, bool) or not isinstance(pl, int)):
        raise _bad(f"HostConfig.PidsLimit: expected an integer, got {pl!r}")
    nano = _int(host, "NanoCpus")
    period = _int(host, "CpuPeriod")
    quota = _int(host, "CpuQuota")
    if nano > 0 and period > 0:
        raise _bad("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano > 0 and quota > 0:
        raise _bad("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if nano and (nano < 0 or nano > si.ncpus * 10**9):
        raise _bad(f"range of CPUs is from 0.01 to {si.ncpus}.00, as there are only "
                   f"{si.ncpus} CPUs available")
    if period and not 1000 <= period <= 1000000:
        raise _bad("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s "
                   "(i.e. 1000000)")
    if quota > 0 and quota < 1000:
        raise _bad("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if _int(host, "CpuShares") < 0:
        raise _bad(f"invalid CPU shares ({host['CpuShares']}): value must be a positive "
                   "integer")
    for key, what in (("CpusetCpus", "cpus"), ("CpusetMems", "mems")):
        v = host.get(key) or ""
        if v and not re.fullmatch(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*", v):
            raise _bad(f"Invalid value {v} for cpuset {what}")
    cpus = host.get("CpusetCpus") or ""
    if cpus:
        highest = max(int(x) for x in re.split(r"[,-]", cpus))
        if highest >= si.ncpus:
            raise _bad(f"Requested CPUs are not available - requested {cpus}, available: "
                       f"0-{si.ncpus - 1}")
    bw = _int(host, "BlkioWeight")
    if bw and not si.blkio_weight:
        w.append("Your kernel does not support Block I/O weight or the cgroup is not mounted. "
                 "Weight discarded.")
    elif bw and not 10 <= bw <= 1000:
        raise _bad("Range of blkio weight is from 10 to 1000")
    if host.get("BlkioWeightDevice") and not si.blkio_weight:
        w.append("Your kernel does not support Block I/O weight_device or the cgroup is not "
                 "mounted. Weight-device discarded.")
    return w


def _rlimit(u: Any) -> dict:
    if not isinstance(u, dict):
        raise _bad(f"invalid ulimit: {u!r}")
    name = str(u.get("Name") or "")
    if name.lower() not in _ULIMITS:
        raise _bad(f"invalid ulimit type: {name}")
    soft, hard = u.get("Soft", 0), u.get("Hard", 0)
    if not isinstance(soft, int) or not isinstance(hard, int):
        raise _bad(f"invalid ulimit {name}: Soft and Hard must be integers")
    if soft > hard and hard != -1:
        raise _bad(f"ulimit soft limit must be less than or equal to hard limit: {soft} > "
                   f"{hard}")

    def v(x: int) -> int:
        return 2**64 - 1 if x < 0 else x  # -1 is unlimited (RLIM_INFINITY)

    return {"type": "RLIMIT_" + name.upper(), "hard": v(hard), "soft": v(soft)}


def _device_mapping(d: Any) -> tuple[str, str, str]:
    if not isinstance(d, dict) or not d.get("PathOnHost"):
        raise _bad(f"invalid device mapping {d!r}: PathOnHost is required")
    host_path = d["PathOnHost"]
    ctr = d.get("PathInContainer") or host_path
    perms = d.get("CgroupPermissions") or "rwm"
    if not perms or any(c not in "rwm" for c in perms) or len(set(perms)) != len(perms):
        raise _bad(f"invalid device cgroup permissions '{perms}' for {host_path}: use a "
                   "combination of r, w and m")
    if not host_path.startswith("/") or not ctr.startswith("/"):
        raise _bad(f"invalid device mapping {host_path}:{ctr}: paths must be absolute")
    return host_path, ctr, perms


def _check_user_syntax(user: str) -> None:
    if not isinstance(user, str) or user.count(":") > 1 or user.startswith(":"):
        raise _bad(f"invalid user: '{user}'")


# --- users -----------------------------------------------------------------------------------

def _read_in_root(rootfs: str, path: str, limit: int = 4 << 20) -> str | None:
    """Read ``path`` of the container's tree without following a symlink out of ``rootfs``;
    None when it does not exist. Only regular files are read."""
    from skiff.runtime.paths import fd_path, open_beneath, resolve_in_root

    try:
        resolved = resolve_in_root(rootfs, path)
        pfd = open_beneath(rootfs, resolved)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        st = os.fstat(pfd)
        if not _stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{path} in the container is not a regular file")
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"{path} in the container is larger than {limit} bytes")
        fd = os.open(fd_path(pfd), os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(pfd)
    with os.fdopen(fd, "rb") as f:
        return f.read(limit).decode("utf-8", "replace")


def _entries(text: str | None, nfields: int) -> list[list[str]]:
    out = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < nfields:
            parts += [""] * (nfields - len(parts))
        out.append(parts)
    return out


def _num(s: str) -> int | None:
    return int(s) if s.isdigit() else None


def parse_user(user: str, passwd: str | None, group: str | None,
               group_add: list[str] | None = None) -> dict:
    """runc's GetExecUser on the texts of /etc/passwd and /etc/group -> OCI ``process.user``
    (``additionalGids`` = the primary gid, the user's groups, then ``GroupAdd``, as dockerd)."""
    _check_user_syntax(user or "")
    uarg, _, garg = (user or "").partition(":")
    uid, gid, name = 0, 0, ""
    pw = _entries(passwd, 7)
    uarg = uarg or "0"
    if uarg:
        n = _num(uarg)
        match = [e for e in pw if e[0] == uarg or (n is not None and _num(e[2]) == n)]
        if match:
            e = match[0]
            name = e[0]
            uid = _num(e[2]) or 0
            gid = _num(e[3]) or 0
        elif n is not None:
            uid = n
        else:
            raise _bad(f"unable to find user {uarg}: no matching entries in passwd file")
    gr = _entries(group, 4)
    sgids: list[int] = []
    if garg:
        n = _num(garg)
        gm = [e for e in gr if e[0] == garg or (n is not None and _num(e[2]) == n)]
        if gm:
            gid = _num(gm[0][2]) or 0
        elif n is not None:
            gid = n
        else:
            raise _bad(f"unable to find group {garg}: no matching entries in group file")
    elif name:
        for e in gr:
            if name in e[3].split(","):
                sg = _num(e[2])
                if sg is not None:
                    sgids.append(sg)
    extra: list[int] = []
    for g in group_add or []:
        gm = [e for e in gr if e[0] == g or (_num(g) is not None and _num(e[2]) == _num(g))]
        if gm:
            extra.append(_num(gm[0][2]) or 0)
        elif _num(g) is not None:
            extra.append(int(g))
        else:
            raise _bad(f"Unable to find group {g}: no matching entries in group file")
    return {"uid": uid, "gid": gid, "additionalGids": [gid, *sgids, *extra]}


def resolve_user(rootfs: str, user: str, group_add: list[str] | None = None) -> dict:
    """``process.user`` for ``user`` (``name|uid[:group|gid]``) from the container's
    ``/etc/passwd`` and ``/etc/group`` under ``rootfs`` (the mounted rootfs; symlinks are
    resolved inside it). InvalidParameter for a name that is not there."""
    try:
        passwd = _read_in_root(rootfs, "/etc/passwd")
        group = _read_in_root(rootfs, "/etc/group")
    except OSError as e:
        raise _bad(f"user {user!r}: read the container's /etc/passwd or /etc/group: "
                   f"{e.strerror or e}") from None
    return parse_user(user, passwd, group, group_add)


def numeric_user(user: str, group_add: list[str] | None = None) -> dict:
    """``process.user`` for a numeric ``uid[:gid]`` without reading the rootfs."""
    u, _, g = (user or "").partition(":")
    if (u and _num(u) is None) or (g and _num(g) is None) or any(
            _num(x) is None for x in group_add or []):
        raise _bad(f"user {user!r}: user and group names need the container's /etc/passwd "
                   "(resolve_user)")
    return parse_user(user or "", None, None, group_add)


# --- the spec --------------------------------------------------------------------------------

@dataclass
class SpecInput:
    id: str
    config: dict                      # the Config, merged with the image's (merge_config)
    host: dict                        # the HostConfig
    image_config: dict = field(default_factory=dict)
    hostname: str = ""                # default: Config.Hostname, else the short id
    etc_files: dict[str, str] = field(default_factory=dict)  # /etc/hosts etc. -> host paths
    cgroup_parent: str = DEFAULT_CGROUP_PARENT
    init_path: str | None = None      # the init binary for HostConfig.Init
    host_caps: list[str] = field(default_factory=list)  # overrides sysinfo().caps when given
    netns_path: str | None = None     # join this network namespace (issue 8); None = new one
    data_root: str = ""               # skiffd's data root: binds of a parent of it get rslave
    user: dict | None = None          # resolved process.user (resolve_user); None = numeric
    sysinfo: SysInfo | None = None
    # issue 8: every mount the volume service resolved (volumes, VolumesFrom, image VOLUMEs):
    # (destination, host source, read-only); binds of the same destination in HostConfig win
    volume_mounts: list[tuple[str, str, bool]] = field(default_factory=list)


def default_hostname(container_id: str, host: dict | None) -> str:
    """The Config.Hostname dockerd stores when none was given: the host's name with
    ``NetworkMode: host``, else the short id."""
    if ((host or {}).get("NetworkMode") or "") == "host":
        return os.uname().nodename
    return container_id[:12]


def adapt_host_config(host: dict, si: SysInfo | None = None) -> dict:
    """The HostConfig dockerd stores after create: defaults filled (a new dict)."""
    si = si or sysinfo()
    h = dict(host or {})
    mem = h.get("Memory") or 0
    if mem > 0 and not h.get("MemorySwap"):
        h["MemorySwap"] = mem * 2
    if not h.get("ShmSize"):
        h["ShmSize"] = DEFAULT_SHM_SIZE
    if not h.get("IpcMode"):
        h["IpcMode"] = "private"
    if not h.get("CgroupnsMode"):
        h["CgroupnsMode"] = "private" if si.cgroup_unified else "host"
    if h.get("OomKillDisable") is None:
        h["OomKillDisable"] = False
    if not h.get("NetworkMode"):
        h["NetworkMode"] = "default"
    return h


def _default_mounts() -> list[dict]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777"]},
    ]


def _depth(p: str) -> int:
    return posixpath.normpath(p).count("/")


def build_spec(c: SpecInput) -> dict:
    """The OCI runtime spec (a JSON-able dict) of a container, as dockerd's createSpec."""
    si = c.sysinfo or sysinfo()
    if c.host_caps:
        si = dataclasses.replace(si, caps=list(c.host_caps))
    cfg = c.config or {}
    host = adapt_host_config(c.host or {}, si)
    so = parse_security_opt(host.get("SecurityOpt"))
    privileged = bool(host.get("Privileged"))
    tty = bool(cfg.get("Tty"))
    nm = host.get("NetworkMode") or "default"
    ipc = host.get("IpcMode") or "private"
    pid_host = (host.get("PidMode") or "") == "host"
    uts_host = (host.get("UTSMode") or "") == "host"

    # process
    args = command_of(cfg)
    if not args:
        raise _bad(f"container {c.id}: no command specified")
    hostname = c.hostname or cfg.get("Hostname") or default_hostname(c.id, host)
    mounts = _default_mounts()
    if host.get("Init") and not pid_host:
        args = [INIT_IN_CONTAINER, "--", *args]
        mounts.append({"destination": INIT_IN_CONTAINER, "type": "bind",
                       "source": c.init_path or DEFAULT_INIT_PATH, "options": ["bind", "ro"]})
    env = replace_or_append_env(default_env(hostname, tty), cfg.get("Env") or [])
    if c.user is not None:
        user = dict(c.user)
    else:
        user = numeric_user(cfg.get("User") or "", host.get("GroupAdd"))
    caps = capabilities(host, si)
    process: dict = {"terminal": tty}
    cs = host.get("ConsoleSize") or [0, 0]
    if tty and len(cs) == 2 and (cs[0] or cs[1]):
        process["consoleSize"] = {"height": int(cs[0]), "width": int(cs[1])}
    process.update({
        "user": user, "args": args, "env": env, "cwd": cfg.get("WorkingDir") or "/",
        # as dockerd 20.10: a non-root user gets the bounding set only (CVE-2022-24769)
        "capabilities": ({"bounding": list(caps), "effective": list(caps),
                          "permitted": list(caps)} if user.get("uid", 0) == 0
                         else {"bounding": list(caps)}),
    })
    rl = [_rlimit(u) for u in host.get("Ulimits") or []]
    if rl:
        process["rlimits"] = rl
    if so.no_new_privileges:
        process["noNewPrivileges"] = True
    process["oomScoreAdj"] = _int(host, "OomScoreAdj")

    spec: dict = {"ociVersion": OCI_VERSION, "process": process,
                  "root": {"path": "rootfs", "readonly": bool(host.get("ReadonlyRootfs"))}}
    if not uts_host:
        spec["hostname"] = hostname
        if cfg.get("Domainname"):
            spec["domainname"] = cfg["Domainname"]

    # namespaces
    ns: list[dict] = [{"type": "mount"}]
    if nm != "host":
        ns.append({"type": "network", "path": c.netns_path} if c.netns_path
                  else {"type": "network"})
    if not uts_host:
        ns.append({"type": "uts"})
    if not pid_host:
        ns.append({"type": "pid"})
    if ipc != "host":
        ns.append({"type": "ipc"})
    if (host.get("CgroupnsMode") or "") == "private":
        ns.append({"type": "cgroup"})
    linux: dict = {}

    # sysctls
    sysctl: dict[str, str] = {}
    if _network_private(nm):
        for k, v in DEFAULT_NET_SYSCTLS:
            if k in si.sysctls:
                sysctl[k] = v
    for k, v in (host.get("Sysctls") or {}).items():
        _check_sysctl(k, host)
        sysctl[k] = v

    # resources and devices
    resources, devices = resources_spec(host, si, privileged)

    # mounts (moby's withMounts)
    um = user_mounts(host, si, c.data_root.rstrip("/"))
    # issue 8: volumes come resolved from skiff.daemon.volumes
    vol_dests = {m.destination for m in um if m.kind == "volume"}
    um = [m for m in um if m.kind != "volume"]
    taken = {m.destination for m in um}
    resolved = {d for d, _s, _r in c.volume_mounts}
    if vol_dests - resolved:
        raise _bad(f"container {c.id}: volumes at {sorted(vol_dests - resolved)} were not "
                   "resolved by the volume service")
    for d, src, ro in c.volume_mounts:
        if d not in taken:
            um.append(_Mount(d, "bind", src, ["rbind", "ro", "rprivate"] if ro
                             else ["rbind", "rprivate"], "rprivate"))
            taken.add(d)
    etc = [_Mount(dst, "bind", src, ["rbind", "rprivate"] if not host.get("ReadonlyRootfs")
                  else ["rbind", "ro", "rprivate"])
           for dst, src in sorted(c.etc_files.items(), key=lambda kv: _ETC_ORDER.get(kv[0], 9))]
    shm_size = _int(host, "ShmSize") or DEFAULT_SHM_SIZE
    if ipc == "host" and not any(m.destination == "/dev/shm" for m in um):
        um.append(_Mount("/dev/shm", "bind", "/dev/shm", ["rbind", "rprivate"]))
    all_user = sorted(um + etc, key=lambda m: _depth(m.destination))
    user_dests = {m.destination for m in all_user}
    mount_dev = "/dev" in user_dests
    kept = []
    for m in mounts:
        d = m["destination"]
        if d in user_dests or (mount_dev and d.startswith("/dev/")):
            continue
        if d == "/dev/shm":
            if ipc == "none":
                continue
            m["options"].append(f"size={shm_size}")
        kept.append(m)
    mounts = kept
    rootfs_prop = ""
    for um_ in all_user:
        if um_.kind == "tmpfs":
            mounts.append({"destination": um_.destination, "type": "tmpfs", "source": "tmpfs",
                           "options": list(um_.options)})
            continue
        if um_.propagation in ("shared", "rshared"):
            if rootfs_prop not in ("shared", "rshared"):
                rootfs_prop = "shared"
        elif um_.propagation in ("slave", "rslave") and not um_.fallback:
            if rootfs_prop not in ("shared", "rshared", "slave", "rslave"):
                rootfs_prop = "rslave"
        mounts.append({"destination": um_.destination, "type": "bind", "source": um_.source,
                       "options": list(um_.options)})
    if host.get("ReadonlyRootfs"):
        for m in mounts:
            d = m["destination"]
            if d in ("/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev") or d in user_dests:
                continue
            if "ro" not in m["options"]:
                m["options"].append("ro")
    masked: list[str] | None = list(MASKED_PATHS) + list(si.extra_masked)
    readonly: list[str] | None = list(READONLY_PATHS)
    if privileged:
        for m in mounts:
            if m["destination"] == "/sys":
                m["options"] = [o for o in m["options"] if o != "ro"]
        masked = readonly = None
    writable_cgroups = privileged if so.writable_cgroups is None else so.writable_cgroups
    if writable_cgroups:
        for m in mounts:
            if m["type"] == "cgroup":
                m["options"] = [o for o in m["options"] if o != "ro"]
    if host.get("MaskedPaths") is not None:
        masked = list(host["MaskedPaths"])
    if host.get("ReadonlyPaths") is not None:
        readonly = list(host["ReadonlyPaths"])
    spec["mounts"] = mounts

    # seccomp
    seccomp = None
    if so.seccomp != "unconfined" and (not privileged or so.seccomp):
        from skiff.oci.seccomp_default import (
            ProfileError,
            docker_default_profile,
            load_docker_profile,
            to_oci,
        )

        bounding = set(caps)
        try:
            if so.seccomp:
                seccomp = to_oci(json.loads(so.seccomp), bounding, si.arch, si.kernel)
            elif si.kernel:
                seccomp = to_oci(load_docker_profile(), bounding, si.arch, si.kernel)
            else:
                seccomp = docker_default_profile(bounding, si.arch)
        except ProfileError as e:
            raise _bad(f"Decoding seccomp profile failed: {e}") from None

    # linux, in dockerd's field order
    linux["resources"] = resources
    linux["cgroupsPath"] = _cgroups_path(c, host)
    if sysctl:
        linux["sysctl"] = sysctl
    linux["namespaces"] = ns
    if devices:
        linux["devices"] = devices
    if seccomp is not None:
        linux["seccomp"] = seccomp
    if rootfs_prop:
        linux["rootfsPropagation"] = rootfs_prop
    if masked:
        linux["maskedPaths"] = masked
    if readonly:
        linux["readonlyPaths"] = readonly
    spec["linux"] = linux
    ann = host.get("Annotations") or {}
    if ann:
        spec["annotations"] = dict(ann)
    return spec


_ETC_ORDER = {"/etc/resolv.conf": 0, "/etc/hostname": 1, "/etc/hosts": 2}


def _cgroups_path(c: SpecInput, host: dict) -> str:
    parent = host.get("CgroupParent") or c.cgroup_parent or DEFAULT_CGROUP_PARENT
    p = posixpath.normpath(posixpath.join("/", parent, c.id))
    if ".." in p.split("/"):
        raise _bad(f"invalid CgroupParent '{parent}'")
    return p


def resources_spec(host: dict, si: SysInfo, privileged: bool) -> tuple[dict, list[dict]]:
    r: dict = {}
    # devices
    devices: list[dict] = []
    if privileged:
        devices = [dict(d) for d in si.host_devices()]
        for dm in host.get("Devices") or []:
            hp, cp, _ = _device_mapping(dm)
            if hp == cp:
                continue
            devices += _mapped_devices(hp, cp, si)
        rules: list[dict] = [{"allow": True, "access": "rwm"}]
    else:
        rules = []
        for allow, t, ma, mi in _DEFAULT_DEVICE_RULES:
            d: dict = {"allow": allow}
            if t:
                d.update({"type": t, "major": ma, "minor": mi})
            d["access"] = "rwm"
            rules.append(d)
        for dm in host.get("Devices") or []:
            hp, cp, perms = _device_mapping(dm)
            found = _mapped_devices(hp, cp, si)
            devices += found
            rules += [{"allow": True, "type": d["type"], "major": d["major"],
                       "minor": d["minor"], "access": perms} for d in found]
        rules += [parse_device_rule(x) for x in host.get("DeviceCgroupRules") or []]
    r["devices"] = rules
    # memory
    mem = _int(host, "Memory")
    swap = _int(host, "MemorySwap")
    if mem > 0 and swap == 0:
        swap = mem * 2
    if mem > 0 and swap != -1 and not si.swap_limit:
        swap = -1
    m: dict = {}
    if mem > 0:
        m["limit"] = mem
    if _int(host, "MemoryReservation") > 0:
        m["reservation"] = host["MemoryReservation"]
    if swap > 0:
        m["swap"] = swap
    sw = host.get("MemorySwappiness")
    if sw is not None and sw != -1 and not si.cgroup_unified:
        m["swappiness"] = sw
    m["disableOOMKiller"] = bool(host.get("OomKillDisable"))  # dockerd always sets it
    if m:
        r["memory"] = m
    # cpu
    cpu: dict = {}
    if _int(host, "CpuShares"):
        cpu["shares"] = host["CpuShares"]
    nano = _int(host, "NanoCpus")
    if nano > 0:
        cpu["quota"] = nano * 100000 // 10**9
        cpu["period"] = 100000
    if _int(host, "CpuQuota"):
        cpu["quota"] = host["CpuQuota"]
    if _int(host, "CpuPeriod"):
        cpu["period"] = host["CpuPeriod"]
    if host.get("CpusetCpus"):
        cpu["cpus"] = host["CpusetCpus"]
    if host.get("CpusetMems"):
        cpu["mems"] = host["CpusetMems"]
    if cpu:
        r["cpu"] = {k: cpu[k] for k in ("shares", "quota", "period", "cpus", "mems") if k in cpu}
    # pids
    # 0 and -1 mean unlimited: dockerd writes -1 ("max"), which a new cgroup already has and
    # crun 1.8 cannot write on cgroup v1 ("pids.max: Invalid argument"), so it is left out
    pl = host.get("PidsLimit")
    if pl is not None and pl > 0:
        r["pids"] = {"limit": pl}
    # block I/O
    blk: dict = {}
    if _int(host, "BlkioWeight") and si.blkio_weight:  # else discarded, as dockerd does
        blk["weight"] = host["BlkioWeight"]
    wd = []
    for e in (host.get("BlkioWeightDevice") or []) if si.blkio_weight else []:
        d = _block_device(e["Path"], si)
        wd.append({"major": d["major"], "minor": d["minor"], "weight": int(e.get("Weight", 0))})
    if wd:
        blk["weightDevice"] = wd
    for key, oci in (("BlkioDeviceReadBps", "throttleReadBpsDevice"),
                     ("BlkioDeviceWriteBps", "throttleWriteBpsDevice"),
                     ("BlkioDeviceReadIOps", "throttleReadIOPSDevice"),
                     ("BlkioDeviceWriteIOps", "throttleWriteIOPSDevice")):
        lst = []
        for e in host.get(key) or []:
            d = _block_device(e["Path"], si)
            lst.append({"major": d["major"], "minor": d["minor"], "rate": int(e.get("Rate", 0))})
        if lst:
            blk[oci] = lst
    if blk:
        r["blockIO"] = blk
    return r, devices


def _block_device(path: str, si: SysInfo) -> dict:
    try:
        found = si.devices_at(path)
    except OSError as e:
        raise _bad(f"stat {path}: {e.strerror or e}") from None
    if len(found) != 1 or found[0]["path"] != "":
        raise _bad(f"{path} is not a device node")
    return found[0]


def _mapped_devices(host_path: str, ctr_path: str, si: SysInfo) -> list[dict]:
    """HostConfig.Devices entry -> ``linux.devices`` (moby's DevicesFromPath)."""
    try:
        found = si.devices_at(host_path)
    except OSError as e:
        raise _bad(f"error gathering device information while adding custom device "
                   f'"{host_path}": {e.strerror or e}') from None
    if not found:
        raise _bad(f"error gathering device information while adding custom device "
                   f'"{host_path}": not a device node')
    out = []
    for d in found:
        d = dict(d)
        d["path"] = ctr_path if not d["path"] else ctr_path.rstrip("/") + "/" + d["path"]
        out.append(d)
    return out


def exec_process(container_spec: dict, config: dict, host: dict, exec_config: dict, *,
                 user: dict | None = None, si: SysInfo | None = None) -> dict:
    """The OCI process of ``docker exec`` (moby's exec start): the container spec's process
    with the exec's command, environment, working directory, terminal and console size; the
    exec's User (``user`` = its resolved ``process.user``, else a numeric User is parsed,
    else the container's user); ``Privileged`` gives every capability of the host.
    ``config``/``host`` are the container's merged Config and HostConfig; ``exec_config`` the
    exec create body (``Cmd``, ``Env``, ``WorkingDir``, ``Tty``, ``ConsoleSize``, ``User``,
    ``Privileged``). InvalidParameter for a bad body."""
    cmd = _as_list(exec_config.get("Cmd"), "Cmd")
    if not cmd:
        raise _bad("No exec command specified")
    for e in exec_config.get("Env") or []:
        if not isinstance(e, str) or e.split("=", 1)[0] == "":
            raise _bad(f"invalid environment variable: {e}")
    wd = exec_config.get("WorkingDir") or config.get("WorkingDir") or "/"
    if not wd.startswith("/"):
        raise _bad(f"the working directory '{wd}' is invalid, it needs to be an absolute path")
    tty = bool(exec_config.get("Tty"))
    p = copy.deepcopy(container_spec.get("process") or {})
    p["args"] = cmd
    hostname = config.get("Hostname") or container_spec.get("hostname") or ""
    env = replace_or_append_env(default_env(hostname, tty), config.get("Env") or [])
    p["env"] = replace_or_append_env(env, exec_config.get("Env") or [])
    p["cwd"] = wd
    p["terminal"] = tty
    p.pop("consoleSize", None)
    cs = exec_config.get("ConsoleSize")
    if tty and cs and len(cs) == 2:
        p["consoleSize"] = {"height": int(cs[0]), "width": int(cs[1])}
    if user is not None:
        p["user"] = dict(user)
    elif exec_config.get("User"):
        p["user"] = numeric_user(exec_config["User"], host.get("GroupAdd"))
    if exec_config.get("Privileged"):
        caps = list((si or sysinfo()).caps)
        p["capabilities"] = {"bounding": caps, "effective": list(caps), "permitted": list(caps)}
    return p
