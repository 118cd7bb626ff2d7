"""containerd.services.containers.v1.Containers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf.empty_pb2 import Empty

from skiff.containerd import convert
from skiff.containerd.rpc import handler, namespace_of, require, stream_handler
from skiff.containerd.services import Service


class ContainersService(Service):
    @handler
    def Get(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        require(request.id, "ID")
        with self.core.meta.view() as tx:
            c = tx.get_container(ns, request.id)
        return self.api.containers.GetContainerResponse(container=convert.container_to_pb(self.api, c))

    def _list(self, request: Any, context: Any) -> list[Any]:
        ns = namespace_of(context)
        with self.core.meta.view() as tx:
            found = tx.list_containers(ns, list(request.filters))
        return [convert.container_to_pb(self.api, c) for c in found]

    @handler
    def List(self, request: Any, context: Any) -> Any:
        return self.api.containers.ListContainersResponse(containers=self._list(request, context))

    @stream_handler
    def ListStream(self, request: Any, context: Any) -> Iterator[Any]:
        for c in self._list(request, context):
            yield self.api.containers.ListContainerMessage(container=c)

    @handler
    def Create(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        record = convert.container_from_pb(request.container)
        with self.core.meta.transaction() as tx:
            created = tx.create_container(ns, record)
        pb = convert.container_to_pb(self.api, created)
        ev = self.api.ev_container.ContainerCreate(id=created.id, image=created.image)
        ev.runtime.name = created.runtime_name
        if created.runtime_options is not None:
            ev.runtime.options.CopyFrom(pb.runtime.options)
        self.publish(ns, "/containers/create", ev)
        return self.api.containers.CreateContainerResponse(container=pb)

    @handler
    def Update(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        require(request.container.id, "Container.ID")
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        record = convert.container_from_pb(request.container)
        with self.core.meta.transaction() as tx:
            updated = tx.update_container(ns, record, paths)
        self.publish(ns, "/containers/update", self.api.ev_container.ContainerUpdate(
            id=updated.id, image=updated.image, labels=updated.labels, snapshot_key=updated.snapshot_key))
        return self.api.containers.UpdateContainerResponse(container=convert.container_to_pb(self.api, updated))

    @handler
    def Delete(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        require(request.id, "ID")
        with self.core.meta.transaction() as tx:
            tx.delete_container(ns, request.id)
        self.publish(ns, "/containers/delete", self.api.ev_container.ContainerDelete(id=request.id))
        self.core.gc.schedule()
        return Empty()
