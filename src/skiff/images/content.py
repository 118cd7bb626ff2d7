"""The content-addressable blob store (containerd's content store, namespaced by its metadata).

Layout under ``root`` (as containerd's local content store)::

    blobs/<algorithm>/<hex>          committed blobs, read-only (0444), shared by all namespaces
    ingest/<sha256 of ns/ref>/       one directory per ingest in progress:
        ref                          "<namespace>/<ref>"
        data                         the bytes written so far
        startedat, updatedat         RFC 3339 timestamps
        total, expected              the expected size and digest, when the writer was given them
    lock                             flock: commits and deletes take it shared, GC exclusive

Which blobs a namespace holds is recorded in the metadata database (:class:`MetaDB`): a blob
exists in a namespace once it was committed there (or adopted there, see :meth:`writer`), and
is read, labelled, listed and deleted through that record. The bytes on disk are shared; a blob
no namespace records any more is removed (by :meth:`ContentStore.delete` at once, or by the
garbage collector after a crash between the two steps).

Commit, in order: fsync the data, check size and digest, rename the data into ``blobs/`` (the
name appears only once the file is complete, so no reader ever sees a partial blob), fsync the
directory, record the blob in the namespace (an SQLite transaction, durable when it returns),
remove the ingest directory. A crash before the rename leaves the ingest resumable (reopen the
writer with the same ref; :attr:`Writer.offset` says how much is there) or abortable; a crash
after it leaves at worst an unrecorded blob that the next commit of the same digest reuses and
GC removes otherwise. A resumed ingest is re-hashed from its data file, so whatever a crash did
to its tail, the commit's digest check decides.

Digests: ``sha256`` and ``sha512`` (the OCI image spec's registered algorithms), lowercase hex.
Data is hashed as it is written and re-read in 1 MiB chunks where needed: no blob is held in
memory (except by :meth:`ContentStore.read_all`, for small JSON documents).

Concurrency: one :class:`Writer` per ref at a time, across threads and processes (an flock on
the ingest directory; a second writer gets :class:`Unavailable`). A Writer itself is not
thread-safe. Commit and delete take the store's lock before the database's; do not call them
inside a ``MetaDB.transaction()`` block, or a concurrent garbage collection (which takes them
in the same order) waits for the database until its busy timeout and fails.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import errno
import fcntl
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from skiff.images.errors import (
    AlreadyExists,
    DigestMismatch,
    FailedPrecondition,
    ImageError,
    InvalidArgument,
    NotFound,
    Unavailable,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO

    from skiff.images.metadata import MetaDB

CHUNK = 1 << 20  # bytes read at a time when (re-)hashing or copying

DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}  # algorithm -> length of the hex part
DEFAULT_ALGORITHM = "sha256"

DEFAULT_NAMESPACE = "default"

MAX_REF_LENGTH = 4096

# Lease resource types (containerd's names).
RESOURCE_CONTENT = "content"
RESOURCE_INGEST = "ingests"

# Test seam: called with the name of a point in a commit or delete ("commit:after-fsync",
# "commit:after-rename", "commit:after-db", "delete:after-db"); the crash tests kill the
# process there. None in normal operation.
_fault_hook: Callable[[str], None] | None = None


def _fault_point(name: str) -> None:
    if _fault_hook is not None:
        _fault_hook(name)


# --- digests -------------------------------------------------------------------------------

_HEX = frozenset("0123456789abcdef")


def parse_digest(digest: object, where: str = "digest") -> tuple[str, str]:
    """Split ``algorithm:hex`` after checking it; raises InvalidArgument naming ``where``."""
    if not isinstance(digest, str):
        raise InvalidArgument(f"{where}: expected a digest string, got {type(digest).__name__}")
    algorithm, sep, encoded = digest.partition(":")
    if not sep:
        raise InvalidArgument(f"{where} {digest!r}: not a digest (expected ALGORITHM:HEX)")
    length = DIGEST_ALGORITHMS.get(algorithm)
    if length is None:
        raise InvalidArgument(
            f"{where} {digest!r}: unsupported digest algorithm {algorithm!r} (supported: sha256, sha512)")
    if len(encoded) != length or not _HEX.issuperset(encoded):
        raise InvalidArgument(
            f"{where} {digest!r}: the {algorithm} part must be {length} lowercase hex digits")
    return algorithm, encoded


def validate_digest(digest: object, where: str = "digest") -> str:
    parse_digest(digest, where)
    return digest  # type: ignore[return-value]


def new_hash(algorithm: str) -> Any:
    if algorithm not in DIGEST_ALGORITHMS:
        raise InvalidArgument(f"digest algorithm {algorithm!r}: unsupported (supported: sha256, sha512)")
    return hashlib.new(algorithm)


def digest_bytes(data: bytes, algorithm: str = DEFAULT_ALGORITHM) -> str:
    h = new_hash(algorithm)
    h.update(data)
    return f"{algorithm}:{h.hexdigest()}"


def _hash_fd(fd: int, algorithm: str, length: int, where: str) -> Any:
    """Hash the first ``length`` bytes of ``fd`` (pread, 1 MiB at a time)."""
    h = new_hash(algorithm)
    pos = 0
    while pos < length:
        chunk = os.pread(fd, min(CHUNK, length - pos), pos)
        if not chunk:
            raise ImageError(f"{where}: file ended at {pos} bytes while hashing {length}")
        h.update(chunk)
        pos += len(chunk)
    return h


# --- labels and timestamps -----------------------------------------------------------------

MAX_LABEL_SIZE = 4096  # containerd's limit on len(key) + len(value)


def validate_labels(labels: Mapping[str, str] | None, where: str) -> dict[str, str]:
    """Check labels the way containerd does (non-empty keys, key+value <= 4096 bytes)."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise InvalidArgument(f"{where}: labels must be a mapping of strings, got {type(labels).__name__}")
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgument(f"{where}: label {key!r}: keys and values must be strings")
        if not key:
            raise InvalidArgument(f"{where}: label with an empty key")
        size = len(key.encode()) + len(value.encode())
        if size > MAX_LABEL_SIZE:
            raise InvalidArgument(
                f"{where}: label {key!r}: key and value length ({size} bytes) greater than maximum "
                f"size ({MAX_LABEL_SIZE} bytes)")
        out[key] = value
    return out


def apply_label_update(current: Mapping[str, str], labels: Mapping[str, str] | None,
                       fieldpaths: tuple[str, ...] | list[str], where: str,
                       prefix: str = "labels") -> dict[str, str]:
    """containerd's label update: no fieldpaths or ``labels`` replaces them all; ``labels.KEY``
    sets KEY from ``labels`` (or removes it when absent there)."""
    new = validate_labels(labels, where)
    if not fieldpaths:
        return new
    result = dict(current)
    for path in fieldpaths:
        if path == prefix:
            result = dict(new)
        elif path.startswith(prefix + "."):
            key = path[len(prefix) + 1:]
            if key in new:
                result[key] = new[key]
            else:
                result.pop(key, None)
        else:
            raise InvalidArgument(f"{where}: cannot update field {path!r} (only {prefix} and {prefix}.KEY)")
    return validate_labels(result, where)


def from_ns(ns: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.UTC)


def rfc3339(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{base}.{frac:09d}Z"


# --- records -------------------------------------------------------------------------------

_PLATFORM_FIELDS = {"architecture": str, "os": str, "os.version": str, "variant": str}


class Descriptor:
    """An OCI content descriptor. ``platform`` is kept in its JSON form (a dict)."""

    __slots__ = ("annotations", "artifact_type", "data", "digest", "media_type", "platform", "size", "urls")

    def __init__(self, media_type: str, digest: str, size: int,
                 annotations: Mapping[str, str] | None = None, urls: list[str] | None = None,
                 platform: Mapping[str, Any] | None = None, artifact_type: str | None = None,
                 data: bytes | None = None) -> None:
        self.media_type = media_type
        self.digest = digest
        self.size = size
        self.annotations: dict[str, str] = dict(annotations or {})
        self.urls: list[str] = list(urls or [])
        self.platform: dict[str, Any] | None = dict(platform) if platform is not None else None
        self.artifact_type = artifact_type
        self.data = data

    def to_json(self) -> dict[str, Any]:
        """The descriptor as JSON, keys in the image-spec's (Go struct) order, empty fields left out."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode("ascii")
        if self.platform is not None:
            out["platform"] = dict(self.platform)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_json(cls, obj: object, where: str = "descriptor") -> Descriptor:
        """Parse and check a descriptor; errors name the field by its JSON path under ``where``."""
        if not isinstance(obj, dict):
            raise InvalidArgument(f"{where}: expected an object, got {type(obj).__name__}")
        media_type = obj.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            raise InvalidArgument(f"{where}.mediaType: missing or not a non-empty string")
        digest = validate_digest(obj.get("digest"), f"{where}.digest")
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"{where}.size: expected a non-negative integer, got {size!r}")
        annotations = obj.get("annotations")
        if annotations is not None:
            if not isinstance(annotations, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
                raise InvalidArgument(f"{where}.annotations: expected an object of strings")
        urls = obj.get("urls")
        if urls is not None:
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                raise InvalidArgument(f"{where}.urls: expected an array of strings")
        platform = obj.get("platform")
        if platform is not None:
            if not isinstance(platform, dict):
                raise InvalidArgument(f"{where}.platform: expected an object")
            for key in ("architecture", "os"):
                if not isinstance(platform.get(key), str):
                    raise InvalidArgument(f"{where}.platform.{key}: missing or not a string")
            for key, kind in _PLATFORM_FIELDS.items():
                if key in platform and not isinstance(platform[key], kind):
                    raise InvalidArgument(f"{where}.platform.{key}: expected a string")
            features = platform.get("os.features")
            if features is not None and (
                    not isinstance(features, list) or not all(isinstance(f, str) for f in features)):
                raise InvalidArgument(f"{where}.platform.os.features: expected an array of strings")
        artifact_type = obj.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise InvalidArgument(f"{where}.artifactType: expected a string")
        data: bytes | None = None
        raw = obj.get("data")
        if raw is not None:
            if not isinstance(raw, str):
                raise InvalidArgument(f"{where}.data: expected a base64 string")
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError) as e:
                raise InvalidArgument(f"{where}.data: not valid base64: {e}") from None
            if len(data) != size:
                raise InvalidArgument(f"{where}.data: {len(data)} bytes, but size says {size}")
            algorithm, _ = parse_digest(digest)
            if digest_bytes(data, algorithm) != digest:
                raise InvalidArgument(f"{where}.data: does not match digest {digest}")
        return cls(media_type, digest, size, annotations, urls, platform, artifact_type, data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Descriptor):
            return NotImplemented
        return self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Descriptor({self.media_type!r}, {self.digest!r}, {self.size})"


class Info:
    """What the store knows of a blob in a namespace."""

    __slots__ = ("created_at", "digest", "labels", "size", "updated_at")

    def __init__(self, digest: str, size: int, created_at: _dt.datetime, updated_at: _dt.datetime,
                 labels: dict[str, str] | None = None) -> None:
        self.digest = digest
        self.size = size
        self.created_at = created_at
        self.updated_at = updated_at
        self.labels: dict[str, str] = labels or {}

    def __repr__(self) -> str:
        return f"Info({self.digest!r}, size={self.size}, labels={self.labels!r})"


class Status:
    """An ingest in progress (containerd's content.Status)."""

    __slots__ = ("expected", "offset", "ref", "started_at", "total", "updated_at")

    def __init__(self, ref: str, offset: int, total: int, expected: str,
                 started_at: _dt.datetime, updated_at: _dt.datetime) -> None:
        self.ref = ref
        self.offset = offset
        self.total = total  # 0: unknown
        self.expected = expected  # "": unknown
        self.started_at = started_at
        self.updated_at = updated_at

    def __repr__(self) -> str:
        return f"Status({self.ref!r}, offset={self.offset}, total={self.total}, expected={self.expected!r})"


def info_field(info: Info, path: Sequence[str]) -> tuple[str, bool]:
    """Filter adaptor for content: ``digest``, ``size``, ``labels.KEY``."""
    if not path:
        return "", False
    if path[0] == "digest" and len(path) == 1:
        return info.digest, True
    if path[0] == "size" and len(path) == 1:
        return str(info.size), True
    if path[0] == "labels" and len(path) >= 2:
        key = ".".join(path[1:])
        return (info.labels[key], True) if key in info.labels else ("", False)
    return "", False


def status_field(st: Status, path: Sequence[str]) -> tuple[str, bool]:
    """Filter adaptor for ingests: ``ref``, ``expected``."""
    if list(path) == ["ref"]:
        return st.ref, True
    if list(path) == ["expected"]:
        return st.expected, bool(st.expected)
    return "", False


# --- small file-system helpers -------------------------------------------------------------

def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durable(path: str, mode: int = 0o755) -> None:
    """Create ``path`` and missing parents, fsyncing each parent that got a new entry."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    _makedirs_durable(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    _fsync_dir(parent)


def _write_small(dirfd: int, name: str, text: str) -> None:
    """Write a small file in a directory (given by fd), fsynced."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600, dir_fd=dirfd)
    try:
        data = text.encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_small(dirfd: int, name: str) -> str | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 8192).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _read_small_path(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(8192).decode("utf-8", "replace")
    except FileNotFoundError:
        return None


def _parse_rfc3339_ns(text: str | None) -> int | None:
    if not text:
        return None
    text = text.strip()
    try:
        main, _, frac = text.rstrip("Z").partition(".")
        secs = _dt.datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=_dt.UTC).timestamp()
        nanos = int((frac + "000000000")[:9]) if frac else 0
        return int(secs) * 1_000_000_000 + nanos
    except ValueError:
        return None


def _remove_ingest_dir(path: str, dirfd: int) -> None:
    """Remove an ingest directory's files (through its fd) and the directory itself."""
    for name in os.listdir(dirfd):
        os.unlink(name, dir_fd=dirfd)
    os.rmdir(path)


def validate_namespace(namespace: object) -> str:
    """containerd's namespace rule: alphanumerics separated by single ``.``, ``_`` or ``-``, <= 76."""
    from skiff.images.metadata import validate_identifier
    return validate_identifier(namespace, "namespace")


# --- the backend: files on disk ------------------------------------------------------------

class _Backend:
    """The directory tree; shared by every namespace view of one store."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.blobs = os.path.join(self.root, "blobs")
        self.ingest = os.path.join(self.root, "ingest")
        self.lock_path = os.path.join(self.root, "lock")
        _makedirs_durable(self.blobs)
        _makedirs_durable(self.ingest, 0o700)
        if not os.path.exists(self.lock_path):
            fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)
            _fsync_dir(self.root)

    def blob_path(self, digest: str) -> str:
        algorithm, encoded = parse_digest(digest)
        return os.path.join(self.blobs, algorithm, encoded)

    def ingest_path(self, backend_ref: str) -> str:
        return os.path.join(self.ingest, hashlib.sha256(backend_ref.encode()).hexdigest())

    @contextmanager
    def lock(self, exclusive: bool) -> Iterator[None]:
        """Commits and deletes hold this shared, GC exclusive (flock; one fd per holder)."""
        fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def blob_digests(self) -> Iterator[tuple[str, str]]:
        """(digest, path) of every blob file on disk; names that are not digests are skipped."""
        for algorithm, length in DIGEST_ALGORITHMS.items():
            d = os.path.join(self.blobs, algorithm)
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for name in names:
                if len(name) == length and _HEX.issuperset(name):
                    yield f"{algorithm}:{name}", os.path.join(d, name)

    def remove_blob(self, digest: str) -> bool:
        path = self.blob_path(digest)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        _fsync_dir(os.path.dirname(path))
        return True

    def ingest_entries(self) -> Iterator[tuple[str, str]]:
        """(directory name, path) of each entry of ingest/ (including temporary ones)."""
        for name in os.listdir(self.ingest):
            yield name, os.path.join(self.ingest, name)

    def read_ingest_status(self, path: str) -> tuple[str, Status] | None:
        """(backend ref, status) of an ingest directory, read without locking; None if gone/empty."""
        backend_ref = _read_small_path(os.path.join(path, "ref"))
        if backend_ref is None:
            return None
        try:
            st = os.stat(os.path.join(path, "data"))
            offset, updated = st.st_size, st.st_mtime_ns
        except FileNotFoundError:
            offset, updated = 0, None
        total_text = _read_small_path(os.path.join(path, "total"))
        expected = (_read_small_path(os.path.join(path, "expected")) or "").strip()
        started = _parse_rfc3339_ns(_read_small_path(os.path.join(path, "startedat"))) or 0
        if updated is None:
            updated = _parse_rfc3339_ns(_read_small_path(os.path.join(path, "updatedat"))) or started
        total = int(total_text) if total_text and total_text.strip().isdigit() else 0
        _, _, ref = backend_ref.partition("/")
        return backend_ref, Status(ref, offset, total, expected, from_ns(started), from_ns(updated))

    def try_lock_ingest(self, path: str) -> int | None:
        """Open and flock an ingest directory without blocking; its fd, or None if in use/gone."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not _still_linked(fd, path):
            os.close(fd)
            return None
        return fd


def _still_linked(fd: int, path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


# --- the store -----------------------------------------------------------------------------

class ContentStore:
    """Blobs on disk under ``root``, recorded per namespace in ``meta``.

    A store object is a view for one namespace (and optionally one lease, to which new ingests
    and commits are added, as containerd does for a lease in the request context); ``using``
    gives another view of the same store.
    """

    def __init__(self, root: str | os.PathLike[str], meta: MetaDB, namespace: str = DEFAULT_NAMESPACE,
                 lease: str | None = None, *, _backend: _Backend | None = None) -> None:
        self.meta = meta
        self.namespace = validate_namespace(namespace)
        self.lease = lease
        self._backend = _backend if _backend is not None else _Backend(os.fspath(root))
        self.root = self._backend.root

    def using(self, namespace: str | None = None, lease: str | None = None) -> ContentStore:
        """The same store seen from ``namespace`` (default: this view's) under ``lease`` (default:
        none; pass it again to keep it)."""
        return ContentStore(self.root, self.meta, namespace or self.namespace, lease,
                            _backend=self._backend)

    # -- reading

    def blob_path(self, digest: str) -> str:
        """Path of a committed blob (whether or not this namespace holds it)."""
        return self._backend.blob_path(digest)

    def info(self, digest: str) -> Info:
        validate_digest(digest)
        with self.meta.view() as tx:
            info = tx.get_content(self.namespace, digest)
        if info is None:
            raise NotFound(f"content {digest}: not found in namespace {self.namespace}")
        return info

    def exists(self, digest: str) -> bool:
        validate_digest(digest)
        with self.meta.view() as tx:
            return tx.get_content(self.namespace, digest) is not None

    def open(self, digest: str) -> BinaryIO:
        """A seekable binary reader of a committed blob."""
        self.info(digest)
        path = self._backend.blob_path(digest)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"content {digest}: recorded in namespace {self.namespace} but its blob "
                           f"{path} is missing") from None

    def read_all(self, digest: str, max_size: int | None = None) -> bytes:
        info = self.info(digest)
        if max_size is not None and info.size > max_size:
            raise FailedPrecondition(
                f"content {digest}: {info.size} bytes, more than the {max_size} allowed to read into memory")
        with self.open(digest) as f:
            data = f.read()
        if len(data) != info.size:
            raise ImageError(f"content {digest}: blob has {len(data)} bytes on disk, {info.size} recorded")
        return data

    def walk(self, fn: Callable[[Info], object], filters: Sequence[str] = ()) -> None:
        """Call ``fn`` for each blob of the namespace that matches any of ``filters`` (containerd syntax)."""
        for info in self.infos(filters):
            fn(info)

    def infos(self, filters: Sequence[str] = ()) -> list[Info]:
        from skiff.images.metadata import parse_filters
        flt = parse_filters(filters)
        with self.meta.view() as tx:
            infos = tx.list_content(self.namespace)
        return flt.select(infos, info_field)

    # -- labels and deletion

    def update_labels(self, digest: str, labels: Mapping[str, str] | None,
                      fields: tuple[str, ...] | list[str] = ()) -> Info:
        """Replace the labels (no fields, or ``labels``) or set/remove ``labels.KEY`` entries."""
        validate_digest(digest)
        with self.meta.transaction() as tx:
            return tx.update_content_labels(self.namespace, digest, labels, tuple(fields))

    def delete(self, digest: str) -> None:
        """Remove the blob from the namespace, and from disk when no namespace holds it any more."""
        validate_digest(digest)
        with self._backend.lock(exclusive=True):
            with self.meta.transaction() as tx:
                if not tx.delete_content(self.namespace, digest):
                    raise NotFound(f"content {digest}: not found in namespace {self.namespace}")
                others = tx.content_namespaces(digest)
            _fault_point("delete:after-db")
            if not others:
                self._backend.remove_blob(digest)

    # -- ingests

    def writer(self, ref: str, expected: str | None = None, total: int | None = None,
               *, exist_ok: bool = True) -> Writer:
        """Open (or resume) the ingest named ``ref`` in this namespace.

        ``expected`` (digest) and ``total`` (size) are checked again at commit. With
        ``exist_ok=False`` (containerd's semantics, for the gRPC service) a blob that is already
        in the namespace raises :class:`AlreadyExists` here, and one already on disk for another
        namespace with the right size is adopted into this one (containerd's "shared" policy),
        then AlreadyExists is raised too, so the caller need not send the bytes again. With the
        default, a writer is always returned and a commit of existing content is a no-op.
        """
        if not isinstance(ref, str) or not ref or len(ref) > MAX_REF_LENGTH or "\x00" in ref or "\n" in ref:
            raise InvalidArgument(f"ingest ref {ref!r}: must be a non-empty line of at most "
                                  f"{MAX_REF_LENGTH} characters")
        if expected is not None:
            validate_digest(expected, f"ingest ref {ref}: expected digest")
        if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
            raise InvalidArgument(f"ingest ref {ref}: expected size {total!r} is not a non-negative integer")
        if expected is not None and not exist_ok:
            self._check_existing(ref, expected, total)
        backend_ref = f"{self.namespace}/{ref}"
        path = self._backend.ingest_path(backend_ref)
        dirfd = self._open_ingest_dir(ref, backend_ref, path, expected, total)
        try:
            writer = Writer(self, ref, backend_ref, path, dirfd, expected, total)
        except BaseException:
            os.close(dirfd)
            raise
        if self.lease is not None:
            try:
                with self.meta.transaction() as tx:
                    tx.add_lease_resource(self.namespace, self.lease, RESOURCE_INGEST, ref)
            except BaseException:
                writer.close()
                raise
        return writer

    def _check_existing(self, ref: str, expected: str, total: int | None) -> None:
        with self.meta.view() as tx:
            info = tx.get_content(self.namespace, expected)
        if info is not None:
            if self.lease is not None:
                with self.meta.transaction() as tx:
                    tx.add_lease_resource(self.namespace, self.lease, RESOURCE_CONTENT, expected)
            raise AlreadyExists(f"content {expected}: already exists in namespace {self.namespace}")
        with self._backend.lock(exclusive=False):
            path = self._backend.blob_path(expected)
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                return
            if total is not None and total != size:
                return
            with self.meta.transaction() as tx:
                tx.put_content(self.namespace, expected, size, None)
                if self.lease is not None:
                    tx.add_lease_resource(self.namespace, self.lease, RESOURCE_CONTENT, expected)
        raise AlreadyExists(f"content {expected}: already exists (shared with another namespace, "
                            f"now recorded in namespace {self.namespace})")

    def _open_ingest_dir(self, ref: str, backend_ref: str, path: str, expected: str | None,
                         total: int | None) -> int:
        """Create or open the ingest directory and lock it; returns its fd."""
        for _attempt in range(100):
            try:
                dirfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._create_ingest_dir(backend_ref, path, expected, total)
                continue
            try:
                fcntl.flock(dirfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(dirfd)
                raise Unavailable(f"ingest ref {ref!r} in namespace {self.namespace}: locked by another "
                                  "writer") from None
            if not _still_linked(dirfd, path):
                os.close(dirfd)  # committed or aborted while we were opening it: start again
                continue
            return dirfd
        raise Unavailable(f"ingest ref {ref!r} in namespace {self.namespace}: its directory {path} keeps "
                          "disappearing while being opened")

    def _create_ingest_dir(self, backend_ref: str, path: str, expected: str | None,
                           total: int | None) -> None:
        tmp = os.path.join(self._backend.ingest, f".tmp-{secrets.token_hex(8)}")
        os.mkdir(tmp, 0o700)
        try:
            tfd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                now = rfc3339(time.time_ns())
                _write_small(tfd, "ref", backend_ref)
                _write_small(tfd, "startedat", now)
                _write_small(tfd, "updatedat", now)
                if total is not None:
                    _write_small(tfd, "total", str(total))
                if expected is not None:
                    _write_small(tfd, "expected", expected)
                _write_small(tfd, "data", "")
                os.fsync(tfd)
            finally:
                os.close(tfd)
            try:
                os.rename(tmp, path)
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # Someone else created it first: use theirs.
                _remove_tree_quiet(tmp)
                return
        except BaseException:
            if os.path.exists(tmp):
                _remove_tree_quiet(tmp)
            raise
        _fsync_dir(self._backend.ingest)

    def status(self, ref: str) -> Status:
        backend_ref = f"{self.namespace}/{ref}"
        found = self._backend.read_ingest_status(self._backend.ingest_path(backend_ref))
        if found is None or found[0] != backend_ref:
            raise NotFound(f"ingest ref {ref!r}: not found in namespace {self.namespace}")
        return found[1]

    def list_statuses(self, filters: Sequence[str] = ()) -> list[Status]:
        """The ingests in progress in this namespace (filters on ``ref`` / ``expected``)."""
        from skiff.images.metadata import parse_filters
        flt = parse_filters(filters)
        prefix = self.namespace + "/"
        out = []
        for name, path in self._backend.ingest_entries():
            if name.startswith("."):
                continue
            found = self._backend.read_ingest_status(path)
            if found is None or not found[0].startswith(prefix):
                continue
            out.append(found[1])
        out.sort(key=lambda s: s.ref)
        return flt.select(out, status_field)

    def abort(self, ref: str) -> None:
        """Remove an ingest that no writer has open."""
        backend_ref = f"{self.namespace}/{ref}"
        path = self._backend.ingest_path(backend_ref)
        try:
            dirfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"ingest ref {ref!r}: not found in namespace {self.namespace}") from None
        try:
            try:
                fcntl.flock(dirfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Unavailable(f"ingest ref {ref!r} in namespace {self.namespace}: cannot abort, a writer "
                                  "has it open") from None
            if not _still_linked(dirfd, path):
                raise NotFound(f"ingest ref {ref!r}: not found in namespace {self.namespace}")
            _remove_ingest_dir(path, dirfd)
            _fsync_dir(self._backend.ingest)
        finally:
            os.close(dirfd)
        if self.lease is not None:
            with self.meta.transaction() as tx:
                tx.delete_lease_resource(self.namespace, self.lease, RESOURCE_INGEST, ref)


def _remove_tree_quiet(path: str) -> None:
    """Remove a temporary directory this process created; failures are reported on stderr
    (this runs while another error or outcome is being returned, which must win)."""
    import shutil
    import sys

    def report(_func: object, p: str, exc_info: Any) -> None:
        print(f"skiff: cleanup: removing {p}: {exc_info[1]}", file=sys.stderr)

    shutil.rmtree(path, onerror=report)


class Writer:
    """An open ingest (containerd's content.Writer): write, then commit; resumable by ref."""

    def __init__(self, store: ContentStore, ref: str, backend_ref: str, path: str, dirfd: int,
                 expected: str | None, total: int | None) -> None:
        self._store = store
        self.ref = ref
        self._backend_ref = backend_ref
        self._path = path
        self._dirfd = dirfd  # holds the flock for the writer's lifetime
        self._fd = -1
        self._closed = True  # until fully set up (the caller closes dirfd if this raises)
        self._committed = False
        self._where = f"ingest ref {ref!r} in namespace {store.namespace}"
        try:
            self._setup(expected, total)
        except BaseException:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._dirfd = -1
            raise
        self._closed = False

    def _setup(self, expected: str | None, total: int | None) -> None:
        dirfd, path, backend_ref, where = self._dirfd, self._path, self._backend_ref, self._where
        stored_ref = _read_small(dirfd, "ref")
        if stored_ref is None:
            # A directory left half-made by a crash of an older version or by hand: adopt it.
            _write_small(dirfd, "ref", backend_ref)
        elif stored_ref != backend_ref:
            raise ImageError(f"{where}: directory {path} belongs to ref {stored_ref!r}")
        stored_total = _read_small(dirfd, "total")
        stored_expected = _read_small(dirfd, "expected")
        self.total: int | None = int(stored_total) if stored_total and stored_total.isdigit() else None
        self.expected: str | None = stored_expected.strip() if stored_expected else None
        if total is not None:
            if self.total is not None and self.total != total:
                raise FailedPrecondition(f"{where}: started with expected size {self.total}, now asked "
                                         f"for {total} (abort the ingest to start over)")
            if self.total is None:
                _write_small(dirfd, "total", str(total))
                self.total = total
        if expected is not None:
            if self.expected is not None and self.expected != expected:
                raise FailedPrecondition(f"{where}: started for {self.expected}, now asked for {expected} "
                                         "(abort the ingest to start over)")
            if self.expected is None:
                _write_small(dirfd, "expected", expected)
                self.expected = expected
        if _parse_rfc3339_ns(_read_small(dirfd, "startedat")) is None:
            _write_small(dirfd, "startedat", rfc3339(time.time_ns()))
        self._algorithm = parse_digest(self.expected)[0] if self.expected else DEFAULT_ALGORITHM
        # A directory whose data a crashed commit already moved into blobs/ starts again empty.
        self._fd = os.open("data", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=dirfd)
        self._offset = os.fstat(self._fd).st_size
        self._hash: Any = None if self._offset else new_hash(self._algorithm)  # None: re-hash lazily

    # -- state

    @property
    def offset(self) -> int:
        """How many bytes the ingest holds (where the next write goes)."""
        return self._offset

    def _check_open(self) -> None:
        if self._committed:
            raise FailedPrecondition(f"{self._where}: already committed")
        if self._closed:
            raise FailedPrecondition(f"{self._where}: writer is closed")

    def _current_hash(self) -> Any:
        if self._hash is None:
            self._hash = _hash_fd(self._fd, self._algorithm, self._offset, f"{self._where}: data")
        return self._hash

    def digest(self) -> str:
        """Digest of the bytes written so far (in the expected digest's algorithm)."""
        self._check_open()
        return f"{self._algorithm}:{self._current_hash().hexdigest()}"

    def status(self) -> Status:
        self._check_open()
        st = self._store.status(self.ref)
        st.offset = self._offset
        return st

    # -- writing

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_open()
        view = memoryview(data).cast("B")
        n = len(view)
        if self.total is not None and self._offset + n > self.total:
            raise FailedPrecondition(f"{self._where}: writing {n} bytes at offset {self._offset} would "
                                     f"exceed the expected size {self.total}")
        h = self._current_hash()
        pos = 0
        try:
            while pos < n:
                pos += os.pwrite(self._fd, view[pos:], self._offset + pos)
        except OSError as e:
            # Part of it may be on disk: take the file as it is and re-hash it on the next use.
            self._offset = os.fstat(self._fd).st_size
            self._hash = None
            raise ImageError(f"{self._where}: write of {n} bytes at offset {self._offset}: "
                             f"{e.strerror or e}") from e
        h.update(view)
        self._offset += n
        return n

    def truncate(self, size: int) -> None:
        """Cut the ingest back to ``size`` bytes (containerd's Truncate; 0 restarts it)."""
        self._check_open()
        if size < 0 or size > self._offset:
            raise InvalidArgument(f"{self._where}: cannot truncate to {size} (it holds {self._offset} bytes)")
        os.ftruncate(self._fd, size)
        self._offset = size
        self._hash = new_hash(self._algorithm) if size == 0 else None

    # -- commit

    def commit(self, size: int | None = None, expected: str | None = None,
               labels: Mapping[str, str] | None = None, *, exist_ok: bool = True) -> Info:
        """Verify and move the data into the store; returns the blob's Info in the namespace.

        ``size`` and ``expected`` default to those the writer was opened with (None: not
        checked). A wrong size or digest raises :class:`DigestMismatch` and keeps the ingest
        (truncate or abort it). If the namespace already has the blob, the labels are merged
        into its record and the call succeeds, or raises :class:`AlreadyExists` with
        ``exist_ok=False`` (containerd's behaviour); either way the ingest is gone.
        """
        self._check_open()
        store = self._store
        ns = store.namespace
        new_labels = validate_labels(labels, f"{self._where}: commit")
        size = self.total if size is None else size
        expected = expected or self.expected
        if expected is not None:
            validate_digest(expected, f"{self._where}: commit: expected digest")
        os.fsync(self._fd)
        _fault_point("commit:after-fsync")
        actual_size = os.fstat(self._fd).st_size
        if actual_size != self._offset:
            self._offset = actual_size
            self._hash = None
        if size is not None and size != actual_size:
            raise DigestMismatch(f"{self._where}: commit: unexpected size {actual_size}, expected {size}")
        if expected is not None:
            algorithm = parse_digest(expected)[0]
            if algorithm == self._algorithm:
                digest = f"{algorithm}:{self._current_hash().hexdigest()}"
            else:
                h = _hash_fd(self._fd, algorithm, actual_size, f"{self._where}: data")
                digest = f"{algorithm}:{h.hexdigest()}"
            if digest != expected:
                raise DigestMismatch(f"{self._where}: commit: unexpected digest {digest}, expected {expected}")
        else:
            digest = f"{self._algorithm}:{self._current_hash().hexdigest()}"
        if store.lease is not None:
            with store.meta.view() as tx:  # fail before the rename rather than after it
                tx.get_lease(ns, store.lease)
        backend = store._backend
        target = backend.blob_path(digest)
        data_path = os.path.join(self._path, "data")
        existed_in_ns = False
        with backend.lock(exclusive=False):
            if not os.path.exists(target):
                _makedirs_durable(os.path.dirname(target))
                os.fchmod(self._fd, 0o444)  # blobs are read-only, like containerd's
                try:
                    os.rename(data_path, target)
                except OSError as e:
                    os.fchmod(self._fd, 0o600)
                    raise ImageError(f"{self._where}: commit: moving {data_path} to {target}: "
                                     f"{e.strerror or e}") from e
                _fsync_dir(os.path.dirname(target))
            _fault_point("commit:after-rename")
            with store.meta.transaction() as tx:
                current = tx.get_content(ns, digest)
                if current is not None:
                    existed_in_ns = True
                    if exist_ok and new_labels:
                        merged = dict(current.labels)
                        merged.update(new_labels)
                        tx.put_content(ns, digest, actual_size, merged)
                else:
                    tx.put_content(ns, digest, actual_size, new_labels)
                if store.lease is not None:
                    tx.add_lease_resource(ns, store.lease, RESOURCE_CONTENT, digest)
                    tx.delete_lease_resource(ns, store.lease, RESOURCE_INGEST, self.ref)
                info = tx.get_content(ns, digest)
            _fault_point("commit:after-db")
        self._committed = True
        self._finish_ingest()
        if existed_in_ns and not exist_ok:
            raise AlreadyExists(f"content {digest}: already exists in namespace {ns}")
        assert info is not None
        return info

    def _finish_ingest(self) -> None:
        try:
            _remove_ingest_dir(self._path, self._dirfd)
            _fsync_dir(self._store._backend.ingest)
        finally:
            self._release()

    # -- closing

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._dirfd >= 0:
            os.close(self._dirfd)
            self._dirfd = -1
        self._closed = True

    def close(self) -> None:
        """Release the ingest (kept for a later resume); no-op after commit or close."""
        if self._closed:
            return
        try:
            if not self._committed:
                _write_small(self._dirfd, "updatedat", rfc3339(time.time_ns()))
        finally:
            self._release()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_closed", True) is False:
            self._release()

