"""``skiff-runc features``: print the runtime-spec Features document for this runtime.

The document states what skiff-runc implements (features.md, features-linux.md): the hooks,
the mount options its mount code understands, the namespaces, the capabilities the kernel
knows, the cgroup managers (cgroupfs v1 and v2, not systemd), seccomp when libseccomp can be
loaded (what ``skiff.runtime.seccomp`` accepts, limited by the libseccomp found), and no
AppArmor, SELinux, Intel RDT or id-mapped mounts.
"""

from __future__ import annotations

from skiff.runtime.caps import NAMES as CAPABILITIES  # index = number

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.cli import Context

OCI_VERSION_MIN = "1.0.0"

HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")

# Options the mount code understands (mount flags and propagation). Not "tmpcopyup".
MOUNT_OPTIONS = (
    "async", "atime", "bind", "dev", "diratime", "dirsync", "exec", "lazytime", "mand",
    "noatime", "nodev", "nodiratime", "noexec", "nolazytime", "nomand", "norelatime",
    "nostrictatime", "nosuid", "nosymfollow", "private", "rbind", "relatime", "remount", "ro",
    "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "slave", "strictatime",
    "suid", "symfollow", "sync", "unbindable",
)

NAMESPACES = ("cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts")

CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"

# Actions that need a libseccomp newer than 2.0: (major, minor) that introduced them.
_ACTION_SINCE = {"SCMP_ACT_LOG": (2, 4), "SCMP_ACT_KILL_PROCESS": (2, 4), "SCMP_ACT_NOTIFY": (2, 5)}

# Filter flags -> the seccomp_api_get() level at which libseccomp reports that the kernel and
# the library support it (seccomp_api_get(3)).
_FLAG_API = {"SECCOMP_FILTER_FLAG_TSYNC": 2, "SECCOMP_FILTER_FLAG_LOG": 3,
             "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 7}


class Libseccomp:
    """What the loaded libseccomp offers: its version, the architectures it resolves (names as
    in the spec, ``SCMP_ARCH_X86_64``) and its API level on this kernel (0: not reported)."""

    __slots__ = ("version", "archs", "api")

    def __init__(self, version: tuple[int, int, int], archs: list[str], api: int = 0) -> None:
        self.version = version
        self.archs = archs
        self.api = api


def probe_libseccomp() -> Libseccomp | None:
    """Load libseccomp (``libseccomp.so.2``, else what the linker cache names); None if absent."""
    import ctypes

    from skiff.runtime.seccomp import ARCHES

    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        import ctypes.util

        name = ctypes.util.find_library("seccomp")
        if name is None:
            return None
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            return None

    class Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    lib.seccomp_version.restype = ctypes.POINTER(Version)
    lib.seccomp_version.argtypes = []
    v = lib.seccomp_version().contents
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    archs = [a for a, libname in ARCHES.items() if lib.seccomp_arch_resolve_name(libname.encode())]
    api = 0
    if hasattr(lib, "seccomp_api_get"):  # libseccomp >= 2.4
        lib.seccomp_api_get.restype = ctypes.c_uint
        lib.seccomp_api_get.argtypes = []
        api = int(lib.seccomp_api_get())
    return Libseccomp((v.major, v.minor, v.micro), archs, api)


def read_cap_last_cap(path: str = CAP_LAST_CAP) -> int:
    """The highest capability number the running kernel knows."""
    from skiff.runtime.cli import RuntimeFailure

    try:
        with open(path, "rb") as f:
            text = f.read().decode().strip()
    except OSError as e:
        raise RuntimeFailure(f"features: read {path}: {(e.strerror or str(e)).lower()}") from None
    try:
        return int(text)
    except ValueError:
        raise RuntimeFailure(f"features: read {path}: not a number: {text!r}") from None


def seccomp_features(lib: Libseccomp | None) -> dict:
    """The ``linux.seccomp`` part: what ``skiff.runtime.seccomp`` accepts and ``lib`` can do.

    Actions are the ones the seccomp module's ``check`` accepts (it refuses ``SCMP_ACT_NOTIFY``:
    no notification listener) and this libseccomp knows; flags are all the module knows
    (``knownFlags``) and those this libseccomp version knows and, when it reports an API level,
    says this kernel supports (``supportedFlags``).
    """
    if lib is None:
        return {"enabled": False}
    from skiff.runtime import seccomp

    have = lib.version[:2]
    actions = []
    for name in sorted(seccomp.ACTIONS):
        try:
            seccomp.check({"defaultAction": name})
        except seccomp.SeccompError:
            continue
        if have >= _ACTION_SINCE.get(name, (0, 0)):
            actions.append(name)
    return {
        "enabled": True,
        "actions": actions,
        "operators": sorted(seccomp.OPS),
        "archs": sorted(lib.archs),
        "knownFlags": list(seccomp.FLAGS),
        "supportedFlags": [f for f, (_, since) in seccomp.FLAGS.items()
                           if lib.version >= since and (not lib.api or lib.api >= _FLAG_API.get(f, 99))],
    }


def build(cap_last: int, lib: Libseccomp | None) -> dict:
    """The Features document, given the kernel's last capability number and libseccomp."""
    from skiff import __version__
    from skiff.oci.defaults import OCI_VERSION

    annotations = {"org.skiff.runtime.version": __version__}
    if lib is not None:
        annotations["io.github.seccomp.libseccomp.version"] = ".".join(map(str, lib.version))
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION,
        "hooks": list(HOOKS),
        "mountOptions": list(MOUNT_OPTIONS),
        "linux": {
            "namespaces": list(NAMESPACES),
            "capabilities": list(CAPABILITIES[:max(0, cap_last + 1)]),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": seccomp_features(lib),
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": annotations,
    }


def run(ctx: Context, args: list[str]) -> int:
    import json
    import sys

    from skiff.runtime.flags import parse

    parse(args, [], positional_max=0)
    doc = build(read_cap_last_cap(), probe_libseccomp())
    sys.stdout.write(json.dumps(doc, indent=4) + "\n")
    return 0
