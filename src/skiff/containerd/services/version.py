"""containerd.services.version.v1.Version."""

from __future__ import annotations

from typing import Any

from skiff import __version__
from skiff.containerd.rpc import handler
from skiff.containerd.services import Service

# The API level this server speaks (containerd 1.6's services) and what it is, as a semantic
# version with build metadata so that clients that parse the version see 1.6.
VERSION = f"v1.6.0+skiff.{__version__}"
REVISION = f"skiff-containerd-{__version__}"


class VersionService(Service):
    @handler
    def Version(self, request: Any, context: Any) -> Any:
        return self.api.version.VersionResponse(version=VERSION, revision=REVISION)
