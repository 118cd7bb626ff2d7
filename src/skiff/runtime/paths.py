"""Paths inside a root directory that an untrusted party (an image, a volume) may have filled.

``resolve_in_root`` is the lexical half, in the manner of "securejoin": walk the path one
component at a time, read each symlink and resolve its target relative to the root (an
absolute target restarts at the root), and clamp ``..`` at the root. The result names a
place inside the root whatever the tree holds (``/x -> /etc`` gives ``<root>/etc``,
``/x -> ../../..`` gives ``<root>``); components that do not exist are kept as written.

``open_beneath`` is the race-free half: it opens an already-resolved path one component at
a time from a descriptor of the root with ``O_NOFOLLOW``, creating what is missing. A
symlink swapped in after the resolution makes it fail instead of leading outside, and the
descriptor it returns can be handed to ``mount(2)`` as ``/proc/self/fd/N`` (``fd_path``),
so the kernel mounts on exactly the checked place. When the whole path exists, the kernel does
the same walk in one ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` call (one system call
instead of two per component); anything else takes the step-by-step walk.
"""

from __future__ import annotations

import errno
import os

MAXSYMLINKS = 40  # the kernel's limit for one path walk

_S_IFMT = 0o170000
_S_IFLNK = 0o120000


def resolve_in_root(root: str, path: str) -> str:
    """Return ``path`` (a path inside the container) as a host path under ``root``.

    ``root`` should be a real path (no symlinks of its own); it is trusted and never
    resolved. Raises ``OSError(ELOOP)`` after 40 symlinks and lets other ``lstat``/
    ``readlink`` errors (``EACCES``) through.
    """
    base = root.rstrip("/")
    todo = path.split("/")
    todo.reverse()
    done: list[str] = []
    hops = 0
    missing = False  # a component did not exist: what follows cannot either
    lstat = os.lstat
    while todo:
        c = todo.pop()
        if not c or c == ".":
            continue
        if c == "..":
            if done:
                done.pop()
            missing = False  # we may be back in the existing part of the tree
            continue
        if missing:
            done.append(c)
            continue
        cur = base + "/" + "/".join(done) + "/" + c if done else base + "/" + c
        try:
            mode = lstat(cur).st_mode
        except (FileNotFoundError, NotADirectoryError):
            missing = True
            done.append(c)
            continue
        if mode & _S_IFMT != _S_IFLNK:
            done.append(c)
            continue
        hops += 1
        if hops > MAXSYMLINKS:
            raise OSError(errno.ELOOP, f"resolving {path} in {root or '/'}: too many levels of "
                          f"symbolic links (more than {MAXSYMLINKS})")
        target = os.readlink(cur)
        if target.startswith("/"):
            done.clear()
        parts = target.split("/")
        parts.reverse()
        todo.extend(parts)
    if not done:
        return base or "/"
    return base + "/" + "/".join(done)


def fd_path(fd: int) -> str:
    """The magic link through which a path argument reaches exactly what ``fd`` refers to."""
    return "/proc/self/fd/" + str(fd)


_O_WALK = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_O_DIR = _O_WALK | os.O_DIRECTORY
_O_NEWFILE = os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_beneath(root: str, resolved: str, *, create: str = "", mode: int = 0o755) -> int:
    """Open ``resolved`` (a result of ``resolve_in_root(root, ...)``) with ``O_PATH``,
    walking down from ``root`` without following any symlink.

    ``create``: ``""`` opens what exists (any file type, never a symlink); ``"dir"`` creates
    missing directories (``mode``) and requires a directory at the end; ``"file"`` creates
    missing parent directories and, if nothing is there, an empty file (mode 0644). Returns a
    descriptor the caller closes. A symlink met on the way (the tree changed since the
    resolution) raises ``OSError(ELOOP)`` naming the path.
    """
    base = root.rstrip("/")
    if not resolved.startswith(base + "/") and resolved != (base or "/"):
        raise OSError(errno.EINVAL, f"{resolved}: not under {root}")
    parts = [p for p in resolved[len(base):].split("/") if p]
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    if parts and ".." not in parts:
        nfd = _open_in_one_call(fd, "/".join(parts), create == "dir")
        if nfd >= 0:
            os.close(fd)
            return nfd
    try:
        last = len(parts) - 1
        for i, name in enumerate(parts):
            if name == "..":
                raise OSError(errno.EINVAL, f"{resolved}: '..' in a resolved path")
            want_dir = i < last or create == "dir"
            flags = _O_DIR if want_dir else _O_WALK
            check = not want_dir
            try:
                nfd = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                if want_dir:
                    try:
                        os.mkdir(name, mode, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nfd = os.open(name, flags, dir_fd=fd)
                else:
                    try:
                        nfd = os.open(name, _O_NEWFILE, 0o644, dir_fd=fd)
                        check = False
                    except FileExistsError:
                        nfd = os.open(name, flags, dir_fd=fd)
            except NotADirectoryError:
                # O_DIRECTORY met a non-directory: a file in the middle, or a symlink
                _refuse_symlink(fd, name, base, parts[:i + 1])
                raise
            os.close(fd)
            fd = nfd
            if check and os.fstat(fd).st_mode & _S_IFMT == _S_IFLNK:
                # O_PATH|O_NOFOLLOW opens a symlink itself
                raise OSError(errno.ELOOP, f"{base}/{'/'.join(parts)}: is a symlink "
                              "(the tree changed while the path was being resolved)")
        return fd
    except BaseException:
        os.close(fd)
        raise


_SYS_OPENAT2 = 437  # the same number on every architecture (allocated after the tables were unified)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_openat2: list = []  # [the syscall function, the open_how type, clib], or [None] when unusable


def _open_in_one_call(dir_fd: int, rel: str, want_dir: bool) -> int:
    """The walk of ``open_beneath`` as one ``openat2(2)`` call, for paths that exist: beneath
    ``dir_fd`` (``RESOLVE_BENEATH``) with no symlink anywhere (``RESOLVE_NO_SYMLINKS``; with
    ``O_PATH|O_NOFOLLOW`` a symlink as the last component is opened itself, as the walk does,
    and refused the same way). Returns the fd, or -1 for anything else (missing parts to
    create, a symlink, no openat2 in this kernel or under a seccomp filter): the caller then
    walks step by step, which creates what is missing and words the errors."""
    if not _openat2:
        try:
            from skiff.runtime import clib

            fn = clib.Library(None).syscall
            fn.restype = clib.c_long
            _openat2.append((fn, clib.c_uint64 * 3, clib))
        except (ImportError, OSError, AttributeError):  # pragma: no cover - no libc/_ctypes
            _openat2.append(None)
    call = _openat2[0]
    if call is None:
        return -1
    fn, how_type, clib = call
    flags = _O_DIR if want_dir else _O_WALK
    how = how_type(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    fd = fn(clib.c_long(_SYS_OPENAT2), clib.c_int(dir_fd), rel.encode(), clib.byref(how),
            clib.c_size_t(24))
    if fd < 0:
        if clib.get_errno() in (errno.ENOSYS, errno.EPERM):
            _openat2[0] = None  # not in this kernel, or refused by a seccomp filter
        return -1
    if not want_dir and os.fstat(fd).st_mode & _S_IFMT == _S_IFLNK:
        os.close(fd)
        return -1
    return fd


def _refuse_symlink(dir_fd: int, name: str, base: str, parts: list[str]) -> None:
    try:
        st_mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return
    if st_mode & _S_IFMT == _S_IFLNK:
        raise OSError(errno.ELOOP, f"{base}/{'/'.join(parts)}: is a symlink "
                      "(the tree changed while the path was being resolved)")
