"""``GET /system/df`` (``docker system df``): disk usage of images (from the image service) and
containers (from the container service) and volumes (from the volume service, issue 8).
skiffd has no build cache: that list is empty."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from skiff.daemon.api.errors import InvalidParameter
from skiff.daemon.api.server import Handler, Router, api_version, json_response, version_tuple

OBJECT_TYPES = ("container", "image", "volume", "build-cache")


class DiskUsageRouter(Router):
    def __init__(self, images: Any, containers: Any, volumes: Any = None) -> None:
        self.images = images            # ImageService
        self.containers = containers    # ContainerService
        self.volumes = volumes          # VolumeService (issue 8); None: no volumes

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("GET", "/system/df", self.df)]

    async def df(self, request: web.Request) -> web.StreamResponse:
        # ?type= (API 1.42+, repeatable) limits the answer to those object types, as dockerd
        wanted = request.query.getall("type", [])
        if not wanted or version_tuple(api_version(request)) < (1, 42):
            wanted = list(OBJECT_TYPES)
        for t in wanted:
            if t not in OBJECT_TYPES:
                raise InvalidParameter(f"unknown object type: {t}")
        out: dict[str, Any] = {"LayersSize": 0, "Images": None, "Containers": None, "Volumes": None,
                               "BuildCache": None}
        containers = None
        if "container" in wanted or "image" in wanted:
            containers = await self.containers.list(all=True, limit=-1, size="container" in wanted,
                                                    filters={})
        if "container" in wanted:
            out["Containers"] = containers
        if "image" in wanted:
            counts: dict[str, int] = {}
            for c in containers or []:
                counts[c["ImageID"]] = counts.get(c["ImageID"], 0) + 1
            out["LayersSize"], out["Images"] = await self.images.disk_usage(counts)
        if "volume" in wanted:
            out["Volumes"] = [] if self.volumes is None else \
                await asyncio.to_thread(self.volumes.disk_usage)
        if "build-cache" in wanted:
            out["BuildCache"] = []
        return json_response(out)
