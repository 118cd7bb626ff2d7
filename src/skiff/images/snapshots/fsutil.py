"""Filesystem helpers shared by the snapshotters and the layer code.

- :func:`copy_tree`: a faithful copy of a tree (types, owners, modes with setuid/setgid/
  sticky, xattrs, hard links, holes of sparse files, nanosecond timestamps, device nodes),
  walking both trees through directory descriptors with ``O_NOFOLLOW`` so that a symlink in
  the source is copied as a symlink and never followed;
- :func:`copy_metadata` / :func:`copy_file_data`: the pieces, also used for overlay copy-ups;
- :func:`disk_usage`: allocated bytes and distinct inodes of a tree (containerd's
  ``fs.DiskUsage``);
- :func:`remove_tree`: ``shutil.rmtree`` that also removes read-only directories a
  non-root user cannot enter (trees unpacked from images often have them).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

# xattrs that belong to overlayfs itself (whiteouts, copy-up bookkeeping); never copied
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


def at_path(dirfd: int, name: str) -> str:
    """A path naming ``name`` inside the directory ``dirfd`` without following ``name``
    (when used with ``follow_symlinks=False``): ``/proc/self/fd/N/name``."""
    return f"/proc/self/fd/{dirfd}/{name}"


def read_xattrs(dirfd: int, name: str, fd: int | None = None, *,
                skip_overlay: bool = True) -> dict[str, bytes]:
    """The extended attributes of ``name`` in ``dirfd`` (through ``fd`` when given).

    Attributes the caller may not read (``trusted.*`` as non-root) are not listed by the
    kernel at all; a filesystem without xattr support gives an empty dict.
    """
    try:
        if fd is not None:
            names = os.listxattr(fd)
        else:
            names = os.listxattr(at_path(dirfd, name), follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out: dict[str, bytes] = {}
    for x in sorted(names):
        if skip_overlay and x.startswith(OVERLAY_XATTR_PREFIXES):
            continue
        try:
            if fd is not None:
                out[x] = os.getxattr(fd, x)
            else:
                out[x] = os.getxattr(at_path(dirfd, name), x, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.ENODATA:  # removed since it was listed
                continue
            raise
    return out


def write_xattrs(dirfd: int, name: str, xattrs: dict[str, bytes], fd: int | None = None) -> None:
    for x, v in xattrs.items():
        if fd is not None:
            os.setxattr(fd, x, v)
        else:
            os.setxattr(at_path(dirfd, name), x, v, follow_symlinks=False)


def copy_file_data(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy ``size`` bytes keeping holes: only the data extents (SEEK_DATA/SEEK_HOLE) are
    copied, then the destination is truncated to ``size``."""
    pos = 0
    while pos < size:
        try:
            data = os.lseek(src_fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole is left
                break
            raise
        hole = min(os.lseek(src_fd, data, os.SEEK_HOLE), size)
        _copy_range(src_fd, dst_fd, data, hole - data)
        pos = hole
    os.ftruncate(dst_fd, size)


def _copy_range(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    end = offset + length
    use_cfr = True
    while offset < end:
        n = min(end - offset, 1 << 30)
        if use_cfr:
            try:
                done = os.copy_file_range(src_fd, dst_fd, n, offset, offset)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                use_cfr = False
                continue
            if done == 0:
                raise OSError(errno.EIO, f"source ended at {offset} of {end} bytes (file shrank while copied)")
            offset += done
            continue
        buf = os.pread(src_fd, min(n, 1 << 20), offset)
        if not buf:
            raise OSError(errno.EIO, f"source ended at {offset} of {end} bytes (file shrank while copied)")
        view = memoryview(buf)
        while view:
            w = os.pwrite(dst_fd, view, offset)
            view = view[w:]
            offset += w


def copy_metadata(dst_dirfd: int, name: str, st: os.stat_result, xattrs: dict[str, bytes], *,
                  fd: int | None = None, same_owner: bool = True) -> None:
    """Owner, mode, xattrs and times of ``st`` onto ``name`` in ``dst_dirfd`` (or ``fd``).

    Order matters: chown clears setuid/setgid and file capabilities, so mode and xattrs
    come after it, and times last."""
    is_link = stat.S_ISLNK(st.st_mode)
    if same_owner:
        if fd is not None:
            os.fchown(fd, st.st_uid, st.st_gid)
        else:
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dirfd, follow_symlinks=False)
    if not is_link:
        if fd is not None:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
        else:
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dst_dirfd)  # not a symlink: nothing to follow
    write_xattrs(dst_dirfd, name, xattrs, fd)
    times = (st.st_atime_ns, st.st_mtime_ns)
    if fd is not None:
        os.utime(fd, ns=times)
    else:
        os.utime(name, ns=times, dir_fd=dst_dirfd, follow_symlinks=False)


def copy_entry(src_dirfd: int, dst_dirfd: int, name: str, st: os.stat_result, *,
               same_owner: bool, skip_overlay_xattrs: bool = True, dst_name: str | None = None) -> None:
    """Copy one non-directory entry ``name`` (already ``lstat``-ed as ``st``)."""
    out = dst_name or name
    mode = st.st_mode
    if stat.S_ISREG(mode):
        sfd = os.open(name, _O_FILE, dir_fd=src_dirfd)
        try:
            if not stat.S_ISREG(os.fstat(sfd).st_mode):
                raise OSError(errno.ELOOP, f"{name}: changed type while copied")
            dfd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=dst_dirfd)
            try:
                copy_file_data(sfd, dfd, st.st_size)
                xattrs = read_xattrs(src_dirfd, name, sfd, skip_overlay=skip_overlay_xattrs)
                copy_metadata(dst_dirfd, out, st, xattrs, fd=dfd, same_owner=same_owner)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)
        return
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(name, dir_fd=src_dirfd), out, dir_fd=dst_dirfd)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        os.mknod(out, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dst_dirfd)
    else:
        raise OSError(errno.EINVAL, f"{name}: unknown file type {stat.S_IFMT(mode):o}")
    xattrs = read_xattrs(src_dirfd, name, skip_overlay=skip_overlay_xattrs)
    copy_metadata(dst_dirfd, out, st, xattrs, same_owner=same_owner)


def copy_dir_metadata(src_fd: int, dst_fd: int, st: os.stat_result, *, same_owner: bool,
                      skip_overlay_xattrs: bool = True) -> None:
    xattrs = read_xattrs(-1, "", src_fd, skip_overlay=skip_overlay_xattrs)
    copy_metadata(-1, "", st, xattrs, fd=dst_fd, same_owner=same_owner)


def copy_tree(src: str, dst: str, *, same_owner: bool | None = None,
              skip_overlay_xattrs: bool = False) -> None:
    """Copy the tree ``src`` into the existing empty directory ``dst`` (and ``src``'s own
    attributes onto ``dst``). ``same_owner`` defaults to running as root."""
    if same_owner is None:
        same_owner = os.geteuid() == 0
    links: dict[tuple[int, int], str] = {}  # (dev, ino) -> path of its first copy under dst
    root_s = os.open(src, _O_DIR)
    try:
        root_d = os.open(dst, _O_DIR)
    except BaseException:
        os.close(root_s)
        raise
    # frames: [src fd, dst fd, names, next index, stat of the source dir, relative path]
    stack: list[list] = [[root_s, root_d, sorted(os.listdir(root_s)), 0, os.fstat(root_s), ""]]
    try:
        while stack:
            frame = stack[-1]
            sfd, dfd, names, i, _, rel = frame
            if i == len(names):
                stack.pop()
                try:
                    copy_dir_metadata(sfd, dfd, frame[4], same_owner=same_owner,
                                      skip_overlay_xattrs=skip_overlay_xattrs)
                finally:
                    os.close(sfd)
                    os.close(dfd)
                continue
            frame[3] = i + 1
            name = names[i]
            where = f"{rel}/{name}" if rel else name
            try:
                st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    os.mkdir(name, 0o700, dir_fd=dfd)
                    csfd = os.open(name, _O_DIR, dir_fd=sfd)
                    try:
                        cdfd = os.open(name, _O_DIR, dir_fd=dfd)
                    except BaseException:
                        os.close(csfd)
                        raise
                    stack.append([csfd, cdfd, sorted(os.listdir(csfd)), 0, os.fstat(csfd), where])
                    continue
                ident = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and ident in links:
                    os.link(links[ident], name, dst_dir_fd=dfd, follow_symlinks=False)
                    continue
                copy_entry(sfd, dfd, name, st, same_owner=same_owner,
                           skip_overlay_xattrs=skip_overlay_xattrs)
                if st.st_nlink > 1:
                    links[ident] = os.path.join(dst, where)
            except OSError as e:
                raise OSError(e.errno, f"copy {os.path.join(src, where)} to {os.path.join(dst, where)}: "
                              f"{e.strerror}") from e
    finally:
        for frame in stack:
            os.close(frame[0])
            os.close(frame[1])


def disk_usage(path: str) -> tuple[int, int]:
    """(bytes of allocated blocks, number of distinct inodes) of the tree at ``path``."""
    seen: set[tuple[int, int]] = set()
    size = 0
    st = os.lstat(path)
    seen.add((st.st_dev, st.st_ino))
    size += st.st_blocks * 512
    for _dirpath, dirnames, filenames, dirfd in os.fwalk(path, follow_symlinks=False):
        for n in dirnames + filenames:
            st = os.stat(n, dir_fd=dirfd, follow_symlinks=False)
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                continue
            seen.add(ident)
            size += st.st_blocks * 512
    return size, len(seen)


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything under it (a missing path is fine)."""
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return

    def retry(func, p, exc_info):
        # a read-only directory (0555 from an image) stops a non-root user: open it up, retry
        err = exc_info[1]
        if not isinstance(err, PermissionError) or os.geteuid() == 0:
            raise err
        parent = os.path.dirname(p)
        os.chmod(parent, 0o700)
        if func in (os.open, os.scandir, os.listdir):  # the directory itself could not be read
            os.chmod(p, 0o700)
            shutil.rmtree(p, onerror=retry)
            return
        func(p)

    shutil.rmtree(path, onerror=retry)


def describe_tree(path: str, *, mtimes: bool = True, skip_overlay_xattrs: bool = True) -> dict[str, tuple]:
    """A comparable description of the tree at ``path``: for each entry (relative path,
    "" for the root) its type, mode, owner, mtime (seconds; ``mtimes=False`` leaves it out),
    xattrs, and type-specific data (content digest and size, link target, device numbers);
    hard links share a group (the first path of the inode). For comparing trees in tests
    and round trips."""
    import hashlib

    out: dict[str, tuple] = {}
    first: dict[tuple[int, int], str] = {}
    rootfd = os.open(path, _O_DIR)
    stack: list[tuple[int, str]] = [(rootfd, "")]
    try:
        st = os.fstat(rootfd)
        out[""] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                   st.st_mtime_ns // 10**9 if mtimes else None,
                   tuple(sorted(read_xattrs(-1, "", rootfd, skip_overlay=skip_overlay_xattrs).items())), None)
        while stack:
            dfd, rel = stack.pop()
            try:
                for name in sorted(os.listdir(dfd)):
                    crel = f"{rel}/{name}" if rel else name
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    m = st.st_mode
                    xattrs = tuple(sorted(read_xattrs(dfd, name, skip_overlay=skip_overlay_xattrs).items()))
                    mt = st.st_mtime_ns // 10**9 if mtimes else None
                    base = (stat.S_IMODE(m), st.st_uid, st.st_gid, mt, xattrs)
                    if stat.S_ISDIR(m):
                        out[crel] = ("dir", *base, None)
                        stack.append((os.open(name, _O_DIR, dir_fd=dfd), crel))
                        continue
                    ident = (st.st_dev, st.st_ino)
                    group = first.setdefault(ident, crel) if st.st_nlink > 1 else None
                    if stat.S_ISREG(m):
                        h = hashlib.sha256()
                        fd = os.open(name, _O_FILE, dir_fd=dfd)
                        try:
                            while True:
                                b = os.read(fd, 1 << 20)
                                if not b:
                                    break
                                h.update(b)
                        finally:
                            os.close(fd)
                        out[crel] = ("file", *base, (st.st_size, h.hexdigest(), group))
                    elif stat.S_ISLNK(m):
                        out[crel] = ("symlink", 0, st.st_uid, st.st_gid, mt, xattrs,
                                     (os.readlink(name, dir_fd=dfd), group))
                    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
                        kind = "char" if stat.S_ISCHR(m) else "block"
                        out[crel] = (kind, *base, (os.major(st.st_rdev), os.minor(st.st_rdev), group))
                    elif stat.S_ISFIFO(m):
                        out[crel] = ("fifo", *base, group)
                    else:
                        out[crel] = ("socket", *base, group)
            finally:
                os.close(dfd)
    finally:
        for fd, _ in stack:
            os.close(fd)
    # a "group" of one (a link count that counts names outside this tree) is no group
    sizes: dict[str, int] = {}
    for v in out.values():
        g = _group_of(v)
        if g is not None:
            sizes[g] = sizes.get(g, 0) + 1
    for k, v in out.items():
        g = _group_of(v)
        if g is not None and sizes[g] == 1:
            out[k] = _with_group(v, None)
    return out


def _group_of(v: tuple) -> str | None:
    extra = v[-1]
    if v[0] == "fifo" or v[0] == "socket":
        return extra
    if v[0] == "dir" or extra is None:
        return None
    return extra[-1]


def _with_group(v: tuple, group: str | None) -> tuple:
    if v[0] in ("fifo", "socket"):
        return (*v[:-1], group)
    return (*v[:-1], (*v[-1][:-1], group))
