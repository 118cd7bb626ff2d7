"""The gRPC services of containerd 1.6, one servicer class per service.

Each handler reads the request's namespace (and lease), translates the protobuf request into a
call on the image library (through :class:`skiff.containerd.core.Core`), and the result back
into protobuf; events are published as containerd's services publish them. The servicers are
plain classes registered with the generated ``add_<Service>Servicer_to_server`` functions,
which look their methods up by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf.any_pb2 import Any as AnyPB

if TYPE_CHECKING:
    from skiff.containerd.core import Core
    from skiff.containerd.protos import API


class Service:
    """What every servicer holds: the daemon's state and the generated API modules."""

    def __init__(self, core: Core, api: API) -> None:
        self.core = core
        self.api = api

    def publish(self, namespace: str, topic: str, event: Any) -> None:
        """Publish an event message as containerd does (``Any`` whose type URL is the
        message's full name)."""
        packed = AnyPB(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString())
        self.core.exchange.publish(namespace, topic, packed)


def register_all(server: Any, core: Core, api: API) -> dict[str, Any]:
    """Create every servicer and register it on ``server``; returns them by service name."""
    from skiff.containerd.services.containers import ContainersService
    from skiff.containerd.services.content import ContentService
    from skiff.containerd.services.diff import DiffService
    from skiff.containerd.services.events import EventsService
    from skiff.containerd.services.images import ImagesService
    from skiff.containerd.services.introspection import IntrospectionService
    from skiff.containerd.services.leases import LeasesService
    from skiff.containerd.services.namespaces import NamespacesService
    from skiff.containerd.services.snapshots import SnapshotsService
    from skiff.containerd.services.tasks import TasksService
    from skiff.containerd.services.version import VersionService

    table = [
        ("version", "Version", VersionService),
        ("namespaces", "Namespaces", NamespacesService),
        ("containers", "Containers", ContainersService),
        ("images", "Images", ImagesService),
        ("content", "Content", ContentService),
        ("snapshots", "Snapshots", SnapshotsService),
        ("tasks", "Tasks", TasksService),
        ("events", "Events", EventsService),
        ("leases", "Leases", LeasesService),
        ("introspection", "Introspection", IntrospectionService),
        ("diff", "Diff", DiffService),
    ]
    out: dict[str, Any] = {}
    for module, name, cls in table:
        servicer = cls(core, api)
        getattr(getattr(api, module + "_grpc"), f"add_{name}Servicer_to_server")(servicer, server)
        out[name] = servicer
    from skiff.containerd.services.health import HealthService
    health = HealthService([d.full_name for module, _, _ in table
                            for d in getattr(api, module).DESCRIPTOR.services_by_name.values()])
    server.add_generic_rpc_handlers((health.handler(),))
    out["Health"] = health
    return out
