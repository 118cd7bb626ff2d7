"""The container filesystem verbs: ``docker cp`` (archive GET/HEAD/PUT), ``export``, ``diff``.

skiffd never enters a container's namespaces. It reaches a container's tree through a
directory on the host, its *root*:

- a running (or paused) container: ``/proc/<pid>/root`` of its init process, held open as a
  descriptor (``/proc/self/fd/N``). That is the tree the container sees, with its bind
  mounts, volumes and tmpfs mounts, through the container's mount namespace, without a
  ``setns``;
- a stopped one: its snapshot mounted on a private temporary directory (``mount`` from a
  thread changes no namespace), with the spec's bind mounts bound over it at their
  destinations, and everything unmounted (``MNT_DETACH``) afterwards.

Everything under the root is untrusted (the container may hold ``/tmp/x -> /`` or
``-> /proc/1/root``, and a running one can swap entries while we work). So paths are
resolved inside the root lexically (``skiff.runtime.paths.resolve_in_root``: absolute
targets restart at the root, ``..`` stops there) and then opened one component at a time
with ``O_NOFOLLOW`` (``open_beneath``); every later operation is relative to a directory
descriptor and never follows a symlink (``*at`` calls with ``AT_SYMLINK_NOFOLLOW``,
``O_NOFOLLOW`` opens, ``chmod`` through ``/proc/self/fd`` of an ``O_PATH`` descriptor that
was checked not to be a symlink). A path string under the root is never handed to a call
that follows symlinks: through ``/proc/<pid>/root`` an absolute symlink would resolve
against *skiffd's* root, the host's.

The uploaded tar is hostile too: names are cleaned and may not climb out of the extraction
directory (``..``), a leading ``/`` is dropped, parents are resolved inside the container's
root (a symlink the archive or the container placed is followed as the container would, so
it can only lead to somewhere else inside), hard link targets must be inside the root and
exist (never a directory), and what sits at a member's own name is replaced, never written
through.

``changes`` reads the snapshot's overlay upper directory against its lower directories:
whiteouts (0/0 character devices) are deletions, opaque directories hide what is below, in
moby's ``overlay`` ``Changes`` manner (a directory whose attributes equal the lower one's is
not reported by itself; the parent of an addition or deletion is).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import errno
import json
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from skiff.daemon.api.errors import ApiError, Conflict, InvalidParameter, NotFound
from skiff.runtime.paths import fd_path, open_beneath, resolve_in_root

if TYPE_CHECKING:
    from skiff.daemon.containers.backend import ContainerService
    from skiff.daemon.containers.model import Container

log = logging.getLogger("skiff.daemon.archive")

SNAPSHOTTER = "overlayfs"
STAT_HEADER = "X-Docker-Container-Path-Stat"
CHUNK = 1 << 16

# Go's os.FileMode type and special bits (io/fs)
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26
GO_MODE_NAMED_PIPE = 1 << 25
GO_MODE_SOCKET = 1 << 24
GO_MODE_SETUID = 1 << 23
GO_MODE_SETGID = 1 << 22
GO_MODE_CHAR_DEVICE = 1 << 21
GO_MODE_STICKY = 1 << 20

KIND_MODIFY, KIND_ADD, KIND_DELETE = 0, 1, 2

# what Docker's init layer holds: mount points that runc creates in the upper directory
# (Docker makes them in a layer under the container's, so they never show in `docker diff`)
INIT_PATHS = frozenset(("/dev/pts", "/dev/shm", "/proc", "/sys", "/.dockerenv", "/etc/resolv.conf",
                        "/etc/hosts", "/etc/hostname", "/dev/console", "/etc/mtab", "/dev"))

_O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_O_RDDIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Forbidden(ApiError):
    status = 403


class ArchiveError(InvalidParameter):
    """A hostile or malformed upload (400)."""


# -- stat -------------------------------------------------------------------------------------

def go_file_mode(st_mode: int) -> int:
    """An ``os.FileMode`` as Go's ``os.Lstat`` reports it for ``st_mode``."""
    mode = st_mode & 0o777
    fmt = stat.S_IFMT(st_mode)
    if fmt == stat.S_IFDIR:
        mode |= GO_MODE_DIR
    elif fmt == stat.S_IFLNK:
        mode |= GO_MODE_SYMLINK
    elif fmt == stat.S_IFBLK:
        mode |= GO_MODE_DEVICE
    elif fmt == stat.S_IFCHR:
        mode |= GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE
    elif fmt == stat.S_IFIFO:
        mode |= GO_MODE_NAMED_PIPE
    elif fmt == stat.S_IFSOCK:
        mode |= GO_MODE_SOCKET
    if st_mode & stat.S_ISUID:
        mode |= GO_MODE_SETUID
    if st_mode & stat.S_ISGID:
        mode |= GO_MODE_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= GO_MODE_STICKY
    return mode


def go_time(ns: int) -> str:
    """``time.Time`` as Go marshals it to JSON (RFC 3339, nanoseconds without trailing
    zeros), in UTC."""
    sec, frac = divmod(ns, 1_000_000_000)
    base = datetime.datetime.fromtimestamp(sec, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        base += "." + f"{frac:09d}".rstrip("0")
    return base + "Z"


def stat_header(st: dict[str, Any]) -> str:
    """The ``X-Docker-Container-Path-Stat`` value: base64 (standard) of the JSON."""
    return base64.b64encode(json.dumps(st, separators=(",", ":")).encode()).decode()


def clean_container_path(path: str) -> str:
    """The absolute container path of a ``path`` query parameter (Docker joins it to ``/``),
    keeping a trailing ``/`` or ``/.`` (they ask for the directory itself)."""
    if not path:
        raise InvalidParameter("path: must not be empty")
    if "\0" in path:
        raise InvalidParameter(f"path {path!r}: contains a NUL byte")
    abs_path = posixpath.normpath("/" + path)
    if abs_path.startswith("//"):
        abs_path = "/" + abs_path.lstrip("/")
    if path.endswith("/.") or path == ".":
        abs_path = abs_path.rstrip("/") + "/."
    elif path.endswith("/") and abs_path != "/":
        abs_path += "/"
    return abs_path


def _wants_dir(abs_path: str) -> bool:
    return abs_path.endswith("/") or abs_path.endswith("/.")


def _base_name(abs_path: str) -> str:
    """Go's ``filepath.Base`` of the cleaned-with-dot path (the tar's top name)."""
    if abs_path.endswith("/."):
        return "."
    stripped = abs_path.rstrip("/")
    return posixpath.basename(stripped) if stripped else "/"


@dataclass
class Resolved:
    """A container path resolved under a root: its parent directory (host path under the
    root, the entry's name in it) — the last component is not followed unless the request
    asked for a directory."""

    abs_path: str        # as requested, cleaned
    parent: str          # host path of the parent directory (under root)
    name: str            # "" for the root itself
    root: str

    @property
    def host(self) -> str:
        return f"{self.parent}/{self.name}" if self.name else self.parent

    def container_path(self) -> str:
        rel = self.host[len(self.root.rstrip("/")):]
        return rel or "/"


def resolve(root: str, abs_path: str) -> Resolved:
    """Resolve ``abs_path`` inside ``root`` as moby's ``ResolvePath``: every component but the
    last is followed (inside the root); the last too when the path ends in ``/`` or ``/.``."""
    if _wants_dir(abs_path) or abs_path == "/":
        full = resolve_in_root(root, abs_path)
        base = root.rstrip("/")
        if full == (base or "/"):
            return Resolved(abs_path, full, "", root)
        parent, name = full.rsplit("/", 1)
        return Resolved(abs_path, parent, name, root)
    dirname, name = posixpath.split(abs_path)
    parent = resolve_in_root(root, dirname)
    return Resolved(abs_path, parent, name, root)


def _open_parent(r: Resolved) -> int:
    return open_beneath(r.root, r.parent)


def _not_found(path: str, container: str) -> NotFound:
    return NotFound(f"Could not find the file {path} in container {container}")


@dataclass
class Entry:
    """An entry opened for stat and archive: its parent directory and itself as ``O_PATH``
    descriptors, its stat, its symlink target. ``close`` when done."""

    abs_path: str
    pfd: int
    name: str
    fd: int
    st: os.stat_result
    link: str | None
    link_target: str     # a symlink's target resolved inside the container ("" otherwise)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.pfd)

    def stat(self) -> dict[str, Any]:
        """``{name,size,mode,mtime,linkTarget}`` as moby's ``StatPath``."""
        return {"name": _base_name(self.abs_path), "size": self.st.st_size, "mode": go_file_mode(self.st.st_mode),
                "mtime": go_time(self.st.st_mtime_ns), "linkTarget": self.link_target}


def open_entry(root: str, abs_path: str, container: str) -> Entry:
    """Open ``abs_path`` under ``root`` (a symlink at the end is the entry itself unless the
    path ends in ``/`` or ``/.``). NotFound as Docker words it."""
    try:
        r = resolve(root, abs_path)   # (a racing container can make a readlink fail)
        pfd = _open_parent(r)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(abs_path, container) from None
    except OSError as e:
        raise _os_error(e, f"stat {abs_path} in container {container}") from None
    try:
        try:
            fd = os.open(r.name, _O_PATH, dir_fd=pfd) if r.name else os.dup(pfd)
        except (FileNotFoundError, NotADirectoryError):
            raise _not_found(abs_path, container) from None
        try:
            st = os.fstat(fd)
            if _wants_dir(abs_path) and not stat.S_ISDIR(st.st_mode):
                raise InvalidParameter(f"{abs_path} in container {container}: not a directory")
            link, target = None, ""
            if stat.S_ISLNK(st.st_mode):
                link = os.readlink("", dir_fd=fd)   # the O_PATH descriptor's own link (readlinkat "")
                try:
                    resolved = resolve_in_root(root, r.container_path())
                except OSError as e:
                    raise _os_error(e, f"resolve {abs_path} in container {container}") from None
                target = resolved[len(root.rstrip("/")):] or "/"
            return Entry(abs_path, pfd, r.name, fd, st, link, target)
        except BaseException:
            os.close(fd)
            raise
    except BaseException:
        os.close(pfd)
        raise


def path_stat(root: str, abs_path: str, container: str) -> dict[str, Any]:
    """The stat header's content for ``abs_path`` under ``root``."""
    e = open_entry(root, abs_path, container)
    try:
        return e.stat()
    finally:
        e.close()


def _os_error(e: OSError, what: str) -> ApiError:
    msg = f"{what}: {e.strerror or e}"
    if e.errno == errno.EROFS:
        return Forbidden(f"{what}: container rootfs is marked read-only")
    if e.errno in (errno.ELOOP, errno.EINVAL, errno.ENAMETOOLONG):
        return InvalidParameter(msg)
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(msg)
    if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
        return Conflict(f"{msg} (the container changed the tree while the copy ran)")
    return ApiError(msg)


# -- writing a tar from the tree (GET archive, export) ----------------------------------------

class TarSource:
    """Writes a tar of an entry (and what is under it) read through directory descriptors
    only: nothing is opened by a path that could follow a symlink."""

    def __init__(self, out: BinaryIO) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                                encoding="utf-8", errors="surrogateescape")
        self.links: dict[tuple[int, int], str] = {}

    def close(self) -> None:
        self.tar.close()

    def add(self, pfd: int, name: str, arcname: str, *, st: os.stat_result | None = None,
            one_fs: int | None = None, fd: int = -1, link: str | None = None) -> None:
        """Add ``name`` (in the directory ``pfd``) as ``arcname``, and what is under it.
        ``fd``: an ``O_PATH`` descriptor of the entry itself, already checked (the top
        entry: it cannot vanish or change between its stat header and its data), with
        ``link`` its symlink target. ``one_fs``: a device number not to leave (export).
        An entry below the top that the container removes or replaces while we walk is left
        out (as ``tar`` does with a file that changed as it read it)."""
        try:
            self._add(pfd, name, arcname, st, one_fs, fd, link)
        except (FileNotFoundError, NotADirectoryError, _Changed) as e:
            if fd >= 0:
                raise
            log.warning("archive: %s left out: %s", arcname, e)
        except OSError as e:
            if fd >= 0 or e.errno != errno.ELOOP:
                raise
            log.warning("archive: %s left out: replaced by a symlink while being archived", arcname)

    def _add(self, pfd: int, name: str, arcname: str, st: os.stat_result | None, one_fs: int | None,
             fd: int, link: str | None) -> None:
        if st is None:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False) if name else os.fstat(pfd)
        info = tarfile.TarInfo(arcname)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.mtime = int(st.st_mtime)
        m = st.st_mode
        if stat.S_ISDIR(m):
            info.type = tarfile.DIRTYPE
            dfd = os.open(".", _O_RDDIR, dir_fd=fd) if fd >= 0 else os.open(name or ".", _O_RDDIR, dir_fd=pfd)
            try:
                if os.fstat(dfd).st_ino != st.st_ino:
                    raise _Changed(f"{arcname}: replaced while being archived")
                self.tar.addfile(info)
                if one_fs is not None and st.st_dev != one_fs:
                    return   # a mount point: the directory, not what is mounted on it
                prefix = "" if arcname in ("", ".") and one_fs is not None else arcname.rstrip("/") + "/"
                for child in sorted(os.listdir(dfd)):
                    try:
                        cst = os.stat(child, dir_fd=dfd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue   # removed while we walk (a running container)
                    self.add(dfd, child, prefix + child, st=cst, one_fs=one_fs)
            finally:
                os.close(dfd)
            return
        if stat.S_ISSOCK(m):
            return   # tar has no sockets (GNU tar and Docker skip them too)
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key)
            if first is not None:
                info.type = tarfile.LNKTYPE
                info.linkname = first
                self.tar.addfile(info)
                return
            self.links[key] = arcname
        if stat.S_ISLNK(m):
            info.type = tarfile.SYMTYPE
            info.linkname = link if link is not None else os.readlink(name, dir_fd=pfd)
            self.tar.addfile(info)
        elif stat.S_ISREG(m):
            info.type = tarfile.REGTYPE
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
            rfd = os.open(fd_path(fd), flags) if fd >= 0 else os.open(name, flags | os.O_NOFOLLOW, dir_fd=pfd)
            with os.fdopen(rfd, "rb") as f:
                now = os.fstat(rfd)
                if not stat.S_ISREG(now.st_mode) or now.st_ino != st.st_ino:
                    raise _Changed(f"{arcname}: replaced while being archived")
                info.size = now.st_size
                self.tar.addfile(info, _Exactly(f, now.st_size))
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(m) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tar.addfile(info)
        elif stat.S_ISFIFO(m):
            info.type = tarfile.FIFOTYPE
            self.tar.addfile(info)


class _Changed(Exception):
    """An entry was replaced between its stat and its open."""


class _Exactly:
    """``n`` bytes of a file that a running container may shrink meanwhile (zero-padded, as
    the header already promised the size)."""

    def __init__(self, f: BinaryIO, n: int) -> None:
        self.f = f
        self.left = n

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        want = self.left if n < 0 else min(n, self.left)
        data = self.f.read(want)
        if len(data) < want:
            data += b"\0" * (want - len(data))
        self.left -= len(data)
        return data


def write_archive(entry: Entry, out: BinaryIO) -> None:
    """The tar GET /containers/{id}/archive returns: the entry named by its base name, and
    what is under it."""
    w = TarSource(out)
    base = _base_name(entry.abs_path)
    w.add(entry.pfd, entry.name, "." if base == "/" else base, st=entry.st, fd=entry.fd, link=entry.link)
    w.close()


def write_export(root: str, out: BinaryIO) -> None:
    """The whole tree under ``root`` as a tar (``docker export``), names relative
    (``bin/busybox``), not descending into mount points."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        w = TarSource(out)
        rfd = os.open(".", _O_RDDIR, dir_fd=fd)
        try:
            for child in sorted(os.listdir(rfd)):
                cst = os.stat(child, dir_fd=rfd, follow_symlinks=False)
                w.add(rfd, child, child, st=cst, one_fs=st.st_dev)
        finally:
            os.close(rfd)
        w.close()
    finally:
        os.close(fd)


# -- extracting an upload (PUT archive) -------------------------------------------------------

def _clean_member(raw: str, what: str) -> str:
    if "\0" in raw:
        raise ArchiveError(f"{what}: NUL byte in the name")
    name = raw.lstrip("/")
    name = posixpath.normpath(name) if name else "."
    if name == ".":
        return ""
    if name == ".." or name.startswith("../"):
        raise ArchiveError(f"{what}: path {raw!r} leaves the extraction directory")
    return name


_ALLOWED_XATTR_PREFIXES = ("user.", "security.capability")


class Extractor:
    """Extracts an upload into the directory ``dest`` (a container path, already resolved)
    of the tree under ``root``."""

    def __init__(self, root: str, dest: str, *, no_overwrite_dir_non_dir: bool = False,
                 owner: tuple[int, int] | None = None) -> None:
        self.root = root
        self.dest = dest.rstrip("/")
        self.no_overwrite = no_overwrite_dir_non_dir
        self.owner = owner
        self.dirs: list[tuple[str, str, int, tarfile.TarInfo]] = []   # attributes set at the end

    def run(self, stream: BinaryIO) -> int:
        count = 0
        try:
            tar = tarfile.open(fileobj=stream, mode="r|", errorlevel=2)
        except tarfile.ReadError as e:
            raise ArchiveError(f"the upload is not a tar archive: {e}") from None
        name = ""
        try:
            for info in tar:
                name = info.name
                self.member(tar, info)
                count += 1
            name = ""
            self.finish()
        except tarfile.TarError as e:
            where = f" (after member {name!r})" if name else ""
            raise ArchiveError(f"bad tar archive{where}: {e}") from None
        return count

    def _parent(self, rel_parent: str, what: str) -> int:
        cpath = f"{self.dest}/{rel_parent}" if rel_parent else (self.dest or "/")
        try:
            resolved = resolve_in_root(self.root, cpath)
            return open_beneath(self.root, resolved, create="dir")
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.EEXIST):
                raise ArchiveError(f"{what}: {cpath} is not a directory") from None
            raise

    def member(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        what = f"member {info.name!r}"
        name = _clean_member(info.name, what)
        if not name:
            return   # "." or "./": the extraction directory itself is left as it is
        if not (info.isreg() or info.isdir() or info.issym() or info.islnk() or info.ischr()
                or info.isblk() or info.isfifo()):
            raise ArchiveError(f"{what}: unsupported tar entry type {info.type!r}")
        parent, base = posixpath.split(name)
        pfd = self._parent(parent, what)
        try:
            self._create(tar, info, pfd, parent, base, what)
        finally:
            os.close(pfd)

    def _create(self, tar: tarfile.TarFile, info: tarfile.TarInfo, pfd: int, parent: str, base: str,
                what: str) -> None:
        try:
            old: os.stat_result | None = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None:
            old_dir = stat.S_ISDIR(old.st_mode)
            if self.no_overwrite and old_dir and not info.isdir():
                raise Conflict(f"{what}: cannot overwrite directory {self._cpath(parent, base)!r} "
                               "with non-directory")
            if self.no_overwrite and not old_dir and info.isdir():
                raise Conflict(f"{what}: cannot overwrite non-directory {self._cpath(parent, base)!r} "
                               "with directory")
            if old_dir and info.isdir():
                self._attrs(pfd, base, info, what)
                self.dirs.append((parent, base, old.st_ino, info))
                return
            if info.islnk():
                pass   # removed below, once the target is known to exist
            elif old_dir:
                shutil.rmtree(base, dir_fd=pfd)
            else:
                os.unlink(base, dir_fd=pfd)
        if info.isreg():
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=pfd)
            try:
                src = tar.extractfile(info)
                assert src is not None
                left = info.size
                while left > 0:
                    chunk = src.read(min(left, 1 << 20))
                    if not chunk:
                        raise ArchiveError(f"{what}: truncated data")
                    _write_all(fd, chunk)
                    left -= len(chunk)
                self._fd_attrs(fd, info, what)
            finally:
                os.close(fd)
            return
        if info.isdir():
            os.mkdir(base, 0o700, dir_fd=pfd)
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            self._attrs(pfd, base, info, what)
            self.dirs.append((parent, base, st.st_ino, info))
            return
        if info.issym():
            if not info.linkname:
                raise ArchiveError(f"{what}: symbolic link with an empty target")
            os.symlink(info.linkname, base, dir_fd=pfd)
        elif info.islnk():
            self._hardlink(info, pfd, base, old, what)
            return
        elif info.ischr() or info.isblk():
            kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
            try:
                os.mknod(base, kind | 0o600, os.makedev(info.devmajor, info.devminor), dir_fd=pfd)
            except PermissionError as e:
                raise Forbidden(f"{what}: create device node {info.devmajor}:{info.devminor}: "
                                f"{e.strerror}") from None
        elif info.isfifo():
            os.mkfifo(base, 0o600, dir_fd=pfd)
        self._attrs(pfd, base, info, what)

    def _cpath(self, parent: str, base: str) -> str:
        return posixpath.join(self.dest or "/", parent, base)

    def _hardlink(self, info: tarfile.TarInfo, pfd: int, base: str, old: os.stat_result | None,
                  what: str) -> None:
        target = _clean_member(info.linkname, f"{what}: hard link target")
        if not target:
            raise ArchiveError(f"{what}: hard link to the extraction directory")
        tparent, tbase = posixpath.split(target)
        cpath = f"{self.dest}/{tparent}" if tparent else (self.dest or "/")
        try:
            tfd = open_beneath(self.root, resolve_in_root(self.root, cpath))
        except (FileNotFoundError, NotADirectoryError):
            raise ArchiveError(f"{what}: hard link target {info.linkname!r} does not exist") from None
        try:
            try:
                tst = os.stat(tbase, dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise ArchiveError(f"{what}: hard link target {info.linkname!r} does not exist") from None
            if stat.S_ISDIR(tst.st_mode):
                raise ArchiveError(f"{what}: hard link target {info.linkname!r} is a directory")
            if old is not None:
                if (old.st_dev, old.st_ino) == (tst.st_dev, tst.st_ino):
                    return   # already that file
                if stat.S_ISDIR(old.st_mode):
                    shutil.rmtree(base, dir_fd=pfd)
                else:
                    os.unlink(base, dir_fd=pfd)
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _owner(self, info: tarfile.TarInfo) -> tuple[int, int]:
        return self.owner if self.owner is not None else (info.uid, info.gid)

    def _xattrs(self, info: tarfile.TarInfo, what: str) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for k, v in info.pax_headers.items():
            if not k.startswith("SCHILY.xattr."):
                continue
            name = k[len("SCHILY.xattr."):]
            if not name.startswith(_ALLOWED_XATTR_PREFIXES):
                raise ArchiveError(f"{what}: xattr {name!r}: only user.* and security.capability may be "
                                   "copied into a container")
            out[name] = v.encode("utf-8", "surrogateescape")
        return out

    def _fd_attrs(self, fd: int, info: tarfile.TarInfo, what: str) -> None:
        uid, gid = self._owner(info)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, info.mode & 0o7777)
        for k, v in self._xattrs(info, what).items():
            os.setxattr(fd, k, v)
        os.utime(fd, ns=(int(info.mtime) * 1_000_000_000,) * 2)

    def _attrs(self, pfd: int, base: str, info: tarfile.TarInfo, what: str, *, times: bool | None = None) -> None:
        uid, gid = self._owner(info)
        os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
        if not info.issym():
            fd = os.open(base, _O_PATH, dir_fd=pfd)
            try:
                st = os.fstat(fd)
                if stat.S_ISLNK(st.st_mode):
                    raise OSError(errno.ELOOP, f"{what}: replaced by a symlink while being extracted")
                os.chmod(fd_path(fd), info.mode & 0o7777)
                for k, v in self._xattrs(info, what).items():
                    os.setxattr(fd_path(fd), k, v)
            finally:
                os.close(fd)
        if times if times is not None else not info.isdir():
            t = int(info.mtime) * 1_000_000_000
            os.utime(base, ns=(t, t), dir_fd=pfd, follow_symlinks=False)

    def finish(self) -> None:
        """Directories' times last (their content changed them meanwhile)."""
        for parent, base, ino, info in reversed(self.dirs):
            try:
                pfd = self._parent(parent, "")
            except (OSError, ArchiveError):
                continue   # replaced by a later member
            try:
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                if st.st_ino == ino and stat.S_ISDIR(st.st_mode):
                    t = int(info.mtime) * 1_000_000_000
                    os.utime(base, ns=(t, t), dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                pass   # removed by a later member
            finally:
                os.close(pfd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def extract_archive(root: str, abs_path: str, container: str, stream: BinaryIO, *,
                    no_overwrite_dir_non_dir: bool = False, owner: tuple[int, int] | None = None,
                    writable: Callable[[str], bool] | None = None) -> int:
    """PUT /containers/{id}/archive: extract the tar ``stream`` into the directory
    ``abs_path`` (followed to the end, inside the root). ``writable(container_path)``: False
    when the destination is on a read-only root (403). Returns the member count."""
    try:
        full = resolve_in_root(root, abs_path)
        fd = open_beneath(root, full)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(abs_path, container) from None
    except OSError as e:
        raise _os_error(e, f"copy to {abs_path} in container {container}") from None
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise InvalidParameter(f"extraction point is not a directory: {abs_path} in container {container}")
    finally:
        os.close(fd)
    dest = full[len(root.rstrip("/")):] or "/"
    if writable is not None and not writable(dest):
        raise Forbidden(f"copy to {abs_path} in container {container}: container rootfs is marked read-only")
    ex = Extractor(root, dest, no_overwrite_dir_non_dir=no_overwrite_dir_non_dir, owner=owner)
    try:
        return ex.run(stream)
    except OSError as e:
        raise _os_error(e, f"copy to {abs_path} in container {container}") from None


# -- changes ----------------------------------------------------------------------------------

def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str, xattr: str) -> bool:
    try:
        return os.getxattr(path, xattr, follow_symlinks=False) == b"y"
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise


def overlay_changes(upper: str, lowers: list[str], *, xattr_ns: str = "trusted") -> list[dict[str, Any]]:
    """``docker diff`` of an overlay snapshot: its upper directory against its lower ones
    (nearest first). Kinds: 0 modified, 1 added, 2 deleted. Docker's init-layer paths
    (mount points runc creates) are left out when they are only that."""
    opaque_x = f"{xattr_ns}.overlay.opaque"
    out: list[dict[str, Any]] = []
    changed_dirs: set[str] = set()

    def lower(rel: str, layers: list[str]) -> os.stat_result | None:
        """What the image has at ``rel`` (None: nothing)."""
        for lo in layers:
            try:
                st = os.lstat(lo + rel)
            except (FileNotFoundError, NotADirectoryError):
                continue
            return None if _is_whiteout(st) else st
        return None

    def record(path: str, kind: int) -> None:
        if kind in (KIND_ADD, KIND_DELETE):
            parent = posixpath.dirname(path)
            if parent != "/" and parent not in changed_dirs:
                out.append({"Path": parent, "Kind": KIND_MODIFY})
                changed_dirs.add(parent)
        out.append({"Path": path, "Kind": kind})

    def init_only(rel: str, st: os.stat_result) -> bool:
        if rel not in INIT_PATHS:
            return False
        if stat.S_ISDIR(st.st_mode):
            return True   # the directory itself; what is under it is still walked
        return stat.S_ISREG(st.st_mode) and st.st_size == 0

    def walk(rel_dir: str, masked: bool) -> None:
        """``masked``: an opaque directory above hides the lower layers here (what they hold
        and the upper does not is deleted, against the image)."""
        try:
            names = sorted(os.listdir(upper + rel_dir))
        except FileNotFoundError:
            return
        for n in names:
            rel = f"{rel_dir}/{n}"
            st = os.lstat(upper + rel)
            low = lower(rel, lowers)
            if _is_whiteout(st):
                if low is not None:
                    record(rel, KIND_DELETE)
                continue
            if not stat.S_ISDIR(st.st_mode):
                if not (init_only(rel, st) and low is None):
                    record(rel, KIND_ADD if low is None else KIND_MODIFY)
                continue
            hides = masked or _opaque(upper + rel, opaque_x)
            kind: int | None
            if low is None or not stat.S_ISDIR(low.st_mode):
                kind = None if init_only(rel, st) else KIND_ADD
            else:
                same = (low.st_mode == st.st_mode and low.st_size == st.st_size
                        and _same_time(low.st_mtime_ns, st.st_mtime_ns))
                kind = None if same and not hides else KIND_MODIFY
                if kind == KIND_MODIFY and not hides and _only_init_children(upper, rel):
                    kind = None   # changed only by the mount points runc made in it
            if kind is not None:
                record(rel, kind)
            changed_dirs.add(rel)
            if hides and low is not None and stat.S_ISDIR(low.st_mode):
                here = set(os.listdir(upper + rel))
                gone: set[str] = set()
                for lo in lowers:
                    try:
                        gone.update(os.listdir(lo + rel))
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                for h in sorted(gone - here):
                    if lower(f"{rel}/{h}", lowers) is not None:
                        record(f"{rel}/{h}", KIND_DELETE)
            walk(rel, hides)

    walk("", False)
    out.sort(key=lambda c: c["Path"].replace("/", "\0"))
    return out


def _only_init_children(upper: str, rel: str) -> bool:
    names = os.listdir(upper + rel)
    if not names:
        return False
    for n in names:
        child = f"{rel}/{n}"
        if child not in INIT_PATHS:
            return False
        st = os.lstat(upper + child)
        if not (stat.S_ISDIR(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_size == 0)):
            return False
    return True


def _same_time(a: int, b: int) -> bool:
    """moby's ``sameFsTime``: equal, or equal seconds where one side has no nanoseconds."""
    if a == b:
        return True
    sa, na = divmod(a, 1_000_000_000)
    sb, nb = divmod(b, 1_000_000_000)
    return sa == sb and (na == 0 or nb == 0)


def mount_layers(mounts: list[Any]) -> tuple[str, list[str], str] | None:
    """(upper, lowers, xattr namespace) of a snapshot's mounts; None when it is not one
    overlay or bind mount."""
    if len(mounts) != 1:
        return None
    m = mounts[0]
    if m.type == "overlay":
        upper, lowers = "", []
        for opt in m.options:
            k, _, v = opt.partition("=")
            if k == "upperdir":
                upper = v
            elif k == "lowerdir":
                lowers = v.split(":")
        if not upper:
            return None
        return upper, lowers, "user" if "userxattr" in m.options else "trusted"
    if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
        return m.source, [], "trusted"
    return None


# -- the service ------------------------------------------------------------------------------

class ArchiveService:
    """What the archive, export and changes routes call."""

    def __init__(self, backend: ContainerService) -> None:
        self.b = backend
        self.tmp_root = os.path.join(backend.cfg.exec_root, "archive")

    # roots
    @asynccontextmanager
    async def root(self, c: Container) -> AsyncIterator[str]:
        """The container's tree as a host directory (see the module doc)."""
        fd = await self._proc_root(c) if self.b.is_running(c) else None
        if fd is not None:
            try:
                yield fd_path(fd)
            finally:
                os.close(fd)
            return
        async with self.b.lock(c.id):     # it does not start while its snapshot is mounted here
            if self.b.is_running(c):
                raise Conflict(f"container {c.id} is {c.state.status} but has no task to reach "
                               "its filesystem through; try again")
            mounts = await self.b.cd.snapshot_mounts(c.snapshot_key or c.id, SNAPSHOTTER)
            spec = self.b.container_spec(c)
            path = await _mount_in_thread(self._mount_stopped, self._unmount, c, mounts, spec)
            try:
                yield path
            finally:
                await _in_thread_to_the_end(self._unmount, path)

    async def _proc_root(self, c: Container) -> int | None:
        task = await self.b.cd.get_task(c.id)
        if task is None or task.pid <= 0 or task.status not in ("running", "paused", "created"):
            return None
        try:
            fd = os.open(f"/proc/{task.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        again = await self.b.cd.get_task(c.id)
        if again is None or again.pid != task.pid:   # the pid could have been reused
            os.close(fd)
            return None
        return fd

    def _mount_stopped(self, c: Container, mounts: list[Any], spec: dict[str, Any]) -> str:
        from skiff.images.mount import mount_all
        from skiff.runtime import syscalls as sc

        os.makedirs(self.tmp_root, mode=0o700, exist_ok=True)
        path = tempfile.mkdtemp(prefix=c.id[:12] + "-", dir=self.tmp_root)
        sys = sc.LinuxSyscalls()
        try:
            if not mounts:
                raise Conflict(f"container {c.id}: its snapshot has no mounts")
            mount_all(mounts, path)
        except BaseException:
            os.rmdir(path)
            raise
        try:
            sys.mount(None, path, None, sc.MS_PRIVATE | sc.MS_REC, None)
            for m in spec.get("mounts") or []:
                opts = m.get("options") or []
                if m.get("type") != "bind" and "bind" not in opts and "rbind" not in opts:
                    continue   # proc, sysfs, tmpfs...: nothing to see in a stopped container
                self._bind(path, m, opts, sys)
        except BaseException:
            self._unmount(path)
            raise
        return path

    def _bind(self, root: str, m: dict[str, Any], opts: list[str], sys: Any) -> None:
        from skiff.runtime import syscalls as sc

        src, dest = str(m.get("source") or ""), str(m.get("destination") or "")
        try:
            src_st = os.stat(src)
        except FileNotFoundError:
            return   # the source is gone: the container would not start either
        resolved = resolve_in_root(root, dest)
        fd = open_beneath(root, resolved, create="dir" if stat.S_ISDIR(src_st.st_mode) else "file")
        try:
            sys.mount(src, fd_path(fd), None, sc.MS_BIND | sc.MS_REC, None)
        finally:
            os.close(fd)
        if "ro" in opts:
            fd = open_beneath(root, resolved)   # now the bind mount's root
            try:
                sys.mount(None, fd_path(fd), None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY, None)
            finally:
                os.close(fd)

    def _unmount(self, path: str) -> None:
        from skiff.images.mount import MNT_DETACH
        from skiff.runtime import syscalls as sc

        try:
            sc.LinuxSyscalls().umount2(path, MNT_DETACH)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
        os.rmdir(path)

    def _writable(self, c: Container, spec: dict[str, Any]) -> Callable[[str], bool]:
        ro_root = bool(c.host_config.get("ReadonlyRootfs"))
        mounts = []
        for m in spec.get("mounts") or []:
            dest = posixpath.normpath(str(m.get("destination") or "/"))
            mounts.append((dest, "ro" not in (m.get("options") or [])))
        mounts.sort(key=lambda x: len(x[0]), reverse=True)

        def ok(path: str) -> bool:
            for dest, rw in mounts:
                if path == dest or path.startswith(dest.rstrip("/") + "/"):
                    return rw
            return not ro_root
        return ok

    # calls
    async def stat(self, ref: str, path: str) -> dict[str, Any]:
        c = self.b.get(ref)
        abs_path = clean_container_path(path)
        async with self.root(c) as root:
            return await asyncio.to_thread(path_stat, root, abs_path, ref)

    async def get(self, ref: str, path: str, start: Callable[[dict[str, Any]], Any],
                  write: Callable[[bytes], Any]) -> None:
        """Stat (errors raised before ``start``), ``await start(stat)``, then the tar in
        chunks through ``await write(chunk)``."""
        c = self.b.get(ref)
        abs_path = clean_container_path(path)
        async with self.root(c) as root:
            entry = await asyncio.to_thread(open_entry, root, abs_path, ref)
            try:
                await start(entry.stat())
                await _stream_out(lambda out: write_archive(entry, out), write,
                                  f"archive of {abs_path} in container {ref}")
            finally:
                entry.close()

    async def put(self, ref: str, path: str, body: Any, *, no_overwrite_dir_non_dir: bool,
                  copy_uid_gid: bool) -> None:
        c = self.b.get(ref)
        abs_path = clean_container_path(path)
        spec = self.b.container_spec(c)
        async with self.root(c) as root:
            owner = None
            if copy_uid_gid:
                owner = await asyncio.to_thread(self._owner, c, root)
            await _stream_in(body, lambda f: extract_archive(
                root, abs_path, ref, f, no_overwrite_dir_non_dir=no_overwrite_dir_non_dir,
                owner=owner, writable=self._writable(c, spec)))

    def _owner(self, c: Container, root: str) -> tuple[int, int]:
        from skiff.daemon import specgen

        user = str(c.config.get("User") or "")
        if not user:
            return 0, 0
        u = specgen.resolve_user(root, user)
        return int(u["uid"]), int(u["gid"])

    async def export(self, ref: str, start: Callable[[], Any], write: Callable[[bytes], Any]) -> None:
        """The container's own tree (without its mounts) through a read-only overlay of its
        snapshot's directories (the upper one as the topmost lower), running or not."""
        c = self.b.get(ref)
        mounts = await self.b.cd.snapshot_mounts(c.snapshot_key or c.id, SNAPSHOTTER)
        view = _read_only_view(mounts)
        path = await _mount_in_thread(self._mount_view, self._unmount, c, view)
        try:
            await start()
            await _stream_out(lambda out: write_export(path, out), write, f"export of container {ref}")
        finally:
            await _in_thread_to_the_end(self._unmount, path)

    def _mount_view(self, c: Container, mounts: list[Any]) -> str:
        from skiff.images.mount import mount_all

        os.makedirs(self.tmp_root, mode=0o700, exist_ok=True)
        path = tempfile.mkdtemp(prefix=c.id[:12] + "-", dir=self.tmp_root)
        try:
            mount_all(mounts, path)
        except BaseException:
            os.rmdir(path)
            raise
        return path

    async def changes(self, c: Container) -> list[dict[str, Any]]:
        mounts = await self.b.cd.snapshot_mounts(c.snapshot_key or c.id, SNAPSHOTTER)
        layers = mount_layers(mounts)
        if layers is None:
            raise ApiError(f"container {c.id}: changes: snapshot mounts {[m.type for m in mounts]} "
                           "are not one overlay or bind mount")
        upper, lowers, ns = layers
        return await asyncio.to_thread(overlay_changes, upper, lowers, xattr_ns=ns)


@dataclass
class _ViewMount:
    type: str
    source: str
    options: list[str]


def _read_only_view(mounts: list[Any]) -> list[Any]:
    layers = mount_layers(mounts)
    if layers is None:
        raise ApiError(f"export: snapshot mounts {[m.type for m in mounts]} are not one overlay or bind mount")
    upper, lowers, ns = layers
    if not lowers:
        return [_ViewMount("bind", upper, ["rbind", "ro"])]
    opts = ["ro", "lowerdir=" + ":".join([upper, *lowers])]
    if ns == "user":
        opts.append("userxattr")
    return [_ViewMount("overlay", "overlay", opts)]


# -- bridging threads and HTTP bodies ---------------------------------------------------------

async def _in_thread_to_the_end(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a thread, awaited to its end even when the caller is cancelled meanwhile
    (a client that goes away cancels its handler): the cancellation is raised after it."""
    fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait([fut])
        raise


async def _mount_in_thread(mount: Callable[..., str], unmount: Callable[[str], None], *args: Any) -> str:
    """``mount(*args)`` in a thread; if the caller is cancelled before it returns, what it
    mounted is unmounted (``unmount(path)``) instead of being left behind."""
    fut = asyncio.ensure_future(asyncio.to_thread(mount, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait([fut])
        if not fut.cancelled() and fut.exception() is None:
            await asyncio.to_thread(unmount, fut.result())
        raise


async def _stream_out(produce: Callable[[BinaryIO], None], write: Callable[[bytes], Any], what: str) -> None:
    """Run ``produce(file)`` in a thread; what it writes goes to ``await write(chunk)``.
    After the headers are sent an error can only cut the body short: it is logged and
    raised (the handler then drops the connection)."""
    r, w = os.pipe()

    def run() -> None:
        try:
            with os.fdopen(w, "wb", buffering=CHUNK) as f:
                produce(f)
        except BrokenPipeError:
            pass   # the client went away

    task = asyncio.ensure_future(asyncio.to_thread(run))
    reading: asyncio.Future[bytes] | None = None
    try:
        while True:
            reading = asyncio.ensure_future(asyncio.to_thread(os.read, r, CHUNK))
            chunk = await asyncio.shield(reading)
            if not chunk:
                break
            await write(chunk)
    finally:
        if reading is not None and not reading.done():
            await asyncio.wait([reading])   # r is not closed under a thread about to read it
        os.close(r)
        try:
            await asyncio.shield(task)
        except Exception as e:
            log.error("%s: %s", what, e)
            raise


async def _stream_in(body: Any, consume: Callable[[BinaryIO], int]) -> int:
    """Feed the request body (an aiohttp StreamReader) to ``consume(file)`` running in a
    thread. An error of ``consume`` wins over the broken pipe it causes."""
    r, w = os.pipe()

    def run() -> int:
        with os.fdopen(r, "rb", buffering=CHUNK) as f:
            n = consume(f)
            while f.read(CHUNK):
                pass   # the tar's trailing padding: let the writer finish
            return n

    task = asyncio.ensure_future(asyncio.to_thread(run))
    writing: asyncio.Future[None] | None = None
    try:
        try:
            while True:
                chunk = await body.read(CHUNK)
                if not chunk:
                    break
                writing = asyncio.ensure_future(asyncio.to_thread(_write_all, w, chunk))
                await asyncio.shield(writing)
        except BrokenPipeError:
            # the extraction stopped early (its result says why): take the rest of the body,
            # so that the client, still sending, reads the error instead of a reset
            while await body.read(CHUNK):
                pass
        finally:
            if writing is not None and not writing.done():
                await asyncio.wait([writing])   # w is not closed under a thread writing to it
            os.close(w)
    except BaseException:
        # the reader ends at the end of the pipe; nothing may go on writing into a root
        # that the caller is about to unmount
        await asyncio.wait([task])
        raise
    return await task
