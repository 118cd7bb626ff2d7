"""Mounting what snapshotters describe: ``mount_all(mounts, target)``, ``unmount_all(target)``.

A snapshotter returns :class:`~skiff.images.snapshots.Mount` descriptions (containerd's
``mount.Mount``); mounting them is the caller's job, done here. Options are mount(8)'s: the
flag words (``ro``, ``rbind``, ``nosuid``, ``private`` ...) become ``mount(2)`` flags, the
rest (``lowerdir=...``) is the filesystem's data string. A ``bind``/``rbind`` mount with
``ro`` (or other per-mount flags) is a bind followed by a read-only remount, since the kernel
ignores those flags on the bind itself.

Long overlay option strings. The kernel copies at most one page of mount data, so an overlay
of 128 layers under ``/var/lib/...`` does not fit. As containerd's mount helper does, the
lowerdir/upperdir/workdir paths are then rewritten relative to their longest common
directory, and the mount is made with that directory as the working directory. The working
directory is per process, so the call runs in a short-lived thread that first unshares its
filesystem context (``unshare(CLONE_FS)``, allowed in a threaded process): the rest of the
process never sees the ``chdir``. The description itself keeps absolute paths, so it stays
what containerd's API carries.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import TYPE_CHECKING

from skiff.runtime import syscalls as sc

if TYPE_CHECKING:
    from collections.abc import Sequence

    from skiff.images.snapshots import Mount

CLONE_FS = 0x00000200
MNT_DETACH = 2

PAGE_SIZE = os.sysconf("SC_PAGESIZE")

# option -> (clear?, flag): "clear" options remove the flag (rw clears MS_RDONLY)
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, sc.MS_SYNCHRONOUS),
    "atime": (True, sc.MS_NOATIME),
    "bind": (False, sc.MS_BIND),
    "defaults": (False, 0),
    "dev": (True, sc.MS_NODEV),
    "diratime": (True, sc.MS_NODIRATIME),
    "dirsync": (False, sc.MS_DIRSYNC),
    "exec": (True, sc.MS_NOEXEC),
    "mand": (False, sc.MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME),
    "nodev": (False, sc.MS_NODEV),
    "nodiratime": (False, sc.MS_NODIRATIME),
    "noexec": (False, sc.MS_NOEXEC),
    "nomand": (True, sc.MS_MANDLOCK),
    "norelatime": (True, sc.MS_RELATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME),
    "nosuid": (False, sc.MS_NOSUID),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW),
    "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "relatime": (False, sc.MS_RELATIME),
    "remount": (False, sc.MS_REMOUNT),
    "ro": (False, sc.MS_RDONLY),
    "rw": (True, sc.MS_RDONLY),
    "strictatime": (False, sc.MS_STRICTATIME),
    "suid": (True, sc.MS_NOSUID),
    "sync": (False, sc.MS_SYNCHRONOUS),
}
_PROPAGATION: dict[str, int] = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# flags a bind mount only takes on a remount
_REMOUNT_FLAGS = (sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_NOATIME
                  | sc.MS_NODIRATIME | sc.MS_RELATIME | sc.MS_STRICTATIME | sc.MS_NOSYMFOLLOW)


class MountError(OSError):
    """A mount description could not be mounted or unmounted; the message says which and why."""


def parse_options(options: Sequence[str]) -> tuple[int, int, list[str]]:
    """(mount flags, propagation flags, data options) of mount(8)-style ``options``."""
    flags = 0
    propagation = 0
    data: list[str] = []
    for o in options:
        if o in _FLAGS:
            clear, f = _FLAGS[o]
            flags = flags & ~f if clear else flags | f
        elif o in _PROPAGATION:
            propagation |= _PROPAGATION[o]
        else:
            data.append(o)
    return flags, propagation, data


_PATH_OPTIONS = ("lowerdir", "upperdir", "workdir")


def compact_overlay_data(data: list[str]) -> tuple[str, list[str]] | None:
    """Rewrite overlay path options relative to their common directory.

    Returns ``(common directory, new data)``, or None when there is nothing to shorten.
    """
    paths: list[str] = []
    for o in data:
        k, _, v = o.partition("=")
        if k in _PATH_OPTIONS:
            paths.extend(v.split(":") if k == "lowerdir" else [v])
    if not paths or not all(p.startswith("/") for p in paths):
        return None
    common = os.path.commonpath(paths)
    if common == "/":
        return None
    # the common path may be one of the directories itself (a single lower): use its parent
    if common in paths:
        common = os.path.dirname(common)
        if common == "/":
            return None
    out: list[str] = []
    for o in data:
        k, _, v = o.partition("=")
        if k == "lowerdir":
            out.append("lowerdir=" + ":".join(os.path.relpath(p, common) for p in v.split(":")))
        elif k in _PATH_OPTIONS:
            out.append(f"{k}={os.path.relpath(v, common)}")
        else:
            out.append(o)
    return common, out


def _in_own_cwd(syscalls: sc.Syscalls, cwd: str, fn) -> None:
    """Run ``fn()`` with ``cwd`` as the working directory, in a thread with its own fs context."""
    result: list[BaseException] = []

    def body() -> None:
        try:
            syscalls.unshare(CLONE_FS)
            syscalls.chdir(cwd)
            fn()
        except BaseException as e:  # handed to the calling thread
            result.append(e)

    t = threading.Thread(target=body, name="skiff-mount-chdir")
    t.start()
    t.join()
    if result:
        raise result[0]


def mount_one(m: Mount, target: str, *, syscalls: sc.Syscalls | None = None) -> None:
    """Mount one description on ``target``."""
    syscalls = syscalls or sc.LinuxSyscalls()
    target = os.path.abspath(target)
    flags, propagation, data = parse_options(m.options)
    what = f"mount {m.type} {m.source} on {target}"
    try:
        if flags & sc.MS_BIND:
            syscalls.mount(m.source, target, None, flags & (sc.MS_BIND | sc.MS_REC), None)
            extra = flags & _REMOUNT_FLAGS
            if extra:
                syscalls.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | extra, None)
        else:
            text = ",".join(data)
            if len(text.encode()) + 1 > PAGE_SIZE and m.type == "overlay":
                compact = compact_overlay_data(data)
                short = ",".join(compact[1]) if compact else text
                if compact is None or len(short.encode()) + 1 > PAGE_SIZE:
                    raise MountError(errno.E2BIG, f"{what}: options take {len(text)} bytes, more than "
                                     f"a page ({PAGE_SIZE}) even with relative paths")
                cwd = compact[0]
                _in_own_cwd(syscalls, cwd,
                            lambda: syscalls.mount(m.source, target, m.type, flags, short))
            else:
                syscalls.mount(m.source, target, m.type, flags, text or None)
        if propagation:
            syscalls.mount(None, target, None, propagation, None)
    except MountError:
        raise
    except OSError as e:
        raise MountError(e.errno, f"{what}: {e.strerror or e}") from e


def mount_all(mounts: Sequence[Mount], target: str, *, syscalls: sc.Syscalls | None = None) -> None:
    """Mount ``mounts`` one over the other on ``target`` (containerd's ``mount.All``).

    On failure, what was already mounted here is unmounted again before the error is raised.
    """
    syscalls = syscalls or sc.LinuxSyscalls()
    done = 0
    try:
        for m in mounts:
            mount_one(m, target, syscalls=syscalls)
            done += 1
    except BaseException:
        for _ in range(done):
            try:
                syscalls.umount2(os.path.abspath(target), 0)
            except OSError as e:
                import sys
                print(f"skiff: cleanup after a failed mount: umount {target}: {e}", file=sys.stderr)
        raise


def unmount_all(target: str, flags: int = 0, *, syscalls: sc.Syscalls | None = None,
                retries: int = 50, delay: float = 0.05) -> int:
    """Unmount everything mounted on ``target``, topmost first, until nothing is left.

    ``EBUSY`` is retried ``retries`` times ``delay`` seconds apart; a target that is not a
    mount point (any more) or does not exist ends the loop. Returns how many were unmounted.
    """
    syscalls = syscalls or sc.LinuxSyscalls()
    target = os.path.abspath(target)
    count = 0
    busy = 0
    while True:
        try:
            syscalls.umount2(target, flags)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                return count
            if e.errno == errno.EBUSY and busy < retries:
                busy += 1
                time.sleep(delay)
                continue
            raise MountError(e.errno, f"unmount {target}: {e.strerror or e}") from e
        count += 1
        busy = 0
