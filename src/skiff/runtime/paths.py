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
so the kernel mounts on exactly the checked place.
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


def _refuse_symlink(dir_fd: int, name: str, base: str, parts: list[str]) -> None:
    try:
        st_mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return
    if st_mode & _S_IFMT == _S_IFLNK:
        raise OSError(errno.ELOOP, f"{base}/{'/'.join(parts)}: is a symlink "
                      "(the tree changed while the path was being resolved)")
