"""The OCI ``linux.seccomp`` object, compiled and loaded through libseccomp.

``check`` validates a profile when the container is created, before anything exists; it needs
no library (except to ask libseccomp's version for a flag only recent versions know).
``compile`` builds a libseccomp filter context (``libseccomp.so.2`` through ctypes, opened on
first use); ``Filter.load`` installs it in the calling thread.

Semantics, as runc gives them (read in runc's libcontainer/seccomp, not copied):

- ``SCMP_ACT_KILL`` is ``SCMP_ACT_KILL_THREAD``; ``errnoRet`` (default EPERM) is the errno of
  ``SCMP_ACT_ERRNO`` and the trace value of ``SCMP_ACT_TRACE``; it is an error on any other
  action, and so is ``defaultErrnoRet``.
- A syscall name libseccomp does not know is skipped (``Filter.skipped`` lists them): profiles
  name syscalls of newer kernels and of other architectures.
- A rule whose action equals the default action is skipped (libseccomp refuses it).
- The conditions of one rule are ANDed. libseccomp refuses two conditions on the same argument
  in one rule, so then each condition becomes a rule of its own (as runc does; the conditions
  are then ORed).
- Past 32 syscall rules the filter is compiled as a binary tree (libseccomp's optimize level 2).
- ``SCMP_FLTATR_CTL_NNP`` is 0: loading the filter never sets no_new_privs, that stays the
  runtime's decision. Without no_new_privs the kernel wants CAP_SYS_ADMIN to load a filter, so
  the runtime loads it before dropping capabilities in that case, and as late as possible
  (just before execve) otherwise.

Not supported: ``SCMP_ACT_NOTIFY`` (no seccomp agent support: refused by ``check``), and runc's
rewrite of the compiled program that answers ENOSYS instead of the default action for syscalls
newer than the profile.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EPERM = 1

#: action name -> libseccomp action value (its low 16 bits carry errnoRet for ERRNO/TRACE)
ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

#: comparison name -> enum scmp_compare
OPS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

#: architecture name -> libseccomp's own name for it (seccomp_arch_resolve_name)
ARCHES = {
    name: name[len("SCMP_ARCH_"):].lower()
    for name in (
        "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
        "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
        "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
        "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K",
        "SCMP_ARCH_SH", "SCMP_ARCH_SHEB",
    )
}

# filter attributes (enum scmp_filter_attr)
_ATTR_NNP = 3
_ATTR_TSYNC = 4
_ATTR_LOG = 6
_ATTR_SSB = 7
_ATTR_OPTIMIZE = 8
_ATTR_SYSRAWRC = 9
_ATTR_WAITKILL = 10

#: flag name -> (filter attribute that asks for it, first libseccomp version knowing it)
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": (_ATTR_TSYNC, (2, 2, 0)),
    "SECCOMP_FILTER_FLAG_LOG": (_ATTR_LOG, (2, 4, 0)),
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": (_ATTR_SSB, (2, 5, 0)),
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": (_ATTR_WAITKILL, (2, 6, 0)),
}

_MAX_ARGS = 6
_U64 = (1 << 64) - 1
_RET_DATA = 0xFFFF  # errnoRet travels in the 16 data bits of the filter's return value
_NR_SCMP_ERROR = -1
_OPTIMIZE_ABOVE = 32


class SeccompError(Exception):
    """A seccomp profile that cannot be used, or libseccomp/the kernel refusing it."""


# --- validation -----------------------------------------------------------------------------

def _uint(v: Any, where: str, top: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SeccompError(f"{where}: expected an unsigned integer, got {type(v).__name__}")
    if not 0 <= v <= top:
        raise SeccompError(f"{where}: {v} is out of range (0 to {top})")
    return v


def _action(d: dict, key: str, where: str, errno_key: str) -> None:
    act = d.get(key)
    if act is None:
        raise SeccompError(f"{where}.{key}: is required")
    if not isinstance(act, str):
        raise SeccompError(f"{where}.{key}: expected a string, got {type(act).__name__}")
    if act not in ACTIONS:
        raise SeccompError(f"{where}.{key}: unknown action {act!r} (known: {', '.join(ACTIONS)})")
    if act == "SCMP_ACT_NOTIFY":
        raise SeccompError(f"{where}.{key}: SCMP_ACT_NOTIFY is not supported by skiff-runc "
                           "(it has no seccomp user-notification listener)")
    if d.get(errno_key) is not None:
        if act not in _WITH_ERRNO:
            raise SeccompError(f"{where}.{errno_key}: {act} takes no errno "
                               "(only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)")
        _uint(d[errno_key], f"{where}.{errno_key}", _RET_DATA)


def _strings(d: dict, key: str, where: str) -> list:
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise SeccompError(f"{where}.{key}: expected an array, got {type(v).__name__}")
    for i, s in enumerate(v):
        if not isinstance(s, str):
            raise SeccompError(f"{where}.{key}[{i}]: expected a string, got {type(s).__name__}")
    return v


def check(profile: dict, where: str = "linux.seccomp") -> None:
    """Validate a ``linux.seccomp`` object; raise SeccompError naming the first bad field.

    Unknown syscall names are accepted (``compile`` skips them); unknown actions, operators,
    architectures and flags are not."""
    if not isinstance(profile, dict):
        raise SeccompError(f"{where}: expected an object, got {type(profile).__name__}")
    _action(profile, "defaultAction", where, "defaultErrnoRet")
    for i, a in enumerate(_strings(profile, "architectures", where)):
        if a not in ARCHES:
            raise SeccompError(f"{where}.architectures[{i}]: unknown architecture {a!r}")
    for i, f in enumerate(_strings(profile, "flags", where)):
        if f not in FLAGS:
            raise SeccompError(f"{where}.flags[{i}]: unknown flag {f!r} (known: {', '.join(FLAGS)})")
        need = FLAGS[f][1]
        if need > (2, 5, 99):  # newer than any libseccomp 2.5: ask the library
            have = _lib().version
            if have < need:
                raise SeccompError(
                    f"{where}.flags[{i}]: {f} needs libseccomp {'.'.join(map(str, need))} or "
                    f"later (this is {'.'.join(map(str, have))})")
    for key in ("listenerPath", "listenerMetadata"):
        v = profile.get(key)
        if v is not None and not isinstance(v, str):
            raise SeccompError(f"{where}.{key}: expected a string, got {type(v).__name__}")
    if profile.get("listenerMetadata") and not profile.get("listenerPath"):
        raise SeccompError(f"{where}.listenerMetadata: must not be set without listenerPath")
    calls = profile.get("syscalls")
    if calls is None:
        return
    if not isinstance(calls, list):
        raise SeccompError(f"{where}.syscalls: expected an array, got {type(calls).__name__}")
    for i, call in enumerate(calls):
        w = f"{where}.syscalls[{i}]"
        if not isinstance(call, dict):
            raise SeccompError(f"{w}: expected an object, got {type(call).__name__}")
        names = _strings(call, "names", w)
        if not names:
            raise SeccompError(f"{w}.names: must name at least one syscall")
        for j, n in enumerate(names):
            if not n:
                raise SeccompError(f"{w}.names[{j}]: empty syscall name")
        _action(call, "action", w, "errnoRet")
        args = call.get("args")
        if args is None:
            continue
        if not isinstance(args, list):
            raise SeccompError(f"{w}.args: expected an array, got {type(args).__name__}")
        for k, arg in enumerate(args):
            wa = f"{w}.args[{k}]"
            if not isinstance(arg, dict):
                raise SeccompError(f"{wa}: expected an object, got {type(arg).__name__}")
            for key in ("index", "value", "op"):
                if arg.get(key) is None:
                    raise SeccompError(f"{wa}.{key}: is required")
            _uint(arg["index"], f"{wa}.index", _MAX_ARGS - 1)
            _uint(arg["value"], f"{wa}.value", _U64)
            if arg.get("valueTwo") is not None:
                _uint(arg["valueTwo"], f"{wa}.valueTwo", _U64)
            op = arg["op"]
            if op not in OPS:
                raise SeccompError(f"{wa}.op: unknown operator {op!r} (known: {', '.join(OPS)})")


def action_value(action: str, errno_ret: int | None) -> int:
    """The libseccomp value of an action name (``errnoRet`` folded in for ERRNO and TRACE)."""
    v = ACTIONS[action]
    if action in _WITH_ERRNO:
        v |= (EPERM if errno_ret is None else errno_ret) & _RET_DATA
    return v


# --- libseccomp ---------------------------------------------------------------------------

class _Lib:
    """libseccomp.so.2 with the prototypes this module uses."""

    def __init__(self) -> None:
        import ctypes

        self.ctypes = ctypes
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError:
            import ctypes.util

            found = ctypes.util.find_library("seccomp")
            if not found:
                raise SeccompError("cannot load libseccomp.so.2 (is libseccomp2 installed?)") from None
            lib = ctypes.CDLL(found, use_errno=True)
        c = ctypes
        vp, u32, i = c.c_void_p, c.c_uint32, c.c_int

        class ArgCmp(c.Structure):
            _fields_ = [("arg", c.c_uint), ("op", c.c_int), ("datum_a", c.c_uint64),
                        ("datum_b", c.c_uint64)]

        class Version(c.Structure):
            _fields_ = [("major", c.c_uint), ("minor", c.c_uint), ("micro", c.c_uint)]

        self.ArgCmp = ArgCmp
        for name, res, args in (
            ("seccomp_init", vp, [u32]),
            ("seccomp_release", None, [vp]),
            ("seccomp_arch_resolve_name", u32, [c.c_char_p]),
            ("seccomp_arch_add", i, [vp, u32]),
            ("seccomp_attr_set", i, [vp, i, u32]),
            ("seccomp_syscall_resolve_name", i, [c.c_char_p]),
            ("seccomp_rule_add_array", i, [vp, u32, i, c.c_uint, c.POINTER(ArgCmp)]),
            ("seccomp_load", i, [vp]),
            ("seccomp_export_pfc", i, [vp, i]),
            ("seccomp_export_bpf", i, [vp, i]),
            ("seccomp_version", c.POINTER(Version), []),
        ):
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        self.lib = lib
        v = lib.seccomp_version().contents
        self.version = (v.major, v.minor, v.micro)


_LIB: _Lib | None = None


def _lib() -> _Lib:
    global _LIB
    if _LIB is None:
        _LIB = _Lib()
    return _LIB


def libseccomp_version() -> tuple[int, int, int]:
    return _lib().version


def _err(rc: int) -> str:
    return os.strerror(-rc) if rc < 0 else f"error {rc}"


class Filter:
    """A compiled filter: a libseccomp context, owned until ``release``.

    ``skipped`` lists the syscall names libseccomp does not know (left out of the filter);
    ``rules`` counts the rules added."""

    __slots__ = ("_ctx", "_lib", "skipped", "rules")

    def __init__(self, lib: _Lib, ctx: int) -> None:
        self._lib = lib
        self._ctx: int | None = ctx
        self.skipped: list[str] = []
        self.rules = 0

    def _live(self) -> int:
        if self._ctx is None:
            raise SeccompError("seccomp filter used after release")
        return self._ctx

    def _export(self, what: str) -> bytes:
        ctx = self._live()
        fd = os.memfd_create(f"skiff-seccomp-{what}", os.MFD_CLOEXEC)
        try:
            fn = self._lib.lib.seccomp_export_pfc if what == "pfc" else self._lib.lib.seccomp_export_bpf
            rc = fn(ctx, fd)
            if rc < 0:
                raise SeccompError(f"export seccomp filter as {what}: {_err(rc)}")
            size = os.lseek(fd, 0, os.SEEK_CUR)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)

    def export_pfc(self) -> str:
        """The filter in libseccomp's readable pseudo-filter-code."""
        return self._export("pfc").decode()

    def export_bpf(self) -> bytes:
        """The compiled BPF program (8 bytes an instruction), as the kernel would get it."""
        return self._export("bpf")

    def load(self) -> None:
        """Install the filter in the calling thread (all threads with the TSYNC flag)."""
        rc = self._lib.lib.seccomp_load(self._live())
        if rc < 0:
            hint = ""
            if -rc in (1, 13):  # EPERM, EACCES
                hint = " (loading a filter needs no_new_privs or CAP_SYS_ADMIN)"
            raise SeccompError(f"load seccomp filter: {_err(rc)}{hint}")

    def release(self) -> None:
        if self._ctx is not None:
            self._lib.lib.seccomp_release(self._ctx)
            self._ctx = None

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def compile(profile: dict, where: str = "linux.seccomp") -> Filter:
    """Build the libseccomp filter of a ``linux.seccomp`` object; nothing reaches the kernel."""
    check(profile, where)
    lib = _lib()
    L = lib.lib
    default = action_value(profile["defaultAction"], profile.get("defaultErrnoRet"))
    ctx = L.seccomp_init(default)
    if not ctx:
        raise SeccompError(f"{where}.defaultAction: libseccomp {'.'.join(map(str, lib.version))} "
                           f"refused {profile['defaultAction']}")
    filt = Filter(lib, ctx)
    try:
        _build(lib, filt, ctx, profile, default, where)
    except BaseException:
        filt.release()
        raise
    return filt


def _attr(L: Any, ctx: int, attr: int, value: int, what: str) -> None:
    rc = L.seccomp_attr_set(ctx, attr, value)
    if rc < 0:
        raise SeccompError(f"{what}: libseccomp refused it: {_err(rc)}")


def _build(lib: _Lib, filt: Filter, ctx: int, profile: dict, default: int, where: str) -> None:
    L = lib.lib
    _attr(L, ctx, _ATTR_NNP, 0, "seccomp: leave no_new_privs to the runtime")
    # Report the kernel's errno when loading fails (libseccomp otherwise says ECANCELED).
    L.seccomp_attr_set(ctx, _ATTR_SYSRAWRC, 1)
    for i, a in enumerate(profile.get("architectures") or ()):
        token = L.seccomp_arch_resolve_name(ARCHES[a].encode())
        if not token:
            raise SeccompError(f"{where}.architectures[{i}]: {a} is not supported by libseccomp "
                               f"{'.'.join(map(str, lib.version))}")
        rc = L.seccomp_arch_add(ctx, token)
        if rc < 0 and rc != -17:  # EEXIST: the native architecture is always there
            raise SeccompError(f"{where}.architectures[{i}]: cannot add {a}: {_err(rc)}")
    for i, f in enumerate(profile.get("flags") or ()):
        _attr(L, ctx, FLAGS[f][0], 1, f"{where}.flags[{i}]: {f}")
    calls = profile.get("syscalls") or []
    if sum(len(c["names"]) for c in calls) > _OPTIMIZE_ABOVE:
        # Binary-tree search over the syscall numbers; a speed-up, not needed for correctness.
        L.seccomp_attr_set(ctx, _ATTR_OPTIMIZE, 2)
    resolved: dict[str, int] = {}
    for i, call in enumerate(calls):
        act = action_value(call["action"], call.get("errnoRet"))
        if act == default:
            continue
        args = call.get("args") or []
        conds = (lib.ArgCmp * max(len(args), 1))()
        indexes = set()
        for k, arg in enumerate(args):
            conds[k].arg = arg["index"]
            conds[k].op = OPS[arg["op"]]
            conds[k].datum_a = arg["value"]
            conds[k].datum_b = arg.get("valueTwo") or 0
            indexes.add(arg["index"])
        split = len(indexes) < len(args)
        for name in call["names"]:
            nr = resolved.get(name)
            if nr is None:
                nr = resolved[name] = L.seccomp_syscall_resolve_name(name.encode())
            if nr == _NR_SCMP_ERROR:
                if name not in filt.skipped:
                    filt.skipped.append(name)
                continue
            if not args:
                groups = [(conds, 0)]
            elif split:
                ptr = lib.ctypes.POINTER(lib.ArgCmp)
                size = lib.ctypes.sizeof(lib.ArgCmp)
                base = lib.ctypes.addressof(conds)
                groups = [(lib.ctypes.cast(base + k * size, ptr), 1) for k in range(len(args))]
            else:
                groups = [(conds, len(args))]
            for arr, n in groups:
                rc = L.seccomp_rule_add_array(ctx, act, nr, n, arr)
                if rc < 0:
                    raise SeccompError(f"{where}.syscalls[{i}]: libseccomp refused the rule for "
                                       f"{name} ({call['action']}): {_err(rc)}")
                filt.rules += 1


# --- compiled programs and their cache ------------------------------------------------------

#: flag name -> the kernel's SECCOMP_FILTER_FLAG_* bit (what libseccomp passes to seccomp(2))
KERNEL_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_NR = {"x86_64": 317, "aarch64": 277}
_CACHE_MAX = 64
_CACHE_MAGIC = b"skiff-seccomp-bpf-1\n"


class Program:
    """A BPF program ready for ``seccomp(SECCOMP_SET_MODE_FILTER)``, with its flags.

    libseccomp's own load generates the same program (``export_bpf``) and passes the same
    flags; loading the bytes directly lets a cached program skip libseccomp altogether.
    Everything ``load`` needs is prepared here, so that ``load`` (run in the container's init,
    after pivot_root) only makes the system call."""

    __slots__ = ("bpf", "flags", "_call")

    def __init__(self, bpf: bytes, flags: int) -> None:
        from skiff.runtime import clib as ctypes  # loading needs no more of ctypes than this

        if not bpf or len(bpf) % 8:
            raise SeccompError(f"seccomp program of {len(bpf)} bytes is not a whole number of instructions")
        self.bpf = bpf
        self.flags = flags
        nr = _SECCOMP_NR.get(os.uname().machine)
        if nr is None:
            raise SeccompError(f"seccomp: unknown syscall number on {os.uname().machine}")
        buf = ctypes.create_string_buffer(bpf, len(bpf))
        sock_fprog = type("SockFprog", (ctypes.Structure,),
                          {"_fields_": [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]})
        fprog = sock_fprog(len(bpf) // 8, ctypes.addressof(buf))
        libc = ctypes.Library(None)
        libc.syscall.restype = ctypes.c_long
        args = (ctypes.c_long(nr), ctypes.c_uint(_SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags),
                ctypes.byref(fprog))

        def call() -> None:
            keep = (buf, fprog)  # noqa: F841  (the kernel reads them during the call)
            if libc.syscall(*args) != 0:
                err = ctypes.get_errno()
                hint = " (loading a filter needs no_new_privs or CAP_SYS_ADMIN)" if err in (1, 13) else ""
                raise SeccompError(f"load seccomp filter: {os.strerror(err)}{hint}")

        self._call = call

    def load(self) -> None:
        self._call()


def _kernel_flags(profile: dict) -> int:
    flags = 0
    for f in profile.get("flags") or ():
        flags |= KERNEL_FLAGS[f]
    return flags


def _profile_key(profile: dict) -> str:
    from skiff import fastjson

    try:
        from _sha256 import sha256  # the C module: hashlib would also load OpenSSL's bindings
    except ImportError:  # pragma: no cover - builds without it
        from hashlib import sha256
    version = ".".join(map(str, libseccomp_version_cached()))
    return sha256(f"{version} {os.uname().machine} {fastjson.dumps(profile)}".encode()).hexdigest()


def libseccomp_version_cached() -> tuple[int, ...]:
    """libseccomp's version without loading it when a compiled program is cached: the version
    is part of each cache key, read from the library's file name."""
    for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
              "/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in sorted(names):
            if n.startswith("libseccomp.so.2."):
                parts = n[len("libseccomp.so."):].split(".")
                if all(x.isdigit() for x in parts):
                    return tuple(int(x) for x in parts)
    return libseccomp_version()


def compile_cached(profile: dict, cache_dir: str, where: str = "linux.seccomp") -> Program:
    """The BPF program for ``profile``: from ``cache_dir`` when this profile was compiled before
    (a hit skips libseccomp: ~20 ms for Docker's default profile), else compiled and stored.

    The cache is trusted only when it and its files belong to the caller and nobody else can
    write them; anything else is ignored and rewritten."""
    check(profile, where)
    flags = _kernel_flags(profile)
    key = _profile_key(profile)
    path = os.path.join(cache_dir, key)
    uid = os.geteuid()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            st = os.fstat(fd)
            dst = os.stat(cache_dir)
            if st.st_uid == uid and dst.st_uid == uid and not (st.st_mode | dst.st_mode) & 0o022:
                data = os.read(fd, st.st_size)
                if data.startswith(_CACHE_MAGIC) and len(data) == st.st_size:
                    return Program(data[len(_CACHE_MAGIC):], flags)
        finally:
            os.close(fd)
    with compile(profile, where) as filt:
        bpf = filt.export_bpf()
    try:
        os.makedirs(cache_dir, 0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(wfd, _CACHE_MAGIC + bpf)
        finally:
            os.close(wfd)
        os.rename(tmp, path)
        _prune(cache_dir)
    except OSError as e:  # a read-only or full state dir only costs speed
        from skiff.runtime.cli import report

        report("warning", f"cannot cache the seccomp program in {cache_dir}: {e}")
    return Program(bpf, flags)


def _prune(cache_dir: str) -> None:
    entries = []
    for name in os.listdir(cache_dir):
        p = os.path.join(cache_dir, name)
        try:
            entries.append((os.stat(p).st_mtime, p))
        except FileNotFoundError:
            continue
    entries.sort()
    for _, p in entries[:-_CACHE_MAX] if len(entries) > _CACHE_MAX else []:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
