"""The container's root filesystem, set up by its init process in its own mount namespace.

The init calls three functions, in this order:

``prepare_rootfs``  make "/" rslave (rprivate if asked) so nothing propagates back to the
                    host; bind the rootfs onto itself; mount ``config.mounts`` in order;
                    create the default ``/dev`` (nodes, symlinks, ``linux.devices``).
                    (The lead's orchestration then runs the prestart/createRuntime hooks in
                    the parent and the createContainer hooks.)
``enter_rootfs``    ``pivot_root(".", ".")`` + ``umount2(".", MNT_DETACH)`` (or, with
                    ``no_pivot``, ``MS_MOVE`` onto "/" and ``chroot``); then the requested
                    ``rootfsPropagation`` (shared, unbindable) on the new "/".
``finish_rootfs``   ``readonlyPaths``, ``maskedPaths``, then the read-only root.

Without a mount namespace of its own (none in ``linux.namespaces``: the spec says it is then
the runtime's), the init passes ``mount_ns=False``: "/" is left alone, the mounts are made in
the runtime's namespace below the rootfs bind, and ``enter_rootfs`` only chroots;
``rootfs_mount_id`` finds that bind, ``release_rootfs`` detaches it (with all below) at delete.

Safety. A mount destination comes from the config but its path runs through the image (and
volumes), which may hold symlinks such as ``/x -> /etc`` or ``-> ../../..``. Destinations are
resolved inside the rootfs (``paths.resolve_in_root``), then opened component by component
with ``O_NOFOLLOW`` (``paths.open_beneath``, which creates what is missing), and the mount is
made on ``/proc/self/fd/N`` of that descriptor: the kernel mounts on exactly the place that
was checked, even if the tree changes in between (a volume shared with a running container).
Bind *sources* are host paths (relative ones are relative to the bundle) and are trusted.

Bind mounts: the kernel ignores flags on ``MS_BIND``, so ro/nosuid/... are applied by a
``MS_BIND|MS_REMOUNT``. The mount flags the bind inherited (``statvfs`` of the source) are
kept unless an option explicitly clears them: in a user namespace nosuid/nodev/noexec/ro of
the source are locked, and dropping them fails with EPERM. The atime flags are preserved by
the kernel on a remount that does not name one. The recursive options (``rro``,
``rnosuid``...) are applied with ``mount_setattr(AT_RECURSIVE)``.

cgroup mounts. Type ``cgroup`` on a v1 or hybrid host (this one) gives what runc gives: a
tmpfs at the destination holding one mount per v1 hierarchy the process belongs to
(``cpu``, ``memory``, ``systemd``... named as on the host, comounted hierarchies get
symlinks), plus, on a hybrid host, the cgroup2 hierarchy under its host name (``unified``).
With a cgroup namespace each is a fresh ``cgroup``/``cgroup2`` mount (its root is the
namespace's root, i.e. the container's cgroup); without one, each is a bind of the
container's own directory in the host hierarchy (from ``/proc/self/cgroup``, so the init
must already be in its cgroup). Type ``cgroup`` on a pure v2 host, and type ``cgroup2``
anywhere, is a fresh ``cgroup2`` mount; if that is refused (EPERM/EBUSY: a user namespace
without a cgroup namespace) it falls back to a bind of the container's own v2 directory.
ro applies to every hierarchy, and the tmpfs is remounted read-only last.

Not supported (refused with an error naming the option): ``tmpcopyup``, idmapped mounts
(``idmap``, ``ridmap``, ``uidMappings``/``gidMappings``). ``linux.mountLabel`` is ignored
(no SELinux on the hosts we target).
"""

from __future__ import annotations

import errno as _errno
import os

from skiff.mountinfo import unescape
from skiff.runtime.cli import RuntimeFailure
from skiff.runtime.paths import fd_path, open_beneath, resolve_in_root
from skiff.runtime.syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_MOVE,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SILENT,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from skiff.oci.spec import Config, Mount
    from skiff.runtime.syscalls import Syscalls

__all__ = ["RootfsError", "MountOptions", "parse_mount_options", "prepare_rootfs", "enter_rootfs",
           "finish_rootfs", "resolve_in_root"]

MS_I_VERSION = 1 << 23
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
ST_NOSYMFOLLOW = 0x2000  # statvfs f_flag; ST_RDONLY/NOSUID/NODEV/NOEXEC equal the MS_ values

_S_IFMT = 0o170000
_S_IFDIR = 0o040000
_S_IFCHR = 0o020000
_S_IFBLK = 0o060000
_S_IFIFO = 0o010000
_S_IFLNK = 0o120000


class RootfsError(RuntimeFailure):
    """Setting up the root filesystem failed; ``errno`` is the kernel's, when there is one."""

    def __init__(self, msg: str, errno: int = 0) -> None:
        super().__init__(msg)
        self.errno = errno


# --- mount options ------------------------------------------------------------------------

# option -> flag it sets
_SET = {
    "ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
    "sync": MS_SYNCHRONOUS, "remount": MS_REMOUNT, "mand": MS_MANDLOCK, "dirsync": MS_DIRSYNC,
    "nosymfollow": MS_NOSYMFOLLOW, "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME,
    "bind": MS_BIND, "rbind": MS_BIND | MS_REC, "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME, "lazytime": MS_LAZYTIME, "silent": MS_SILENT,
    "iversion": MS_I_VERSION,
}
# option -> flag it clears
_CLEAR = {
    "rw": MS_RDONLY, "suid": MS_NOSUID, "dev": MS_NODEV, "exec": MS_NOEXEC, "async": MS_SYNCHRONOUS,
    "nomand": MS_MANDLOCK, "symfollow": MS_NOSYMFOLLOW, "atime": MS_NOATIME,
    "diratime": MS_NODIRATIME, "norelatime": MS_RELATIME, "nostrictatime": MS_STRICTATIME,
    "nolazytime": MS_LAZYTIME, "loud": MS_SILENT, "noiversion": MS_I_VERSION, "defaults": 0,
}
PROPAGATION_FLAGS = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC, "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC, "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}
# recursive option -> (attributes set, attributes cleared) for mount_setattr(AT_RECURSIVE)
_RECURSIVE = {
    "rro": (MOUNT_ATTR_RDONLY, 0), "rrw": (0, MOUNT_ATTR_RDONLY),
    "rnosuid": (MOUNT_ATTR_NOSUID, 0), "rsuid": (0, MOUNT_ATTR_NOSUID),
    "rnodev": (MOUNT_ATTR_NODEV, 0), "rdev": (0, MOUNT_ATTR_NODEV),
    "rnoexec": (MOUNT_ATTR_NOEXEC, 0), "rexec": (0, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (MOUNT_ATTR_NODIRATIME, 0), "rdiratime": (0, MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (MOUNT_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, MOUNT_ATTR_NOSYMFOLLOW),
    # the atime modes are one field: replacing it needs the whole mask in attr_clr
    "ratime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
    "rrelatime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
    "rnostrictatime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
    "rnoatime": (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
    "rstrictatime": (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
    "rnorelatime": (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
}
_UNSUPPORTED = {
    "tmpcopyup": "copying the destination's contents up into the tmpfs is not supported",
    "idmap": "idmapped mounts are not supported",
    "ridmap": "idmapped mounts are not supported",
}


class MountOptions:
    """A mount's ``options`` sorted out: ``flags`` for mount(2), ``clear`` (flags an option
    explicitly turned off: rw, suid, ...), ``propagation`` (flags applied one by one after the
    mount), ``rec_set``/``rec_clr`` (``MOUNT_ATTR_*`` for mount_setattr(AT_RECURSIVE)) and
    ``data`` (every other option, comma-joined, for the filesystem)."""

    __slots__ = ("flags", "clear", "propagation", "rec_set", "rec_clr", "data")

    def __init__(self) -> None:
        self.flags = 0
        self.clear = 0
        self.propagation: list[int] = []
        self.rec_set = 0
        self.rec_clr = 0
        self.data = ""

    def copy(self) -> MountOptions:
        o = MountOptions()
        o.flags, o.clear, o.propagation = self.flags, self.clear, list(self.propagation)
        o.rec_set, o.rec_clr, o.data = self.rec_set, self.rec_clr, self.data
        return o


def parse_mount_options(options: list[str], where: str = "mount") -> MountOptions:
    """Sort ``options`` as mount(8) does; a later option wins over an earlier opposite one.

    Raises ``RootfsError`` for an option this runtime refuses (tmpcopyup, idmap, ridmap).
    """
    o = MountOptions()
    data: list[str] = []
    for opt in options:
        f = _SET.get(opt)
        if f is not None:
            o.flags |= f
            o.clear &= ~f
            continue
        f = _CLEAR.get(opt)
        if f is not None:
            o.flags &= ~f
            o.clear |= f
            continue
        f = PROPAGATION_FLAGS.get(opt)
        if f is not None:
            o.propagation.append(f)
            continue
        r = _RECURSIVE.get(opt)
        if r is not None:
            s, c = r
            o.rec_set = (o.rec_set & ~c) | s
            o.rec_clr = (o.rec_clr & ~s) | c
            continue
        why = _UNSUPPORTED.get(opt)
        if why is not None:
            raise RootfsError(f"{where}: option {opt!r}: {why}", _errno.EINVAL)
        data.append(opt)
    o.data = ",".join(data)
    return o


def _locked(f_flag: int) -> int:
    """The per-mount flags in a statvfs ``f_flag`` that a bind remount must keep."""
    keep = f_flag & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if f_flag & ST_NOSYMFOLLOW:
        keep |= MS_NOSYMFOLLOW
    return keep


def _describe(flags: int) -> str:
    """Flags as option names, for messages: "bind,remount,ro,nosuid"."""
    for name, f in PROPAGATION_FLAGS.items():
        if flags == f:
            return name
    names = [name for name, f in _SET.items() if f and f & (f - 1) == 0 and flags & f]
    known = 0
    for name in names:
        known |= _SET[name]
    if flags & MS_REC:
        names.append("rec")
        known |= MS_REC
    if flags & ~known:
        names.append(hex(flags & ~known))
    return ",".join(names) or "no flags"


def _reason(e: OSError) -> str:
    """The why of an error, in lower case: "permission denied"."""
    from skiff.runtime.syscalls import SyscallError

    if e.errno and (isinstance(e, SyscallError) or not e.strerror):
        r = os.strerror(e.errno)
    else:
        r = e.strerror or str(e)
    return r[:1].lower() + r[1:]


def _fail(what: str, e: OSError) -> RootfsError:
    return RootfsError(f"{what}: {_reason(e)}", e.errno or 0)


# --- context --------------------------------------------------------------------------------

class _Ctx:
    __slots__ = ("sys", "config", "root", "bundle", "proc", "userns", "cgroupns", "_cgroups")

    def __init__(self, sys: Syscalls, config: Config, root: str, bundle: str, proc: str) -> None:
        self.sys = sys
        self.config = config
        self.root = root
        self.bundle = bundle
        self.proc = proc
        self.userns = config.linux.namespace("user") is not None
        self.cgroupns = config.linux.namespace("cgroup") is not None
        self._cgroups: _CgroupLayout | None = None

    def cgroups(self) -> _CgroupLayout:
        if self._cgroups is None:
            self._cgroups = _CgroupLayout(self.proc)
        return self._cgroups

    def resolve(self, dest: str, where: str) -> str:
        try:
            return resolve_in_root(self.root, dest)
        except OSError as e:
            raise _fail(f"{where}: resolve {dest} in the rootfs {self.root}", e) from None

    def open(self, host: str, dest: str, create: str, where: str) -> int:
        """An O_PATH descriptor of ``host`` (resolved ``dest``), created as ``create``."""
        try:
            return open_beneath(self.root, host, create=create)
        except OSError as e:
            verb = "create" if create else "open"
            raise _fail(f"{where}: {verb} {dest} ({host})", e) from None

    def mount(self, source: str | None, fd: int, fstype: str | None, flags: int, data: str | None,
              what: str) -> None:
        try:
            self.sys.mount(source, fd_path(fd), fstype, flags, data)
        except OSError as e:
            raise _fail(what, e) from None

    def mount_at(self, host: str, dest: str, source: str | None, fstype: str | None, flags: int,
                 data: str | None, what: str, where: str) -> None:
        """Mount on what is at ``host`` now (after an earlier mount there: the new mount)."""
        fd = self.open(host, dest, "", where)
        try:
            self.mount(source, fd, fstype, flags, data, what)
        finally:
            os.close(fd)


def _real_root(config: Config) -> str:
    if not config.root_path:
        raise RootfsError("root.path: is empty", _errno.EINVAL)
    return os.path.realpath(config.root_path)


def _clean(dest: str) -> str:
    """``dest`` as a clean absolute path (a relative one is relative to "/", as the spec says)."""
    return os.path.normpath("/" + dest.lstrip("/"))


def _is_bind(m: Mount) -> bool:
    return m.type in ("bind", "rbind") or "bind" in m.options or "rbind" in m.options


# --- prepare ------------------------------------------------------------------------------

def prepare_rootfs(sys: Syscalls, config: Config, *, no_pivot: bool = False,
                   run_hooks: Callable[[str], object] | None = None, bundle: str = "",
                   host_proc: str = "/proc", mount_ns: bool = True) -> None:
    """Steps 1-4: propagation of "/", the rootfs bind, ``config.mounts``, ``/dev``.

    Call in the init after it unshared its mount namespace (and entered its cgroup and,
    if any, its cgroup namespace: the cgroup mounts use ``/proc/self/cgroup``). ``bundle``:
    where relative bind sources are (default: the current directory, which runc's
    convention makes the bundle). ``host_proc``: where ``self/mountinfo`` and
    ``self/cgroup`` are read (tests point it at a fake tree). ``no_pivot`` changes nothing
    here (accepted so callers can pass the same arguments to every step). ``run_hooks``, if
    given, is called with ``"createContainer"`` at the end; the init's normal flow passes
    None and runs the hooks itself after the parent ran prestart/createRuntime.
    ``mount_ns`` False: the container has no mount namespace of its own (see below).
    """
    del no_pivot
    root = _real_root(config)
    prop = config.linux.rootfs_propagation
    first = MS_PRIVATE | MS_REC if prop in ("private", "rprivate") else MS_SLAVE | MS_REC
    # Without a mount namespace of its own the container shares the runtime's: its "/" is
    # not ours to change, the mounts below are made there (delete unmounts them) and
    # enter_rootfs chroots.
    if mount_ns:
        try:
            sys.mount(None, "/", None, first, None)
        except OSError as e:
            raise _fail(f"make / {'rprivate' if first & MS_PRIVATE else 'rslave'}", e) from None
    try:
        sys.mount(root, root, None, MS_BIND | MS_REC, None)
    except OSError as e:
        raise _fail(f"bind-mount the rootfs {root} onto itself", e) from None
    if not mount_ns and prop in ("private", "rprivate", "slave", "rslave"):
        try:
            sys.mount(None, root, None, PROPAGATION_FLAGS[prop], None)
        except OSError as e:
            raise _fail(f"make the rootfs {root} {prop}", e) from None
    ctx = _Ctx(sys, config, root, bundle, host_proc)
    for i, m in enumerate(config.mounts):
        _mount_entry(ctx, m, f"mounts[{i}] ({m.destination})")
    _setup_dev(ctx)
    if run_hooks is not None:
        run_hooks("createContainer")


def _mount_entry(ctx: _Ctx, m: Mount, where: str) -> None:
    if m.uid_mappings or m.gid_mappings:
        raise RootfsError(f"{where}: uidMappings/gidMappings: idmapped mounts are not supported",
                          _errno.EINVAL)
    opts = parse_mount_options(m.options, where)
    t = m.type
    if opts.flags & MS_BIND or t in ("bind", "rbind"):
        opts.flags |= MS_BIND | (MS_REC if t == "rbind" else 0)
        _bind(ctx, m.source, m.destination, opts, where)
    elif t == "cgroup":
        if ctx.cgroups().v1:
            _cgroup_v1(ctx, m, opts, where)
        else:
            _cgroup2(ctx, m, opts, where)
    elif t == "cgroup2":
        _cgroup2(ctx, m, opts, where)
    else:
        _filesystem(ctx, m, opts, where)


# filesystems a user namespace may not mount without owning the matching namespace, and the
# host directory bound instead (as runc does)
_USERNS_FALLBACK = {"sysfs": "/sys", "mqueue": "/dev/mqueue"}


def _filesystem(ctx: _Ctx, m: Mount, opts: MountOptions, where: str) -> None:
    dest = m.destination
    host = ctx.resolve(dest, where)
    t = m.type
    if t in ("proc", "sysfs") and host != ctx.root + _clean(dest):
        raise RootfsError(f"{where}: mount {t} on {dest}: the destination is a symlink in the "
                          f"rootfs (to {host[len(ctx.root):] or '/'}), refusing", _errno.ELOOP)
    source = m.source or t or "none"
    fd = ctx.open(host, dest, "dir", where)
    try:
        try:
            ctx.sys.mount(source, fd_path(fd), t or None, opts.flags, opts.data or None)
        except OSError as e:
            fallback = _USERNS_FALLBACK.get(t)
            if not (e.errno == _errno.EPERM and ctx.userns and fallback):
                raise _fail(f"{where}: mount {source} on {dest} ({host}) type {t or 'none'}", e) from None
        else:
            fallback = None
    finally:
        os.close(fd)
    if fallback:
        bopts = opts.copy()
        bopts.flags |= MS_BIND | MS_REC
        _bind(ctx, fallback, dest, bopts, where + f" (bind of {fallback}: {t} cannot be mounted "
              "in this user namespace)")
        return
    _after(ctx, host, dest, opts, where)


def _bind(ctx: _Ctx, source: str, dest: str, opts: MountOptions, where: str) -> None:
    if not source:
        raise RootfsError(f"{where}: a bind mount needs a source", _errno.EINVAL)
    src = source if source.startswith("/") else os.path.join(ctx.bundle or os.getcwd(), source)
    try:
        is_dir = os.stat(src).st_mode & _S_IFMT == _S_IFDIR
    except OSError as e:
        raise _fail(f"{where}: bind source {src}", e) from None
    host = ctx.resolve(dest, where)
    fd = ctx.open(host, dest, "dir" if is_dir else "file", where)
    try:
        ctx.mount(src, fd, None, MS_BIND | (opts.flags & MS_REC), None,
                  f"{where}: bind-mount {src} on {dest} ({host})")
    finally:
        os.close(fd)
    extra = opts.flags & ~(MS_BIND | MS_REC | MS_REMOUNT)
    if extra:
        try:
            keep = _locked(os.statvfs(src).f_flag) & ~opts.clear
        except OSError as e:
            raise _fail(f"{where}: statvfs {src}", e) from None
        flags = MS_BIND | MS_REMOUNT | extra | keep
        ctx.mount_at(host, dest, None, None, flags, None,
                     f"{where}: remount the bind mount {dest} ({host}) {_describe(flags)}", where)
    _after(ctx, host, dest, opts, where)


def _after(ctx: _Ctx, host: str, dest: str, opts: MountOptions, where: str) -> None:
    """Recursive attributes and propagation, on the mount now at ``host``."""
    if not (opts.rec_set or opts.rec_clr or opts.propagation):
        return
    fd = ctx.open(host, dest, "", where)
    try:
        if opts.rec_set or opts.rec_clr:
            try:
                ctx.sys.mount_setattr(fd_path(fd), AT_RECURSIVE, opts.rec_set, opts.rec_clr, 0)
            except OSError as e:
                raise _fail(f"{where}: set recursive mount attributes on {dest} ({host})", e) from None
        for flag in opts.propagation:
            ctx.mount(None, fd, None, flag, None,
                      f"{where}: make {dest} ({host}) {_describe(flag)}")
    finally:
        os.close(fd)


# --- cgroups --------------------------------------------------------------------------------

_CG1_NOT_CONTROLLERS = frozenset(("rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode",
                                  "all", "none", "favordynmods", "nofavordynmods"))


class _CgroupLayout:
    """The host's cgroup mounts and this process's cgroups, from ``<proc>/self/``.

    ``v1``: ``(name, controllers, host mountpoint, bind source)`` per v1 hierarchy this
    process is in (name: the host mountpoint's base name; controllers: the mount data, e.g.
    ``cpu,cpuacct`` or ``name=systemd``). ``v2``: ``(name, host mountpoint, bind source)`` or
    None.
    """

    __slots__ = ("v1", "v2")

    def __init__(self, proc: str) -> None:
        paths: dict[str, str] = {}
        try:
            with open(proc + "/self/cgroup") as f:
                for line in f:
                    _, names, path = line.rstrip("\n").split(":", 2)
                    paths[",".join(sorted(names.split(","))) if names else ""] = path
            with open(proc + "/self/mountinfo") as f:
                mountinfo = f.read()
        except OSError as e:
            raise _fail(f"read the cgroup layout from {proc}/self", e) from None
        self.v1: list[tuple[str, str, str, str]] = []
        self.v2: tuple[str, str, str] | None = None
        seen = set()
        for line in mountinfo.splitlines():
            sep = line.find(" - ")
            if sep < 0:
                continue
            right = line[sep + 3:].split(" ")
            fstype = right[0]
            if fstype != "cgroup" and fstype != "cgroup2":
                continue
            left = line[:sep].split(" ")
            mroot, mountpoint = unescape(left[3]), unescape(left[4])
            if fstype == "cgroup":
                ctrls = [o for o in right[2].split(",") if o.startswith("name=")
                         or ("=" not in o and o not in _CG1_NOT_CONTROLLERS)]
                key = ",".join(sorted(ctrls))
                if key in seen or key not in paths:
                    continue
                seen.add(key)
                self.v1.append((os.path.basename(mountpoint), ",".join(ctrls), mountpoint,
                                _join_cgroup(mountpoint, mroot, paths[key])))
            elif self.v2 is None and "" in paths:
                self.v2 = (os.path.basename(mountpoint), mountpoint,
                           _join_cgroup(mountpoint, mroot, paths[""]))


def _join_cgroup(mountpoint: str, mroot: str, path: str) -> str:
    """The host directory of cgroup ``path`` in a hierarchy mounted at ``mountpoint``
    (whose root in the hierarchy is ``mroot``)."""
    mroot = mroot.rstrip("/")
    if mroot and (path == mroot or path.startswith(mroot + "/")):
        path = path[len(mroot):]
    return mountpoint.rstrip("/") + path.rstrip("/") if path != "/" else mountpoint


def _cgroup_v1(ctx: _Ctx, m: Mount, opts: MountOptions, where: str) -> None:
    layout = ctx.cgroups()
    dest = m.destination.rstrip("/") or "/"
    ro = opts.flags & MS_RDONLY
    flags = opts.flags & ~(MS_RDONLY | MS_REMOUNT | MS_BIND | MS_REC)
    host = ctx.resolve(dest, where)
    fd = ctx.open(host, dest, "dir", where)
    try:
        ctx.mount("tmpfs", fd, "tmpfs", flags, "mode=755",
                  f"{where}: mount tmpfs on {dest} ({host}) for the cgroup hierarchies")
    finally:
        os.close(fd)
    links: list[tuple[str, str]] = []
    for name, ctrls, _mountpoint, source in layout.v1:
        sub = dest.rstrip("/") + "/" + name
        if ctx.cgroupns:
            # source: "cgroup", or the name of a named hierarchy (runc: "systemd")
            source = ctrls[5:] if ctrls.startswith("name=") else "cgroup"
            _fresh(ctx, source, sub, "cgroup", flags | ro, ctrls, where)
        else:
            _bind_cgroup(ctx, source, sub, flags | ro, where)
        links.extend((c, name) for c in ctrls.split(",") if c != name and not c.startswith("name="))
    if layout.v2 is not None:
        name, _mountpoint, source = layout.v2
        sub = dest.rstrip("/") + "/" + name
        if ctx.cgroupns:
            _fresh(ctx, "cgroup2", sub, "cgroup2", flags | ro, None, where)
        else:
            _bind_cgroup(ctx, source, sub, flags | ro, where)
    if links or ro:
        fd = ctx.open(host, dest, "", where)
        try:
            for link, target in links:
                try:
                    os.symlink(target, link, dir_fd=fd)
                except FileExistsError:
                    pass
                except OSError as e:
                    raise _fail(f"{where}: symlink {dest}/{link} -> {target}", e) from None
            if ro:
                ctx.mount(None, fd, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags, None,
                          f"{where}: remount the cgroup tmpfs {dest} ({host}) read-only")
        finally:
            os.close(fd)
    _after(ctx, host, dest, opts, where)


def _fresh(ctx: _Ctx, source: str, dest: str, fstype: str, flags: int, data: str | None,
           where: str) -> None:
    host = ctx.resolve(dest, where)
    fd = ctx.open(host, dest, "dir", where)
    try:
        ctx.mount(source, fd, fstype, flags, data,
                  f"{where}: mount {fstype}{' ' + data if data else ''} on {dest} ({host})")
    finally:
        os.close(fd)


def _bind_cgroup(ctx: _Ctx, source: str, dest: str, flags: int, where: str) -> None:
    o = MountOptions()
    o.flags = MS_BIND | MS_REC | flags
    _bind(ctx, source, dest, o, where)


def _cgroup2(ctx: _Ctx, m: Mount, opts: MountOptions, where: str) -> None:
    dest = m.destination
    host = ctx.resolve(dest, where)
    flags = opts.flags & ~(MS_BIND | MS_REC)
    fd = ctx.open(host, dest, "dir", where)
    try:
        try:
            ctx.sys.mount(m.source or "cgroup2", fd_path(fd), "cgroup2", flags, opts.data or None)
            refused = False
        except OSError as e:
            if e.errno not in (_errno.EPERM, _errno.EBUSY) or ctx.cgroupns:
                raise _fail(f"{where}: mount cgroup2 on {dest} ({host})", e) from None
            refused = True
    finally:
        os.close(fd)
    if refused:
        v2 = ctx.cgroups().v2
        if v2 is None:
            raise RootfsError(f"{where}: mount cgroup2 on {dest} ({host}): refused, and the host "
                              "has no cgroup2 hierarchy to bind instead", _errno.EPERM)
        _bind_cgroup(ctx, v2[2], dest, flags, where + " (bind: cgroup2 cannot be mounted here)")
    _after(ctx, host, dest, opts, where)


# --- /dev ---------------------------------------------------------------------------------

# in runc's order (its AllowedDevices): the order of the binds in a user namespace shows
_DEFAULT_DEVICES = (("null", 1, 3), ("random", 1, 8), ("full", 1, 7), ("tty", 5, 0),
                    ("zero", 1, 5), ("urandom", 1, 9))
_DEV_SYMLINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                 ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                 ("core", "/proc/kcore"), ("ptmx", "pts/ptmx"))
_DEVICE_TYPES = {"c": _S_IFCHR, "u": _S_IFCHR, "b": _S_IFBLK, "p": _S_IFIFO}
_TYPE_NAMES = {_S_IFCHR: "a character device", _S_IFBLK: "a block device", _S_IFIFO: "a fifo",
               _S_IFDIR: "a directory", _S_IFLNK: "a symlink", 0o100000: "a regular file",
               0o140000: "a socket"}


def _setup_dev(ctx: _Ctx) -> None:
    """The default devices and symlinks when /dev is not a bind mount; ``linux.devices``."""
    dev_bind = False
    for m in ctx.config.mounts:
        if _clean(m.destination) == "/dev":
            dev_bind = _is_bind(m)
    # (path, type, major, minor, mode, uid, gid); later entries for a path win
    wanted: dict[str, tuple[str, int, int, int, int | None, int | None]] = {}
    if not dev_bind:
        for name, major, minor in _DEFAULT_DEVICES:
            wanted["/dev/" + name] = ("c", major, minor, 0o666, None, None)
    for d in ctx.config.linux.devices:
        path = _clean(d.path)
        if dev_bind and path.startswith("/dev/"):
            continue  # the host's /dev is there: never create nodes in it
        mode = 0o666 if d.file_mode is None else d.file_mode & 0o7777
        wanted[path] = (d.type, d.major, d.minor, mode, d.uid, d.gid)
    if dev_bind and not wanted:
        return
    old_umask = os.umask(0)
    try:
        for path, spec in wanted.items():
            _device(ctx, path, *spec)
        if not dev_bind:
            _dev_links(ctx)
    finally:
        os.umask(old_umask)


def _device(ctx: _Ctx, path: str, dtype: str, major: int, minor: int, mode: int,
            uid: int | None, gid: int | None) -> None:
    where = f"device {path}"
    host = ctx.resolve(path, where)
    parent, name = host.rsplit("/", 1)
    if not name:
        raise RootfsError(f"{where}: not a file path", _errno.EINVAL)
    ifmt = _DEVICE_TYPES[dtype]
    try:
        rdev = os.makedev(major, minor) if ifmt != _S_IFIFO else 0
    except (OverflowError, ValueError):
        raise RootfsError(f"{where}: invalid device number {major}:{minor}", _errno.EINVAL) from None
    pfd = ctx.open(parent or "/", path.rsplit("/", 1)[0] or "/", "dir", where)
    try:
        target = fd_path(pfd) + "/" + name
        # in a user namespace mknod is refused (fifos excepted): bind the host's node
        bind = ctx.userns and ifmt != _S_IFIFO
        if not bind:
            try:
                ctx.sys.mknod(target, ifmt | mode, rdev)
            except OSError as e:
                if e.errno == _errno.EEXIST:
                    _check_existing(pfd, name, host, where, ifmt, major, minor)
                    _fix_mode(target, mode, where, host)
                elif e.errno == _errno.EPERM and ifmt != _S_IFIFO:
                    bind = True  # no CAP_MKNOD
                else:
                    raise _fail(f"{where}: mknod {host}", e) from None
            if not bind and (uid is not None or gid is not None):
                try:
                    ctx.sys.chown(target, -1 if uid is None else uid, -1 if gid is None else gid)
                except OSError as e:
                    raise _fail(f"{where}: chown {host} to {uid}:{gid}", e) from None
        if bind:
            _bind_device(ctx, pfd, name, path, host, where)
    finally:
        os.close(pfd)


def _check_existing(pfd: int, name: str, host: str, where: str, ifmt: int, major: int,
                    minor: int) -> None:
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except OSError as e:
        raise _fail(f"{where}: stat {host}", e) from None
    kind = st.st_mode & _S_IFMT
    if kind == ifmt and (ifmt == _S_IFIFO or st.st_rdev == os.makedev(major, minor)):
        return
    wanted = _TYPE_NAMES[ifmt] + ("" if ifmt == _S_IFIFO else f" {major}:{minor}")
    found = _TYPE_NAMES.get(kind, "a file")
    if kind in (_S_IFCHR, _S_IFBLK):
        found += f" {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    raise RootfsError(f"{where}: {host} already exists and is {found}, not {wanted}", _errno.EEXIST)


def _fix_mode(target: str, mode: int, where: str, host: str) -> None:
    try:
        if os.stat(target, follow_symlinks=False).st_mode & 0o7777 != mode:
            os.chmod(target, mode)
    except OSError as e:
        raise _fail(f"{where}: chmod {host} to {mode:o}", e) from None


def _bind_device(ctx: _Ctx, pfd: int, name: str, path: str, host: str, where: str) -> None:
    try:
        ffd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                      dir_fd=pfd)
    except FileExistsError:
        try:
            ffd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        except OSError as e:
            raise _fail(f"{where}: open {host}", e) from None
        if os.fstat(ffd).st_mode & _S_IFMT == _S_IFLNK:
            os.close(ffd)
            raise RootfsError(f"{where}: {host} is a symlink", _errno.ELOOP) from None
    except OSError as e:
        raise _fail(f"{where}: create {host} to bind the host's node on", e) from None
    try:
        ctx.mount(path, ffd, None, MS_BIND, None, f"{where}: bind-mount {path} on {host}")
    finally:
        os.close(ffd)


def _dev_links(ctx: _Ctx) -> None:
    host = ctx.resolve("/dev", "/dev")
    fd = ctx.open(host, "/dev", "dir", "/dev")
    try:
        for name, target in _DEV_SYMLINKS:
            if name == "core" and not os.path.exists(ctx.proc + "/kcore"):
                continue  # as runc: no dangling link when the kernel has no /proc/kcore
            try:
                os.symlink(target, name, dir_fd=fd)
            except FileExistsError:
                if name != "ptmx":
                    continue  # the image's own: keep it
                try:
                    if os.readlink(name, dir_fd=fd) == target:
                        continue
                except OSError:
                    pass
                try:
                    os.unlink(name, dir_fd=fd)
                    os.symlink(target, name, dir_fd=fd)
                except OSError as e:
                    raise _fail(f"replace {host}/{name} with a symlink to {target}", e) from None
            except OSError as e:
                raise _fail(f"symlink {host}/{name} -> {target}", e) from None
        process = ctx.config.process
        if process is not None and process.terminal:
            try:
                os.close(os.open("console", os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o666, dir_fd=fd))
            except FileExistsError:
                pass
            except OSError as e:
                raise _fail(f"create {host}/console", e) from None
    finally:
        os.close(fd)


# --- enter ------------------------------------------------------------------------------

_AFTER_PIVOT = {"shared": MS_SHARED, "rshared": MS_SHARED | MS_REC, "unbindable": MS_UNBINDABLE,
                "runbindable": MS_UNBINDABLE | MS_REC}


def enter_rootfs(sys: Syscalls, config: Config, *, no_pivot: bool = False,
                 mount_ns: bool = True) -> None:
    """Make the rootfs "/" (pivot_root, or MS_MOVE + chroot; only chroot without a mount
    namespace, ``mount_ns`` False) and chdir("/").

    Then applies ``rootfsPropagation`` shared/unbindable to the new "/" (private and slave
    were applied to the whole tree by ``prepare_rootfs``; shared is applied only now, to the
    container's tree, so the host's peer groups are never joined).
    """
    root = _real_root(config)
    step = ""
    try:
        step = f"chdir {root}"
        sys.chdir(root)
        if not mount_ns:
            # the runtime's mount namespace: pivot_root or MS_MOVE would change the root of
            # every process in it
            step = f"chroot {root} (no mount namespace)"
            sys.chroot(".")
        elif no_pivot:
            step = f"move the rootfs {root} onto /"
            sys.mount(root, "/", None, MS_MOVE, None)
            step = f"chroot {root}"
            sys.chroot(".")
        else:
            step = f"pivot_root into {root}"
            sys.pivot_root(".", ".")
            step = "detach the old root"
            sys.umount2(".", MNT_DETACH)
        step = "chdir / in the new root"
        sys.chdir("/")
        flag = _AFTER_PIVOT.get(config.linux.rootfs_propagation)
        if flag is not None:
            step = f"make / {config.linux.rootfs_propagation}"
            sys.mount(None, "/", None, flag, None)
    except OSError as e:
        raise _fail(step, e) from None


# --- finish -------------------------------------------------------------------------------

def finish_rootfs(sys: Syscalls, config: Config, *, root: str = "/") -> None:
    """After the pivot (and the sysctls): readonlyPaths, maskedPaths, the read-only root.

    runc's order: a masked path below a read-only one (``/proc/sys/x`` under ``/proc/sys``)
    is masked on top of the read-only bind, not hidden under it.

    ``root`` is "/" in the container; tests point it at a tree. Missing paths are skipped.
    """
    base = root.rstrip("/")
    lx = config.linux
    for p in lx.readonly_paths:
        path = base + _clean(p)
        try:
            keep = _locked(os.statvfs(path).f_flag)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise _fail(f"readonlyPaths: statvfs {p}", e) from None
        try:
            sys.mount(path, path, None, MS_BIND | MS_REC, None)
        except OSError as e:
            raise _fail(f"readonlyPaths: bind-mount {p} onto itself", e) from None
        try:
            sys.mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | keep, None)
        except OSError as e:
            raise _fail(f"readonlyPaths: remount {p} read-only", e) from None
    for p in lx.masked_paths:
        path = base + _clean(p)
        try:
            is_dir = os.stat(path).st_mode & _S_IFMT == _S_IFDIR
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise _fail(f"maskedPaths: stat {p}", e) from None
        try:
            if is_dir:
                sys.mount("tmpfs", path, "tmpfs", MS_RDONLY, None)
            else:
                sys.mount(base + "/dev/null", path, None, MS_BIND, None)
        except OSError as e:
            raise _fail(f"maskedPaths: mask {p} with "
                        f"{'a read-only tmpfs' if is_dir else '/dev/null'}", e) from None
    if config.root_readonly:
        top = base or "/"
        try:
            keep = _locked(os.statvfs(top).f_flag)
            sys.mount(None, top, None, MS_BIND | MS_REMOUNT | MS_RDONLY | keep, None)
        except OSError as e:
            raise _fail("root.readonly: remount / read-only", e) from None


# --- without a mount namespace -------------------------------------------------------------

def top_mount_id(path: str, mountinfo: str) -> int:
    """The ID of the mount on top at ``path`` (absolute, clean) in a ``/proc/PID/mountinfo``
    text, or 0 when nothing is mounted there. With mounts stacked at ``path``, the top one is
    the one that is no other's parent."""
    at: dict[int, int] = {}  # mount ID -> parent ID, for the mounts at path
    order: list[int] = []
    for line in mountinfo.splitlines():
        f = line.split(" ", 5)
        if len(f) > 4 and unescape(f[4]) == path:
            at[int(f[0])] = int(f[1])
            order.append(int(f[0]))
    parents = set(at.values())
    tops = [m for m in order if m not in parents]
    return tops[-1] if tops else 0


def rootfs_mount_id(config: Config, proc: str = "/proc") -> int:
    """For a container without a mount namespace, after its init set the rootfs up: the ID of
    the rootfs bind ``prepare_rootfs`` made in the runtime's mount namespace (``proc``: where
    ``self/mountinfo`` is read)."""
    root = _real_root(config)
    try:
        with open(proc + "/self/mountinfo") as f:
            info = f.read()
    except OSError as e:
        raise _fail(f"read {proc}/self/mountinfo to find the rootfs mount {root}", e) from None
    return top_mount_id(root, info)


def release_rootfs(sys: Syscalls, root: str, mount_id: int, proc: str = "/proc") -> bool:
    """Detach the rootfs bind ``mount_id`` at ``root`` (with everything mounted below it: the
    container's mounts) from the runtime's mount namespace, if it is still the top mount
    there. Returns whether it detached it. For containers without a mount namespace, at
    delete (or when create fails)."""
    root = os.path.realpath(root)
    try:
        with open(proc + "/self/mountinfo") as f:
            info = f.read()
    except OSError as e:
        raise _fail(f"read {proc}/self/mountinfo to release the rootfs mount {root}", e) from None
    if not mount_id or top_mount_id(root, info) != mount_id:
        return False  # gone already, or covered by a mount that is not ours
    try:
        sys.umount2(root, MNT_DETACH)
    except OSError as e:
        raise _fail(f"detach the rootfs mount {root} (mount {mount_id})", e) from None
    return True
