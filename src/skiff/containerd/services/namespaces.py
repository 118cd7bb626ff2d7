"""containerd.services.namespaces.v1.Namespaces."""

from __future__ import annotations

from typing import Any

from google.protobuf.empty_pb2 import Empty

from skiff.containerd.rpc import NAMESPACE_HEADER, handler, require
from skiff.containerd.rpc import header as rpc_header
from skiff.containerd.services import Service
from skiff.images.errors import InvalidArgument
from skiff.images.metadata import validate_identifier


def _event_namespace(context: Any, name: str) -> str:
    """containerd publishes create and update events in the namespace of the request (the
    client's current namespace), falling back to the namespace concerned."""
    current = rpc_header(context, NAMESPACE_HEADER)
    if current:
        try:
            return validate_identifier(current, "namespace")
        except InvalidArgument:
            pass  # not a namespace: the event goes to the one concerned
    return name


class NamespacesService(Service):
    @handler
    def Get(self, request: Any, context: Any) -> Any:
        with self.core.meta.view() as tx:
            labels = tx.namespace_labels(request.name)
        return self.api.namespaces.GetNamespaceResponse(
            namespace=self.api.namespaces.Namespace(name=request.name, labels=labels))

    @handler
    def List(self, request: Any, context: Any) -> Any:
        out = []
        with self.core.meta.view() as tx:
            for name in tx.list_namespaces():
                out.append(self.api.namespaces.Namespace(name=name, labels=tx.namespace_labels(name)))
        return self.api.namespaces.ListNamespacesResponse(namespaces=out)

    @handler
    def Create(self, request: Any, context: Any) -> Any:
        ns = request.namespace
        require(ns.name, "Namespace.Name")
        labels = dict(ns.labels)
        with self.core.meta.transaction() as tx:
            tx.create_namespace(ns.name, labels)
        self.publish(_event_namespace(context, ns.name), "/namespaces/create",
                     self.api.ev_namespace.NamespaceCreate(name=ns.name, labels=labels))
        return self.api.namespaces.CreateNamespaceResponse(namespace=ns)

    @handler
    def Update(self, request: Any, context: Any) -> Any:
        ns = request.namespace
        require(ns.name, "Namespace.Name")
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        for p in paths:
            if not p.startswith("labels."):
                raise InvalidArgument(f"namespace {ns.name}: cannot update {p!r} field")
        with self.core.meta.transaction() as tx:
            labels = tx.update_namespace_labels(ns.name, dict(ns.labels), paths)
        self.publish(_event_namespace(context, ns.name), "/namespaces/update",
                     self.api.ev_namespace.NamespaceUpdate(name=ns.name, labels=dict(ns.labels)))
        return self.api.namespaces.UpdateNamespaceResponse(
            namespace=self.api.namespaces.Namespace(name=ns.name, labels=labels))

    @handler
    def Delete(self, request: Any, context: Any) -> Any:
        require(request.name, "name")
        self.core.delete_namespace(request.name)
        self.publish(request.name, "/namespaces/delete", self.api.ev_namespace.NamespaceDelete(name=request.name))
        return Empty()
