"""Layer tarballs: apply one to a directory safely, and write one from a snapshot's changes.

``apply_layer(stream, root)`` extracts a layer (uncompressed, gzip or zstd: detected from the
first bytes) into ``root`` and returns its diff ID (sha256 of the uncompressed stream, the
whole of it, padding included) and size, in one pass. Whiteout handling (``whiteout=``):

- ``"delete"``: ``root`` holds the merged tree of the lower layers (a native snapshot, or a
  mounted overlay): ``.wh.NAME`` removes NAME, ``.wh..wh..opq`` empties its directory;
- ``"overlay"``: ``root`` is an overlay upper directory and ``lowers`` its lower directories
  (nearest first): ``.wh.NAME`` becomes a 0/0 character device, ``.wh..wh..opq`` the
  ``trusted.overlay.opaque=y`` xattr (``user.`` with ``overlay_xattr="user"``), and paths are
  looked up in the merged view the mount will show (a symlink in a lower layer is followed,
  a directory that exists only below is copied up with its attributes);
- ``"oci"``: no interpretation: ``.wh.`` files are extracted as ordinary files.

An uncompressed layer in a regular file (a content-store blob) is not streamed: its headers
are read with ``pread`` at their offsets, small member data is read with its neighbours and
written, larger data is copied from the blob inside the kernel (``copy_file_range``, else
``sendfile``, else ``pread``/``write``), and a second thread hashes the blob; a header the
inline parser does not take exactly as tarfile would goes through tarfile and the same
per-member code as a stream, so the rules below are the same on both paths.

Whiteouts only ever hide what lower layers hold: what this layer itself wrote stays, in
whichever order the archive lists the two (OCI image spec, "Whiteouts").

Hostile input. Nothing is created outside ``root``:

- names are made relative (a leading ``/`` is dropped, as Docker and GNU tar do) and
  cleaned; a name that still climbs out with ``..`` is refused;
- the directories of a name are looked up one component at a time in the tree being
  built; a symlink met there is followed *inside* the root (an absolute target starts again
  at the root, ``..`` stops at it), as the container will see the path; the directory so
  found is then opened from the root with ``O_NOFOLLOW`` at each step (``open_beneath``),
  and the entry is created relative to that descriptor (``openat``, ``mkdirat``,
  ``symlinkat``, ``mknodat``, ``linkat`` with ``O_EXCL``/``O_NOFOLLOW``), so no write goes
  through a symlink, including one the archive placed earlier (``a -> /etc`` then
  ``a/passwd`` writes ``<root>/etc/passwd``);
- whatever sits at an entry's own name is removed first (a directory is merged when the
  entry is a directory too), so a member never writes through a symlink at its own path;
- hard links must name an entry that exists inside the root (this layer's or a lower
  layer's; with ``whiteout="overlay"`` a lower file is copied up first), never a directory;
- sizes are streamed in 1 MiB pieces, never read whole; sparse members (GNU and PAX sparse
  formats) are written as holes plus data; the decompressors are read with bounded output;
- malformed headers, truncated data, bad sparse maps and unknown entry types are errors
  naming the member; tarfile's habit of treating a bad header after the first as the end of
  the archive is not followed.

Decisions (as Docker): device nodes are created (this needs ``CAP_MKNOD``; without it the
layer fails, naming the member), except the 0/0 character device, which is overlay's
whiteout form and is refused in a layer; setuid/setgid/sticky bits are kept, since images
legitimately hold setuid programs (``su``, ``ping``) and the danger this module guards
against is escaping the root, not what runs inside a container (that is for the runtime's
``nosuid`` mounts and ``no_new_privs``); a tree unpacked for use on the host can refuse
devices and drop those bits instead (``allow_devices=False``, ``keep_setid=False``).
Overlay's own xattrs (``trusted.overlay.*``, ``user.overlay.*``) in a layer are refused:
they would steer the overlay mount.

Preserved: owners (numeric uid/gid, with ``same_owner``, the default when running as root),
modes, xattrs (PAX ``SCHILY.xattr.*`` and ``LIBARCHIVE.xattr.*``, ``security.capability``
included), hard links, holes, mtime and atime (nanoseconds where PAX gives them; atime is the
mtime when absent), set after the content; directories' attributes are set at the end, so
that a read-only directory can still be filled and its mtime is not disturbed.

``write_diff`` writes the other direction: from an overlay upper directory (whiteout
devices back to ``.wh.`` files, opaque directories to ``.wh..wh..opq``, overlay's own
xattrs dropped) or by comparing a tree with its parent's (native snapshots, as containerd's
``fs.Changes``). Output is PAX tar in a fixed order (a depth-first walk with each directory's
names in byte order, a directory before its content, a whiteout where the name it hides
would be, an opaque marker right after its directory), hard links within the diff as tar
hard links, mtimes in whole seconds, whiteout markers with fixed metadata (root, 0600, time
0); optionally gzip or zstd compressed, with both digests returned.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import stat
import struct
import tarfile
import threading
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from skiff.images.errors import DigestMismatch, ImageError, InvalidArgument
from skiff.images.snapshots.fsutil import (
    OVERLAY_XATTR_PREFIXES,
    at_path,
    copy_dir_metadata,
    copy_entry,
    read_xattrs,
)
from skiff.runtime.paths import MAXSYMLINKS, open_beneath

if TYPE_CHECKING:
    import queue
    from collections.abc import Sequence
    from typing import BinaryIO

    from skiff.images.snapshots import Mount

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"

MEDIA_TYPES_UNCOMPRESSED = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
)
MEDIA_TYPES_GZIP = (
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
MEDIA_TYPES_ZSTD = (
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)
LAYER_MEDIA_TYPES = MEDIA_TYPES_UNCOMPRESSED + MEDIA_TYPES_GZIP + MEDIA_TYPES_ZSTD

CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_QUEUE_DEPTH = 4  # decompressed pieces the producer thread may hold ready
# compressed input per zlib call: its output then mostly fits in one CHUNK, and zlib does
# not copy the input left over (``unconsumed_tail``) again and again, as with 1 MiB pieces
_GZIP_IN = 1 << 18


class LayerError(ImageError):
    """A layer could not be applied or written (the message names the member and why)."""


class InvalidLayer(LayerError, InvalidArgument):
    """The layer itself is malformed or hostile."""


@dataclass(frozen=True)
class Applied:
    """What ``apply_layer`` read: the diff ID and size of the uncompressed tar stream, the
    compression found, and the digest and size of the stream as given."""

    diff_id: str
    size: int
    compression: str  # "none", "gzip" or "zstd"
    compressed_digest: str
    compressed_size: int


@dataclass(frozen=True)
class Diff:
    """What ``write_diff`` wrote: the uncompressed tar's digest (the diff ID) and size, and
    the digest and size of the bytes written (equal when ``compression="none"``)."""

    diff_id: str
    size: int
    digest: str
    compressed_size: int
    compression: str

    @property
    def media_type(self) -> str:
        return {"none": "application/vnd.oci.image.layer.v1.tar",
                "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
                "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}[self.compression]


def detect_compression(head: bytes) -> str:
    """``gzip``, ``zstd`` or ``none`` from the first bytes of a stream."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return "none"


def _zstandard():
    try:
        import zstandard
    except ImportError as e:
        raise LayerError("zstd layers need the 'zstandard' package, which is not installed") from e
    return zstandard


# --- reading: decompression, digests, forward-only seeking ----------------------------------

class _HashPipe:
    """Hashes pieces in a thread of its own, in the order given (``put``): the producer
    thread of a stream then only reads and decompresses, and the hashing (sha256 releases
    the GIL) runs beside both it and the extracting thread. ``close`` waits for the rest."""

    def __init__(self) -> None:
        import queue

        self._queue: queue.Queue[tuple[Any, bytes] | None] = queue.Queue(maxsize=4 * _QUEUE_DEPTH)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="skiff-layer-digest", daemon=True)
        self._thread.start()

    def put(self, h: Any, data: bytes) -> None:
        self._queue.put((h, data))

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            if self.error is None:
                try:
                    item[0].update(item[1])
                except BaseException as e:  # raised by close()
                    self.error = e

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.error is not None:
            raise self.error


class _HashingRaw:
    __slots__ = ("_f", "hash", "pipe", "size")

    def __init__(self, f: BinaryIO, algorithm: str) -> None:
        self._f = f
        self.hash: hashlib._Hash | None = hashlib.new(algorithm)
        self.pipe: _HashPipe | None = None
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if data:
            if self.hash is not None:
                if self.pipe is not None:
                    self.pipe.put(self.hash, data)
                else:
                    self.hash.update(data)
            self.size += len(data)
        return data


class LayerReader:
    """The uncompressed bytes of a layer stream, hashed as they are produced.

    Supports what ``tarfile`` needs in "r" mode: ``read``, ``tell`` and ``seek`` forward
    (skipping by reading, so the hash covers everything), and ``copy_to_fd`` for member data.

    After ``start()``, a producer thread reads the stream and decompresses it, handing
    pieces of at most ``CHUNK`` bytes to the extracting thread through a bounded queue (at
    most ``_QUEUE_DEPTH`` pieces ahead), and both the stream and its uncompressed bytes are
    hashed in a third thread (``_HashPipe``; zlib, zstd and hashlib release the GIL on large
    pieces); the producer's errors are raised in the extracting thread at the point of the
    stream where they occurred. ``close()`` stops the producer and waits for it and for the
    hashing, so the caller's stream is never read after ``apply_layer`` returns and the
    digests are complete.
    """

    def __init__(self, raw: BinaryIO, *, compressed_algorithm: str = "sha256") -> None:
        self.raw = _HashingRaw(raw, compressed_algorithm)
        head = b""
        while len(head) < 4:
            more = self.raw.read(4 - len(head))
            if not more:
                break
            head += more
        self.compression = detect_compression(head)
        self.hash = hashlib.sha256()
        self.size = 0
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._gz: zlib._Decompress | None = None
        self._zst: Any = None
        self._pending = head  # compressed bytes read ahead, not yet decompressed
        if self.compression == "gzip":
            self._gz = zlib.decompressobj(31)
        elif self.compression == "zstd":
            self._zctx = _zstandard().ZstdDecompressor()
            self._zst = self._zctx.decompressobj()
            self._zin = memoryview(head)
        else:
            self._buf = head
            self.hash.update(head)
            self._pending = b""
            if compressed_algorithm == "sha256":
                self.raw.hash = None  # the stream is the tar: its digest is the diff ID
        self._view = memoryview(self._buf)
        self._queue: queue.Queue[tuple[bytes, BaseException | None]] | None = None
        self._thread: threading.Thread | None = None
        self._pipe: _HashPipe | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        """Read and decompress ahead in a producer thread (see the class doc)."""
        if self._thread is None and not self._eof:
            import queue  # (imported here: the start of a process that never streams stays short)

            self._queue = queue.Queue(maxsize=_QUEUE_DEPTH)
            self._pipe = self.raw.pipe = _HashPipe()
            self._thread = threading.Thread(target=self._produce, name="skiff-layer-reader", daemon=True)
            self._thread.start()

    def _produce(self) -> None:
        q = self._queue
        assert q is not None
        try:
            while not self._stop.is_set():
                data = self._source()
                q.put((data, None))
                if not data:
                    return
        except BaseException as e:  # handed to the extracting thread, raised there
            q.put((b"", e))

    def close(self) -> None:
        """Stop the producer thread (if any) and wait for it and for the hashing."""
        t = self._thread
        if t is None:
            return
        import queue
        self._stop.set()
        q = self._queue
        assert q is not None
        while t.is_alive():
            try:
                q.get(timeout=0.05)  # make room so that a blocked put returns
            except queue.Empty:
                pass
        t.join()
        self._thread = None
        pipe = self._pipe
        if pipe is not None:
            self._pipe = self.raw.pipe = None
            pipe.close()

    def _source(self) -> bytes:
        """The next piece of uncompressed data, hashed (b"" at the end)."""
        data = self._more()
        if data:
            if self._pipe is not None:
                self._pipe.put(self.hash, data)
            else:
                self.hash.update(data)
        return data

    def _next(self) -> bytes:
        if self._error is not None:
            raise self._error
        if self._queue is None:
            return self._source()
        data, err = self._queue.get()
        if err is not None:
            self._error = err
            raise err
        return data

    def _more(self) -> bytes:
        """The next piece of uncompressed data (b"" at the end)."""
        if self.compression == "none":
            return self.raw.read(CHUNK)
        if self.compression == "zstd":
            try:
                return self._zstd_more()
            except LayerError:
                raise
            except Exception as e:  # zstandard.ZstdError
                raise InvalidLayer(f"zstd stream: {e}") from e
        return self._gzip_more()

    def _zstd_more(self) -> bytes:
        """Input is fed in 2 KiB pieces: a zstd block of a few bytes may stand for 128 KiB,
        so this bounds what one call can produce (64 MiB) whatever the stream holds."""
        out: list[bytes] = []
        total = 0
        while total < CHUNK // 4:
            d = self._zst
            if not self._zin:
                data = self.raw.read(CHUNK)
                if not data:
                    if not d.eof:
                        raise InvalidLayer("zstd stream: truncated (ends inside a frame)")
                    break
                self._zin = memoryview(data)
            if d.eof:
                rest = bytes(d.unused_data) + bytes(self._zin)
                self._zin = memoryview(b"")
                while len(rest) < 4:
                    more = self.raw.read(4 - len(rest))
                    if not more:
                        break
                    rest += more
                if not rest.startswith(_ZSTD_MAGIC):
                    self._trailing(rest)
                    break
                self._zst = d = self._zctx.decompressobj()  # the next frame
                self._zin = memoryview(rest)
            piece = self._zin[:2048]
            self._zin = self._zin[2048:]
            got = d.decompress(piece)
            if got:
                out.append(got)
                total += len(got)
        return b"".join(out)

    def _gzip_more(self) -> bytes:
        while True:
            d = self._gz
            assert d is not None
            try:
                if d.unconsumed_tail:
                    out = d.decompress(d.unconsumed_tail, CHUNK)
                elif d.eof:
                    rest = d.unused_data or self.raw.read(CHUNK)
                    if not rest:
                        return b""
                    if len(rest) < 2:
                        rest += self.raw.read(1)
                    if not rest.startswith(_GZIP_MAGIC):
                        self._trailing(rest)
                        return b""
                    # another gzip member follows (concatenated gzip, as gzip(1) and Go read)
                    self._gz = d = zlib.decompressobj(31)
                    out = d.decompress(rest, CHUNK)
                else:
                    data = self._pending or self.raw.read(_GZIP_IN)
                    self._pending = b""
                    if not data:
                        raise InvalidLayer("gzip stream: truncated (ends inside a compressed member)")
                    out = d.decompress(data, CHUNK)
            except zlib.error as e:
                raise InvalidLayer(f"gzip stream: {e}") from e
            if out:
                return out

    def _trailing(self, rest: bytes) -> None:
        """After the last compressed member only zero padding is accepted."""
        while rest:
            if rest.strip(b"\0"):
                raise InvalidLayer(f"{self.compression} stream: trailing data after the last member")
            rest = self.raw.read(CHUNK)

    def _refill(self) -> bool:
        """Make the buffer hold unread bytes; False at the end of the stream."""
        if self._eof:
            return False
        self._buf = self._next()
        self._view = memoryview(self._buf)
        self._pos = 0
        if not self._buf:
            self._eof = True
            return False
        return True

    def _piece(self, n: int) -> bytes:
        """Up to ``n`` bytes from what is buffered (refilling an empty buffer)."""
        if self._pos >= len(self._buf) and not self._refill():
            return b""
        if n < 0:
            n = len(self._buf) - self._pos
        data = self._buf[self._pos:self._pos + n]
        self._pos += len(data)
        return data

    def read(self, n: int = -1) -> bytes:
        """``n`` bytes (fewer only at the end of the stream); -1: what is buffered."""
        data = self._piece(n)
        if 0 < len(data) < n:
            parts = [data]
            got = len(data)
            while got < n:
                more = self._piece(n - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        self.size += len(data)
        return data

    def read_exact(self, n: int) -> bytes:
        parts = []
        while n > 0:
            d = self.read(min(n, CHUNK))
            if not d:
                break
            parts.append(d)
            n -= len(d)
        return b"".join(parts)

    def copy_to_fd(self, fd: int, n: int) -> int:
        """Write the next ``n`` bytes to ``fd`` straight from the buffers (no copies);
        returns how many there were (fewer only at the end of the stream)."""
        done = 0
        while done < n:
            pos = self._pos
            avail = len(self._buf) - pos
            if avail <= 0:
                if not self._refill():
                    break
                continue
            k = min(n - done, avail)
            view = self._view[pos:pos + k]
            while view:
                view = view[os.write(fd, view):]
            self._pos = pos + k
            done += k
        self.size += done
        return done

    def copy_to_fd_at(self, fd: int, n: int, pos: int) -> int:
        """Write the next ``n`` bytes to ``fd`` at offset ``pos`` (``pwrite``); returns how
        many there were (fewer only at the end of the stream)."""
        done = 0
        while done < n:
            chunk = self.read(min(n - done, CHUNK))
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                w = os.pwrite(fd, view, pos)
                view = view[w:]
                pos += w
            done += len(chunk)
        return done

    def skip(self, n: int) -> int:
        """Pass over the next ``n`` bytes (they are hashed all the same); returns how many."""
        done = 0
        while done < n:
            avail = len(self._buf) - self._pos
            if avail <= 0:
                if not self._refill():
                    break
                continue
            k = min(n - done, avail)
            self._pos += k
            done += k
        self.size += done
        return done

    def tell(self) -> int:
        return self.size

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self.size:
            raise OSError(errno.ESPIPE, f"layer stream: cannot seek back to {pos} from {self.size}")
        need = pos - self.size
        if need > 0 and self.skip(need) < need:
            raise InvalidLayer(f"tar stream: truncated (ends at byte {self.size}, data runs to {pos})")
        return self.size

    def drain(self) -> None:
        while self.skip(1 << 62):
            pass

    @property
    def diff_id(self) -> str:
        return "sha256:" + self.hash.hexdigest()


# --- applying -------------------------------------------------------------------------------

_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_O_RDDIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SUPPORTED = frozenset((tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE,
                        tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
                        tarfile.DIRTYPE, tarfile.FIFOTYPE))
_DEVICE_TYPES = (tarfile.CHRTYPE, tarfile.BLKTYPE)


def clean_name(raw: str, what: str) -> str:
    """A member name as a clean path relative to the root ("" for the root itself)."""
    if "\0" in raw:
        raise InvalidLayer(f"{what}: NUL byte in the name")
    name = raw.lstrip("/")
    name = posixpath.normpath(name) if name else "."
    if name == ".":
        return ""
    if name == ".." or name.startswith("../"):
        raise InvalidLayer(f"{what}: path {raw!r} leaves the root")
    return name


def _ns(value: object, what: str) -> int:
    from decimal import Decimal, InvalidOperation

    try:
        if isinstance(value, str):
            return int(Decimal(value) * 1_000_000_000)
        if isinstance(value, int):
            return value * 1_000_000_000
        if isinstance(value, float):
            return int(Decimal(repr(value)) * 1_000_000_000)
    except (InvalidOperation, ValueError) as e:
        raise InvalidLayer(f"{what}: bad timestamp {value!r}") from e
    raise InvalidLayer(f"{what}: bad timestamp {value!r}")


def _rmtree_at(dirfd: int, name: str) -> None:
    """``shutil.rmtree`` of ``name`` in ``dirfd``; a non-root user also gets through read-only
    directories (an image's 0555 ones) by opening them up first."""
    import shutil

    def retry(func, path, exc_info):
        err = exc_info[1]
        if not isinstance(err, PermissionError) or os.geteuid() == 0:
            raise err
        parent = posixpath.dirname(path)
        if parent:
            os.chmod(parent, 0o700, dir_fd=dirfd)
        else:
            os.chmod(f"/proc/self/fd/{dirfd}", 0o700)
        if func in (os.open, os.scandir, os.listdir):  # the directory could not be read
            os.chmod(path, 0o700, dir_fd=dirfd)
            shutil.rmtree(path, dir_fd=dirfd, onerror=retry)
            return
        func(path, dir_fd=dirfd)

    shutil.rmtree(name, dir_fd=dirfd, onerror=retry)


class _Dir:
    """A directory of the tree being built: relative path, O_PATH descriptor (of its copy in
    ``root``, or -1 if it exists only in lower layers), and the layers (0 = root) whose
    directory at that path contributes to the merged view."""

    __slots__ = ("fd", "rel", "stack")

    def __init__(self, rel: str, fd: int, stack: tuple[int, ...]) -> None:
        self.rel = rel
        self.fd = fd
        self.stack = stack


def _join(a: str, b: str) -> str:
    return f"{a}/{b}" if a else b


class _Extractor:
    def __init__(self, root: str, mode: str, lowers: Sequence[str], same_owner: bool,
                 xattr_ns: str, where: str, allow_devices: bool = True, keep_setid: bool = True) -> None:
        self.root = os.path.realpath(root)
        self.allow_devices = allow_devices
        self.mode_mask = 0o7777 if keep_setid else 0o1777  # the permission bits kept from a member
        self.mode = mode
        self.overlay = mode == "overlay"
        self.layers = [self.root] + ([os.path.realpath(x) for x in lowers] if self.overlay else [])
        self.root_stack = tuple(range(len(self.layers)))
        self.same_owner = same_owner
        self.opaque_xattr = f"{xattr_ns}.overlay.opaque"
        self.where = where
        self.rootfd = os.open(self.root, _O_PATH_DIR)
        self.fds: dict[str, int] = {}  # rel -> O_PATH fd of a directory in root
        self.cache: dict[str, _Dir] = {}  # a member's directory as written in the archive -> _Dir
        # the blob fast path's view of ``cache``: a directory name exactly as the archive
        # spells it (before cleaning) -> (its _Dir, new files there get our uid and gid,
        # new files there get the mode they are created with); emptied with ``cache``
        self.fast: dict[str, tuple[_Dir, bool, bool]] = {}
        self.touched: set[str] = set()  # what this layer wrote, and their directories
        self.dirs: dict[str, tuple[tarfile.TarInfo, int]] = {}  # attributes to set at the end
        self.loosen = os.geteuid() != 0
        self.loosened: dict[str, int] = {}  # rel -> mode to put back (see _loosen)

    def close(self) -> None:
        self._invalidate()
        os.close(self.rootfd)

    def _invalidate(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        self.cache.clear()
        self.fast.clear()

    def _dirfd(self, rel: str) -> int:
        if not rel:
            return self.rootfd
        fd = self.fds.get(rel)
        if fd is None:
            if len(self.fds) >= 256:
                self._invalidate()
            fd = open_beneath(self.root, self.root + "/" + rel)
            self.fds[rel] = fd
        return fd

    def _mark(self, rel: str) -> None:
        while rel and rel not in self.touched:
            self.touched.add(rel)
            rel = posixpath.dirname(rel)

    # -- the merged view

    def _lookup(self, rel: str, stack: Sequence[int]) -> tuple[str, int, os.stat_result | None]:
        """What ``rel`` is in the merged view of the layers ``stack``:
        (``missing``/``dir``/``link``/``other``, layer index, stat)."""
        for li in stack:
            try:
                st = os.lstat(self.layers[li] + "/" + rel)
            except (FileNotFoundError, NotADirectoryError):
                continue
            m = st.st_mode
            if self.overlay and stat.S_ISCHR(m) and st.st_rdev == 0:
                return "missing", li, st  # a whiteout hides this and every lower layer
            if stat.S_ISDIR(m):
                return "dir", li, st
            if stat.S_ISLNK(m):
                return "link", li, st
            return "other", li, st
        return "missing", -1, None

    def _is_opaque(self, path: str) -> bool:
        try:
            return os.getxattr(path, self.opaque_xattr, follow_symlinks=False) == b"y"
        except OSError as e:
            if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                return False
            raise

    def _child_stack(self, rel: str, stack: Sequence[int], first: int) -> tuple[int, ...]:
        if not self.overlay:
            return (0,)
        out: list[int] = []
        started = False
        for li in stack:
            if li == first:
                started = True
            if not started:
                continue
            path = self.layers[li] + "/" + rel
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # a file or whiteout here ends the merge
            out.append(li)
            if self._is_opaque(path):
                break
        return tuple(out)

    def _resolve_dir(self, parent: str, create: bool) -> _Dir | None:
        """The directory ``parent`` (a clean relative path from the archive) in the merged
        view, symlinks followed inside the root. With ``create``, missing directories are
        made (0755) and lower-only ones copied up, and the result has a descriptor;
        without, None is returned when something is missing."""
        if create:
            hit = self.cache.get(parent)
            if hit is not None:
                return hit
        todo = parent.split("/") if parent else []
        todo.reverse()
        done: list[str] = []
        stacks: list[tuple[int, ...]] = [self.root_stack]
        hops = 0
        while todo:
            c = todo.pop()
            if not c or c == ".":
                continue
            if c == "..":
                if done:
                    done.pop()
                    stacks.pop()
                continue
            rel = _join("/".join(done), c)
            kind, li, st = self._lookup(rel, stacks[-1])
            if kind == "link":
                hops += 1
                if hops > MAXSYMLINKS:
                    raise InvalidLayer(f"{self.where}: {parent}: too many levels of symbolic links")
                target = os.readlink(self.layers[li] + "/" + rel)
                if target.startswith("/"):
                    done.clear()
                    del stacks[1:]
                parts = target.split("/")
                parts.reverse()
                todo.extend(parts)
                continue
            if kind == "other":
                raise InvalidLayer(f"{self.where}: {parent}: {rel} is not a directory")
            if kind == "missing":
                if not create:
                    return None
                self._make_dir(rel, whiteout_here=li == 0)
                stack: tuple[int, ...] = (0,)
            else:
                stack = self._child_stack(rel, stacks[-1], li)
                if li != 0 and create:
                    self._copy_up_dir(rel, li)
                    stack = (0, *stack)
            done.append(c)
            stacks.append(stack)
        rel = "/".join(done)
        in_root = stacks[-1][:1] == (0,)
        result = _Dir(rel, self._dirfd(rel) if in_root else -1, stacks[-1])
        if create and self.loosen:
            self._loosen(result)
        if create:
            self.cache[parent] = result
        return result

    def _loosen(self, d: _Dir) -> None:
        """Not root: a read-only directory of a lower layer is opened up (u+rwx) while this
        layer writes into it; ``finish_dirs`` puts its mode back."""
        if d.rel in self.loosened:
            return
        path = f"/proc/self/fd/{d.fd}"
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o700 != 0o700:
            os.chmod(path, mode | 0o700)
            self.loosened[d.rel] = mode

    def _make_dir(self, rel: str, whiteout_here: bool) -> None:
        pdir, name = posixpath.split(rel)
        pfd = self._dirfd(pdir)
        if whiteout_here:  # a whiteout this layer made: the new directory hides lower content
            os.unlink(name, dir_fd=pfd)
            self._invalidate()
            pfd = self._dirfd(pdir)
        os.mkdir(name, 0o755, dir_fd=pfd)
        if whiteout_here:
            os.setxattr(at_path(pfd, name), self.opaque_xattr, b"y", follow_symlinks=False)

    def _copy_up_dir(self, rel: str, li: int) -> None:
        pdir, name = posixpath.split(rel)
        pfd = self._dirfd(pdir)
        src = os.open(self.layers[li] + "/" + rel, _O_RDDIR)
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
            dst = os.open(name, _O_RDDIR, dir_fd=pfd)
            try:
                copy_dir_metadata(src, dst, os.fstat(src), same_owner=self.same_owner)
            finally:
                os.close(dst)
        finally:
            os.close(src)

    # -- members

    def member(self, reader: LayerReader | _BlobReader, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        what = f"{self.where}: member {info.name!r}"
        if info.type not in _SUPPORTED:
            raise InvalidLayer(f"{what}: unsupported tar entry type {info.type!r}")
        if not self.allow_devices and info.type in _DEVICE_TYPES:
            raise InvalidLayer(f"{what}: device nodes are refused")
        name = clean_name(info.name, what)
        base = posixpath.basename(name)
        parent = posixpath.dirname(name)
        if self.mode != "oci" and name.startswith(WHITEOUT_META_PREFIX) and base != WHITEOUT_OPAQUE:
            return  # aufs bookkeeping at the top (.wh..wh.plnk/..., .wh..wh.aufs): not content, as Docker skips it
        if self.mode != "oci" and base.startswith(WHITEOUT_PREFIX):
            if base == WHITEOUT_OPAQUE:
                self._opaque(parent)
            elif base.startswith(WHITEOUT_META_PREFIX):
                pass  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content, as Docker skips it
            else:
                victim = base[len(WHITEOUT_PREFIX):]
                if victim in ("", ".", ".."):
                    raise InvalidLayer(f"{what}: malformed whiteout")
                self._whiteout(parent, victim)
            return
        if not name:
            if not info.isdir():
                raise InvalidLayer(f"{what}: the root must be a directory")
            self.dirs[""] = (info, os.fstat(self.rootfd).st_ino)
            return
        if info.islnk():
            self._hardlink(info, name, what)
            return
        pdir = self._resolve_dir(parent, create=True)
        assert pdir is not None
        rel = _join(pdir.rel, base)
        self._create(reader, tar, pdir, base, rel, info, what)
        self._mark(rel)

    def _existing(self, pfd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _remove_at(self, pfd: int, name: str, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            _rmtree_at(pfd, name)
        else:
            os.unlink(name, dir_fd=pfd)
        self._invalidate()

    def _create(self, reader: LayerReader | _BlobReader, tar: tarfile.TarInfo | tarfile.TarFile, pdir: _Dir, name: str,
                rel: str, info: tarfile.TarInfo, what: str) -> None:
        pfd = pdir.fd
        if info.isreg():
            try:
                fd = os.open(name, _O_NEWFILE, 0o600, dir_fd=pfd)
            except FileExistsError:  # something is there already: it goes first
                old = self._existing(pfd, name)
                if old is not None:
                    self._remove_at(pfd, name, old)
                    pfd = self._dirfd(pdir.rel)
                fd = os.open(name, _O_NEWFILE, 0o600, dir_fd=pfd)
            try:
                if info.sparse is not None:
                    self._write_sparse(reader, tar, fd, info, what)
                else:
                    self._write_data(reader, fd, info.size, what)
                self._attrs(pfd, name, info, what, fd)
            finally:
                os.close(fd)
            return
        old = self._existing(pfd, name)
        if info.isdir():
            if old is not None and stat.S_ISDIR(old.st_mode):
                self.dirs[rel] = (info, old.st_ino)
                return
            if old is not None:
                self._remove_at(pfd, name, old)
                pfd = self._dirfd(pdir.rel)
            os.mkdir(name, 0o700, dir_fd=pfd)
            if self.overlay and old is not None and self._lookup(rel, pdir.stack[1:])[0] != "missing":
                # replacing what this layer put over a lower entry: do not merge with it
                os.setxattr(at_path(pfd, name), self.opaque_xattr, b"y", follow_symlinks=False)
            self.dirs[rel] = (info, os.stat(name, dir_fd=pfd, follow_symlinks=False).st_ino)
            return
        if old is not None:
            self._remove_at(pfd, name, old)
            pfd = self._dirfd(pdir.rel)
        if info.issym():
            if not info.linkname:
                raise InvalidLayer(f"{what}: symbolic link with an empty target")
            os.symlink(info.linkname, name, dir_fd=pfd)
        elif info.ischr() or info.isblk():
            if info.ischr() and info.devmajor == 0 and info.devminor == 0:
                raise InvalidLayer(f"{what}: a 0/0 character device is overlay's whiteout form; "
                                   "layers use .wh. files")
            kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
            try:
                os.mknod(name, kind | 0o600, os.makedev(info.devmajor, info.devminor), dir_fd=pfd)
            except PermissionError as e:
                raise LayerError(f"{what}: create device node {info.devmajor}:{info.devminor}: "
                                 f"{e.strerror} (device nodes need CAP_MKNOD)") from e
        elif info.isfifo():
            os.mkfifo(name, 0o600, dir_fd=pfd)
        else:  # pragma: no cover - _SUPPORTED is checked first
            raise InvalidLayer(f"{what}: unsupported tar entry type {info.type!r}")
        self._attrs(pfd, name, info, what)

    def _write_data(self, reader: LayerReader | _BlobReader, fd: int, size: int, what: str) -> None:
        if size > 0:
            got = reader.copy_to_fd(fd, size)
            if got < size:
                raise InvalidLayer(f"{what}: truncated: {got} of {size} bytes of data")

    def _write_sparse(self, reader: LayerReader | _BlobReader, tar: tarfile.TarInfo | tarfile.TarFile, fd: int,
                      info: tarfile.TarInfo, what: str) -> None:
        assert info.sparse is not None
        sparse = cast("list[tuple[int, int]]", info.sparse)
        stored = getattr(tar, "offset", 0) - info.offset_data
        end = 0
        total = 0
        sparse = [(off, n) for off, n in sparse if n != 0 or off < 0 or off > info.size]  # GNU pads with (x, 0)
        for off, n in sparse:
            if off < end or n < 0 or off + n > info.size:
                raise InvalidLayer(f"{what}: bad sparse map entry ({off}, {n}) for a file of {info.size} bytes")
            end = off + n
            total += n
        if total > stored:
            raise InvalidLayer(f"{what}: sparse map holds {total} bytes but the member stores {stored}")
        if reader.tell() != info.offset_data:
            reader.seek(info.offset_data)
        for off, n in sparse:
            if n > 0 and reader.copy_to_fd_at(fd, n, off) < n:
                raise InvalidLayer(f"{what}: truncated sparse data")
        os.ftruncate(fd, info.size)

    def _xattrs(self, info: tarfile.TarInfo, what: str) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for k, v in info.pax_headers.items():
            if k.startswith("SCHILY.xattr."):
                name = k[len("SCHILY.xattr."):]
                value = v.encode("utf-8", "surrogateescape")
            elif k.startswith("LIBARCHIVE.xattr."):
                import base64
                import urllib.parse
                name = urllib.parse.unquote(k[len("LIBARCHIVE.xattr."):])
                try:
                    value = base64.b64decode(v + "=" * (-len(v) % 4))
                except ValueError as e:
                    raise InvalidLayer(f"{what}: xattr {name}: bad base64 value") from e
            else:
                continue
            if not name or "\0" in name:
                raise InvalidLayer(f"{what}: xattr with a bad name {name!r}")
            if name.startswith(OVERLAY_XATTR_PREFIXES):
                raise InvalidLayer(f"{what}: xattr {name}: reserved for the overlay filesystem")
            out[name] = value
        return out

    def _attrs(self, pfd: int, name: str, info: tarfile.TarInfo, what: str, fd: int | None = None) -> None:
        xattrs = self._xattrs(info, what)
        mtime = _ns(info.pax_headers.get("mtime", info.mtime), what)
        atime = _ns(info.pax_headers["atime"], what) if "atime" in info.pax_headers else mtime
        try:
            if self.same_owner:
                if fd is not None:
                    os.fchown(fd, info.uid, info.gid)
                else:
                    os.chown(name, info.uid, info.gid, dir_fd=pfd, follow_symlinks=False)
            if not info.issym():
                mode = info.mode & self.mode_mask
                if fd is not None:
                    os.fchmod(fd, mode)
                else:
                    os.chmod(name, mode, dir_fd=pfd)  # never a symlink here: nothing is followed
            for k, v in xattrs.items():
                if fd is not None:
                    os.setxattr(fd, k, v)
                else:
                    os.setxattr(at_path(pfd, name), k, v, follow_symlinks=False)
            if fd is not None:
                os.utime(fd, ns=(atime, mtime))
            else:
                os.utime(name, ns=(atime, mtime), dir_fd=pfd, follow_symlinks=False)
        except OverflowError as e:
            raise InvalidLayer(f"{what}: value out of range: {e}") from e

    def _hardlink(self, info: tarfile.TarInfo, name: str, what: str) -> None:
        target = clean_name(info.linkname, f"{what}: hard link target")
        if not target:
            raise InvalidLayer(f"{what}: hard link to the root directory")
        tparent, tbase = posixpath.split(target)
        tdir = self._resolve_dir(tparent, create=False)
        if tdir is None:
            raise InvalidLayer(f"{what}: hard link target {info.linkname!r} does not exist")
        trel = _join(tdir.rel, tbase)
        kind, li, st = self._lookup(trel, tdir.stack)
        if kind == "missing":
            raise InvalidLayer(f"{what}: hard link target {info.linkname!r} does not exist")
        if kind == "dir":
            raise InvalidLayer(f"{what}: hard link target {info.linkname!r} is a directory")
        assert st is not None
        if li != 0:  # overlay: the target is in a lower layer; copy it up to link to it
            tdir = self._resolve_dir(tparent, create=True)
            assert tdir is not None
            src = os.open(self.layers[li] + "/" + tdir.rel if tdir.rel else self.layers[li],
                          _O_PATH_DIR | os.O_NOFOLLOW)
            try:
                copy_entry(src, tdir.fd, tbase, st, same_owner=self.same_owner)
            finally:
                os.close(src)
            self._mark(trel)
        tdir = self._resolve_dir(tparent, create=True)
        assert tdir is not None
        pdir = self._resolve_dir(posixpath.dirname(name), create=True)
        assert pdir is not None
        base = posixpath.basename(name)
        rel = _join(pdir.rel, base)
        if rel == trel:
            self._mark(rel)
            return  # a link to itself: it is there already
        tfd = tdir.fd
        pfd = pdir.fd
        old = self._existing(pfd, base)
        if old is not None:
            self._remove_at(pfd, base, old)
            tdir = self._resolve_dir(tparent, create=True)
            pdir = self._resolve_dir(posixpath.dirname(name), create=True)
            assert tdir is not None and pdir is not None
            tfd, pfd = tdir.fd, pdir.fd
            if self._existing(tfd, tbase) is None:
                raise InvalidLayer(f"{what}: hard link target {info.linkname!r} was the entry it replaces")
        os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        self._mark(rel)

    # -- whiteouts

    def _whiteout(self, parent: str, victim: str) -> None:
        pdir = self._resolve_dir(parent, create=False)
        if pdir is None:
            return  # nothing there to hide
        rel = _join(pdir.rel, victim)
        if not self.overlay:
            self._remove_lower(rel)
            return
        if rel in self.touched:
            # this layer wrote it: hide only what lower layers have under it
            pdir = self._resolve_dir(parent, create=True)
            assert pdir is not None
            st = self._existing(pdir.fd, victim)
            if st is not None and stat.S_ISDIR(st.st_mode):
                os.setxattr(at_path(pdir.fd, victim), self.opaque_xattr, b"y", follow_symlinks=False)
                self._invalidate()
            return
        if self._lookup(rel, pdir.stack)[0] == "missing":
            return
        pdir = self._resolve_dir(parent, create=True)
        assert pdir is not None
        old = self._existing(pdir.fd, victim)
        if old is not None:
            self._remove_at(pdir.fd, victim, old)
            pdir = self._resolve_dir(parent, create=True)
            assert pdir is not None
        os.mknod(victim, stat.S_IFCHR | 0o600, 0, dir_fd=pdir.fd)
        self._invalidate()

    def _remove_lower(self, rel: str) -> None:
        """Delete mode: remove ``rel`` except what this layer wrote."""
        pdir, name = posixpath.split(rel)
        pfd = self._dirfd(pdir)
        st = self._existing(pfd, name)
        if st is None:
            return
        if rel not in self.touched:
            if self.loosen and pdir:
                self._loosen(_Dir(pdir, pfd, ()))
            self._remove_at(pfd, name, st)
            return
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, _O_RDDIR, dir_fd=pfd)
            try:
                children = sorted(os.listdir(fd))
            finally:
                os.close(fd)
            for child in children:
                self._remove_lower(_join(rel, child))

    def _opaque(self, parent: str) -> None:
        pdir = self._resolve_dir(parent, create=False)
        if pdir is None:
            return
        if not self.overlay:
            fd = os.open(".", _O_RDDIR, dir_fd=pdir.fd)
            try:
                children = sorted(os.listdir(fd))
            finally:
                os.close(fd)
            for child in children:
                self._remove_lower(_join(pdir.rel, child))
            return
        if not pdir.rel:
            self._opaque_root()
            return
        pdir = self._resolve_dir(parent, create=True)
        assert pdir is not None
        os.setxattr(at_path(pdir.fd, "."), self.opaque_xattr, b"y", follow_symlinks=False)
        self._invalidate()

    def _opaque_root(self) -> None:
        """Overlay does not honour an opaque root: hide each lower top-level entry instead
        (a whiteout, or for a directory this layer wrote to, the opaque xattr)."""
        names: set[str] = set()
        for layer in self.layers[1:]:
            names.update(os.listdir(layer))
        for n in sorted(names):
            if self._lookup(n, self.root_stack[1:])[0] == "missing":
                continue
            old = self._existing(self.rootfd, n)
            if n in self.touched:
                # this layer's own entry stays; under a directory of it, lower content goes
                if old is not None and stat.S_ISDIR(old.st_mode):
                    os.setxattr(at_path(self.rootfd, n), self.opaque_xattr, b"y", follow_symlinks=False)
                continue
            if old is not None:
                self._remove_at(self.rootfd, n, old)
            os.mknod(n, stat.S_IFCHR | 0o600, 0, dir_fd=self.rootfd)
        self._invalidate()

    # -- the end

    def finish_dirs(self) -> None:
        for rel, mode in self.loosened.items():
            if rel in self.dirs:
                continue  # the archive gives its mode
            try:
                fd = self._dirfd(rel)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue  # removed or replaced since
                raise
            os.chmod(f"/proc/self/fd/{fd}", mode)
        for rel, (info, ino) in reversed(list(self.dirs.items())):
            what = f"{self.where}: member {info.name!r}"
            if rel:
                pdir, name = posixpath.split(rel)
                try:
                    pfd = self._dirfd(pdir)
                    fd = os.open(name, _O_RDDIR, dir_fd=pfd)
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        continue  # replaced or removed later in the archive
                    raise
            else:
                fd = os.open(self.root, _O_RDDIR)
            try:
                if os.fstat(fd).st_ino != ino:
                    continue
                self._attrs(-1, "", info, what, fd)
            finally:
                os.close(fd)


# tarfile's header errors (not in its __all__ nor in typeshed)
_END_ERRORS = (tarfile.__dict__["EOFHeaderError"], tarfile.__dict__["EmptyHeaderError"])
_TRUNCATED_ERROR = tarfile.__dict__["TruncatedHeaderError"]


# the fixed fields of a ustar/GNU/v7 header block, in order (the last 12 bytes unused)
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8x32s32s8s8s155s12x")
# entry types the fast parser handles (all of them entries of their own, no extension headers)
_FAST_TYPES = frozenset((tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.LNKTYPE,
                         tarfile.SYMTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.DIRTYPE,
                         tarfile.FIFOTYPE))
_DATA_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)  # the fast types whose data follows


def _fast_header(buf: bytes, offset: int, encoding: str, errors: str) -> tarfile.TarInfo | None:
    """The member a plain header block describes, as ``tarfile.TarInfo.frombuf`` and
    ``_proc_builtin`` would make it, or None when the block is anything but a well-formed
    header of an ordinary entry (end of archive, bad checksum, base-256 or odd numbers,
    extension headers, sparse files, unknown types): those go to tarfile, whose handling
    (and errors) are then exactly the usual ones. ``offset``: where the block starts."""
    if len(buf) != tarfile.BLOCKSIZE:
        return None
    (name, mode, uid, gid, size, mtime, chksum, kind, linkname, uname, gname,
     devmajor, devminor, prefix) = _HEADER.unpack(buf)
    if kind not in _FAST_TYPES:
        return None
    # Numbers: octal text, trailing NULs and spaces stripped. Whatever int() refuses here
    # (base-256, a NUL followed by more text, ...) goes to tarfile; what it accepts has the
    # value tarfile's nti() gives (the text up to the first NUL, stripped, in base 8).
    try:
        chk = int(chksum.rstrip(b"\0 ") or b"0", 8)
        if chk != sum(buf) - sum(chksum) + 256:  # the checksum field counts as 8 spaces
            return None
        info = tarfile.TarInfo()
        info.mode = int(mode.rstrip(b"\0 ") or b"0", 8)
        info.uid = int(uid.rstrip(b"\0 ") or b"0", 8)
        info.gid = int(gid.rstrip(b"\0 ") or b"0", 8)
        info.size = int(size.rstrip(b"\0 ") or b"0", 8)
        info.mtime = int(mtime.rstrip(b"\0 ") or b"0", 8)
        info.devmajor = int(devmajor.rstrip(b"\0 ") or b"0", 8)
        info.devminor = int(devminor.rstrip(b"\0 ") or b"0", 8)
        nul = name.find(b"\0")
        info.name = (name if nul < 0 else name[:nul]).decode(encoding, errors)
        nul = linkname.find(b"\0")
        info.linkname = (linkname if nul < 0 else linkname[:nul]).decode(encoding, errors)
        nul = uname.find(b"\0")
        info.uname = (uname if nul < 0 else uname[:nul]).decode(encoding, errors)
        nul = gname.find(b"\0")
        info.gname = (gname if nul < 0 else gname[:nul]).decode(encoding, errors)
        nul = prefix.find(b"\0")
        pfx = (prefix if nul < 0 else prefix[:nul]).decode(encoding, errors)
    except (ValueError, UnicodeError):
        return None
    info.chksum = chk
    if kind == tarfile.AREGTYPE and info.name.endswith("/"):
        kind = tarfile.DIRTYPE  # v7: a directory is a regular file with a trailing slash
    info.type = kind
    if kind == tarfile.DIRTYPE:
        info.name = info.name.rstrip("/")
    if pfx:
        info.name = pfx + "/" + info.name
        if kind == tarfile.DIRTYPE:
            info.name = info.name.rstrip("/")
    info.offset = offset
    info.offset_data = offset + tarfile.BLOCKSIZE
    return info


def _next_member(tar: Any, reader: LayerReader, where: str) -> tarfile.TarInfo | None:
    """The next header, or None at the end; unlike tarfile, a bad header is an error."""
    reader.seek(tar.offset)
    return _member_from_block(tar, reader, reader.read(tarfile.BLOCKSIZE), where)


def _member_from_block(tar: Any, reader: LayerReader, block: bytes, where: str) -> tarfile.TarInfo | None:
    """``_next_member`` once the block at ``tar.offset`` has been read."""
    if not tar.pax_headers:  # global PAX headers apply to every member: tarfile's job
        info = _fast_header(block, tar.offset, tar.encoding, tar.errors)
        if info is not None:
            end = info.offset_data
            if info.type in _DATA_TYPES:
                end += -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            tar.offset = end
            return info
    tar.fileobj = _Unread(block, reader)
    try:
        return _tarfile_member(tar, where)
    finally:
        tar.fileobj = reader


def _extract_stream(reader: LayerReader, tar: Any, ex: _Extractor, where: str, current: list[str]) -> None:
    """Extract every member of a streamed layer (``tar.firstmember`` is read already);
    ``current[0]`` names the member being extracted, for the caller's error messages.

    Members go through ``_Extractor.member``, except, as on the blob path, a plain regular
    file (``_plain_reg``: no extension headers, nothing tarfile would read differently) whose
    directory, named exactly so in the archive, the general path has already resolved and
    written a plain file into (``_register_fast``): it is created there directly (``O_EXCL``,
    ``O_NOFOLLOW``, relative to the directory's descriptor, so the confinement is the general
    path's), written from the reader's buffers, and given owner, mode and times through its
    descriptor; whatever already exists at its name sends it to the general path, which
    replaces it. The syscalls left out are the blob path's (see ``_extract_blob``)."""
    fast = ex.fast
    umask = _umask()
    euid, egid = os.geteuid(), os.getegid()
    touched = ex.touched
    same_owner = ex.same_owner
    mode_mask = ex.mode_mask
    encoding, errors = tar.encoding, tar.errors
    plain_reg = _plain_reg
    fopen, fchown, fchmod, utime, close = os.open, os.fchown, os.fchmod, os.utime, os.close
    copy_to_fd, seek, read = reader.copy_to_fd, reader.seek, reader.read
    octs: dict[bytes, int] = {}
    info: tarfile.TarInfo | None = tar.firstmember
    if info is None:
        return  # an empty archive (only the end marker)
    while True:
        if info is not None:
            current[0] = info.name
            ex.member(reader, tar, info)
            if info.type in _DATA_TYPES and info.sparse is None and not info.pax_headers:
                _register_fast(ex, info, where, egid)  # later files of its directory: fast
        off = tar.offset
        seek(off)
        block = read(tarfile.BLOCKSIZE)
        hdr = None if tar.pax_headers else plain_reg(block, octs, encoding, errors)
        if hdr is not None:
            name, mode, uid, gid, size, mtime = hdr
            parent, _, base = name.rpartition("/")
            hit = fast.get(parent)
            if (hit is not None and base and base != "." and base != ".."
                    and not base.startswith(WHITEOUT_PREFIX)):
                pdir, owner_ok, modes_ok = hit
                current[0] = name
                mode &= mode_mask
                plain = modes_ok and not mode & 0o7000 and not mode & umask
                try:
                    wfd = fopen(base, _O_NEWFILE, mode if plain else 0o600, dir_fd=pdir.fd)
                except FileExistsError:
                    pass  # something is there: the general path replaces it
                else:
                    try:
                        if size:
                            got = copy_to_fd(wfd, size)
                            if got < size:
                                raise InvalidLayer(f"{where}: member {name!r}: truncated: "
                                                   f"{got} of {size} bytes of data")
                        if same_owner and not (uid == euid and gid == egid and owner_ok):
                            fchown(wfd, uid, gid)
                        if not plain:
                            fchmod(wfd, mode)
                        t = mtime * 1_000_000_000
                        utime(wfd, ns=(t, t))
                    finally:
                        close(wfd)
                    rel = f"{pdir.rel}/{base}" if pdir.rel else base
                    touched.add(rel)
                    if pdir.rel and pdir.rel not in touched:
                        ex._mark(pdir.rel)
                    tar.offset = off + 512 + -(-size // 512) * 512
                    info = None
                    continue
        info = _member_from_block(tar, reader, block, where)
        if info is None:
            return


def _tarfile_member(tar: Any, where: str) -> tarfile.TarInfo | None:
    """tarfile's reading of the header at ``tar.offset`` (``tar.fileobj`` is there), with
    its errors as ours: None at the end of the archive, a bad header an error."""
    try:
        return tarfile.TarInfo.fromtarfile(tar)
    except _END_ERRORS:
        return None
    except _TRUNCATED_ERROR as e:
        raise InvalidLayer(f"{where}: truncated tar header at byte {tar.offset}: {e}") from e
    except LayerError:
        raise
    except Exception as e:  # tarfile's HeaderError family, and what bad numbers raise
        raise InvalidLayer(f"{where}: bad tar header at byte {tar.offset}: {e or type(e).__name__}") from e


# --- the fast path: an uncompressed layer in a regular file ---------------------------------
#
# A layer that is a regular file (a content-store blob) and not compressed is not read
# through LayerReader: headers are read with pread at their offsets, member data is copied
# from the blob to the new file inside the kernel (copy_file_range, else sendfile, else
# pread/write), and a second thread reads the whole blob once more to hash it (sha256 and
# hashlib release the GIL). The rules are the same: a header the inline parser below does
# not take exactly as tarfile would (anything but a well-formed ustar/v7 header of a regular
# file whose directory was already resolved by the general path) goes through tarfile and
# ``_Extractor.member``, as in the streaming path.

_REG_FLAGS = (tarfile.REGTYPE, tarfile.AREGTYPE)
_WINDOW = 1 << 17  # what the fast path reads at once around small files
_SMALL = _WINDOW - 512  # data written from the window; larger data is copied in the kernel
_COPY_FALLBACK_ERRNOS = frozenset((errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                                   errno.ENOTSUP, errno.EBADF, errno.EPERM))


_ZERO_FIELDS = frozenset((b"\0" * 8, b"0000000\0", b"0000000 ", b"000000 \0"))
_adler32 = zlib.adler32


def _bytesum(block: bytes) -> int:
    """The sum of the bytes of a 512-byte block, exactly: Adler-32's first half is 1 plus
    the sum modulo 65521, and 256 bytes sum to at most 65280."""
    return (_adler32(block[:256]) & 0xFFFF) + (_adler32(block[256:]) & 0xFFFF) - 2


def _has_default_acl(dirfd: int) -> bool:
    """Whether the directory (an O_PATH descriptor) has a default ACL, which would decide
    the modes of new files instead of the umask; unreadable counts as yes."""
    try:
        os.getxattr(f"/proc/self/fd/{dirfd}", "system.posix_acl_default")
    except OSError as e:
        return e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)
    return True


def _umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status``); 0o777 (every
    mode then set explicitly) when it cannot be read."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777


def _regular_blob(stream: BinaryIO) -> tuple[int, int, os.stat_result] | None:
    """(fd, position, stat) when ``stream`` is an uncompressed layer in a regular file."""
    try:
        fd = stream.fileno()
        st = os.fstat(fd)
        # (size 0: an empty layer, or a pseudo-file that tells no size: the stream's job)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        pos = stream.tell()
        if pos > st.st_size or detect_compression(os.pread(fd, 4, pos)) != "none":
            return None
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None  # not readable by position: read as a stream (which reports its errors)
    return fd, pos, st


class _BlobReader:
    """The uncompressed layer in the file ``fd`` from byte ``start`` to ``end``, as a
    seekable file for tarfile (positions relative to ``start``), with ``copy_to_fd`` and
    ``copy_to_fd_at`` for member data done inside the kernel."""

    __slots__ = ("end", "fd", "mode", "pos", "size", "start")

    def __init__(self, fd: int, start: int, end: int) -> None:
        self.fd = fd
        self.start = start
        self.end = end
        self.size = end - start
        self.pos = 0
        self.mode = 0  # 0: copy_file_range, 1: sendfile, 2: pread + write

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        if n < 0 or n > left:
            n = max(left, 0)  # never allocate more than the blob holds
        if n == 0:
            return b""
        parts = []
        got = 0
        while got < n:
            data = os.pread(self.fd, min(n - got, 1 << 24), self.start + self.pos + got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        self.pos += got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self.pos
        elif whence == 2:
            pos += self.size
        if pos < 0:
            raise OSError(errno.EINVAL, f"layer blob: seek to {pos}")
        self.pos = pos
        return pos

    def copy_out(self, dst: int, n: int, src: int, dst_off: int | None = None) -> int:
        """Copy up to ``n`` bytes at ``src`` (relative) to ``dst`` (at ``dst_off``, or at
        its file position); returns how many (fewer only at the end of the blob)."""
        done = 0
        n = min(n, self.size - src)
        fd = self.fd
        while done < n:
            at = self.start + src + done
            try:
                if self.mode == 0:
                    k = os.copy_file_range(fd, dst, n - done, at, None if dst_off is None else dst_off + done)
                elif self.mode == 1 and dst_off is None:
                    k = os.sendfile(dst, fd, at, n - done)
                else:
                    data = os.pread(fd, min(n - done, CHUNK), at)
                    view = memoryview(data)
                    k = len(data)
                    w_at = None if dst_off is None else dst_off + done
                    while view:
                        w = os.write(dst, view) if w_at is None else os.pwrite(dst, view, w_at)
                        view = view[w:]
                        if w_at is not None:
                            w_at += w
            except OSError as e:
                if self.mode < 2 and e.errno in _COPY_FALLBACK_ERRNOS:
                    self.mode += 1  # not supported between these files: the next way
                    continue
                raise
            if k == 0:
                if self.mode < 2:
                    self.mode = 2  # no progress inside the blob: read it plainly
                    continue
                break
            done += k
        return done

    def copy_to_fd(self, fd: int, n: int) -> int:
        got = self.copy_out(fd, n, self.pos)
        self.pos += got
        return got

    def copy_to_fd_at(self, fd: int, n: int, pos: int) -> int:
        got = self.copy_out(fd, n, self.pos, pos)
        self.pos += got
        return got


class _BlobHasher:
    """Hashes bytes ``start``..``end`` of the file ``fd`` in a thread (sha256, and the
    algorithm of an expected digest if that is another)."""

    def __init__(self, fd: int, start: int, end: int, algorithm: str) -> None:
        self.fd = fd
        self.start = start
        self.end = end
        self.sha256 = hashlib.sha256()
        self.other = hashlib.new(algorithm) if algorithm != "sha256" else None
        self.done = 0
        self.error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="skiff-layer-hash", daemon=True)

    def start_thread(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            buf = bytearray(4 * CHUNK)
            view = memoryview(buf)
            pos = self.start
            while pos < self.end and not self._stop:
                k = os.preadv(self.fd, [view[:min(len(buf), self.end - pos)]], pos)
                if k == 0:
                    break
                piece = view[:k]
                self.sha256.update(piece)
                if self.other is not None:
                    self.other.update(piece)
                pos += k
            self.done = pos - self.start
        except BaseException as e:  # raised in the applying thread by join()
            self.error = e

    def join(self, stop: bool = False) -> None:
        if stop:
            self._stop = True
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join()


def _plain_reg(buf: bytes, octs: dict[bytes, int], encoding: str,
               errors: str) -> tuple[str, int, int, int, int, int] | None:
    """(name, mode, uid, gid, size, mtime) when ``buf`` is the well-formed header of a plain
    regular file (ustar/v7, octal numbers, right checksum), read exactly as ``_fast_header``
    reads it; None for anything else (the general path then reads it). ``octs``: number
    fields already parsed (mode, owner and time repeat from member to member; -1 when not
    yet; a field holding a negative number is parsed every time)."""
    if len(buf) != 512 or buf[156:157] not in _REG_FLAGS:
        return None
    (name_b, mode_b, uid_b, gid_b, size_b, mtime_b, chk_b, _k, _l, _u, _g,
     maj_b, min_b, prefix_b) = _HEADER.unpack(buf)
    try:
        # the sum of the block's bytes, the checksum field counting as 8 spaces
        if int(chk_b.rstrip(b"\0 ") or b"0", 8) != _bytesum(buf) - sum(chk_b) + 256:
            return None
        mode = octs.get(mode_b, -1)
        if mode < 0:
            mode = int(mode_b.rstrip(b"\0 ") or b"0", 8)
            octs[mode_b] = mode
        uid = octs.get(uid_b, -1)
        if uid < 0:
            uid = int(uid_b.rstrip(b"\0 ") or b"0", 8)
            octs[uid_b] = uid
        gid = octs.get(gid_b, -1)
        if gid < 0:
            gid = int(gid_b.rstrip(b"\0 ") or b"0", 8)
            octs[gid_b] = gid
        mtime = octs.get(mtime_b, -1)
        if mtime < 0:
            if len(octs) > 4096:
                octs.clear()
            mtime = int(mtime_b.rstrip(b"\0 ") or b"0", 8)
            octs[mtime_b] = mtime
        size = int(size_b.rstrip(b"\0 ") or b"0", 8)
        if maj_b not in _ZERO_FIELDS:
            int(maj_b.rstrip(b"\0 ") or b"0", 8)
        if min_b not in _ZERO_FIELDS:
            int(min_b.rstrip(b"\0 ") or b"0", 8)
        nul = name_b.find(b"\0")
        name = (name_b if nul < 0 else name_b[:nul]).decode(encoding, errors)
        if prefix_b[0]:
            nul = prefix_b.find(b"\0")
            name = (prefix_b if nul < 0 else prefix_b[:nul]).decode(encoding, errors) + "/" + name
    except (ValueError, UnicodeError):
        return None
    return name, mode, uid, gid, size, mtime


def _register_fast(ex: _Extractor, info: tarfile.TarInfo, where: str, egid: int) -> None:
    """After the general path wrote the plain file ``info``: let later plain files of its
    directory (named exactly so in the archive) take the fast path, with what the path
    needs to know about the directory (see ``_Extractor.fast``)."""
    name = info.name
    parent = name.rpartition("/")[0]
    try:
        cparent = posixpath.dirname(clean_name(name, where))
    except InvalidLayer:
        return  # (member() refused it already)
    d = ex.cache.get(cparent)
    if d is not None and d.fd >= 0 and not cparent.startswith(WHITEOUT_PREFIX):
        dst = os.fstat(d.fd)
        ex.fast[parent] = (d, not dst.st_mode & stat.S_ISGID and dst.st_gid == egid,
                           not _has_default_acl(d.fd))


def _extract_blob(blob: _BlobReader, ex: _Extractor, where: str, current: list[str]) -> None:
    """Extract every member of ``blob`` (see the section's comment); ``current[0]`` names
    the member being extracted, for the caller's error messages."""
    try:
        tar: Any = tarfile.TarFile(fileobj=cast("Any", blob), mode="r")
    except (LayerError, OSError, tarfile.ReadError):
        raise
    except Exception as e:  # what malformed numbers and sparse headers raise in tarfile
        raise InvalidLayer(f"{where}: bad tar header at byte 0: {e or type(e).__name__}") from e
    fd, start = blob.fd, blob.start
    fast = ex.fast
    # Syscalls a file can do without: the file is created with its permission bits when the
    # umask leaves them alone, no default ACL of the directory decides them instead and there
    # are no setuid/setgid/sticky bits (else fchmod after fchown, as the general path does),
    # and fchown is left out when the new file already has the owner the archive gives (our
    # euid, and the egid where the directory passes it on: not setgid, group egid). Both
    # facts about the directory are recorded with it in ``fast``.
    umask = _umask()
    euid, egid = os.geteuid(), os.getegid()
    touched = ex.touched
    same_owner = ex.same_owner
    mode_mask = ex.mode_mask
    encoding, errors = tar.encoding, tar.errors
    plain_reg = _plain_reg
    pread, fopen, fchown, fchmod, utime, close = os.pread, os.open, os.fchown, os.fchmod, os.utime, os.close
    write = os.write
    octs: dict[bytes, int] = {}  # number fields already parsed (the value int() gave)
    win = b""  # bytes wstart.. of the blob, read ahead (relative offsets)
    wview = memoryview(win)
    wstart = 0
    info: tarfile.TarInfo | None = tar.firstmember
    while True:
        if info is not None:
            name = current[0] = info.name
            blob.pos = info.offset_data
            ex.member(blob, tar, info)
            if info.type in _DATA_TYPES and info.sparse is None and not info.pax_headers:
                _register_fast(ex, info, where, egid)  # later files of its directory: fast
        off = tar.offset
        i = off - wstart
        if 0 <= i and i + 512 <= len(win):
            buf = win[i:i + 512]
        else:
            buf = pread(fd, 512, start + off)
        hdr = None if tar.pax_headers else plain_reg(buf, octs, encoding, errors)
        if hdr is not None:
            # inline: the header of a plain regular file, exactly as _fast_header reads it
            name, mode, uid, gid, size, mtime = hdr
            parent, _, base = name.rpartition("/")
            hit = fast.get(parent)
            if (hit is not None and base and base != "." and base != ".."
                    and not base.startswith(WHITEOUT_PREFIX)):
                pdir, owner_ok, modes_ok = hit
                current[0] = name
                mode &= mode_mask
                plain = modes_ok and not mode & 0o7000 and not mode & umask
                try:
                    wfd = fopen(base, _O_NEWFILE, mode if plain else 0o600, dir_fd=pdir.fd)
                except FileExistsError:
                    pass  # something is there: the general path replaces it
                else:
                    try:
                        if 0 < size <= _SMALL:
                            # small data is read with its neighbours (a window of the
                            # blob) and written: cheaper than a copy_file_range each
                            j = off + 512 - wstart
                            if j < 0 or j + size > len(win):
                                win = pread(fd, _WINDOW, start + off)
                                wview = memoryview(win)
                                wstart = off
                                j = 512
                            got = max(0, min(size, len(win) - j))
                            data = wview[j:j + got]
                            while data:
                                data = data[write(wfd, data):]
                            if got < size:
                                raise InvalidLayer(f"{where}: member {name!r}: truncated: "
                                                   f"{got} of {size} bytes of data")
                        elif size:
                            got = blob.copy_out(wfd, size, off + 512)
                            if got < size:
                                raise InvalidLayer(f"{where}: member {name!r}: truncated: "
                                                   f"{got} of {size} bytes of data")
                        if same_owner and not (uid == euid and gid == egid and owner_ok):
                            fchown(wfd, uid, gid)
                        if not plain:
                            fchmod(wfd, mode)
                        t = mtime * 1_000_000_000
                        utime(wfd, ns=(t, t))
                    finally:
                        close(wfd)
                    rel = f"{pdir.rel}/{base}" if pdir.rel else base
                    touched.add(rel)
                    if pdir.rel and pdir.rel not in touched:
                        ex._mark(pdir.rel)
                    tar.offset = off + 512 + -(-size // 512) * 512
                    info = None
                    continue
        info = _blob_member(tar, blob, buf, off, where)
        if info is None:
            return


def _blob_member(tar: Any, blob: _BlobReader, block: bytes, off: int, where: str) -> tarfile.TarInfo | None:
    """``_next_member`` for the blob path: the header ``block`` read at ``off``."""
    if not tar.pax_headers:
        info = _fast_header(block, off, tar.encoding, tar.errors)
        if info is not None:
            end = info.offset_data
            if info.type in _DATA_TYPES:
                end += -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            tar.offset = end
            return info
    if not block:
        if off > blob.size:  # as the stream's seek past its end
            raise InvalidLayer(f"tar stream: truncated (ends at byte {blob.size}, data runs to {off})")
        return None  # the end of the blob without an end-of-archive marker, as tarfile takes it
    blob.pos = off
    return _tarfile_member(tar, where)


def _apply_blob(stream: BinaryIO, fd: int, start: int, st: os.stat_result, ex: _Extractor, *,
                algorithm: str, where: str) -> tuple[str, str, int]:
    """Extract the uncompressed layer in the file ``fd`` from ``start``; returns its diff ID,
    the digest with ``algorithm`` and its size."""
    end = st.st_size
    hasher = _BlobHasher(fd, start, end, algorithm)
    blob = _BlobReader(fd, start, end)
    current = [""]
    failed = True
    try:
        hasher.start_thread()
        try:
            if end > start:
                _extract_blob(blob, ex, where, current)
                current[0] = ""
                ex.finish_dirs()
        except tarfile.ReadError as e:
            raise InvalidLayer(f"{where}: not a tar archive: {e}") from e
        except OSError as e:
            detail = f"member {current[0]!r}: " if current[0] else ""
            raise LayerError(f"{where}: {detail}{e.strerror or e}"
                             + (f" ({e.filename})" if e.filename else "")) from e
        failed = False
    finally:
        hasher.join(stop=failed)
    if hasher.error is not None:
        if isinstance(hasher.error, OSError):
            raise LayerError(f"{where}: read the layer: {hasher.error.strerror or hasher.error}") from hasher.error
        raise hasher.error
    after = os.fstat(fd)
    if hasher.done != end - start or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise LayerError(f"{where}: the layer file changed while it was applied "
                         f"({end - start} bytes expected, {hasher.done} read)")
    try:
        stream.seek(end)  # consumed, as the streaming path leaves it
    except (OSError, ValueError):
        pass  # the stream's own position is a courtesy; the layer was applied
    diff_id = "sha256:" + hasher.sha256.hexdigest()
    digest = diff_id if hasher.other is None else f"{algorithm}:{hasher.other.hexdigest()}"
    return diff_id, digest, end - start


def apply_layer(stream: BinaryIO, root_dir: str, *, whiteout: str = "delete", lowers: Sequence[str] = (),
                same_owner: bool | None = None, overlay_xattr: str = "trusted",
                compressed_digest: str | None = None, where: str = "layer", allow_devices: bool = True,
                keep_setid: bool = True) -> Applied:
    """Extract the layer ``stream`` into ``root_dir`` (see the module doc).

    ``lowers``: with ``whiteout="overlay"``, the lower directories of the overlay whose
    upper directory is ``root_dir``, nearest first. ``same_owner``: set owners from the
    archive (default: when running as root). ``compressed_digest``: if given, the stream's
    digest is checked against it (``DigestMismatch``). ``where`` names the layer in errors.
    ``allow_devices=False`` refuses character and block device members (``InvalidLayer``);
    ``keep_setid=False`` drops the setuid and setgid bits from every mode (permissions and
    the sticky bit are kept): together, the stricter policy of Python's "data" extraction
    filter, for trees unpacked on the host outside any container (``builtin.make_bundle``).
    Errors: ``InvalidLayer`` for a malformed or hostile archive, ``LayerError`` for a
    failure to write; what was extracted before the error stays (the caller discards the
    snapshot).
    """
    if whiteout not in ("delete", "overlay", "oci"):
        raise InvalidArgument(f"apply {where}: whiteout mode {whiteout!r}: not delete, overlay or oci")
    if overlay_xattr not in ("trusted", "user"):
        raise InvalidArgument(f"apply {where}: overlay xattr namespace {overlay_xattr!r}: not trusted or user")
    if lowers and whiteout != "overlay":
        raise InvalidArgument(f"apply {where}: lower directories only apply to whiteout='overlay'")
    if same_owner is None:
        same_owner = os.geteuid() == 0
    algorithm = compressed_digest.split(":", 1)[0] if compressed_digest else "sha256"
    if algorithm not in ("sha256", "sha512"):
        raise InvalidArgument(f"apply {where}: digest algorithm {algorithm!r} not supported")
    blob = _regular_blob(stream)
    if blob is not None:
        ex = _Extractor(root_dir, whiteout, lowers, same_owner, overlay_xattr, where, allow_devices, keep_setid)
        try:
            diff_id, got, size = _apply_blob(stream, *blob, ex, algorithm=algorithm, where=where)
        finally:
            ex.close()
        if compressed_digest and got != compressed_digest:
            raise DigestMismatch(f"{where}: content digest {got}, expected {compressed_digest}")
        return Applied(diff_id=diff_id, size=size, compression="none", compressed_digest=got,
                       compressed_size=size)
    reader = LayerReader(stream, compressed_algorithm=algorithm)
    try:
        ex = _Extractor(root_dir, whiteout, lowers, same_owner, overlay_xattr, where, allow_devices, keep_setid)
    except BaseException:
        reader.close()
        raise
    current = [""]
    try:
        reader.start()
        head = reader.read(tarfile.BLOCKSIZE)
        if head:
            tar: Any
            try:
                tar = tarfile.TarFile(fileobj=cast("Any", _Unread(head, reader)), mode="r")
            except (LayerError, OSError, tarfile.ReadError):
                raise
            except Exception as e:  # what malformed numbers and sparse headers raise in tarfile
                raise InvalidLayer(f"{where}: bad tar header at byte 0: {e or type(e).__name__}") from e
            tar.fileobj = reader  # the head is consumed: read on from the stream itself
            _extract_stream(reader, tar, ex, where, current)
            current[0] = ""
            ex.finish_dirs()
        reader.drain()
    except tarfile.ReadError as e:
        raise InvalidLayer(f"{where}: not a tar archive: {e}") from e
    except OSError as e:
        member = current[0]
        detail = f"member {member!r}: " if member else ""
        raise LayerError(f"{where}: {detail}{e.strerror or e}"
                         + (f" ({e.filename})" if e.filename else "")) from e
    finally:
        try:
            reader.close()
        finally:
            ex.close()
    got = reader.diff_id if reader.raw.hash is None else f"{algorithm}:{reader.raw.hash.hexdigest()}"
    if compressed_digest and got != compressed_digest:
        raise DigestMismatch(f"{where}: content digest {got}, expected {compressed_digest}")
    return Applied(diff_id=reader.diff_id, size=reader.size, compression=reader.compression,
                   compressed_digest=got, compressed_size=reader.raw.size)


class _Unread:
    """The first block, already read (to tell an empty stream), put back for tarfile."""

    def __init__(self, head: bytes, reader: LayerReader) -> None:
        self._head = head
        self._reader = reader
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if self._pos < len(self._head):
            end = len(self._head) if n < 0 else min(len(self._head), self._pos + n)
            out = self._head[self._pos:end]
            self._pos = end
            if n < 0 or len(out) < n:
                out += self._reader.read(-1 if n < 0 else n - len(out))
            return out
        return self._reader.read(n)

    def tell(self) -> int:
        return self._reader.tell() - (len(self._head) - self._pos)

    def seek(self, pos: int, whence: int = 0) -> int:
        if self._pos < len(self._head) and pos <= self.tell() + len(self._head) - self._pos:
            skip = pos - self.tell()
            if skip < 0:
                raise OSError(errno.ESPIPE, "cannot seek back")
            self._pos += skip
            return pos
        self._pos = len(self._head)
        return self._reader.seek(pos, whence)


# --- writing diffs --------------------------------------------------------------------------

class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        if data:
            self.hash.update(data)
            self.size += len(data)
            self._out.write(data)


class _TarWriter:
    """PAX tar members written by hand (headers from ``TarInfo.tobuf``), data in 1 MiB pieces."""

    def __init__(self, out: BinaryIO, compression: str) -> None:
        self.raw = _HashingWriter(out)
        self.compression = compression
        self.hash = hashlib.sha256()
        self.size = 0
        self._gz = zlib.compressobj(6, zlib.DEFLATED, 31) if compression == "gzip" else None
        self._zst = _zstandard().ZstdCompressor().compressobj() if compression == "zstd" else None

    def _write(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)
        if self._gz is not None:
            self.raw.write(self._gz.compress(data))
        elif self._zst is not None:
            self.raw.write(self._zst.compress(data))
        else:
            self.raw.write(data)

    def header(self, info: tarfile.TarInfo) -> None:
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def data_from_fd(self, fd: int, size: int, what: str) -> None:
        left = size
        pos = 0
        while left > 0:
            chunk = os.pread(fd, min(left, CHUNK), pos)
            if not chunk:
                raise LayerError(f"{what}: file shrank while it was read ({pos} of {size} bytes)")
            self._write(chunk)
            pos += len(chunk)
            left -= len(chunk)
        pad = -size % tarfile.BLOCKSIZE
        if pad:
            self._write(b"\0" * pad)

    def close(self) -> Diff:
        self._write(b"\0" * (2 * tarfile.BLOCKSIZE))  # the end-of-archive marker, as Go writes it
        if self._gz is not None:
            self.raw.write(self._gz.flush())
        elif self._zst is not None:
            self.raw.write(self._zst.flush())
        return Diff(diff_id="sha256:" + self.hash.hexdigest(), size=self.size,
                    digest="sha256:" + self.raw.hash.hexdigest(), compressed_size=self.raw.size,
                    compression=self.compression)


def _sort_names(names: list[str]) -> list[str]:
    return sorted(names, key=os.fsencode)


_WH_INFO_MODE = 0o600


def _whiteout_info(name: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.REGTYPE
    ti.mode = _WH_INFO_MODE
    ti.mtime = 0
    ti.uname = ti.gname = ""
    return ti


class _DiffEmitter:
    def __init__(self, w: _TarWriter, xattr_ns: str | None) -> None:
        self.w = w
        self.links: dict[tuple[int, int], str] = {}
        self.xattr_ns = xattr_ns

    def entry(self, dirfd: int, name: str, rel: str, st: os.stat_result) -> bool:
        """Write ``name`` (in ``dirfd``) as member ``rel``; False if its type is skipped."""
        mode = st.st_mode
        ti = tarfile.TarInfo(rel)
        ti.mode = stat.S_IMODE(mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname = ti.gname = ""
        ti.mtime = st.st_mtime_ns // 1_000_000_000
        if stat.S_ISSOCK(mode):
            return False  # sockets cannot be archived (Docker skips them too)
        fd = None
        try:
            if stat.S_ISREG(mode):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dirfd)
                st2 = os.fstat(fd)
                if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
                    raise LayerError(f"diff: {rel}: replaced while it was read")
            xattrs = read_xattrs(dirfd, name, fd)
            if self.xattr_ns is not None:
                self._check_overlay_xattrs(dirfd, name, rel, fd)
            if xattrs:
                ti.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                                  for k, v in xattrs.items()}
            ident = (st.st_dev, st.st_ino)
            if not stat.S_ISDIR(mode) and st.st_nlink > 1 and ident in self.links:
                ti.type = tarfile.LNKTYPE
                ti.linkname = self.links[ident]
                ti.size = 0
                self.w.header(ti)
                return True
            if stat.S_ISDIR(mode):
                ti.type = tarfile.DIRTYPE
            elif stat.S_ISREG(mode):
                ti.type = tarfile.REGTYPE
                ti.size = st.st_size
            elif stat.S_ISLNK(mode):
                ti.type = tarfile.SYMTYPE
                ti.linkname = os.readlink(name, dir_fd=dirfd)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            elif stat.S_ISFIFO(mode):
                ti.type = tarfile.FIFOTYPE
            else:
                raise LayerError(f"diff: {rel}: unknown file type {stat.S_IFMT(mode):o}")
            self.w.header(ti)
            if fd is not None:
                self.w.data_from_fd(fd, st.st_size, f"diff: {rel}")
            if not stat.S_ISDIR(mode) and st.st_nlink > 1:
                self.links[ident] = rel
            return True
        finally:
            if fd is not None:
                os.close(fd)

    def _check_overlay_xattrs(self, dirfd: int, name: str, rel: str, fd: int | None) -> None:
        for x in ("redirect", "metacopy"):
            key = f"{self.xattr_ns}.overlay.{x}"
            try:
                if fd is not None:
                    os.getxattr(fd, key)
                else:
                    os.getxattr(at_path(dirfd, name), key, follow_symlinks=False)
            except OSError as e:
                if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                    continue
                raise
            raise LayerError(f"diff: {rel}: carries overlay's {key} (mounted with redirect_dir or "
                             "metacopy), which a layer cannot express")

    def whiteout(self, rel: str) -> None:
        self.w.header(_whiteout_info(rel))

    def opaque(self, rel: str) -> None:
        self.w.header(_whiteout_info(_join(rel, WHITEOUT_OPAQUE)))


def _open_dir_at(dirfd: int, name: str) -> int:
    return os.open(name, _O_RDDIR, dir_fd=dirfd)


def _diff_overlay(upper: str, em: _DiffEmitter, xattr_ns: str) -> None:
    opaque_key = f"{xattr_ns}.overlay.opaque"
    root = os.open(upper, _O_RDDIR)
    stack: list[list] = [[root, "", _sort_names(os.listdir(root)), 0]]
    try:
        while stack:
            frame = stack[-1]
            fd, rel, names, i = frame
            if i == len(names):
                stack.pop()
                os.close(fd)
                continue
            frame[3] = i + 1
            name = names[i]
            crel = _join(rel, name)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                em.whiteout(_join(rel, WHITEOUT_PREFIX + name))
                continue
            if not em.entry(fd, name, crel, st):
                continue
            if stat.S_ISDIR(st.st_mode):
                cfd = _open_dir_at(fd, name)
                try:
                    opaque = os.getxattr(cfd, opaque_key) == b"y"
                except OSError as e:
                    if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                        os.close(cfd)
                        raise
                    opaque = False
                if opaque:
                    em.opaque(crel)
                stack.append([cfd, crel, _sort_names(os.listdir(cfd)), 0])
    finally:
        for frame in stack:
            os.close(frame[0])


def _same_content(afd: int, bfd: int, name: str, size: int) -> bool:
    a = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=afd)
    try:
        b = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=bfd)
        try:
            pos = 0
            while pos < size:
                x = os.pread(a, CHUNK, pos)
                y = os.pread(b, CHUNK, pos)
                if x != y:
                    return False
                if not x:
                    return True
                pos += len(x)
            return True
        finally:
            os.close(b)
    finally:
        os.close(a)


def _changed(afd: int, bfd: int, name: str, a: os.stat_result, b: os.stat_result) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
        return True
    if (a.st_mode, a.st_uid, a.st_gid) != (b.st_mode, b.st_uid, b.st_gid):
        return True
    if stat.S_ISDIR(a.st_mode):
        if a.st_mtime_ns != b.st_mtime_ns:
            return True
    elif stat.S_ISLNK(a.st_mode):
        if os.readlink(name, dir_fd=afd) != os.readlink(name, dir_fd=bfd):
            return True
    elif stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
        if a.st_rdev != b.st_rdev:
            return True
    elif stat.S_ISREG(a.st_mode):
        if a.st_size != b.st_size or a.st_mtime_ns != b.st_mtime_ns:
            return True
    if read_xattrs(afd, name, skip_overlay=False) != read_xattrs(bfd, name, skip_overlay=False):
        return True
    if stat.S_ISREG(a.st_mode) and a.st_mtime_ns % 1_000_000_000 == 0:
        # whole-second times (from a tar) cannot tell a same-second rewrite: compare bytes
        return not _same_content(afd, bfd, name, a.st_size)
    if not stat.S_ISDIR(a.st_mode) and a.st_mtime_ns != b.st_mtime_ns:
        return True
    return False


def _link_groups(root: str) -> dict[str, frozenset[str]]:
    """For each non-directory with several links in ``root``: the names sharing its inode."""
    by_inode: dict[tuple[int, int], set[str]] = {}
    for dirpath, _dirs, files, dirfd in os.fwalk(root, follow_symlinks=False):
        rel = os.path.relpath(dirpath, root)
        for n in files:
            st = os.stat(n, dir_fd=dirfd, follow_symlinks=False)
            if st.st_nlink > 1:
                by_inode.setdefault((st.st_dev, st.st_ino), set()).add(n if rel == "." else f"{rel}/{n}")
    out: dict[str, frozenset[str]] = {}
    for names in by_inode.values():
        group = frozenset(names)
        for n in names:
            out[n] = group
    return out


def _diff_trees(lower: str | None, upper: str, em: _DiffEmitter) -> None:
    """Changes from ``lower`` (None: empty) to ``upper``, both complete trees."""
    # a name whose set of hard links changed is a change even if nothing else did
    groups_a = _link_groups(lower) if lower else {}
    groups_b = _link_groups(upper)
    broot = os.open(upper, _O_RDDIR)
    aroot = os.open(lower, _O_RDDIR) if lower else None
    # frame: [a fd | None, b fd, rel, names, index, header written]
    def names_of(afd: int | None, bfd: int) -> list[str]:
        n = set(os.listdir(bfd))
        if afd is not None:
            n.update(os.listdir(afd))
        return _sort_names(list(n))

    stack: list[list] = [[aroot, broot, "", names_of(aroot, broot), 0, True]]

    def flush() -> None:
        for k, f in enumerate(stack):
            if not f[5]:
                em.entry(stack[k - 1][1], posixpath.basename(f[2]), f[2], os.fstat(f[1]))
                f[5] = True
    try:
        while stack:
            frame = stack[-1]
            afd, bfd, rel, names, i, _ = frame
            if i == len(names):
                stack.pop()
                if afd is not None:
                    os.close(afd)
                os.close(bfd)
                continue
            frame[4] = i + 1
            name = names[i]
            crel = _join(rel, name)
            a = None
            if afd is not None:
                try:
                    a = os.stat(name, dir_fd=afd, follow_symlinks=False)
                except FileNotFoundError:
                    a = None
            try:
                b = os.stat(name, dir_fd=bfd, follow_symlinks=False)
            except FileNotFoundError:
                b = None
            if b is None:
                flush()
                em.whiteout(_join(rel, WHITEOUT_PREFIX + name))
                continue
            if stat.S_ISSOCK(b.st_mode):
                continue
            b_dir = stat.S_ISDIR(b.st_mode)
            if a is not None and b_dir and stat.S_ISDIR(a.st_mode):
                changed = _changed(afd, bfd, name, a, b)
                cafd = _open_dir_at(afd, name)
                cbfd = _open_dir_at(bfd, name)
                if changed:
                    flush()
                    em.entry(bfd, name, crel, b)
                stack.append([cafd, cbfd, crel, names_of(cafd, cbfd), 0, changed])
                continue
            if (a is not None and groups_a.get(crel) == groups_b.get(crel)
                    and not _changed(afd, bfd, name, a, b)):
                continue
            flush()
            em.entry(bfd, name, crel, b)
            if b_dir:
                cbfd = _open_dir_at(bfd, name)
                stack.append([None, cbfd, crel, names_of(None, cbfd), 0, True])
    finally:
        for frame in stack:
            if frame[0] is not None:
                os.close(frame[0])
            os.close(frame[1])


def write_diff(lowers: Sequence[str], upper: str, out: BinaryIO, *, mode: str = "overlay",
               compression: str = "none", overlay_xattr: str = "trusted") -> Diff:
    """Write the changes of ``upper`` as a layer tar to ``out``.

    ``mode="overlay"``: ``upper`` is an overlay upper directory (``lowers``, its lower
    directories, are not needed to read it and only checked to exist). ``mode="compare"``:
    ``upper`` is a complete tree and ``lowers`` holds at most one directory, the complete
    tree it started from (none: everything in ``upper`` is new).
    ``compression``: ``none``, ``gzip`` or ``zstd``.
    """
    if compression not in ("none", "gzip", "zstd"):
        raise InvalidArgument(f"diff of {upper}: compression {compression!r}: not none, gzip or zstd")
    if mode not in ("overlay", "compare"):
        raise InvalidArgument(f"diff of {upper}: mode {mode!r}: not overlay or compare")
    if mode == "compare" and len(lowers) > 1:
        raise InvalidArgument(f"diff of {upper}: compare mode takes one lower tree, got {len(lowers)}")
    for d in (*lowers, upper):
        if not os.path.isdir(d):
            raise InvalidArgument(f"diff of {upper}: {d}: not a directory")
    w = _TarWriter(out, compression)
    try:
        if mode == "overlay":
            _diff_overlay(upper, _DiffEmitter(w, overlay_xattr), overlay_xattr)
        else:
            _diff_trees(lowers[0] if lowers else None, upper, _DiffEmitter(w, None))
    except OSError as e:
        raise LayerError(f"diff of {upper}: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")) from e
    return w.close()


# --- working from mount descriptions --------------------------------------------------------

def _mount_dirs(mounts: Sequence[Mount]) -> list[str] | None:
    """The directories a read-only view's mounts show, nearest first (None: not simple)."""
    if not mounts:
        return []
    if len(mounts) != 1:
        return None
    m = mounts[0]
    if m.type == "bind":
        return [m.source]
    if m.type == "overlay" and m.option("upperdir") is None:
        low = m.option("lowerdir")
        return low.split(":") if low else None
    return None


def apply_to_mounts(mounts: Sequence[Mount], stream: BinaryIO, **kw: Any) -> Applied:
    """Apply a layer to an active snapshot given by its mounts, without mounting when the
    description allows: into an overlay's upper directory (whiteouts converted, lowers
    consulted) or a bind mount's source; anything else is mounted on a temporary directory
    (root needed) and extracted through the mount."""
    if len(mounts) == 1:
        m = mounts[0]
        if m.type == "overlay" and m.option("upperdir"):
            low = m.option("lowerdir")
            return apply_layer(stream, m.option("upperdir") or "", whiteout="overlay",
                               lowers=low.split(":") if low else [],
                               overlay_xattr="user" if "userxattr" in m.options else "trusted",
                               **kw)
        if m.type == "bind":
            if "ro" in m.options:
                raise InvalidArgument(f"apply layer to {m.source}: the mount is read-only")
            return apply_layer(stream, m.source, whiteout="delete", **kw)
    import tempfile

    from skiff.images.mount import mount_all, unmount_all

    tmp = tempfile.mkdtemp(prefix="skiff-apply-")
    try:
        mount_all(mounts, tmp)
        try:
            return apply_layer(stream, tmp, whiteout="delete", **kw)
        finally:
            unmount_all(tmp)
    finally:
        os.rmdir(tmp)


def diff_mounts(lower: Sequence[Mount], upper: Sequence[Mount], out: BinaryIO, *,
                compression: str = "none") -> Diff:
    """containerd's differ ``Compare``: the changes from the view ``lower`` to the active
    snapshot ``upper`` as a layer tar. An overlay over exactly the lower's directories is
    read from its upper directory; bind mounts are compared as trees; anything else is
    mounted (root needed) and compared."""
    low = _mount_dirs(lower)
    if len(upper) == 1 and low is not None:
        m = upper[0]
        if m.type == "overlay" and m.option("upperdir"):
            ulow = m.option("lowerdir")
            if (ulow.split(":") if ulow else []) == low:
                return write_diff(low, m.option("upperdir") or "", out, mode="overlay", compression=compression,
                                  overlay_xattr="user" if "userxattr" in m.options else "trusted")
        if m.type == "bind" and len(low) <= 1:
            return write_diff(low, m.source, out, mode="compare", compression=compression)
    import tempfile

    from skiff.images.mount import mount_all, unmount_all

    tmp = tempfile.mkdtemp(prefix="skiff-diff-")
    a, b = os.path.join(tmp, "lower"), os.path.join(tmp, "upper")
    os.mkdir(a)
    os.mkdir(b)
    try:
        if lower:
            mount_all(lower, a)
        try:
            mount_all(upper, b)
            try:
                return write_diff([a], b, out, mode="compare", compression=compression)
            finally:
                unmount_all(b)
        finally:
            if lower:
                unmount_all(a)
    finally:
        os.rmdir(a)
        os.rmdir(b)
        os.rmdir(tmp)
