"""Linux capabilities of the container process, through the ``Syscalls`` seam.

The order in the container's init is fixed by the kernel's rules:

1. ``drop_bounding`` while still root: ``PR_CAPBSET_DROP`` needs ``CAP_SETPCAP``, which the
   process loses when it changes to a non-root uid;
2. ``prctl(PR_SET_KEEPCAPS, 1)``, then ``setresgid``/``setgroups``/``setresuid``: without
   KEEPCAPS the permitted set is emptied by the change of uid;
3. ``apply``: ``capset`` of the effective, permitted and inheritable sets, then the ambient set
   (cleared, then raised cap by cap; a cap can only be ambient if it is permitted and
   inheritable).

What the sets mean when ``process.capabilities`` is absent follows runc (checked with runc 1.1.5
on this machine: every set, the bounding set included, comes out empty): ``configured(None)``
gives five empty sets, so the process keeps no capability at all.

Names: an unknown name (not a Linux capability) is refused as a spec error naming the field. A
known name the running kernel does not have (number above ``cap_last_cap``) is skipped with a
warning, and so is, in ``apply``, a capability the runtime itself does not hold (``CAP_SYS_RESOURCE``
on a host whose bounding set lacks it): the runtime spec says a runtime SHOULD NOT fail for
capabilities it cannot grant, and current runc warns "ignoring unknown or unavailable
capabilities" and goes on. An ambient cap the kernel refuses to raise is also a warning, as in runc.
"""

from __future__ import annotations

import errno
import os

from skiff.oci.spec import Capabilities, SpecError
from skiff.runtime.syscalls import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    SyscallError,
    Syscalls,
)

#: capability names, index = number (linux/capability.h)
NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

#: Every Linux capability by name, with its number (linux/capability.h).
CAPS: dict[str, int] = {name: i for i, name in enumerate(NAMES)}

SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


def warn(msg: str) -> None:
    from skiff.runtime.cli import report

    report("warning", msg)


def last_cap(proc: str = "/proc") -> int:
    """The highest capability number the running kernel knows."""
    path = os.path.join(proc, "sys/kernel/cap_last_cap")
    try:
        with open(path, "rb") as f:
            return int(f.read().strip())
    except OSError as e:
        raise SyscallError(e.errno, f"read {path}: {e.strerror}") from None
    except ValueError:
        raise SyscallError(errno.EINVAL, f"read {path}: not a number") from None


def names(mask: int) -> list[str]:
    """The capability names of a bitmask (numbers without a name as ``CAP_<n>``)."""
    out = []
    i = 0
    while mask >> i:
        if mask >> i & 1:
            out.append(NAMES[i] if i < len(NAMES) else f"CAP_{i}")
        i += 1
    return out


def _parse(names_: list[str], where: str, last: int, skipped: list[str]) -> int:
    mask = 0
    for i, name in enumerate(names_):
        n = CAPS.get(name)
        if n is None:
            raise SpecError(f"{where}[{i}]: unknown capability {name!r}")
        if n > last:
            if name not in skipped:
                skipped.append(name)
            continue
        mask |= 1 << n
    return mask


def parse(names: list[str], where: str, last: int | None = None) -> int:
    """Bitmask of capability ``names``; ``where`` names the field in errors (a SpecError,
    which is a ValueError). Names the running kernel does not know (above ``last``, read from
    /proc when not given) are skipped with a warning."""
    if last is None:
        last = last_cap()
    skipped: list[str] = []
    mask = _parse(names, where, last, skipped)
    if skipped:
        warn(f"ignoring capabilities the kernel does not know ({where}): {', '.join(skipped)}")
    return mask


def configured(caps: Capabilities | None) -> Capabilities:
    """The sets to apply: absent ``process.capabilities`` means every set empty (as in runc)."""
    return caps if caps is not None else Capabilities()


def check(caps: Capabilities | None, where: str = "process.capabilities") -> None:
    """Refuse unknown names in any set (at ``create``, before anything exists)."""
    if caps is None:
        return
    for s in SETS:
        _parse(getattr(caps, s), f"{where}.{s}", len(NAMES), [])


def drop_bounding(sys: Syscalls, keep: int, last: int) -> None:
    """Drop from the bounding set every capability up to ``last`` that is not in ``keep``.

    Needs CAP_SETPCAP: call it before changing to a non-root uid."""
    for n in range(last + 1):
        if keep >> n & 1:
            continue
        try:
            sys.prctl(PR_CAPBSET_DROP, n)
        except OSError as e:
            name = NAMES[n] if n < len(NAMES) else f"capability {n}"
            hint = " (dropping from the bounding set needs CAP_SETPCAP)" if e.errno == errno.EPERM else ""
            raise SyscallError(e.errno, f"drop {name} from the bounding set: "
                                        f"{os.strerror(e.errno or 0)}{hint}") from None


def masks(caps: Capabilities, last: int, where: str = "process.capabilities") -> dict[str, int]:
    """Each set as a bitmask; one warning for all names the kernel does not know."""
    skipped: list[str] = []
    out = {s: _parse(getattr(caps, s), f"{where}.{s}", last, skipped) for s in SETS}
    if skipped:
        warn(f"ignoring capabilities the kernel does not know: {', '.join(skipped)}")
    return out


def apply(sys: Syscalls, caps: Capabilities, last: int) -> None:
    """Set the effective, permitted and inheritable sets, then the ambient set.

    Call after ``setresuid`` with ``PR_SET_KEEPCAPS`` set. Capabilities the process does not
    hold (not in its permitted set, read with ``capget``) cannot be granted: they are left out
    with a warning."""
    m = masks(caps, last)
    _, held, held_inh = sys.capget()
    eff, perm, inh, amb = m["effective"], m["permitted"], m["inheritable"], m["ambient"]
    unavailable = (eff | perm | amb) & ~held | inh & ~(held | held_inh)
    if unavailable:
        warn("ignoring capabilities the runtime does not hold: " + ", ".join(names(unavailable)))
        eff &= held
        perm &= held
        amb &= held
        inh &= held | held_inh
    try:
        sys.capset(eff, perm, inh)
    except OSError as e:
        why = os.strerror(e.errno or 0)
        if e.errno == errno.EPERM:
            if eff & ~perm:
                why += f" (effective {', '.join(names(eff & ~perm))} not in the permitted set)"
            else:
                why += " (an inheritable capability outside the bounding set?)"
        raise SyscallError(e.errno, f"capset (effective [{', '.join(names(eff))}], permitted "
                                    f"[{', '.join(names(perm))}], inheritable "
                                    f"[{', '.join(names(inh))}]): {why}") from None
    try:
        sys.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as e:
        raise SyscallError(e.errno, f"clear the ambient capability set: {os.strerror(e.errno or 0)}") from None
    # The kernel keeps an ambient capability only if it is also permitted and inheritable.
    # runc's own default spec lists ambient caps without inheritable ones, so those are skipped
    # quietly, as runc does; a raise that fails for another reason is warned about.
    for n in range(last + 1):
        if not (amb & perm & inh) >> n & 1:
            continue
        try:
            sys.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, n)
        except OSError as e:
            warn(f"can't raise ambient capability {NAMES[n]}: {os.strerror(e.errno or 0)}")
