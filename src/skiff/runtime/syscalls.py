"""The one seam through which the runtime makes kernel calls.

Every namespace, mount, credential and capability call goes through a ``Syscalls`` object:
``LinuxSyscalls`` makes the real call (libc through ``clib``, a lean ctypes, since Python 3.11's ``os`` has no
``unshare``/``setns``/``mount``); ``RecordingSyscalls`` records the call and succeeds, so
the setup code can be unit-tested without root by asserting the sequence of calls.

Plain file reads and writes (``/proc``, cgroupfs) are not syscalls in this sense; they take a
root directory instead, which tests point at a temporary tree.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# clone/unshare flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NAMESPACE_FLAGS = {
    "user": CLONE_NEWUSER, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS, "network": CLONE_NEWNET,
    "pid": CLONE_NEWPID, "mount": CLONE_NEWNS, "cgroup": CLONE_NEWCGROUP, "time": CLONE_NEWTIME,
}
# names under /proc/PID/ns/
NAMESPACE_PROC_NAMES = {
    "user": "user", "ipc": "ipc", "uts": "uts", "network": "net", "pid": "pid", "mount": "mnt",
    "cgroup": "cgroup", "time": "time",
}

# mount flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# prctl options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYSCALL_NUMBERS = {
    "x86_64": {"pivot_root": 155, "setns": 308, "unshare": 272},
    "aarch64": {"pivot_root": 41, "setns": 268, "unshare": 97},
}


_BPF_NR = {"x86_64": 321, "aarch64": 280}


class SyscallError(OSError):
    """A failed kernel call; the message names the call and its arguments."""


class Syscalls:
    """The interface. Methods raise ``OSError`` (``SyscallError``) on failure."""

    def unshare(self, flags: int) -> None:
        raise NotImplementedError

    def setns(self, fd: int, nstype: int) -> None:
        raise NotImplementedError

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None) -> None:
        raise NotImplementedError

    def umount2(self, target: str, flags: int) -> None:
        raise NotImplementedError

    def mount_setattr(self, path: str, flags: int, attr_set: int, attr_clr: int,
                      propagation: int = 0) -> None:
        """mount_setattr(2) on ``path`` (dirfd AT_FDCWD); ``flags`` e.g. AT_RECURSIVE."""
        raise NotImplementedError

    def pivot_root(self, new_root: str, put_old: str) -> None:
        raise NotImplementedError

    def chroot(self, path: str) -> None:
        raise NotImplementedError

    def chdir(self, path: str) -> None:
        raise NotImplementedError

    def sethostname(self, name: str) -> None:
        raise NotImplementedError

    def setdomainname(self, name: str) -> None:
        raise NotImplementedError

    def mknod(self, path: str, mode: int, device: int) -> None:
        raise NotImplementedError

    def chown(self, path: str, uid: int, gid: int) -> None:
        raise NotImplementedError

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        raise NotImplementedError

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        raise NotImplementedError

    def capget(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def setgroups(self, gids: list[int]) -> None:
        raise NotImplementedError

    def setresgid(self, gid: int) -> None:
        raise NotImplementedError

    def setresuid(self, uid: int) -> None:
        raise NotImplementedError

    def setrlimit(self, resource: int, soft: int, hard: int) -> None:
        raise NotImplementedError

    def personality(self, persona: int) -> None:
        raise NotImplementedError

    def setsid(self) -> None:
        raise NotImplementedError

    def umask(self, mask: int) -> None:
        raise NotImplementedError

    def set_link_up(self, name: str) -> None:
        """Bring the network interface ``name`` of the current network namespace up."""
        raise NotImplementedError

    # cgroup manager: signals and bpf(2) for cgroup v2 device programs
    def kill(self, pid: int, sig: int) -> None:
        raise NotImplementedError

    def bpf_prog_load(self, prog_type: int, insns: bytes, license: str, name: str = "") -> int:
        """Load an eBPF program; return its fd (close-on-exec)."""
        raise NotImplementedError

    def bpf_prog_attach(self, target_fd: int, prog_fd: int, attach_type: int, flags: int) -> None:
        raise NotImplementedError

    def bpf_prog_detach(self, target_fd: int, prog_fd: int, attach_type: int) -> None:
        raise NotImplementedError

    def bpf_prog_query(self, target_fd: int, attach_type: int) -> list[int]:
        """The ids of the programs attached to ``target_fd`` for ``attach_type``."""
        raise NotImplementedError

    def bpf_prog_get_fd_by_id(self, prog_id: int) -> int:
        raise NotImplementedError


class LinuxSyscalls(Syscalls):
    """The real calls, through libc."""

    def __init__(self) -> None:
        import resource

        from skiff.runtime import clib  # ctypes' essentials, without ctypes' import cost

        self._ctypes = clib
        self._resource = resource
        self._libc = clib.Library(None)
        self._nr = _SYSCALL_NUMBERS.get(os.uname().machine, {})

    def _check(self, rc: int, what: str) -> int:
        if rc < 0:
            err = self._ctypes.get_errno()
            raise SyscallError(err, f"{what}: {os.strerror(err)}")
        return rc

    def unshare(self, flags: int) -> None:
        self._check(self._libc.unshare(flags), f"unshare({flags:#x})")

    def setns(self, fd: int, nstype: int) -> None:
        self._check(self._libc.setns(fd, nstype), f"setns(fd {fd}, {nstype:#x})")

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None) -> None:
        c = self._ctypes
        self._check(
            self._libc.mount(
                source.encode() if source is not None else None, target.encode(),
                fstype.encode() if fstype is not None else None, c.c_ulong(flags),
                data.encode() if data else None),
            f"mount {source or 'none'} on {target} (type {fstype or 'none'}, flags {flags:#x}"
            + (f", data {data!r})" if data else ")"))

    def umount2(self, target: str, flags: int) -> None:
        self._check(self._libc.umount2(target.encode(), flags), f"umount {target}")

    def mount_setattr(self, path: str, flags: int, attr_set: int, attr_clr: int,
                      propagation: int = 0) -> None:
        c = self._ctypes
        # struct mount_attr {u64 attr_set, attr_clr, propagation, userns_fd}; the syscall
        # number is 442 on every architecture (allocated after the tables were unified)
        attr = (c.c_uint64 * 4)(attr_set, attr_clr, propagation, 0)
        self._libc.syscall.restype = c.c_long
        self._check(self._libc.syscall(c.c_long(442), c.c_int(-100), path.encode(), c.c_uint(flags),
                                       c.byref(attr), c.c_size_t(32)),
                    f"mount_setattr {path} (set {attr_set:#x}, clear {attr_clr:#x})")

    def pivot_root(self, new_root: str, put_old: str) -> None:
        nr = self._nr.get("pivot_root")
        if nr is None:
            raise SyscallError(38, f"pivot_root: unknown syscall number on {os.uname().machine}")
        c = self._ctypes
        self._libc.syscall.restype = c.c_long
        self._check(self._libc.syscall(c.c_long(nr), new_root.encode(), put_old.encode()),
                    f"pivot_root({new_root}, {put_old})")

    def chroot(self, path: str) -> None:
        os.chroot(path)

    def chdir(self, path: str) -> None:
        os.chdir(path)

    def sethostname(self, name: str) -> None:
        b = name.encode()
        self._check(self._libc.sethostname(b, len(b)), f"sethostname({name!r})")

    def setdomainname(self, name: str) -> None:
        b = name.encode()
        self._check(self._libc.setdomainname(b, len(b)), f"setdomainname({name!r})")

    def mknod(self, path: str, mode: int, device: int) -> None:
        os.mknod(path, mode, device)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(path, uid, gid, follow_symlinks=False)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        c = self._ctypes
        return self._check(
            self._libc.prctl(c.c_int(option), c.c_ulong(arg2), c.c_ulong(arg3), c.c_ulong(arg4),
                             c.c_ulong(arg5)),
            f"prctl({option}, {arg2})")

    def _cap_structs(self) -> tuple[Any, Any]:
        c = self._ctypes
        header = type("CapHeader", (c.Structure,), {"_fields_": [("version", c.c_uint32), ("pid", c.c_int)]})
        data = type("CapData", (c.Structure,), {"_fields_": [
            ("effective", c.c_uint32), ("permitted", c.c_uint32), ("inheritable", c.c_uint32)]})
        return header, data

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        Header, Data = self._cap_structs()
        hdr = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
        data = (Data * 2)()
        for i in (0, 1):
            data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
            data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
            data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
        self._check(self._libc.capset(self._ctypes.byref(hdr), data), "capset")

    def capget(self) -> tuple[int, int, int]:
        Header, Data = self._cap_structs()
        hdr = Header(0x20080522, 0)
        data = (Data * 2)()
        self._check(self._libc.capget(self._ctypes.byref(hdr), data), "capget")
        return (data[0].effective | data[1].effective << 32,
                data[0].permitted | data[1].permitted << 32,
                data[0].inheritable | data[1].inheritable << 32)

    def setgroups(self, gids: list[int]) -> None:
        os.setgroups(gids)

    def setresgid(self, gid: int) -> None:
        os.setresgid(gid, gid, gid)

    def setresuid(self, uid: int) -> None:
        os.setresuid(uid, uid, uid)

    def setrlimit(self, resource: int, soft: int, hard: int) -> None:
        self._resource.prlimit(0, resource, (soft, hard))

    def personality(self, persona: int) -> None:
        self._check(self._libc.personality(self._ctypes.c_ulong(persona)), f"personality({persona:#x})")

    def setsid(self) -> None:
        os.setsid()

    def umask(self, mask: int) -> None:
        os.umask(mask)

    def set_link_up(self, name: str) -> None:
        import _socket
        import fcntl
        import struct

        siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
        try:
            ifr = struct.pack("16sH22x", name.encode(), 0)  # struct ifreq: name, then ifr_flags
            flags = struct.unpack_from("16sH", fcntl.ioctl(s.fileno(), siocgifflags, ifr))[1]
            if not flags & iff_up:
                fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sH22x", name.encode(), flags | iff_up))
        except OSError as e:
            raise SyscallError(e.errno, f"set link {name} up: {e.strerror}") from None
        finally:
            s.close()

    def kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    def _bpf(self, cmd: int, attr: object, what: str) -> int:
        c = self._ctypes
        nr = _BPF_NR.get(os.uname().machine)
        if nr is None:
            raise SyscallError(38, f"{what}: unknown bpf syscall number on {os.uname().machine}")
        self._libc.syscall.restype = c.c_long
        rc = self._libc.syscall(c.c_long(nr), c.c_int(cmd), attr, c.c_uint(c.sizeof(attr)))
        return self._check(rc, what)

    def bpf_prog_load(self, prog_type: int, insns: bytes, license: str, name: str = "") -> int:
        import struct

        c = self._ctypes
        code = c.create_string_buffer(insns, len(insns))
        lic = c.create_string_buffer(license.encode())
        log = c.create_string_buffer(0)
        for log_size in (0, 1 << 16):
            attr = c.create_string_buffer(128)
            if log_size:
                log = c.create_string_buffer(log_size)
            struct.pack_into("<IIQQIIQII", attr, 0, prog_type, len(insns) // 8, c.addressof(code),
                             c.addressof(lic), 1 if log_size else 0, log_size,
                             c.addressof(log) if log_size else 0, 0, 0)
            attr[48:48 + min(len(name), 15)] = name.encode()[:15]
            try:
                return self._bpf(5, attr, f"bpf(BPF_PROG_LOAD, type {prog_type})")
            except SyscallError as e:
                if log_size or e.errno not in (1, 13, 22):  # EPERM, EACCES, EINVAL: get the log
                    text = log.value.decode(errors="replace").strip().splitlines()[-3:]
                    if text:
                        raise SyscallError(e.errno, f"{e.strerror}; verifier: {' / '.join(text)}") from None
                    raise
        raise AssertionError("unreachable")

    def _bpf_attach_attr(self, target_fd: int, prog_fd: int, attach_type: int, flags: int):
        import struct

        attr = self._ctypes.create_string_buffer(32)
        struct.pack_into("<IIIII", attr, 0, target_fd, prog_fd, attach_type, flags, 0)
        return attr

    def bpf_prog_attach(self, target_fd: int, prog_fd: int, attach_type: int, flags: int) -> None:
        self._bpf(8, self._bpf_attach_attr(target_fd, prog_fd, attach_type, flags),
                  f"bpf(BPF_PROG_ATTACH, fd {target_fd}, prog fd {prog_fd}, type {attach_type})")

    def bpf_prog_detach(self, target_fd: int, prog_fd: int, attach_type: int) -> None:
        self._bpf(9, self._bpf_attach_attr(target_fd, prog_fd, attach_type, 0),
                  f"bpf(BPF_PROG_DETACH, fd {target_fd}, prog fd {prog_fd}, type {attach_type})")

    def bpf_prog_query(self, target_fd: int, attach_type: int) -> list[int]:
        import struct

        c = self._ctypes
        n = 64
        while True:
            ids = (c.c_uint32 * n)()
            attr = c.create_string_buffer(40)
            struct.pack_into("<IIIIQI", attr, 0, target_fd, attach_type, 0, 0, c.addressof(ids), n)
            try:
                self._bpf(16, attr, f"bpf(BPF_PROG_QUERY, fd {target_fd}, type {attach_type})")
            except SyscallError as e:
                if e.errno == 28 and n < 65536:  # ENOSPC: more programs than room
                    n *= 4
                    continue
                raise
            count = struct.unpack_from("<I", attr, 24)[0]
            return list(ids[:count])

    def bpf_prog_get_fd_by_id(self, prog_id: int) -> int:
        import struct

        attr = self._ctypes.create_string_buffer(16)
        struct.pack_into("<III", attr, 0, prog_id, 0, 0)
        return self._bpf(13, attr, f"bpf(BPF_PROG_GET_FD_BY_ID, id {prog_id})")


class RecordingSyscalls(Syscalls):
    """Records every call as a tuple ``(name, *args)`` and succeeds.

    ``fail`` maps a call name to an errno: that call raises ``SyscallError`` instead
    (for testing error paths). ``caps`` is what ``capget`` returns.
    """

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail = fail or {}
        self.caps = (0, 0, 0)

    def _rec(self, name: str, *args: object) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            err = self.fail[name]
            raise SyscallError(err, f"{name}: {os.strerror(err)}")

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def unshare(self, flags: int) -> None:
        self._rec("unshare", flags)

    def setns(self, fd: int, nstype: int) -> None:
        self._rec("setns", fd, nstype)

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None) -> None:
        self._rec("mount", source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int) -> None:
        self._rec("umount2", target, flags)

    def mount_setattr(self, path: str, flags: int, attr_set: int, attr_clr: int,
                      propagation: int = 0) -> None:
        self._rec("mount_setattr", path, flags, attr_set, attr_clr, propagation)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._rec("pivot_root", new_root, put_old)

    def chroot(self, path: str) -> None:
        self._rec("chroot", path)

    def chdir(self, path: str) -> None:
        self._rec("chdir", path)

    def sethostname(self, name: str) -> None:
        self._rec("sethostname", name)

    def setdomainname(self, name: str) -> None:
        self._rec("setdomainname", name)

    def mknod(self, path: str, mode: int, device: int) -> None:
        self._rec("mknod", path, mode, device)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._rec("chown", path, uid, gid)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        self._rec("prctl", option, arg2, arg3, arg4, arg5)
        return 1 if option == PR_CAPBSET_READ else 0

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self._rec("capset", effective, permitted, inheritable)
        self.caps = (effective, permitted, inheritable)

    def capget(self) -> tuple[int, int, int]:
        self._rec("capget")
        return self.caps

    def setgroups(self, gids: list[int]) -> None:
        self._rec("setgroups", list(gids))

    def setresgid(self, gid: int) -> None:
        self._rec("setresgid", gid)

    def setresuid(self, uid: int) -> None:
        self._rec("setresuid", uid)

    def setrlimit(self, resource: int, soft: int, hard: int) -> None:
        self._rec("setrlimit", resource, soft, hard)

    def personality(self, persona: int) -> None:
        self._rec("personality", persona)

    def setsid(self) -> None:
        self._rec("setsid")

    def umask(self, mask: int) -> None:
        self._rec("umask", mask)

    def set_link_up(self, name: str) -> None:
        self._rec("set_link_up", name)

    def kill(self, pid: int, sig: int) -> None:
        self._rec("kill", pid, sig)

    def _fd(self) -> int:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)  # a real fd the caller may close

    def bpf_prog_load(self, prog_type: int, insns: bytes, license: str, name: str = "") -> int:
        self._rec("bpf_prog_load", prog_type, insns, license, name)
        return self._fd()

    def bpf_prog_attach(self, target_fd: int, prog_fd: int, attach_type: int, flags: int) -> None:
        self._rec("bpf_prog_attach", attach_type, flags)

    def bpf_prog_detach(self, target_fd: int, prog_fd: int, attach_type: int) -> None:
        self._rec("bpf_prog_detach", attach_type)

    def bpf_prog_query(self, target_fd: int, attach_type: int) -> list[int]:
        """Returns ``bpf_attached`` (set it to pretend programs are attached)."""
        self._rec("bpf_prog_query", attach_type)
        return list(getattr(self, "bpf_attached", []))

    def bpf_prog_get_fd_by_id(self, prog_id: int) -> int:
        self._rec("bpf_prog_get_fd_by_id", prog_id)
        return self._fd()
