"""containerd.services.diff.v1.Diff: apply a layer to mounts, and make a layer from two mounts.

``Apply`` is what containerd clients use to unpack an image (``ctr images import`` and
``pull`` prepare a snapshot, apply each layer to its mounts here, then commit it); the
layer is read from the request's namespace in the content store and extracted by the image
library (hostile-input safe). ``Diff`` writes the changes between two mount sets as a layer
blob into the content store (containerd's walking differ).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, BinaryIO, cast

from skiff.containerd import convert
from skiff.containerd.rpc import handler, lease_of, namespace_of, unimplemented
from skiff.containerd.services import Service
from skiff.images.errors import DigestMismatch, NotFound
from skiff.images.layers import apply_to_mounts, diff_mounts
from skiff.images.manifest import LAYER_TYPES

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DIFF_COMPRESSION = {OCI_LAYER: "none", OCI_LAYER + "+gzip": "gzip", OCI_LAYER + "+zstd": "zstd"}
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"

log = logging.getLogger("skiff.containerd")


class DiffService(Service):
    @handler
    def Apply(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        desc = convert.descriptor_from_pb(request.diff, "apply: diff")
        if desc.media_type not in LAYER_TYPES:
            raise unimplemented(f"apply {desc.digest}: unsupported diff media type {desc.media_type!r}")
        if request.payloads:
            raise unimplemented(f"apply {desc.digest}: stream processor payloads "
                                f"({', '.join(sorted(request.payloads))}) are not supported")
        mounts = convert.mounts_from_pb(request.mounts)
        if not mounts:
            raise NotFound(f"apply {desc.digest}: no mounts to apply the layer to")
        store = self.core.content_store(ns)
        with store.open(desc.digest) as f:
            applied = apply_to_mounts(mounts, f, compressed_digest=desc.digest, where=f"layer {desc.digest}")
        if applied.compressed_size != desc.size:
            raise DigestMismatch(f"apply {desc.digest}: blob is {applied.compressed_size} bytes, "
                                 f"the descriptor says {desc.size}")
        return self.api.diff.ApplyResponse(applied=self.api.descriptor.Descriptor(
            media_type=OCI_LAYER, digest=applied.diff_id, size=applied.size))

    @handler
    def Diff(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        media_type = request.media_type or OCI_LAYER + "+gzip"
        compression = DIFF_COMPRESSION.get(media_type)
        if compression is None:
            raise unimplemented(f"diff: unsupported diff media type {media_type!r} "
                                f"(supported: {', '.join(DIFF_COMPRESSION)})")
        store = self.core.content_store(ns, lease_of(context))
        new_ref = not request.ref
        ref = request.ref or f"diff-{time.time_ns()}-{secrets.token_hex(4)}"
        writer = store.writer(ref)
        try:
            if writer.offset:
                writer.truncate(0)
            made = diff_mounts(convert.mounts_from_pb(request.left), convert.mounts_from_pb(request.right),
                               cast(BinaryIO, writer), compression=compression)  # only write() is used
            labels = dict(request.labels)
            if compression != "none":
                labels[LABEL_UNCOMPRESSED] = made.diff_id
            writer.commit(made.compressed_size, made.digest, labels)
        except BaseException:
            writer.close()
            if new_ref:
                try:
                    store.abort(ref)
                except Exception as ce:  # report it; the original error is the one to raise
                    log.error("diff: abort ingest %s after a failure: %s", ref, ce)
            raise
        info = store.info(made.digest)
        if compression != "none" and LABEL_UNCOMPRESSED not in info.labels:
            store.update_labels(made.digest, {LABEL_UNCOMPRESSED: made.diff_id}, [f"labels.{LABEL_UNCOMPRESSED}"])
        return self.api.diff.DiffResponse(diff=self.api.descriptor.Descriptor(
            media_type=media_type, digest=made.digest, size=made.compressed_size))
