"""Docker's default seccomp profile, turned into an OCI ``linux.seccomp`` object.

Docker keeps its profile in its own format: an ``archMap`` instead of ``architectures``, and
syscall groups that apply only for some capabilities, architectures or kernels
(``includes``/``excludes`` with ``caps``, ``arches``, ``minKernel``). dockerd resolves those for
each container, the way ``to_oci`` does here (facts from moby's profiles/seccomp):

- ``architectures``: the ``archMap`` entry of the native architecture and its sub-architectures
  (none when the native architecture has no entry: libseccomp then uses the native one only);
- a group is dropped when one of its ``excludes.caps`` is in the container's bounding set, when
  the native architecture is in ``excludes.arches``, or when the kernel is at least
  ``excludes.minKernel``; it is kept only when every ``includes.caps`` is in the bounding set,
  the native architecture is in ``includes.arches`` (if given) and the kernel is at least
  ``includes.minKernel`` (if given);
- ``errno``/``defaultErrno`` (errno names or numbers) become ``errnoRet``/``defaultErrnoRet``.

The profile is data (``shared/specs/docker-seccomp-default.json`` next to the project, or the
path in ``$SKIFF_SECCOMP_PROFILE``); ``docker_default_profile`` reads it once per process.
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The capabilities Docker gives a container by default (its bounding set).
DEFAULT_CAPS = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
})

# Docker's (Go's) architecture names, from the kernel's machine names
_GO_ARCH = {
    "x86_64": "amd64", "aarch64": "arm64", "i386": "x86", "i686": "x86", "armv7l": "arm",
    "armv6l": "arm", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
    "loongarch64": "loongarch64", "mips64": "mips64",
}
# native architecture -> the archMap entry that applies to it
_ARCH_MAP_KEY = {
    "amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "mips64": "SCMP_ARCH_MIPS64",
    "mips64n32": "SCMP_ARCH_MIPS64N32", "mipsel64": "SCMP_ARCH_MIPSEL64",
    "mipsel64n32": "SCMP_ARCH_MIPSEL64N32", "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64", "loongarch64": "SCMP_ARCH_LOONGARCH64",
}


class ProfileError(ValueError):
    """A Docker-format seccomp profile that cannot be converted."""


def native_arch() -> str:
    """Docker's name for the architecture of this machine (``amd64``, ``arm64``...)."""
    m = os.uname().machine
    return _GO_ARCH.get(m, m)


def _kernel(release: str) -> tuple[int, int]:
    parts = release.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ProfileError(f"cannot parse kernel version {release!r}") from None


def _errno(v: Any, where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        if v.isdigit():
            return int(v)
        import errno

        n = getattr(errno, v, None)
        if isinstance(n, int):
            return n
    raise ProfileError(f"{where}: unknown errno {v!r}")


def to_oci(profile: dict, caps: set[str] | frozenset[str], arch: str,
           kernel: str | None = None) -> dict:
    """Resolve a Docker-format profile for a container whose bounding set is ``caps``, on
    ``arch`` (Docker's name) and kernel release ``kernel`` (default: the running one)."""
    if not isinstance(profile, dict):
        raise ProfileError("seccomp profile: expected an object")
    if profile.get("architectures") and profile.get("archMap"):
        raise ProfileError("seccomp profile: 'architectures' and 'archMap' are both set; use one")
    kv = _kernel(kernel or os.uname().release)
    out: dict = {"defaultAction": profile.get("defaultAction", "")}
    if profile.get("defaultErrno") is not None:
        out["defaultErrnoRet"] = _errno(profile["defaultErrno"], "defaultErrno")
    elif profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = list(profile.get("architectures") or [])
    key = _ARCH_MAP_KEY.get(arch)
    for entry in profile.get("archMap") or []:
        if key and entry.get("architecture") == key:
            arches = [key, *(entry.get("subArchitectures") or [])]
            break
    if arches:
        out["architectures"] = arches
    for k in ("flags", "listenerPath", "listenerMetadata"):
        if profile.get(k):
            out[k] = profile[k]
    calls = []
    for i, call in enumerate(profile.get("syscalls") or []):
        w = f"syscalls[{i}]"
        inc, exc = call.get("includes") or {}, call.get("excludes") or {}
        if arch in (exc.get("arches") or ()):
            continue
        if any(c in caps for c in exc.get("caps") or ()):
            continue
        if exc.get("minKernel") and kv >= _kernel(exc["minKernel"]):
            continue
        if inc.get("arches") and arch not in inc["arches"]:
            continue
        if not all(c in caps for c in inc.get("caps") or ()):
            continue
        if inc.get("minKernel") and kv < _kernel(inc["minKernel"]):
            continue
        if call.get("name") and call.get("names"):
            raise ProfileError(f"{w}: 'name' and 'names' are both set; use one")
        names = [call["name"]] if call.get("name") else list(call.get("names") or [])
        oc: dict = {"names": names, "action": call.get("action", "")}
        if call.get("errno") is not None:
            oc["errnoRet"] = _errno(call["errno"], w + ".errno")
        elif call.get("errnoRet") is not None:
            oc["errnoRet"] = call["errnoRet"]
        if call.get("args"):
            oc["args"] = []
            for a in call["args"]:
                arg = {"index": a.get("index"), "value": a.get("value"), "op": a.get("op")}
                if a.get("valueTwo"):
                    arg["valueTwo"] = a["valueTwo"]
                oc["args"].append(arg)
        calls.append(oc)
    out["syscalls"] = calls
    return out


def profile_path() -> str:
    """Where Docker's default profile is read from."""
    env = os.environ.get("SKIFF_SECCOMP_PROFILE")
    if env:
        return env
    # <project>/src/skiff/oci/ -> <project>/../shared/specs/
    project = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    return os.path.join(os.path.dirname(project), "shared", "specs", "docker-seccomp-default.json")


_CACHE: dict[str, dict] = {}


def load_docker_profile(path: str | None = None) -> dict:
    path = path or profile_path()
    doc = _CACHE.get(path)
    if doc is None:
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
        except OSError as e:
            raise ProfileError(f"read Docker's seccomp profile {path}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise ProfileError(f"{path}: not valid JSON: {e}") from None
        _CACHE[path] = doc
    return doc


def docker_default_profile(caps: set[str] | frozenset[str], arch: str) -> dict:
    """Docker's default profile as dockerd gives it to a container with bounding set ``caps``
    on ``arch`` (``amd64``, ``arm64``...), for the running kernel. A new dict on every call."""
    return to_oci(load_docker_profile(), caps, arch)
