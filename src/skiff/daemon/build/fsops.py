"""File-system work of the builder, run in threads on a mounted snapshot (``root``): COPY/ADD
writes, WORKDIR creation, ``--chown`` names, and the mount points a RUN container leaves.

Every write goes through directory descriptors opened one component at a time with
``O_NOFOLLOW`` from the root; a destination path is first resolved inside the root
(``resolve_in_root``: the image's symlinks are followed *inside* it, as Docker's
``FollowSymlinkInScope``), so nothing outside the root is ever written, whatever the image
or the context holds. Sources are a ``BuildContext`` (the client's tar, indexed) or an
``ImageSource`` (a read-only view of another image or stage, for ``COPY --from``).

Copy semantics (moby's ``performCopyForInfo``): a directory source copies its *contents*
into the destination directory (created when missing, given the source directory's mode);
a file goes to ``dest/<name>`` when the destination ends in ``/``, is an existing directory
or there are several sources, else to ``dest`` itself; symlinks inside copied directories are
copied as symlinks; owners are 0:0 (``--chown`` names them; ``COPY --from`` without it keeps
the source's); modes and mtimes are kept (``--chmod`` sets the mode); directories created on
the way get the owner too. ADD extracts a local tar (plain, gzip, bzip2, xz) into the
destination directory with ``skiff.images.layers.apply_layer`` (hostile-input safe, confined
to that directory as Docker's chrooted untar), keeping the archive's owners as moby does.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass
from typing import Any

from skiff.daemon.build.context import BuildContext, ContextError, Entry, has_wildcards
from skiff.runtime.paths import resolve_in_root

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1 << 20


class CopyError(Exception):
    """A COPY/ADD that cannot be done (reported in the build output)."""


@dataclass
class CopyItem:
    source: Any          # BuildContext or ImageSource
    entry: Entry
    name: str            # the base name used under a directory destination
    archive: str = ""    # ADD: the compression of a local archive ("none", "gzip", ...) or ""


# --- sources --------------------------------------------------------------------------------

class ImageSource:
    """Files of an image mounted read-only at ``root`` (``COPY --from``)."""

    def __init__(self, root: str, label: str) -> None:
        self.root = root.rstrip("/")
        self.label = label

    def _entry(self, rel: str) -> Entry | None:
        try:
            st = os.lstat(self.root + "/" + rel if rel else self.root)
        except (FileNotFoundError, NotADirectoryError):
            return None
        m = st.st_mode
        kind = ("dir" if stat.S_ISDIR(m) else "file" if stat.S_ISREG(m) else
                "symlink" if stat.S_ISLNK(m) else "other")
        link = os.readlink(self.root + "/" + rel) if kind == "symlink" else ""
        return Entry(rel, kind, stat.S_IMODE(m), st.st_size, 0, link, int(st.st_mtime), st.st_uid, st.st_gid)

    def lookup(self, orig: str) -> Entry:
        rel = BuildContext.source_path("/" + orig.lstrip("/"))
        resolved = resolve_in_root(self.root, "/" + rel)
        inner = resolved[len(self.root):].lstrip("/")
        e = self._entry(inner)
        if e is None:
            raise CopyError(f"{self.label}: stat {rel or '/'}: file does not exist")
        return e

    def glob(self, orig: str) -> list[str]:
        from skiff.daemon.build.context import _go_match_regex
        rel = BuildContext.source_path("/" + orig.lstrip("/"))
        rx = _go_match_regex(rel)
        out = []
        # walk only as deep as the pattern has components
        depth = rel.count("/") + 1
        stack = [("", 0)]
        while stack:
            d, n = stack.pop()
            try:
                names = sorted(os.listdir(self.root + "/" + d if d else self.root))
            except (NotADirectoryError, FileNotFoundError):
                continue
            for name in names:
                p = f"{d}/{name}" if d else name
                if rx.match(p):
                    out.append(p)
                if n + 1 < depth and os.path.isdir(self.root + "/" + p) and not os.path.islink(self.root + "/" + p):
                    stack.append((p, n + 1))
        return sorted(out)

    def children(self, path: str) -> list[Entry]:
        d = self.root + "/" + path if path else self.root
        out = []
        for name in sorted(os.listdir(d)):
            e = self._entry(f"{path}/{name}" if path else name)
            if e is not None:
                out.append(e)
        return out

    def copy_data(self, e: Entry, dst_fd: int) -> None:
        fd = os.open(self.root + "/" + e.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            copy_fd(fd, dst_fd, e.size, 0, e.path)
        finally:
            os.close(fd)

    def hash(self, e: Entry) -> str:
        raise AssertionError("image sources are keyed by image ID and path")


def copy_fd(src: int, dst: int, size: int, offset: int, what: str) -> None:
    """Copy ``size`` bytes at ``offset`` of ``src`` to the start of ``dst`` (a new, empty
    file at position 0) inside the kernel: ``copy_file_range`` (same file system),
    ``sendfile`` (across file systems: an overlay mount), else ``pread``/``pwrite``."""
    done = 0
    way = 0
    while done < size:
        try:
            if way == 0:
                n = os.copy_file_range(src, dst, size - done, offset + done, done)
            elif way == 1:
                n = os.sendfile(dst, src, offset + done, size - done)
            else:
                data = os.pread(src, min(4 * CHUNK, size - done), offset + done)
                n = 0
                view = memoryview(data)
                while view:
                    k = os.pwrite(dst, view, done + n)
                    view = view[k:]
                    n += k
        except OSError as e:
            if way < 2 and e.errno in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                way += 1
                if way == 1:
                    os.lseek(dst, done, os.SEEK_SET)
                continue
            raise
        if n == 0:
            if way < 2:
                way += 1
                continue
            raise CopyError(f"{what}: the file shrank while it was copied")
        done += n


def collect(source: Any, sources: list[str], what: str) -> list[CopyItem]:
    """The items of a COPY/ADD's sources (wildcards expanded, symlinks at the top followed)."""
    items: list[CopyItem] = []
    for orig in sources:
        if has_wildcards(orig):
            for rel in source.glob(orig):
                e = source.lookup(rel)
                items.append(CopyItem(source, e, posixpath.basename(rel)))
            continue
        e = source.lookup(orig)
        rel = BuildContext.source_path(orig) if isinstance(source, BuildContext) else orig.strip("/")
        items.append(CopyItem(source, e, posixpath.basename(rel) or posixpath.basename(e.path)))
    if not items:
        raise CopyError(f"{what} failed: no source files were specified")
    return items


# --- destination side -----------------------------------------------------------------------

def _open_dir_chain(root: str, resolved: str, owner: tuple[int, int] | None, create: bool) -> int:
    """A descriptor of the directory ``resolved`` (under ``root``, no symlinks in it),
    created (0755, ``owner``) component by component when missing."""
    base = root.rstrip("/")
    rel = resolved[len(base):].strip("/")
    fd = os.open(base or "/", _O_DIR)
    try:
        for name in [p for p in rel.split("/") if p]:
            try:
                nfd = os.open(name, _O_DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(name, 0o755, dir_fd=fd)
                if owner is not None and owner != (0, 0):
                    os.chown(name, owner[0], owner[1], dir_fd=fd, follow_symlinks=False)
                nfd = os.open(name, _O_DIR, dir_fd=fd)
            except (NotADirectoryError, OSError) as e:
                if isinstance(e, NotADirectoryError) or e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise CopyError(f"{'/' + rel}: a component ({name}) is not a directory") from None
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _remove_at(dfd: int, name: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dfd)
    else:
        os.unlink(name, dir_fd=dfd)


class Writer:
    """Writes entries of a source under directory descriptors of the root."""

    def __init__(self, owner: tuple[int, int] | None, chmod: int | None) -> None:
        self.owner = owner         # None: keep the source's (COPY --from)
        self.chmod = chmod

    def _own(self, e: Entry) -> tuple[int, int]:
        return self.owner if self.owner is not None else (e.uid, e.gid)

    def _mode(self, e: Entry) -> int:
        return self.chmod if self.chmod is not None else e.mode

    def entry(self, src: Any, e: Entry, dfd: int, name: str) -> None:
        try:
            old: os.stat_result | None = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if e.kind == "dir":
            if old is not None and not stat.S_ISDIR(old.st_mode):
                _remove_at(dfd, name, old)
                old = None
            if old is None:
                os.mkdir(name, 0o700, dir_fd=dfd)
            cfd = os.open(name, _O_DIR, dir_fd=dfd)
            try:
                self.contents(src, e, cfd)
            finally:
                os.close(cfd)
            self._attrs(dfd, name, e)
            return
        if old is not None:
            _remove_at(dfd, name, old)
        if e.kind == "file":
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dfd)
            try:
                src.copy_data(e, fd)
                uid, gid = self._own(e)
                os.fchown(fd, uid, gid)
                os.fchmod(fd, self._mode(e))
                os.utime(fd, ns=(e.mtime * 1_000_000_000,) * 2)
            finally:
                os.close(fd)
        elif e.kind == "symlink":
            os.symlink(e.linkname, name, dir_fd=dfd)
            uid, gid = self._own(e)
            os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
            os.utime(name, ns=(e.mtime * 1_000_000_000,) * 2, dir_fd=dfd, follow_symlinks=False)
        else:
            raise CopyError(f"{e.path}: cannot copy a special file (device, FIFO or socket)")

    def contents(self, src: Any, e: Entry, dfd: int) -> None:
        for kid in src.children(e.path):
            self.entry(src, kid, dfd, posixpath.basename(kid.path))

    def _attrs(self, dfd: int, name: str, e: Entry) -> None:
        uid, gid = self._own(e)
        os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
        os.chmod(name, self._mode(e), dir_fd=dfd)
        if e.mtime >= 0:
            os.utime(name, ns=(e.mtime * 1_000_000_000,) * 2, dir_fd=dfd, follow_symlinks=False)


def _exists_as_dir(root: str, cpath: str) -> bool:
    try:
        return os.path.isdir(resolve_in_root(root, cpath)) and not os.path.islink(resolve_in_root(root, cpath))
    except OSError:
        return False


def copy_items(root: str, dest: str, items: list[CopyItem], *, owner: tuple[int, int] | None,
               chmod: int | None, what: str) -> None:
    """Do one COPY/ADD into ``root`` (see the module doc); ``dest`` is absolute (WORKDIR
    applied), a trailing ``/`` kept."""
    w = Writer(owner, chmod)
    dir_dest = dest.endswith("/") or len(items) > 1 or _exists_as_dir(root, dest)
    try:
        for it in items:
            e = it.entry
            if e.kind == "dir" or it.archive:
                target = resolve_in_root(root, dest)
                dfd = _open_dir_chain(root, target, owner, True)
                try:
                    if it.archive:
                        _extract(it, target, what)
                    else:
                        w.contents(it.source, e, dfd)
                finally:
                    os.close(dfd)
                if e.kind == "dir" and target != root.rstrip("/"):
                    parent, name = target.rsplit("/", 1)
                    pfd = _open_dir_chain(root, parent, owner, False)
                    try:
                        w._attrs(pfd, name, e)
                    finally:
                        os.close(pfd)
                continue
            if dir_dest:
                parent = resolve_in_root(root, dest)
                name = it.name
            else:
                dname, name = posixpath.split(dest.rstrip("/"))
                parent = resolve_in_root(root, dname or "/")
            if not name or name in (".", ".."):
                raise CopyError(f"{what}: bad destination name {name!r}")
            dfd = _open_dir_chain(root, parent, owner, True)
            try:
                w.entry(it.source, e, dfd, name)
            finally:
                os.close(dfd)
    except ContextError as e:
        raise CopyError(str(e)) from None
    except OSError as e:
        raise CopyError(f"{what}: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")) from None


# --- ADD archives ---------------------------------------------------------------------------

class _SliceReader(io.RawIOBase):
    def __init__(self, ctx: BuildContext, e: Entry) -> None:
        self.ctx = ctx
        self.e = e
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.e.size - self.pos)
        if n <= 0:
            return 0
        data = os.pread(self.ctx._fd, n, self.e.offset + self.pos)
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _open_archive(ctx: BuildContext, e: Entry, kind: str) -> Any:
    raw = io.BufferedReader(_SliceReader(ctx, e), CHUNK)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw)
    if kind == "bzip2":
        return bz2.BZ2File(raw)
    if kind == "xz":
        return lzma.LZMAFile(raw)
    return raw


def archive_kind(ctx: BuildContext, e: Entry) -> str:
    """ADD: "none"/"gzip"/"bzip2"/"xz" when ``e`` is a tar archive (as moby's
    ``isArchivePath``: its start decompresses to a valid tar header), else ""."""
    from skiff.daemon.build.context import sniff
    if e.kind != "file" or e.size == 0:
        return ""
    head = os.pread(ctx._fd, 6, e.offset)
    kind = sniff(head) or "none"
    try:
        with _open_archive(ctx, e, kind) as f:
            block = f.read(512)
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return ""
    if len(block) < 512:
        return ""
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return ""
    return kind


def _extract(it: CopyItem, target: str, what: str) -> None:
    """ADD of a local archive: extracted into ``target`` (confined to it), owners as the
    archive has them (moby's ``UntarPath``: neither the build's identity nor ``--chown``)."""
    from skiff.images.errors import ImageError
    from skiff.images.layers import apply_layer
    ctx = it.source
    assert isinstance(ctx, BuildContext)
    try:
        with _open_archive(ctx, it.entry, it.archive) as f:
            apply_layer(f, target, whiteout="oci", same_owner=True, where=f"{what} archive {it.entry.path}")
    except ImageError as e:
        raise CopyError(str(e)) from None


# --- WORKDIR, --chown -------------------------------------------------------------------------

def make_workdir(root: str, path: str) -> bool:
    """Create ``path`` (absolute) in ``root`` like ``mkdir -p`` (0755, root); True when
    something was created."""
    target = resolve_in_root(root, path)
    if os.path.isdir(target):
        return False
    fd = _open_dir_chain(root, target, None, True)
    os.close(fd)
    return True


def _find_id(root: str, file: str, name: str, what: str) -> int:
    try:
        resolved = resolve_in_root(root, file)
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise CopyError(f"unable to find {what} {name}: no such file: {file}") from None
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split(":")
            if len(parts) >= 3 and parts[0] == name and parts[2].isdigit():
                return int(parts[2])
    kind = "passwd" if what == "user" else "group"
    raise CopyError(f"unable to find {what} {name}: no matching entries in {kind} file")


def parse_chown(root: str, spec: str) -> tuple[int, int]:
    """``--chown=user[:group]`` with names looked up in the target's /etc/passwd and
    /etc/group (moby: a missing group part is the user part)."""
    user, _, group = spec.partition(":")
    if not group:
        group = user
    if not user:
        raise CopyError(f"--chown={spec}: no user given")
    uid = int(user) if user.isdigit() else _find_id(root, "/etc/passwd", user, "user")
    gid = int(group) if group.isdigit() else _find_id(root, "/etc/group", group, "group")
    return uid, gid


# --- RUN: mount points runc leaves -----------------------------------------------------------

_MOUNT_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/mtab", ".dockerenv")
_MOUNT_DIRS = ("dev/pts", "dev/shm", "dev/mqueue", "dev", "proc", "sys", "etc")


def strip_mount_points(upper: str, lowers: list[str], xattr_ns: str = "trusted") -> None:
    """Remove from a RUN container's overlay upper directory what only the runtime put there
    as mount points (empty /etc/hosts, /etc/hostname, /etc/resolv.conf; empty /dev, /proc,
    /sys, and /etc copied up or made only for them): Docker keeps these in an init layer
    under the container's, so they never reach a RUN's layer."""
    def in_lower(rel: str) -> bool:
        return any(os.path.lexists(os.path.join(low, rel)) for low in lowers)

    for rel in _MOUNT_FILES:
        p = os.path.join(upper, rel)
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            lower_nonempty = any(os.path.isfile(os.path.join(low, rel)) and
                                 os.path.getsize(os.path.join(low, rel)) > 0 for low in lowers)
            if not lower_nonempty:
                os.unlink(p)
    for rel in _MOUNT_DIRS:
        p = os.path.join(upper, rel)
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not stat.S_ISDIR(st.st_mode) or os.listdir(p):
            continue
        try:
            opaque = os.getxattr(p, f"{xattr_ns}.overlay.opaque", follow_symlinks=False) == b"y"
        except OSError:
            opaque = False
        if opaque and in_lower(rel):
            continue
        os.rmdir(p)
