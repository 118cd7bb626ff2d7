"""containerd.services.leases.v1.Leases."""

from __future__ import annotations

from typing import Any

from google.protobuf.empty_pb2 import Empty

from skiff.containerd import convert
from skiff.containerd.rpc import handler, namespace_of, require
from skiff.containerd.services import Service
from skiff.images.metadata import Resource


class LeasesService(Service):
    @handler
    def Create(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        lease = self.core.leases(ns).create(request.id if request.id else None, dict(request.labels))
        return self.api.leases.CreateResponse(lease=convert.lease_to_pb(self.api, lease))

    @handler
    def Delete(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        require(request.id, "lease id")
        self.core.leases(ns).delete(request.id)
        if request.sync:
            self.core.gc.collect()
        else:
            self.core.gc.schedule()
        return Empty()

    @handler
    def List(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        leases = self.core.leases(ns).list(list(request.filters))
        return self.api.leases.ListResponse(leases=[convert.lease_to_pb(self.api, lease) for lease in leases])

    @handler
    def AddResource(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        require(request.id, "lease id")
        self.core.leases(ns).add_resource(request.id, Resource(request.resource.type, request.resource.id))
        return Empty()

    @handler
    def DeleteResource(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        require(request.id, "lease id")
        self.core.leases(ns).delete_resource(request.id, Resource(request.resource.type, request.resource.id))
        self.core.gc.schedule()
        return Empty()

    @handler
    def ListResources(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        require(request.id, "lease id")
        resources = self.core.leases(ns).list_resources(request.id)
        return self.api.leases.ListResourcesResponse(
            resources=[self.api.leases.Resource(id=r.id, type=r.type) for r in resources])
