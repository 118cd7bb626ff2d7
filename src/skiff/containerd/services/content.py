"""containerd.services.content.v1.Content: blobs by digest, and resumable ingests by ref."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from google.protobuf.empty_pb2 import Empty

from skiff.containerd import convert
from skiff.containerd.rpc import RpcError, handler, lease_of, namespace_of, stream_handler
from skiff.containerd.services import Service
from skiff.images.content import validate_digest
from skiff.images.errors import AlreadyExists, InvalidArgument

READ_CHUNK = 1 << 20  # containerd's read buffer: one message per MiB
LIST_BLOCK = 100  # infos per List message, as containerd sends them


class ContentService(Service):
    @handler
    def Info(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        validate_digest(request.digest)
        info = self.core.content_store(ns).info(request.digest)
        return self.api.content.InfoResponse(info=convert.content_info_to_pb(self.api, info))

    @handler
    def Update(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        digest = request.info.digest
        validate_digest(digest)
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        for p in paths:
            if p != "labels" and not p.startswith("labels."):
                raise InvalidArgument(f"cannot update {p!r} field on content info {digest}")
        info = self.core.content_store(ns).update_labels(digest, dict(request.info.labels), paths)
        return self.api.content.UpdateResponse(info=convert.content_info_to_pb(self.api, info))

    @stream_handler
    def List(self, request: Any, context: Any) -> Iterator[Any]:
        ns = namespace_of(context)
        infos = self.core.content_store(ns).infos(list(request.filters))
        for i in range(0, len(infos), LIST_BLOCK):
            yield self.api.content.ListContentResponse(
                info=[convert.content_info_to_pb(self.api, info) for info in infos[i:i + LIST_BLOCK]])

    @handler
    def Delete(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        validate_digest(request.digest)
        self.core.content_store(ns).delete(request.digest)
        self.publish(ns, "/content/delete", self.api.ev_content.ContentDelete(digest=request.digest))
        return Empty()

    @stream_handler
    def Read(self, request: Any, context: Any) -> Iterator[Any]:
        ns = namespace_of(context)
        validate_digest(request.digest)
        store = self.core.content_store(ns)
        info = store.info(request.digest)
        offset = max(request.offset, 0)
        if offset > info.size:
            raise RpcError("OUT_OF_RANGE", f"content {request.digest}: read past object length {info.size} bytes "
                                           f"(offset {offset})")
        size = request.size
        if size <= 0 or offset + size > info.size:
            size = info.size - offset
        with store.open(request.digest) as f:
            f.seek(offset)
            pos = offset
            end = offset + size
            while pos < end:
                data = f.read(min(READ_CHUNK, end - pos))
                if not data:
                    raise RpcError("DATA_LOSS", f"content {request.digest}: blob ended at {pos} bytes, "
                                                f"{info.size} recorded")
                yield self.api.content.ReadContentResponse(offset=pos, data=data)
                pos += len(data)

    @handler
    def Status(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        st = self.core.content_store(ns).status(request.ref)
        return self.api.content.StatusResponse(status=convert.status_to_pb(self.api, st))

    @handler
    def ListStatuses(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        statuses = self.core.content_store(ns).list_statuses(list(request.filters))
        return self.api.content.ListStatusesResponse(
            statuses=[convert.status_to_pb(self.api, s) for s in statuses])

    @handler
    def Abort(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        self.core.content_store(ns, lease_of(context)).abort(request.ref)
        return Empty()

    @stream_handler
    def Write(self, requests: Iterable[Any], context: Any) -> Iterator[Any]:
        """The ingest protocol of containerd's content service: the first message names the
        ref (and may give the expected size and digest); STAT reports the ingest, WRITE appends
        at the current offset (offset 0 on a non-empty ingest starts it again), COMMIT writes
        its data, then verifies and commits. One response per request."""
        api = self.api
        actions = api.content.WriteAction
        ns = namespace_of(context)
        store = self.core.content_store(ns, lease_of(context))
        it = iter(requests)
        req = next(it, None)
        if req is None:
            return
        ref = req.ref
        if not ref:
            raise InvalidArgument("first message must have a reference")
        total = req.total
        expected = req.expected
        writer = store.writer(ref, expected or None, total if total > 0 else None, exist_ok=False)
        try:
            while True:
                resp = api.content.WriteContentResponse(action=req.action)
                if req.ref and req.ref != ref:
                    raise InvalidArgument(f"ingest {ref!r}: a later message names another ref {req.ref!r}")
                if req.expected:
                    expected = req.expected
                    if store.exists(expected):
                        writer.close()
                        store.abort(ref)
                        raise AlreadyExists(f"blob with expected digest {expected} exists")
                if req.total > 0:
                    total = req.total
                if req.action == actions.Value("STAT"):
                    st = writer.status()
                    resp.offset = writer.offset
                    resp.digest = writer.digest()
                    resp.started_at.CopyFrom(convert.ts(st.started_at))
                    resp.updated_at.CopyFrom(convert.ts(st.updated_at))
                    resp.total = total
                elif req.action in (actions.Value("WRITE"), actions.Value("COMMIT")):
                    if req.offset > 0 and req.offset != writer.offset:
                        raise RpcError("OUT_OF_RANGE", f"ingest {ref!r}: write @{req.offset} must occur at "
                                                       f"current offset {writer.offset}")
                    if req.offset == 0 and writer.offset > 0:
                        writer.truncate(0)
                    if req.data:
                        writer.write(req.data)
                    resp.offset = writer.offset
                    if req.action == actions.Value("COMMIT"):
                        info = writer.commit(total if total > 0 else None, expected or None,
                                             dict(req.labels) or None, exist_ok=False)
                        resp.digest = info.digest
                    else:
                        resp.digest = writer.digest()
                else:
                    raise InvalidArgument(f"ingest {ref!r}: unknown write action {req.action}")
                yield resp
                if req.action == actions.Value("COMMIT"):
                    return
                req = next(it, None)
                if req is None:
                    return
        finally:
            writer.close()
