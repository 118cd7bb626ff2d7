"""The OCI runtime spec (config.json), converted once into internal types.

``load_config`` is the edge: it turns the JSON document into the classes below and refuses a
document that is malformed, naming the offending field (``process.user.uid: expected an
integer``). Everything past the edge works with attributes, never with raw keys.

Two parts stay JSON-shaped on purpose because each has one consumer that owns its meaning:
``linux.resources`` (the cgroup manager, which also takes it from ``update --resources``) and
``linux.seccomp`` (the seccomp compiler).

The classes are plain ``__slots__`` classes rather than dataclasses: importing ``dataclasses``
costs ~25 ms (it pulls in ``inspect`` and ``re``), more than the rest of a runtime invocation.
"""

from __future__ import annotations

import os

from skiff import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class SpecError(ValueError):
    """A config.json (or process.json) that does not follow the runtime spec."""


# --- field readers: each names the field it refuses ---------------------------------------

def _obj(d: Any, where: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise SpecError(f"{where}: expected an object, got {type(d).__name__}")
    return d


def _str(d: dict, key: str, where: str, default: str = "") -> str:
    v = d.get(key)
    if v is None:
        return default
    if not isinstance(v, str):
        raise SpecError(f"{where}.{key}: expected a string, got {type(v).__name__}")
    return v


def _int(d: dict, key: str, where: str, default: int | None = None) -> int | None:
    v = d.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(f"{where}.{key}: expected an integer, got {type(v).__name__}")
    return v


def _uint(d: dict, key: str, where: str, default: int | None = None) -> int | None:
    v = _int(d, key, where, default)
    if v is not None and v < 0:
        raise SpecError(f"{where}.{key}: must not be negative, got {v}")
    return v


def _bool(d: dict, key: str, where: str) -> bool:
    v = d.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise SpecError(f"{where}.{key}: expected a boolean, got {type(v).__name__}")
    return v


def _list(d: dict, key: str, where: str) -> list:
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise SpecError(f"{where}.{key}: expected an array, got {type(v).__name__}")
    return v


def _strs(d: dict, key: str, where: str) -> list[str]:
    v = _list(d, key, where)
    for i, s in enumerate(v):
        if not isinstance(s, str):
            raise SpecError(f"{where}.{key}[{i}]: expected a string, got {type(s).__name__}")
    return v


# --- the types --------------------------------------------------------------------------

class User:
    __slots__ = ("uid", "gid", "umask", "additional_gids", "username")

    def __init__(self, uid: int = 0, gid: int = 0, umask: int | None = None,
                 additional_gids: list[int] | None = None, username: str = "") -> None:
        self.uid = uid
        self.gid = gid
        self.umask = umask
        self.additional_gids = additional_gids or []
        self.username = username


class Rlimit:
    __slots__ = ("type", "soft", "hard")

    def __init__(self, type: str, soft: int, hard: int) -> None:
        self.type = type
        self.soft = soft
        self.hard = hard


class Capabilities:
    """The five capability sets, as names (``CAP_CHOWN``...)."""

    __slots__ = ("bounding", "effective", "inheritable", "permitted", "ambient")

    def __init__(self, bounding: list[str] | None = None, effective: list[str] | None = None,
                 inheritable: list[str] | None = None, permitted: list[str] | None = None,
                 ambient: list[str] | None = None) -> None:
        self.bounding = bounding or []
        self.effective = effective or []
        self.inheritable = inheritable or []
        self.permitted = permitted or []
        self.ambient = ambient or []


class Process:
    __slots__ = ("terminal", "console_height", "console_width", "user", "args", "env", "cwd",
                 "capabilities", "rlimits", "no_new_privileges", "oom_score_adj",
                 "apparmor_profile", "selinux_label", "io_priority", "scheduler")

    def __init__(self, args: list[str], cwd: str = "/", env: list[str] | None = None,
                 user: User | None = None, terminal: bool = False,
                 console_height: int = 0, console_width: int = 0,
                 capabilities: Capabilities | None = None, rlimits: list[Rlimit] | None = None,
                 no_new_privileges: bool = False, oom_score_adj: int | None = None,
                 apparmor_profile: str = "", selinux_label: str = "",
                 io_priority: dict | None = None, scheduler: dict | None = None) -> None:
        self.args = args
        self.cwd = cwd
        self.env = env or []
        self.user = user or User()
        self.terminal = terminal
        self.console_height = console_height
        self.console_width = console_width
        self.capabilities = capabilities
        self.rlimits = rlimits or []
        self.no_new_privileges = no_new_privileges
        self.oom_score_adj = oom_score_adj
        self.apparmor_profile = apparmor_profile
        self.selinux_label = selinux_label
        self.io_priority = io_priority
        self.scheduler = scheduler

    def getenv(self, name: str) -> str | None:
        prefix = name + "="
        for e in self.env:
            if e.startswith(prefix):
                return e[len(prefix):]
        return None


class Mount:
    __slots__ = ("destination", "type", "source", "options", "uid_mappings", "gid_mappings")

    def __init__(self, destination: str, type: str = "", source: str = "",
                 options: list[str] | None = None, uid_mappings: list[IDMapping] | None = None,
                 gid_mappings: list[IDMapping] | None = None) -> None:
        self.destination = destination
        self.type = type
        self.source = source
        self.options = options or []
        self.uid_mappings = uid_mappings or []
        self.gid_mappings = gid_mappings or []

    def __repr__(self) -> str:
        return f"Mount({self.destination!r}, type={self.type!r}, source={self.source!r})"


class Hook:
    __slots__ = ("path", "args", "env", "timeout")

    def __init__(self, path: str, args: list[str] | None = None, env: list[str] | None = None,
                 timeout: int | None = None) -> None:
        self.path = path
        self.args = args or []
        self.env = env or []
        self.timeout = timeout


HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


class Namespace:
    __slots__ = ("type", "path")

    def __init__(self, type: str, path: str = "") -> None:
        self.type = type
        self.path = path


class IDMapping:
    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, container_id: int, host_id: int, size: int) -> None:
        self.container_id = container_id
        self.host_id = host_id
        self.size = size


class Device:
    __slots__ = ("type", "path", "major", "minor", "file_mode", "uid", "gid")

    def __init__(self, type: str, path: str, major: int = 0, minor: int = 0,
                 file_mode: int | None = None, uid: int | None = None, gid: int | None = None) -> None:
        self.type = type
        self.path = path
        self.major = major
        self.minor = minor
        self.file_mode = file_mode
        self.uid = uid
        self.gid = gid


class Linux:
    __slots__ = ("namespaces", "uid_mappings", "gid_mappings", "time_offsets", "devices",
                 "cgroups_path", "resources", "sysctl", "seccomp", "rootfs_propagation",
                 "masked_paths", "readonly_paths", "mount_label", "personality")

    def __init__(self) -> None:
        self.namespaces: list[Namespace] = []
        self.uid_mappings: list[IDMapping] = []
        self.gid_mappings: list[IDMapping] = []
        self.time_offsets: dict[str, dict] = {}
        self.devices: list[Device] = []
        self.cgroups_path = ""
        self.resources: dict = {}
        self.sysctl: dict[str, str] = {}
        self.seccomp: dict | None = None
        self.rootfs_propagation = ""
        self.masked_paths: list[str] = []
        self.readonly_paths: list[str] = []
        self.mount_label = ""
        self.personality: dict | None = None

    def namespace(self, ns_type: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == ns_type:
                return ns
        return None


class Config:
    """A parsed config.json. ``raw`` keeps the document for the state file and the hooks."""

    __slots__ = ("oci_version", "root_path", "root_readonly", "process", "hostname", "domainname",
                 "mounts", "hooks", "annotations", "linux", "raw")

    def __init__(self) -> None:
        self.oci_version = ""
        self.root_path = ""
        self.root_readonly = False
        self.process: Process | None = None
        self.hostname = ""
        self.domainname = ""
        self.mounts: list[Mount] = []
        self.hooks: dict[str, list[Hook]] = {}
        self.annotations: dict[str, str] = {}
        self.linux = Linux()
        self.raw: dict = {}


# --- conversion ---------------------------------------------------------------------------

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
RLIMIT_TYPES = ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE",
                "RLIMIT_LOCKS", "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE",
                "RLIMIT_NPROC", "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING",
                "RLIMIT_STACK")
PROPAGATIONS = ("", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
                "runbindable")


def parse_user(d: Any, where: str) -> User:
    d = _obj(d, where)
    gids = _list(d, "additionalGids", where)
    for i, g in enumerate(gids):
        if isinstance(g, bool) or not isinstance(g, int) or g < 0:
            raise SpecError(f"{where}.additionalGids[{i}]: expected a non-negative integer")
    return User(uid=_uint(d, "uid", where, 0) or 0, gid=_uint(d, "gid", where, 0) or 0,
                umask=_uint(d, "umask", where), additional_gids=gids,
                username=_str(d, "username", where))


def parse_process(d: Any, where: str = "process") -> Process:
    d = _obj(d, where)
    args = _strs(d, "args", where)
    if not args:
        raise SpecError(f"{where}.args: must name the program to run (got no arguments)")
    cwd = _str(d, "cwd", where)
    if not cwd:
        raise SpecError(f"{where}.cwd: is required")
    if not cwd.startswith("/"):
        raise SpecError(f"{where}.cwd: must be an absolute path, got {cwd!r}")
    env = _strs(d, "env", where)
    caps = None
    if d.get("capabilities") is not None:
        c = _obj(d["capabilities"], where + ".capabilities")
        w = where + ".capabilities"
        caps = Capabilities(bounding=_strs(c, "bounding", w), effective=_strs(c, "effective", w),
                            inheritable=_strs(c, "inheritable", w), permitted=_strs(c, "permitted", w),
                            ambient=_strs(c, "ambient", w))
    rlimits = []
    seen = set()
    for i, r in enumerate(_list(d, "rlimits", where)):
        w = f"{where}.rlimits[{i}]"
        r = _obj(r, w)
        t = _str(r, "type", w)
        if t not in RLIMIT_TYPES:
            raise SpecError(f"{w}.type: unknown rlimit {t!r}")
        if t in seen:
            raise SpecError(f"{w}.type: {t} is set twice")
        seen.add(t)
        soft, hard = _uint(r, "soft", w), _uint(r, "hard", w)
        if soft is None or hard is None:
            raise SpecError(f"{w}: both soft and hard are required")
        rlimits.append(Rlimit(t, soft, hard))
    height = width = 0
    if d.get("consoleSize") is not None:
        cs = _obj(d["consoleSize"], where + ".consoleSize")
        height = _uint(cs, "height", where + ".consoleSize", 0) or 0
        width = _uint(cs, "width", where + ".consoleSize", 0) or 0
    oom = _int(d, "oomScoreAdj", where)
    if oom is not None and not -1000 <= oom <= 1000:
        raise SpecError(f"{where}.oomScoreAdj: must be between -1000 and 1000, got {oom}")
    return Process(args=args, cwd=cwd, env=env, user=parse_user(d.get("user"), where + ".user"),
                   terminal=_bool(d, "terminal", where), console_height=height, console_width=width,
                   capabilities=caps, rlimits=rlimits,
                   no_new_privileges=_bool(d, "noNewPrivileges", where), oom_score_adj=oom,
                   apparmor_profile=_str(d, "apparmorProfile", where),
                   selinux_label=_str(d, "selinuxLabel", where),
                   io_priority=d.get("ioPriority"), scheduler=d.get("scheduler"))


def _id_mappings(d: dict, key: str, where: str) -> list[IDMapping]:
    out = []
    for i, m in enumerate(_list(d, key, where)):
        w = f"{where}.{key}[{i}]"
        m = _obj(m, w)
        c, h, s = _uint(m, "containerID", w), _uint(m, "hostID", w), _uint(m, "size", w)
        if c is None or h is None or s is None:
            raise SpecError(f"{w}: containerID, hostID and size are required")
        out.append(IDMapping(c, h, s))
    return out


def parse_config(doc: Any) -> Config:
    """Convert a config.json document; raises SpecError naming the first bad field."""
    doc = _obj(doc, "config")
    c = Config()
    c.raw = doc
    c.oci_version = _str(doc, "ociVersion", "config")
    if not c.oci_version:
        raise SpecError("ociVersion: is required")
    root = _obj(doc.get("root"), "root")
    c.root_path = _str(root, "path", "root")
    if not c.root_path:
        raise SpecError("root.path: is required")
    c.root_readonly = _bool(root, "readonly", "root")
    if doc.get("process") is not None:
        c.process = parse_process(doc["process"])
    c.hostname = _str(doc, "hostname", "config")
    c.domainname = _str(doc, "domainname", "config")
    for i, m in enumerate(_list(doc, "mounts", "config")):
        w = f"mounts[{i}]"
        m = _obj(m, w)
        dest = _str(m, "destination", w)
        if not dest:
            raise SpecError(f"{w}.destination: is required")
        if not dest.startswith("/"):
            raise SpecError(f"{w}.destination: must be an absolute path, got {dest!r}")
        c.mounts.append(Mount(dest, type=_str(m, "type", w), source=_str(m, "source", w),
                              options=_strs(m, "options", w),
                              uid_mappings=_id_mappings(m, "uidMappings", w),
                              gid_mappings=_id_mappings(m, "gidMappings", w)))
    hooks = _obj(doc.get("hooks"), "hooks")
    for kind in HOOK_KINDS:
        lst = []
        for i, h in enumerate(_list(hooks, kind, "hooks")):
            w = f"hooks.{kind}[{i}]"
            h = _obj(h, w)
            path = _str(h, "path", w)
            if not path.startswith("/"):
                raise SpecError(f"{w}.path: must be an absolute path, got {path!r}")
            timeout = _int(h, "timeout", w)
            if timeout is not None and timeout < 1:
                raise SpecError(f"{w}.timeout: must be at least 1 second, got {timeout}")
            lst.append(Hook(path, _strs(h, "args", w), _strs(h, "env", w), timeout))
        if lst:
            c.hooks[kind] = lst
    ann = _obj(doc.get("annotations"), "annotations")
    for k, v in ann.items():
        if not isinstance(v, str):
            raise SpecError(f"annotations.{k}: expected a string")
    c.annotations = ann
    c.linux = parse_linux(doc.get("linux"))
    return c


def parse_linux(d: Any) -> Linux:
    w = "linux"
    d = _obj(d, w)
    lx = Linux()
    seen = set()
    for i, n in enumerate(_list(d, "namespaces", w)):
        wn = f"{w}.namespaces[{i}]"
        n = _obj(n, wn)
        t = _str(n, "type", wn)
        if t not in NAMESPACE_TYPES:
            raise SpecError(f"{wn}.type: unknown namespace type {t!r}")
        if t in seen:
            raise SpecError(f"{wn}.type: the {t} namespace is listed twice")
        seen.add(t)
        p = _str(n, "path", wn)
        if p and not p.startswith("/"):
            raise SpecError(f"{wn}.path: must be an absolute path, got {p!r}")
        lx.namespaces.append(Namespace(t, p))
    lx.uid_mappings = _id_mappings(d, "uidMappings", w)
    lx.gid_mappings = _id_mappings(d, "gidMappings", w)
    lx.time_offsets = _obj(d.get("timeOffsets"), w + ".timeOffsets")
    for i, dev in enumerate(_list(d, "devices", w)):
        wd = f"{w}.devices[{i}]"
        dev = _obj(dev, wd)
        t = _str(dev, "type", wd)
        if t not in ("c", "b", "u", "p"):
            raise SpecError(f"{wd}.type: must be one of c, b, u, p; got {t!r}")
        path = _str(dev, "path", wd)
        if not path.startswith("/"):
            raise SpecError(f"{wd}.path: must be an absolute path, got {path!r}")
        major, minor = _int(dev, "major", wd), _int(dev, "minor", wd)
        if t != "p" and (major is None or minor is None):
            raise SpecError(f"{wd}: major and minor are required for type {t!r}")
        lx.devices.append(Device(t, path, major or 0, minor or 0, _uint(dev, "fileMode", wd),
                                 _uint(dev, "uid", wd), _uint(dev, "gid", wd)))
    lx.cgroups_path = _str(d, "cgroupsPath", w)
    lx.resources = _obj(d.get("resources"), w + ".resources")
    sysctl = _obj(d.get("sysctl"), w + ".sysctl")
    for k, v in sysctl.items():
        if not isinstance(v, str):
            raise SpecError(f"{w}.sysctl.{k}: expected a string")
    lx.sysctl = sysctl
    if d.get("seccomp") is not None:
        lx.seccomp = _obj(d["seccomp"], w + ".seccomp")
    lx.rootfs_propagation = _str(d, "rootfsPropagation", w)
    if lx.rootfs_propagation not in PROPAGATIONS:
        raise SpecError(f"{w}.rootfsPropagation: unknown propagation {lx.rootfs_propagation!r}")
    lx.masked_paths = _strs(d, "maskedPaths", w)
    lx.readonly_paths = _strs(d, "readonlyPaths", w)
    lx.mount_label = _str(d, "mountLabel", w)
    if d.get("personality") is not None:
        lx.personality = _obj(d["personality"], w + ".personality")
    return lx


def load_config(bundle: str) -> Config:
    """Read and convert ``<bundle>/config.json``; the root path is made absolute."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file (is {bundle!r} an OCI bundle?)") from None
    except ValueError as e:
        raise SpecError(f"{path}: not valid JSON: {e}") from None
    c = parse_config(doc)
    if not os.path.isabs(c.root_path):
        c.root_path = os.path.join(os.path.abspath(bundle), c.root_path)
    return c
