"""The images router: ``GET /images/json``, ``GET /images/{name}/json``, ``POST /images/load``."""

from __future__ import annotations

import json

from aiohttp import web

from skiff.daemon.api.errors import InvalidParameter
from skiff.daemon.api.httputils import parse_filters
from skiff.daemon.api.server import Handler, Router, api_version, json_response, version_tuple
from skiff.daemon.images.service import LIST_FILTERS, ImageService


class ImagesRouter(Router):
    def __init__(self, images: ImageService) -> None:
        self.images = images

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/images/json", self.list_images),
            ("GET", "/images/{name}/json", self.inspect_image),
            ("POST", "/images/load", self.load_images),
        ]

    async def list_images(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        filters = parse_filters(q.get("filters"), LIST_FILTERS)
        # API < 1.41 sent the reference filter as ?filter=
        if q.get("filter") and version_tuple(api_version(request)) < (1, 41):
            filters.setdefault("reference", []).append(q["filter"])
        out = await self.images.list(filters, all=q.get("all", "") not in ("", "0", "false"))
        old = version_tuple(api_version(request)) < (1, 44)
        for entry in out:
            if old:
                entry["VirtualSize"] = entry["Size"]
        return json_response(out)

    async def inspect_image(self, request: web.Request) -> web.StreamResponse:
        d = await self.images.inspect(request.match_info["name"])
        v = version_tuple(api_version(request))
        if v < (1, 44):
            d["VirtualSize"] = d["Size"]
        if v < (1, 45):
            d["Container"] = ""
            d["ContainerConfig"] = {}
        return json_response(d)

    async def load_images(self, request: web.Request) -> web.StreamResponse:
        # quiet only hides progress bars, and loading shows none: the result lines are sent either way
        if request.query.get("platform"):
            raise InvalidParameter(f"load: platform {request.query['platform']!r}: choosing a platform is not "
                                   "supported (the images of the archive are loaded for this host's platform)")
        messages = await self.images.load(request.content.read)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for m in messages:
            await resp.write((json.dumps(m) + "\n").encode())
        await resp.write_eof()
        return resp
