"""The backends the API routers call (moby's ``api/server/router/*/backend.go``).

Routers only parse HTTP and call these objects; the daemon supplies the implementations:
``skiff.daemon.containers.backend.ContainerService`` and ``skiff.daemon.images.service.
ImageService`` over containerd (built by ``Daemon.connect_backends``). A daemon built without
containerd (the HTTP layer's unit tests) uses ``NoContainers`` and ``NoImages``, which report
zero objects, the truth for a daemon that cannot create any.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ContainerCounts:
    total: int = 0
    running: int = 0
    paused: int = 0
    stopped: int = 0


class ContainersBackend:
    """What the system router needs from containers; the containers router (later) adds its
    own methods to the implementation."""

    def counts(self) -> ContainerCounts:
        raise NotImplementedError

    def security_options(self) -> list[str]:
        """The security options applied to containers (``name=seccomp,profile=builtin``...)."""
        raise NotImplementedError


class ImagesBackend:
    def count(self) -> int:
        raise NotImplementedError


class NoContainers(ContainersBackend):
    """No container backend yet: no containers exist, none can be created."""

    def counts(self) -> ContainerCounts:
        return ContainerCounts()

    def security_options(self) -> list[str]:
        return []


class NoImages(ImagesBackend):
    def count(self) -> int:
        return 0
