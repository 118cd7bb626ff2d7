"""The volumes router (issue 8): create, list, inspect, remove, prune. Handlers parse HTTP and
call ``skiff.daemon.volumes.service.VolumeService``."""

from __future__ import annotations

import asyncio

from aiohttp import web

from skiff.daemon.api.containers import _json_body
from skiff.daemon.api.errors import InvalidParameter
from skiff.daemon.api.httputils import bool_value, parse_filters
from skiff.daemon.api.server import Handler, Router, api_version, json_response, version_tuple
from skiff.daemon.volumes.service import VolumeService

LIST_FILTERS = ("name", "label", "label!", "dangling", "driver")
PRUNE_FILTERS = ("label", "label!", "all")


class VolumesRouter(Router):
    def __init__(self, volumes: VolumeService) -> None:
        self.volumes = volumes           # publishes the volume events itself

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("GET", "/volumes", self.list),
                ("POST", "/volumes/create", self.create),
                ("POST", "/volumes/prune", self.prune),
                ("GET", "/volumes/{name}", self.inspect),
                ("DELETE", "/volumes/{name}", self.remove),
                ("PUT", "/volumes/{name}", self.update)]

    async def list(self, request: web.Request) -> web.StreamResponse:
        filters = parse_filters(request.query.get("filters"), LIST_FILTERS)
        vols = await asyncio.to_thread(self.volumes.list_volumes, filters)
        return json_response({"Volumes": vols, "Warnings": None})

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise InvalidParameter("volume create: the body must be a JSON object")
        out = await asyncio.to_thread(self.volumes.create, body)
        return json_response(out, status=201)

    async def inspect(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.volumes.inspect(request.match_info["name"]))

    async def remove(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await asyncio.to_thread(self.volumes.remove, name, bool_value(request.query.get("force")))
        return web.Response(status=204)

    async def update(self, request: web.Request) -> web.StreamResponse:
        raise InvalidParameter("volume update applies to cluster volumes only, which skiffd does not "
                               "support")

    async def prune(self, request: web.Request) -> web.StreamResponse:
        filters = parse_filters(request.query.get("filters"), PRUNE_FILTERS)
        all_vals = filters.pop("all", [])
        for v in all_vals:
            if v.lower() not in ("true", "false", "1", "0"):
                raise InvalidParameter(f"invalid filter 'all={v}'")
        all_volumes = any(v.lower() in ("true", "1") for v in all_vals)
        if version_tuple(api_version(request)) < (1, 42):
            all_volumes = True       # older APIs prune named volumes too
        out = await asyncio.to_thread(self.volumes.prune, filters, all_volumes)
        return json_response(out)
