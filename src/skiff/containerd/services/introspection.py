"""containerd.services.introspection.v1.Introspection: the plugins this server runs, its UUID.

The plugin list describes what this process really has, in containerd's plugin vocabulary
(type, id, requires, platforms, exports): the content store, the snapshotters that loaded (a
snapshotter that failed carries its error in ``init_err``), the metadata store, the differ,
the garbage collector, the lease manager, the event exchange, the gRPC services, and the task
runtime (skiff-shim, ``skiff.containerd.tasks_core``).
"""

from __future__ import annotations

from typing import Any

from skiff.containerd.core import CONTENT_DIR, METADATA_DIR
from skiff.containerd.rpc import handler
from skiff.containerd.services import Service
from skiff.images.manifest import default_platform
from skiff.images.metadata import parse_filters

GRPC_SERVICES = {
    "containers": ["io.containerd.metadata.v1"],
    "content": ["io.containerd.content.v1", "io.containerd.metadata.v1"],
    "diff": ["io.containerd.differ.v1"],
    "events": ["io.containerd.event.v1"],
    "healthcheck": [],
    "images": ["io.containerd.metadata.v1", "io.containerd.gc.v1"],
    "introspection": [],
    "leases": ["io.containerd.lease.v1", "io.containerd.gc.v1"],
    "namespaces": ["io.containerd.metadata.v1"],
    "snapshots": ["io.containerd.snapshotter.v1", "io.containerd.metadata.v1"],
    "tasks": ["io.containerd.runtime.v2", "io.containerd.metadata.v1"],
    "version": [],
}

# grpc status codes (google.rpc.Code) used in init_err
CODE_UNKNOWN = 2
CODE_UNIMPLEMENTED = 12


class IntrospectionService(Service):
    def _platform(self) -> Any:
        p = default_platform()
        return self.api.platform.Platform(os=p.os, architecture=p.architecture, variant=p.variant)

    def plugins(self) -> list[Any]:
        api = self.api
        core = self.core
        here = [self._platform()]

        def plugin(ptype: str, pid: str, requires: list[str] | None = None, platforms: bool = False,
                   exports: dict[str, str] | None = None, error: tuple[int, str] | None = None) -> Any:
            p = api.introspection.Plugin(type=ptype, id=pid, requires=requires or [],
                                         platforms=here if platforms else [], exports=exports or {})
            if error is not None:
                p.init_err.code, p.init_err.message = error
            return p

        out = [
            plugin("io.containerd.content.v1", "content",
                   exports={"root": f"{core.config.root}/{CONTENT_DIR}"}),
        ]
        for name in sorted(set(core.snapshotters) | set(core.snapshotter_errors)):
            if name in core.snapshotters:
                out.append(plugin("io.containerd.snapshotter.v1", name, platforms=True,
                                  exports={"root": core.snapshotter_roots[name]}))
            else:
                out.append(plugin("io.containerd.snapshotter.v1", name, platforms=True,
                                  error=(CODE_UNKNOWN, core.snapshotter_errors[name])))
        out += [
            plugin("io.containerd.metadata.v1", "sqlite",
                   ["io.containerd.content.v1", "io.containerd.snapshotter.v1"],
                   exports={"path": f"{core.config.root}/{METADATA_DIR}/meta.db"}),
            plugin("io.containerd.differ.v1", "walking", ["io.containerd.metadata.v1"], platforms=True),
            plugin("io.containerd.gc.v1", "scheduler", ["io.containerd.metadata.v1"]),
            plugin("io.containerd.lease.v1", "manager", ["io.containerd.metadata.v1"]),
            plugin("io.containerd.event.v1", "exchange"),
            plugin("io.containerd.runtime.v2", "task", ["io.containerd.event.v1", "io.containerd.metadata.v1"],
                   platforms=True),
        ]
        for name, requires in sorted(GRPC_SERVICES.items()):
            out.append(plugin("io.containerd.grpc.v1", name, requires))
        return out

    @handler
    def Plugins(self, request: Any, context: Any) -> Any:
        flt = parse_filters(list(request.filters))

        def field(p: Any, path: Any) -> tuple[str, bool]:
            if len(path) == 1 and path[0] in ("type", "id"):
                v = getattr(p, path[0])
                return v, bool(v)
            return "", False
        return self.api.introspection.PluginsResponse(plugins=flt.select(self.plugins(), field))

    @handler
    def Server(self, request: Any, context: Any) -> Any:
        return self.api.introspection.ServerResponse(uuid=self.core.uuid)
