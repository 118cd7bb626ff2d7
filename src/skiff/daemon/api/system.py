"""The system router: ``/_ping``, ``/version``, ``/info``, ``/events``."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from aiohttp import web

from skiff.daemon.api.errors import InvalidParameter
from skiff.daemon.api.httputils import parse_filters, parse_timestamp
from skiff.daemon.api.server import Handler, Router, api_version, json_response, version_tuple
from skiff.daemon.events import EVENT_TYPES, FILTER_KEYS, EventFilter, EventsHub
from skiff.daemon.system import API_VERSION, SystemService

log = logging.getLogger("skiff.daemon.api")

_PING_HEADERS = {
    "Api-Version": API_VERSION,
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Content-Type": "text/plain; charset=utf-8",
    "Docker-Experimental": "false",
    "Ostype": "linux",
    "Builder-Version": "1",      # classic /build only: no BuildKit behind /grpc
    "Swarm": "inactive",
}


class SystemRouter(Router):
    def __init__(self, system: SystemService, events: EventsHub) -> None:
        self.system = system
        self.events = events

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/_ping", self.ping),
            ("HEAD", "/_ping", self.ping),
            ("GET", "/version", self.version),
            ("GET", "/info", self.info),
            ("GET", "/events", self.get_events),
        ]

    async def ping(self, request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(status=200, headers={**_PING_HEADERS, "Content-Length": "0"})
        return web.Response(status=200, body=b"OK", headers=_PING_HEADERS)

    async def version(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.system.version())

    async def info(self, request: web.Request) -> web.StreamResponse:
        info = await asyncio.get_running_loop().run_in_executor(None, self.system.info)
        info["NEventsListener"] = self.events.subscriber_count()
        return json_response(info)

    async def get_events(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        now = time.time_ns()
        since = parse_timestamp("since", q["since"], now) if q.get("since") else None
        until = parse_timestamp("until", q["until"], now) if q.get("until") else None
        if since is not None and until is not None and until < since:
            raise InvalidParameter(f"since time ({q['since']}) cannot be after until time ({q['until']})")
        flt = EventFilter(parse_filters(q.get("filters"), FILTER_KEYS))
        for t in flt.filters.get("type", []):
            if t not in EVENT_TYPES:
                raise InvalidParameter(f"invalid filter 'type={t}' (known types: {', '.join(EVENT_TYPES)})")
        hide_image_create = version_tuple(api_version(request)) < (1, 46)

        past, sub = self.events.subscribe(flt, since, until)
        try:
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await resp.prepare(request)       # headers go out at once
            for ev in past:
                if not (hide_image_create and ev.type == "image" and ev.action == "create"):
                    await resp.write((json.dumps(ev.to_json()) + "\n").encode())
            if until is not None and until <= now:
                return resp
            while True:
                timeout = None if until is None else max(0.0, (until - time.time_ns()) / 1e9)
                try:
                    nxt = await asyncio.wait_for(sub.get(), timeout)
                except TimeoutError:
                    break           # until reached
                if nxt is None:
                    break           # daemon shutting down
                if until is not None and nxt.time_nano > until:
                    break
                if hide_image_create and nxt.type == "image" and nxt.action == "create":
                    continue
                await resp.write((json.dumps(nxt.to_json()) + "\n").encode())
            return resp
        finally:
            sub.close()
