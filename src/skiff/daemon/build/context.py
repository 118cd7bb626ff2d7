"""The build context of ``POST /build``: a tar from the client (plain, gzip, bzip2 or xz),
hostile input.

The body is written once to a private file under the daemon's ``<data-root>/tmp``
(decompressed on the way) and *indexed*, never extracted: each member's name, type, mode,
owner, size and data offset in that file. COPY and ADD read file data straight from the
file at those offsets (``copy_file_range``), so a 50 MB context is written to disk once.
Nothing is ever created from a member's name, so no name can write outside anything; names
are cleaned and one that climbs out (``..``) is refused; hard links must name a regular
file seen before them.

Paths of COPY/ADD sources are resolved in the index (``resolve``): a symlink of the context
is followed while the walk stays in the context (an absolute target starts again at the
context's root, ``..`` stops at it, as moby's ``FollowSymlinkInScope``), so nothing outside
the context can be reached, whatever it holds; a source path that itself climbs out
(``COPY ../x``) is refused as dockerd refuses it.

``.dockerignore`` (``skiff.dockerignore``) removes what it excludes from the index after the
Dockerfile was read: an excluded Dockerfile or ``.dockerignore`` cannot be copied.

Content hashes (what the build cache compares for COPY/ADD): a file's is the sha256 of its
type, mode, owner, size and link target with its data; a directory's the sha256 of its
descendants' relative paths and hashes with its own attributes (moby's ``dir:`` hash of the
sorted sub-hashes, in spirit: any change of content, mode or owner changes it).
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from skiff.daemon.api.errors import InvalidParameter

CHUNK = 1 << 20
MAXSYMLINKS = 40


class ContextError(InvalidParameter):
    """A bad context or a COPY source that cannot be used (400 before output)."""


class Entry:
    """One path of the context."""

    __slots__ = ("path", "kind", "mode", "size", "offset", "linkname", "mtime", "uid", "gid")

    def __init__(self, path: str, kind: str, mode: int, size: int = 0, offset: int = 0, linkname: str = "",
                 mtime: int = 0, uid: int = 0, gid: int = 0) -> None:
        self.path = path           # cleaned, relative, "/"-separated; "" is the root
        self.kind = kind           # "file" "dir" "symlink" "other"
        self.mode = mode           # permission bits (0o7777)
        self.size = size
        self.offset = offset       # of the data in the context file
        self.linkname = linkname   # a symlink's target, as written
        self.mtime = mtime         # -1: not given (a directory the archive does not list)
        self.uid = uid
        self.gid = gid

    def __repr__(self) -> str:
        return f"Entry({self.path!r}, {self.kind}, {self.mode:o})"


def clean_member(raw: str) -> str:
    """A member's name as a relative path ("" for the root); ValueError when it climbs out."""
    if "\0" in raw:
        raise ValueError("NUL byte in the name")
    name = raw.lstrip("/")
    name = posixpath.normpath(name) if name else "."
    if name == ".":
        return ""
    if name == ".." or name.startswith("../"):
        raise ValueError("the name leaves the context")
    return name


def sniff(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return ""


def _decompressor(kind: str) -> Any:
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    if kind == "xz":
        return lzma.LZMADecompressor()
    return None


def _tar_number(field: bytes) -> int:
    """A tar header's numeric field: octal text, or base-256 (GNU) when the high bit is set."""
    if field and field[0] & 0x80:
        n = field[0] & 0x3F
        for b in field[1:]:
            n = (n << 8) | b
        return n
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


class _DataHasher:
    """Hashes the data of the regular files of a tar stream as it goes by (sha256 by data
    offset), so that COPY's content hashes are ready when the body has been read. Only an
    optimisation: whatever it cannot follow is hashed later from the file."""

    def __init__(self) -> None:
        self.pos = 0                 # stream offset of what comes next
        self.header = b""
        self.left = 0                # data bytes left of the current member
        self.pad = 0
        self.hasher: Any = None
        self.start = 0
        self.pax = b""               # the data of a PAX extended header, for its size record
        self.in_pax = False
        self.size_override: int | None = None
        self.done = False
        self.digests: dict[int, tuple[int, str]] = {}    # data offset -> (size, sha256 hex)

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.done:
            if self.left:
                n = min(self.left, len(view))
                chunk = view[:n]
                if self.hasher is not None:
                    self.hasher.update(chunk)
                elif self.in_pax and len(self.pax) < (1 << 20):
                    self.pax += bytes(chunk)
                self.left -= n
                self.pos += n
                view = view[n:]
                if not self.left:
                    self._member_done()
                continue
            if self.pad:
                n = min(self.pad, len(view))
                self.pad -= n
                self.pos += n
                view = view[n:]
                continue
            n = min(512 - len(self.header), len(view))
            self.header += bytes(view[:n])
            self.pos += n
            view = view[n:]
            if len(self.header) == 512:
                self._header()

    def _header(self) -> None:
        h, self.header = self.header, b""
        if h == b"\0" * 512:
            self.done = True
            return
        try:
            size = _tar_number(h[124:136])
        except ValueError:
            self.done = True
            return
        kind = h[156:157]
        if kind in (b"0", b"\0", b"7") and self.size_override is not None:
            size = self.size_override
        if kind not in (b"x", b"g"):
            self.size_override = None
        self.left = size
        self.pad = -size % 512
        self.in_pax = kind == b"x"
        self.pax = b""
        self.start = self.pos
        self.hasher = hashlib.sha256() if kind in (b"0", b"\0", b"7") else None
        if not size:
            self._member_done()

    def _member_done(self) -> None:
        if self.hasher is not None:
            self.digests[self.start] = (self.pos - self.start, self.hasher.hexdigest())
            self.hasher = None
        elif self.in_pax:
            for rec in self.pax.split(b"\n"):
                _, _, kv = rec.partition(b" ")
                if kv.startswith(b"size="):
                    try:
                        self.size_override = int(kv[5:])
                    except ValueError:
                        self.done = True
            self.in_pax = False


class ContextWriter:
    """Writes the request body to ``<dir>/context.tar``, decompressing what is compressed,
    and hashes the files' data on the way (``digests``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.f = open(path, "wb")
        self.head = b""
        self.kind: str | None = None
        self.dec: Any = None
        self.size = 0
        self.scan = _DataHasher()

    def write(self, data: bytes) -> None:
        if self.kind is None:
            self.head += data
            if len(self.head) < 6:
                return
            data, self.head = self.head, b""
            self.kind = sniff(data)
            self.dec = _decompressor(self.kind)
        self._emit(data)

    def _emit(self, data: bytes) -> None:
        if self.dec is not None:
            try:
                data = self.dec.decompress(data)
            except (zlib.error, OSError, lzma.LZMAError, EOFError) as e:
                raise ContextError(f"build context: bad {self.kind} data: {e}") from None
        if data:
            self.f.write(data)
            self.size += len(data)
            self.scan.feed(data)

    def finish(self) -> None:
        if self.kind is None:      # fewer than 6 bytes in all
            data, self.head = self.head, b""
            self.kind = sniff(data)
            self.dec = _decompressor(self.kind)
            if data:
                self._emit(data)
        if self.dec is not None:
            if self.kind == "gzip":
                rest = self.dec.flush()
                if rest:
                    self.f.write(rest)
                    self.size += len(rest)
            if not self.dec.eof:
                raise ContextError(f"build context: the {self.kind} stream is truncated")
        if self.size:
            # the docker CLI's tar for a Dockerfile from outside the context (-f /x, -f -) ends
            # right after the last member's data, without padding or end-of-archive blocks (Go's
            # reader takes EOF at a header as the end): complete it; ``index`` checks that no
            # member's data runs past what was received
            self.f.write(b"\0" * (-self.size % 512 + 1024))
        self.f.close()

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()


def _go_match_regex(pattern: str) -> re.Pattern[str]:
    """Go's ``filepath.Match`` pattern as a regex (``*``/``?`` do not cross ``/``)."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            neg = False
            if j < n and pattern[j] == "^":
                neg = True
                j += 1
            k = j
            while k < n and pattern[k] != "]":
                k += 2 if pattern[k] == "\\" else 1
            if k >= n:
                raise ContextError(f"bad pattern {pattern!r}: unterminated character class")
            body = pattern[j:k].replace("\\", "\\\\")
            out.append(("[^/" if neg else "[") + body + "]")
            i = k + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def has_wildcards(path: str) -> bool:
    i = 0
    while i < len(path):
        c = path[i]
        if c == "\\":
            i += 2
            continue
        if c in "*?[":
            return True
        i += 1
    return False


class BuildContext:
    """The indexed context (see the module doc). ``close`` removes its directory."""

    def __init__(self, directory: str, tar_path: str, entries: dict[str, Entry],
                 data_digests: dict[int, tuple[int, str]] | None = None) -> None:
        self.data_digests = data_digests or {}     # data offset -> (size, sha256 of the data)
        self.directory = directory
        self.tar_path = tar_path
        self.entries = entries
        self._fd = os.open(tar_path, os.O_RDONLY | os.O_CLOEXEC) if tar_path else -1
        self._children: dict[str, list[str]] | None = None
        self._hashes: dict[str, str] = {}

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def index(cls, directory: str, tar_path: str, received: int | None = None,
              data_digests: dict[int, tuple[int, str]] | None = None) -> BuildContext:
        """Index ``tar_path`` (an uncompressed tar; empty: an empty context); ``received``:
        how many of its bytes came from the client (the rest is padding ``ContextWriter``
        added)."""
        entries: dict[str, Entry] = {"": Entry("", "dir", 0o755, mtime=-1)}
        if os.path.getsize(tar_path) == 0:
            return cls(directory, tar_path, entries)
        try:
            tar = tarfile.open(tar_path, "r:", errorlevel=2)
        except tarfile.TarError as e:
            raise ContextError(f"build context: not a tar archive: {e}") from None
        with tar:
            name = ""
            try:
                for info in tar:
                    name = info.name
                    cls._add(entries, info)
            except tarfile.TarError as e:
                where = f" (after member {name!r})" if name else ""
                raise ContextError(f"build context: bad tar archive{where}: {e}") from None
        if received is not None:
            for ent in entries.values():
                if ent.kind == "file" and ent.offset + ent.size > received:
                    raise ContextError(f"build context: member {ent.path!r}: truncated data (the archive ends "
                                       "inside it)")
        for path in list(entries):     # parents the archive does not list
            parent = posixpath.dirname(path)
            while path and parent not in entries:
                entries[parent] = Entry(parent, "dir", 0o755, mtime=-1)
                parent = posixpath.dirname(parent)
        for path in entries:
            if path and entries[posixpath.dirname(path)].kind != "dir":
                raise ContextError(f"build context: member {path!r}: its parent is not a directory")
        return cls(directory, tar_path, entries, data_digests)

    @staticmethod
    def _add(entries: dict[str, Entry], info: tarfile.TarInfo) -> None:
        what = f"build context: member {info.name!r}"
        try:
            path = clean_member(info.name)
        except ValueError as e:
            raise ContextError(f"{what}: {e}") from None
        if not path:
            if info.isdir():
                entries[""] = Entry("", "dir", info.mode & 0o7777, mtime=int(info.mtime), uid=info.uid, gid=info.gid)
            return
        old = entries.get(path)
        if old is not None and old.kind == "dir" and not info.isdir():   # a later member replaces a directory
            prefix = path + "/"
            for k in [k for k in entries if k.startswith(prefix)]:
                del entries[k]
        mode = info.mode & 0o7777
        mt, uid, gid = int(info.mtime), info.uid, info.gid
        if info.issparse():
            raise ContextError(f"{what}: sparse files are not supported in a build context")
        if info.isreg():
            entries[path] = Entry(path, "file", mode, info.size, info.offset_data, "", mt, uid, gid)
        elif info.isdir():
            entries[path] = Entry(path, "dir", mode, 0, 0, "", mt, uid, gid)
        elif info.issym():
            if not info.linkname:
                raise ContextError(f"{what}: symbolic link with an empty target")
            entries[path] = Entry(path, "symlink", mode, 0, 0, info.linkname, mt, uid, gid)
        elif info.islnk():
            try:
                target = clean_member(info.linkname)
            except ValueError:
                raise ContextError(f"{what}: hard link target {info.linkname!r} leaves the context") from None
            t = entries.get(target)
            if t is None or t.kind != "file":
                raise ContextError(f"{what}: hard link target {info.linkname!r} is not a regular file "
                                   "listed before it")
            entries[path] = Entry(path, "file", mode, t.size, t.offset, "", mt, uid, gid)
        else:
            entries[path] = Entry(path, "other", mode, 0, 0, "", mt, uid, gid)

    def apply_ignore(self, patterns: list[str]) -> None:
        """Drop what ``.dockerignore`` patterns exclude (the root always stays)."""
        if not patterns:
            return
        from skiff.dockerignore import Matcher
        m = Matcher(patterns)
        for path in [p for p in self.entries if p]:
            if m.excluded(path):
                del self.entries[path]
        # a kept path whose directory was excluded: the directory stays as a plain directory
        for path in list(self.entries):
            parent = posixpath.dirname(path)
            while path and parent not in self.entries:
                self.entries[parent] = Entry(parent, "dir", 0o755, mtime=-1)
                parent = posixpath.dirname(parent)
        self._children = None
        self._hashes.clear()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    # --- reading ------------------------------------------------------------------------------

    def read_file(self, e: Entry, limit: int = 1 << 24) -> bytes:
        if e.kind != "file":
            raise ContextError(f"{e.path}: not a regular file")
        if e.size > limit:
            raise ContextError(f"{e.path}: {e.size} bytes, more than the {limit} allowed")
        return self._pread_all(e.offset, e.size)

    def _pread_all(self, offset: int, size: int) -> bytes:
        parts = []
        got = 0
        while got < size:
            b = os.pread(self._fd, min(CHUNK * 4, size - got), offset + got)
            if not b:
                raise ContextError(f"build context: the file ends early (at {offset + got})")
            parts.append(b)
            got += len(b)
        return b"".join(parts)

    def copy_data(self, e: Entry, dst_fd: int) -> None:
        """Write ``e``'s data to ``dst_fd`` (a new file, at its position 0) inside the kernel
        when it can."""
        from skiff.daemon.build.fsops import copy_fd
        copy_fd(self._fd, dst_fd, e.size, e.offset, e.path)

    def children(self, path: str) -> list[Entry]:
        if self._children is None:
            kids: dict[str, list[str]] = {}
            for p in self.entries:
                if p:
                    kids.setdefault(posixpath.dirname(p), []).append(p)
            for v in kids.values():
                v.sort()
            self._children = kids
        return [self.entries[p] for p in self._children.get(path, [])]

    def walk(self, path: str) -> Iterator[Entry]:
        """``path``'s descendants, parents before children, sorted by name."""
        for kid in self.children(path):
            yield kid
            if kid.kind == "dir":
                yield from self.walk(kid.path)

    # --- resolution ---------------------------------------------------------------------------

    @staticmethod
    def source_path(orig: str) -> str:
        """A COPY source as a context path; climbing out is refused as dockerd does."""
        p = orig.replace("\\/", "/")
        cleaned = posixpath.normpath("/" + p.lstrip("/")) if p.startswith("/") else posixpath.normpath(p)
        if cleaned == ".." or cleaned.startswith("../"):
            raise ContextError(f"forbidden path outside the build context: {orig} ({cleaned})")
        cleaned = cleaned.lstrip("/")
        return "" if cleaned == "." else cleaned

    def resolve(self, path: str, follow_last: bool = True) -> str:
        """``path`` (a context path) with its symlinks followed inside the context (see the
        module doc); components that do not exist are kept as written."""
        todo = [c for c in path.split("/")][::-1]
        done: list[str] = []
        hops = 0
        missing = False
        while todo:
            c = todo.pop()
            if not c or c == ".":
                continue
            if c == "..":
                if done:
                    done.pop()
                missing = False
                continue
            if missing:
                done.append(c)
                continue
            cur = "/".join([*done, c])
            e = self.entries.get(cur)
            if e is None:
                missing = True
                done.append(c)
                continue
            if e.kind != "symlink" or (not todo and not follow_last):
                done.append(c)
                continue
            hops += 1
            if hops > MAXSYMLINKS:
                raise ContextError(f"{path}: too many levels of symbolic links in the build context")
            if e.linkname.startswith("/"):
                done.clear()
            todo.extend(e.linkname.split("/")[::-1])
        return "/".join(done)

    def lookup(self, orig: str) -> Entry:
        """The entry a COPY source names (no wildcards), symlinks followed; ContextError as
        dockerd words it when it does not exist."""
        rel = self.source_path(orig)
        e = self.entries.get(self.resolve(rel))
        if e is None:
            raise ContextError("file not found in build context or excluded by .dockerignore: "
                               f"stat {rel or '.'}: file does not exist")
        return e

    def glob(self, orig: str) -> list[str]:
        """Context paths matching a wildcard source (Go ``filepath.Match`` on each path)."""
        rel = self.source_path(orig)
        rx = _go_match_regex(rel)
        return sorted(p for p in self.entries if p and rx.match(p))

    # --- hashes -------------------------------------------------------------------------------

    def hash(self, e: Entry) -> str:
        """``file:<hex>`` or ``dir:<hex>`` (see the module doc)."""
        h = self._hashes.get(e.path)
        if h is not None:
            return h
        if e.kind == "dir":
            d = hashlib.sha256(f"dir {e.mode:o} {e.uid} {e.gid}\n".encode())
            for kid in self.walk(e.path):
                rel = kid.path[len(e.path) + 1:] if e.path else kid.path
                d.update(f"{rel}\0{self._entry_hash(kid)}\n".encode("utf-8", "surrogateescape"))
            h = "dir:" + d.hexdigest()
        else:
            h = "file:" + self._entry_hash(e)
        self._hashes[e.path] = h
        return h

    def _entry_hash(self, e: Entry) -> str:
        key = "~" + e.path
        h = self._hashes.get(key)
        if h is not None:
            return h
        data = ""
        if e.kind == "file":
            known = self.data_digests.get(e.offset)
            if known is not None and known[0] == e.size:
                data = known[1]
            else:
                dd = hashlib.sha256()
                pos = e.offset
                end = e.offset + e.size
                while pos < end:
                    b = os.pread(self._fd, min(CHUNK * 4, end - pos), pos)
                    if not b:
                        raise ContextError(f"build context: {e.path}: the file ends early")
                    dd.update(b)
                    pos += len(b)
                data = dd.hexdigest()
        h = hashlib.sha256(f"{e.kind} {e.mode:o} {e.uid} {e.gid} {e.size} {e.linkname}\n{data}"
                           .encode("utf-8", "surrogateescape")).hexdigest()
        self._hashes[key] = h
        return h


async def receive(read: Callable[[int], Awaitable[bytes]], tmp_dir: str) -> BuildContext:
    """Read the whole request body (``read(n)``, b"" at the end) into a private directory
    under ``tmp_dir`` and index it (see the module doc)."""
    import asyncio
    os.makedirs(tmp_dir, mode=0o700, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="build-", dir=tmp_dir)
    try:
        w = ContextWriter(os.path.join(directory, "context.tar"))
        writing: asyncio.Future[None] | None = None
        try:
            buf: list[bytes] = []
            pending = 0
            while True:
                chunk = await read(CHUNK)
                if not chunk:
                    break
                buf.append(chunk)
                pending += len(chunk)
                if pending >= 4 * CHUNK:
                    data = b"".join(buf)
                    buf.clear()
                    pending = 0
                    if writing is not None:       # one write (and hash) at a time, beside the reading
                        await writing
                    writing = asyncio.ensure_future(asyncio.to_thread(w.write, data))
            if writing is not None:
                await writing
                writing = None
            if buf:
                await asyncio.to_thread(w.write, b"".join(buf))
            await asyncio.to_thread(w.finish)
        finally:
            if writing is not None:     # never close the file under a thread writing to it
                await asyncio.wait([writing])
            w.close()
        return await asyncio.to_thread(BuildContext.index, directory, w.path, w.size, w.scan.digests)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def clean_leftovers(tmp_dir: str) -> None:
    """At daemon start: remove the context directories a killed skiffd left (``build-*``)."""
    try:
        names = os.listdir(tmp_dir)
    except FileNotFoundError:
        return
    for n in names:
        p = os.path.join(tmp_dir, n)
        if n.startswith("build-") and stat.S_ISDIR(os.lstat(p).st_mode):
            shutil.rmtree(p, ignore_errors=True)
