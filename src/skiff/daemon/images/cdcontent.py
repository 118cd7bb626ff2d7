"""The image library's content-store interface over containerd's content service, for the
library's pull, push, save and load when skiffd runs them: blobs go straight between the
registry (or the archive) and containerd's content store, with no private copy on disk.

The library is synchronous and runs in worker threads; skiffd's containerd client is
asynchronous and lives on the event loop. ``ContainerdContent`` runs each call on the loop
(``asyncio.run_coroutine_threadsafe``) and waits for it, so it must never be used from the
loop's own thread.

What it provides is what the library's ``pull``, ``push``, ``archive.save``/``load`` use of a
``ContentStore``: ``using``, ``exists``, ``info``, ``read_all``, ``open`` (a streamed reader),
``update_labels``, ``writer`` (an ingest over one ``Content.Write`` stream), ``status`` and
``abort``. Every write carries the operation's containerd lease, so a garbage collection that
runs meanwhile removes nothing of it.

A writer opens its ingest with a STAT request, so that an ingest left by an interrupted
transfer of the same ref resumes from its offset (``offset``), and one another transfer is
writing is reported as the library's ``Unavailable`` (the library then waits for it). Data
is sent in chunks of up to 1 MiB as it comes; containerd hashes it, and the commit checks size
and digest there (a mismatch is the library's ``DigestMismatch``). Closing a writer without a
commit ends the stream and leaves the ingest to be resumed or aborted, as containerd's own
clients do.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

import grpc

from skiff.daemon.api.errors import ApiError
from skiff.daemon.containerd.client import WRITE_CHUNK, Containerd
from skiff.images import errors as ie
from skiff.images.content import Info, Status, new_hash, parse_digest

log = logging.getLogger("skiff.daemon.images")

_GRPC_TO_LIBRARY: dict[Any, type[ie.ImageError]] = {
    grpc.StatusCode.NOT_FOUND: ie.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: ie.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: ie.FailedPrecondition,
    grpc.StatusCode.INVALID_ARGUMENT: ie.InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: ie.InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: ie.Unavailable,
    grpc.StatusCode.UNIMPLEMENTED: ie.Unimplemented,
}


def _code(e: BaseException) -> Any:
    if isinstance(e, grpc.RpcError):
        return e.code() if callable(getattr(e, "code", None)) else None
    return getattr(e, "grpc_code", None)


def library_error(e: BaseException, what: str) -> ie.ImageError:
    """A containerd error (gRPC or skiffd's API error) as the library's error of that kind."""
    if isinstance(e, ie.ImageError):
        return e
    code = _code(e)
    text = e.details() if isinstance(e, grpc.RpcError) and callable(getattr(e, "details", None)) else str(e)
    cls = _GRPC_TO_LIBRARY.get(code)
    if cls is None:     # an error of skiffd's client itself (no gRPC status)
        from skiff.daemon.api import errors as ae
        kinds: list[tuple[type[ApiError], type[ie.ImageError]]] = [
            (ae.NotFound, ie.NotFound), (ae.InvalidParameter, ie.InvalidArgument),
            (ae.Unavailable, ie.Unavailable), (ae.Conflict, ie.FailedPrecondition)]
        cls = next((lib for api_cls, lib in kinds if isinstance(e, api_cls)), ie.ImageError)
    return cls(f"{what}: containerd: {text}")


def _ts(ns: Any) -> _dt.datetime:
    try:
        return _dt.datetime.fromtimestamp(int(ns) / 1e9, _dt.UTC)
    except (TypeError, ValueError):
        return _dt.datetime.fromtimestamp(0, _dt.UTC)


class ContainerdContent:
    """containerd's content store (skiffd's namespace), seen as the library's ContentStore;
    writes are made under ``lease``."""

    def __init__(self, cd: Containerd, loop: asyncio.AbstractEventLoop, lease: str = "") -> None:
        self.cd = cd
        self.loop = loop
        self.lease = lease

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def _call(self, coro: Coroutine[Any, Any, Any], what: str) -> Any:
        try:
            return self._run(coro)
        except (ApiError, grpc.RpcError) as e:
            raise library_error(e, what) from None

    # -- the ContentStore interface the library uses

    def using(self, namespace: str | None = None, lease: str | None = None) -> ContainerdContent:
        """The library's per-operation view; containerd's namespace and lease are this
        store's (the library's own lease lives in its metadata database, not here)."""
        return self

    def exists(self, digest: str) -> bool:
        """Whether containerd has the blob. With a lease, the blob is first added to it: an
        operation that finds a blob and relies on it (a pull that skips a layer it has, or a
        load) keeps it even if the image that held it is deleted meanwhile and a garbage
        collection runs before the new image names it."""
        if self.lease:
            api = self.cd.api.leases

            async def protect() -> None:
                await self.cd._call(self.cd.leases.AddResource, api.AddResourceRequest(
                    id=self.lease, resource=api.Resource(id=digest, type="content")))
            self._call(protect(), f"lease {self.lease}: add content {digest}")
        return self._call(self.cd.content_info(digest), f"content {digest}") is not None

    def info(self, digest: str) -> Info:
        d = self._call(self.cd.content_info(digest), f"content {digest}")
        if d is None:
            raise ie.NotFound(f"content {digest}: not found in containerd's content store")
        return Info(digest, int(d.get("size") or 0), _ts(d.get("created_at")), _ts(d.get("updated_at")),
                    dict(d.get("labels") or {}))

    def read_all(self, digest: str, max_size: int | None = None) -> bytes:
        return self._call(self.cd.read_blob(digest, max_size), f"content {digest}")

    def update_labels(self, digest: str, labels: Mapping[str, str] | None,
                      paths: tuple[str, ...] | list[str] = ()) -> None:
        if labels:
            self._call(self.cd.update_content_labels(digest, dict(labels)), f"content {digest}: labels")

    def open(self, digest: str) -> ContainerdReader:
        return ContainerdReader(self, digest)

    def writer(self, ref: str, expected: str | None = None,
               total: int | None = None) -> ContainerdWriter | PresentBlobWriter:
        """An ingest of ``ref``; when containerd has the ``expected`` blob already, a writer
        that only checks what is written against it (the caller's data is not needed, but an
        archive still has to be read through)."""
        w = ContainerdWriter(self, ref, expected, total)
        try:
            w.start()
        except ie.AlreadyExists:
            if not expected:
                raise
            return PresentBlobWriter(self, ref, expected)
        return w

    def status(self, ref: str) -> Status:
        api = self.cd.api.content

        async def go() -> Any:
            return await self.cd._call(self.cd.content.Status, api.StatusRequest(ref=ref), self.lease)
        st = self._call(go(), f"ingest {ref}").status
        return Status(st.ref, int(st.offset), int(st.total), st.expected,
                      _ts(st.started_at.ToNanoseconds()), _ts(st.updated_at.ToNanoseconds()))

    def abort(self, ref: str) -> None:
        """Remove the ingest ``ref``; one that does not exist is already what was wanted."""
        api = self.cd.api.content

        async def go() -> None:
            await self.cd._call(self.cd.content.Abort, api.AbortRequest(ref=ref), self.lease)
        try:
            self._call(go(), f"ingest {ref}: abort")
        except ie.NotFound:
            pass


class ContainerdReader:
    """A blob read from containerd as a stream (``read``), chunk by chunk as containerd sends
    them; ``seek`` starts a new read at that offset (an upload retried after an
    authentication challenge rewinds its body)."""

    def __init__(self, store: ContainerdContent, digest: str) -> None:
        self.store = store
        self.digest = digest
        self._buf = b""
        self._pos = 0             # offset of the next byte ``read`` returns
        self._call: Any = None
        self._it: Any = None
        self._eof = False

    async def _next(self) -> bytes:
        if self._it is None:
            cd = self.store.cd
            offset = self._pos + len(self._buf)
            self._call = cd.content.Read(cd.api.content.ReadContentRequest(digest=self.digest, offset=offset),
                                         metadata=cd._md)
            self._it = self._call.__aiter__()
        try:
            resp = await self._it.__anext__()
        except StopAsyncIteration:
            return b""
        return bytes(resp.data)

    def read(self, n: int = -1) -> bytes:
        while not self._eof and (n < 0 or len(self._buf) < n):
            chunk = self.store._call(self._next(), f"content {self.digest}: read")
            if not chunk:
                self._eof = True
                break
            self._buf = self._buf + chunk if self._buf else chunk
        if n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        self._pos += len(out)
        return out

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset < 0:
            raise ie.InvalidArgument(f"content {self.digest}: seek({offset}, {whence}): only absolute "
                                     "offsets are supported")
        if offset != self._pos:
            self._stop()
            self._buf = b""
            self._eof = False
            self._pos = offset
        return offset

    def _stop(self) -> None:
        call, self._call, self._it = self._call, None, None
        if call is not None and not self._eof:
            async def cancel() -> None:
                call.cancel()
            self.store._run(cancel())

    def close(self) -> None:
        self._stop()

    def __enter__(self) -> ContainerdReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PresentBlobWriter:
    """The writer for a blob containerd has: the data is hashed here and dropped; the commit
    checks it against the blob's digest and merges the labels into the blob's."""

    def __init__(self, store: ContainerdContent, ref: str, expected: str) -> None:
        self.store = store
        self.ref = ref
        self.expected = expected
        self._hash = new_hash(parse_digest(expected, f"ingest {ref}: expected digest")[0])
        self._offset = 0

    @property
    def offset(self) -> int:
        return self._offset

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self._offset += len(data)
        return len(data)

    def truncate(self, size: int) -> None:
        if size != 0:
            raise ie.InvalidArgument(f"ingest {self.ref}: truncate to {size}: only 0 is supported")
        self._hash = new_hash(self.expected.partition(":")[0])
        self._offset = 0

    def commit(self, size: int | None = None, expected: str | None = None,
               labels: Mapping[str, str] | None = None) -> Info:
        algorithm = self.expected.partition(":")[0]
        digest = f"{algorithm}:{self._hash.hexdigest()}"
        want = expected or self.expected
        if digest != want or (size is not None and size != self._offset):
            raise ie.DigestMismatch(f"ingest {self.ref}: commit: {self._offset} bytes with digest {digest}, "
                                    f"expected {want}" + (f" ({size} bytes)" if size is not None else ""))
        self.store.update_labels(want, labels)
        return self.store.info(want)

    def close(self) -> None:
        pass

    def __enter__(self) -> PresentBlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ContainerdWriter:
    """One ingest, written over one ``Content.Write`` stream (see the module doc)."""

    def __init__(self, store: ContainerdContent, ref: str, expected: str | None, total: int | None) -> None:
        self.store = store
        self.ref = ref
        self.expected = expected
        self.total = total
        self._offset = 0          # bytes the ingest holds (sent) plus those buffered here
        self._sent = 0
        self._buf = bytearray()
        self._queue: asyncio.Queue[Any] | None = None
        self._responses: asyncio.Queue[Any] = asyncio.Queue()
        self._unanswered = 0      # requests sent whose response was not read yet
        self._done: asyncio.Future[Any] | None = None
        self._closed = False
        self._committed = False
        self._where = f"ingest {ref}"

    @property
    def offset(self) -> int:
        return self._offset

    # -- on the loop

    async def _open(self) -> Any:
        cd = self.store.cd
        api = cd.api.content
        actions = api.WriteAction
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
        self._queue = queue
        responses: asyncio.Queue[Any] = asyncio.Queue()      # one per request, in order
        self._responses = responses

        async def requests() -> Any:
            while True:
                req = await queue.get()
                if req is None:
                    return
                yield req

        call = cd.content.Write(requests(), metadata=cd._meta(self.store.lease))

        async def drain() -> Any:
            last = None
            async for resp in call:
                responses.put_nowait(resp)
                last = resp
                if resp.action == actions.Value("COMMIT"):
                    return resp
            return last
        self._done = asyncio.ensure_future(drain())
        return await self._stat(api.WriteContentRequest(action=actions.Value("STAT"), ref=self.ref,
                                                        total=self.total or 0, expected=self.expected or ""))

    async def _stat(self, req: Any) -> Any:
        """Send a STAT request and return its answer (the responses to earlier requests, which
        come first, are skipped): the ingest's offset and the digest of what it holds."""
        assert self._done is not None
        await self._send(req)
        while self._unanswered:
            get = asyncio.ensure_future(self._responses.get())
            await asyncio.wait([get, self._done], return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                self._done.result()          # raises the stream's error
                raise ie.ImageError(f"{self._where}: containerd ended the write stream before answering")
            resp = get.result()
            self._unanswered -= 1
        return resp

    async def _send(self, req: Any) -> None:
        assert self._queue is not None and self._done is not None
        if self._done.done():
            self._done.result()
            raise ie.ImageError(f"{self._where}: containerd ended the write stream early")
        put = asyncio.ensure_future(self._queue.put(req))
        await asyncio.wait([put, self._done], return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            self._done.result()
            raise ie.ImageError(f"{self._where}: containerd ended the write stream early")
        self._unanswered += 1

    async def _finish(self, req: Any) -> Any:
        """Send the last request (or none), end the stream, wait for its last response."""
        assert self._queue is not None and self._done is not None
        if req is not None:
            await self._send(req)
        if not self._done.done():
            put = asyncio.ensure_future(self._queue.put(None))
            await asyncio.wait([put, self._done], return_when=asyncio.FIRST_COMPLETED)
            if not put.done():
                put.cancel()
        return await self._done

    # -- from the library's thread

    def _call(self, coro: Coroutine[Any, Any, Any], what: str = "") -> Any:
        return self.store._call(coro, f"{self._where}{': ' + what if what else ''}")

    def start(self) -> None:
        resp = self._call(self._open())
        self._offset = self._sent = int(resp.offset)

    def _flush(self) -> None:
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            self._send_now(data)

    def _send_now(self, data: bytes) -> None:
        api = self.store.cd.api.content
        self._call(self._send(api.WriteContentRequest(action=api.WriteAction.Value("WRITE"), offset=self._sent,
                                                      data=data)))
        self._sent += len(data)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ie.FailedPrecondition(f"{self._where}: write after close")
        n = len(data)
        self._offset += n
        if not self._buf and WRITE_CHUNK <= n <= 4 * WRITE_CHUNK:
            self._send_now(data if isinstance(data, bytes) else bytes(data))   # no copy through the buffer
            return n
        self._buf += data
        if len(self._buf) >= WRITE_CHUNK:
            self._flush()
        return n

    def truncate(self, size: int) -> None:
        if size != 0:
            raise ie.InvalidArgument(f"{self._where}: truncate to {size}: only 0 is supported")
        api = self.store.cd.api.content
        self._buf.clear()
        if self._sent:
            # a WRITE at offset 0 on a non-empty ingest starts it again
            self._call(self._send(api.WriteContentRequest(action=api.WriteAction.Value("WRITE"), offset=0)))
        self._offset = self._sent = 0

    def commit(self, size: int | None = None, expected: str | None = None,
               labels: Mapping[str, str] | None = None) -> Info:
        if self._closed:
            raise ie.FailedPrecondition(f"{self._where}: commit after close")
        api = self.store.cd.api.content
        size = self.total if size is None else size
        expected = expected or self.expected
        if not expected:
            # containerd computed the digest of what it holds: commit as that, so that a blob
            # it has already is recognised (and its bytes dropped) rather than refused
            self._flush()
            st = self._call(self._stat(api.WriteContentRequest(action=api.WriteAction.Value("STAT"))), "commit")
            if not st.digest:
                raise ie.ImageError(f"{self._where}: commit: containerd did not report the ingest's digest")
            expected = str(st.digest)
        data = bytes(self._buf)
        self._buf.clear()
        req = api.WriteContentRequest(action=api.WriteAction.Value("COMMIT"), offset=self._sent, data=data,
                                      total=size or 0, expected=expected or "", labels=dict(labels or {}))
        self._closed = True
        try:
            resp = self.store._run(self._finish(req))
        except (ApiError, grpc.RpcError) as e:
            code = _code(e)
            if code == grpc.StatusCode.ALREADY_EXISTS and expected:
                # committed by another transfer meanwhile: the blob is there
                if labels:
                    self.store.update_labels(expected, labels)
                return self.store.info(expected)
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                raise ie.DigestMismatch(f"{self._where}: commit: containerd: "
                                        f"{e.details() if isinstance(e, grpc.RpcError) else e}") from None
            raise library_error(e, f"{self._where}: commit") from None
        if resp is None or resp.action != api.WriteAction.Value("COMMIT"):
            raise ie.ImageError(f"{self._where}: containerd ended the write stream before the commit")
        if expected and resp.digest != expected:
            raise ie.DigestMismatch(f"{self._where}: containerd committed {resp.digest}, expected {expected}")
        self._committed = True
        now = _dt.datetime.now(_dt.UTC)
        return Info(resp.digest, self._sent + len(data), now, now, dict(labels or {}))

    def close(self) -> None:
        """End the stream; an ingest not committed stays in containerd (resumable)."""
        ended = self._closed or self._done is None    # a commit (or no start) ended it
        self._closed = True
        if ended:
            return
        try:
            self._flush()      # what was written is in the ingest, for a resume
            self.store._run(self._finish(None))
        except (ApiError, grpc.RpcError, ie.ImageError) as e:
            # what failed was already raised by the write that met it, or the data is complete
            # and only the goodbye failed: the ingest stays for a retry either way
            log.warning("%s: closing the write stream: %s", self._where, library_error(e, "close"))

    def __enter__(self) -> ContainerdWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
