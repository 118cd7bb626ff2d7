"""containerd.services.snapshots.v1.Snapshots, on a namespace's view of the image library's
snapshotters (``skiff.containerd.nssnap``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf.empty_pb2 import Empty

from skiff.containerd import convert
from skiff.containerd.rpc import handler, lease_of, namespace_of, stream_handler, unimplemented
from skiff.containerd.services import Service

LIST_BLOCK = 100


class SnapshotsService(Service):
    def _sn(self, request: Any, context: Any) -> Any:
        return self.core.snapshotter(namespace_of(context), request.snapshotter, lease_of(context))

    @handler
    def Prepare(self, request: Any, context: Any) -> Any:
        sn = self._sn(request, context)
        with self.core.namespace_lock:
            mounts = sn.prepare(request.key, request.parent, dict(request.labels) or None)
        self.publish(sn.namespace, "/snapshot/prepare",
                     self.api.ev_snapshot.SnapshotPrepare(key=request.key, parent=request.parent))
        return self.api.snapshots.PrepareSnapshotResponse(mounts=convert.mounts_to_pb(self.api, mounts))

    @handler
    def View(self, request: Any, context: Any) -> Any:
        sn = self._sn(request, context)
        with self.core.namespace_lock:
            mounts = sn.view(request.key, request.parent, dict(request.labels) or None)
        return self.api.snapshots.ViewSnapshotResponse(mounts=convert.mounts_to_pb(self.api, mounts))

    @handler
    def Mounts(self, request: Any, context: Any) -> Any:
        mounts = self._sn(request, context).mounts(request.key)
        return self.api.snapshots.MountsResponse(mounts=convert.mounts_to_pb(self.api, mounts))

    @handler
    def Commit(self, request: Any, context: Any) -> Any:
        sn = self._sn(request, context)
        sn.commit(request.name, request.key, dict(request.labels) or None)
        self.publish(sn.namespace, "/snapshot/commit",
                     self.api.ev_snapshot.SnapshotCommit(key=request.key, name=request.name))
        return Empty()

    @handler
    def Remove(self, request: Any, context: Any) -> Any:
        sn = self._sn(request, context)
        sn.remove(request.key)
        self.publish(sn.namespace, "/snapshot/remove", self.api.ev_snapshot.SnapshotRemove(key=request.key))
        return Empty()

    @handler
    def Stat(self, request: Any, context: Any) -> Any:
        info = self._sn(request, context).stat(request.key)
        return self.api.snapshots.StatSnapshotResponse(info=convert.snapshot_info_to_pb(self.api, info))

    @handler
    def Update(self, request: Any, context: Any) -> Any:
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        info = self._sn(request, context).update(convert.snapshot_info_from_pb(request.info), paths)
        return self.api.snapshots.UpdateSnapshotResponse(info=convert.snapshot_info_to_pb(self.api, info))

    @stream_handler
    def List(self, request: Any, context: Any) -> Iterator[Any]:
        infos = self._sn(request, context).infos(list(request.filters))
        for i in range(0, len(infos), LIST_BLOCK):
            yield self.api.snapshots.ListSnapshotsResponse(
                info=[convert.snapshot_info_to_pb(self.api, s) for s in infos[i:i + LIST_BLOCK]])

    @handler
    def Usage(self, request: Any, context: Any) -> Any:
        usage = self._sn(request, context).usage(request.key)
        return self.api.snapshots.UsageResponse(size=usage.size, inodes=usage.inodes)

    @handler
    def Cleanup(self, request: Any, context: Any) -> Any:
        sn = self._sn(request, context)
        cleanup = getattr(sn.backend, "cleanup", None)
        if cleanup is None:
            raise unimplemented(f"snapshotter {sn.name} does not implement Cleanup method")
        cleanup()
        return Empty()
