"""The Engine API's HTTP layer: routing with version negotiation, JSON errors, headers.

Every route is served at ``/vX.Y/path`` (1.24 <= X.Y <= 1.47) and at ``/path`` (meaning 1.47),
as moby's router does. Routers (one per resource) only parse HTTP and call their backend. A
route of the v1.47 spec that no router serves answers 501 "not implemented yet"; anything else
answers 404 ``page not found`` as dockerd does (``/grpc`` and ``/session`` included: skiffd has
no BuildKit, so the buildx docker driver must not think it has one).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

import skiff
from skiff.daemon.api.errors import ApiError, NotImplementedYet
from skiff.daemon.api.spec_routes import SPEC_ROUTES
from skiff.daemon.system import API_VERSION, MIN_API_VERSION

log = logging.getLogger("skiff.daemon.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_VERSION_KEY = web.RequestKey("skiff.api_version", str)
ROUTED_KEY = web.RequestKey("skiff.routed", bool)

# Routes of the spec that are deliberately not served (see the module docstring).
UNSERVED = {("POST", "/session")}


def version_tuple(v: str) -> tuple[int, ...]:
    """moby's versions.compare: dotted numbers, a missing or non-numeric part counts as 0."""
    out = []
    for part in v.split("."):
        out.append(int(part) if part.isdigit() else 0)
    while len(out) < 2:
        out.append(0)
    return tuple(out)


def api_version(request: web.Request) -> str:
    """The API version of the request (after negotiation)."""
    return str(request.get(API_VERSION_KEY, API_VERSION))


def json_response(data: Any, status: int = 200) -> web.Response:
    # Content-Type exactly application/json (the Go client compares the whole value)
    return web.Response(body=(json.dumps(data) + "\n").encode(), status=status,
                        headers={"Content-Type": "application/json"})


def error_response(status: int, message: str) -> web.Response:
    if status == 304:
        return web.Response(status=304)
    return json_response({"message": message}, status)


class Router:
    """A resource's routes; subclasses fill ``routes``."""

    def routes(self) -> list[tuple[str, str, Handler]]:
        raise NotImplementedError


def _aiohttp_path(path: str) -> str:
    # image, plugin and distribution names contain slashes (library/busybox)
    return re.sub(r"\{name\}", "{name:.+}", path) if path.startswith(
        ("/images/", "/distribution/", "/plugins/")) else path


def _not_implemented(method: str, path: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise NotImplementedYet(f"{method} {path}: not implemented yet in skiffd "
                                f"(this endpoint of Engine API {API_VERSION} is still to be built)")
    return handler


@web.middleware
async def _api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    routed = request.match_info.http_exception is None and route.resource is not None
    try:
        if routed:
            request[ROUTED_KEY] = True
            version = request.match_info.get("version")
            if version is not None:
                if version_tuple(version) > version_tuple(API_VERSION):
                    return error_response(400, f"client version {version} is too new. Maximum "
                                               f"supported API version is {API_VERSION}")
                if version_tuple(version) < version_tuple(MIN_API_VERSION):
                    return error_response(400, f"client version {version} is too old. Minimum "
                                               f"supported API version is {MIN_API_VERSION}, please "
                                               "upgrade your client to a newer version")
            request[API_VERSION_KEY] = version or API_VERSION
        return await handler(request)
    except ApiError as e:
        if e.status >= 500 and e.status != 501:
            log.error("%s %s: %s", request.method, request.path, e)
        else:
            log.debug("%s %s: %d %s", request.method, request.path, e.status, e)
        return error_response(e.status, str(e))
    except web.HTTPException as e:
        if e.status in (404, 405):
            return error_response(404, "page not found")
        return error_response(e.status, e.text or e.reason)
    except (ConnectionResetError, ConnectionAbortedError):
        raise
    except Exception as e:
        log.exception("%s %s: internal error", request.method, request.path)
        return error_response(500, f"{request.method} {request.path}: internal error: {e}")


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.get(ROUTED_KEY):
        h = response.headers
        h.setdefault("Api-Version", API_VERSION)
        h.setdefault("Docker-Experimental", "false")
        h.setdefault("Ostype", "linux")
        h["Server"] = f"Skiff/{skiff.__version__} (linux)"


def make_app(routers: list[Router]) -> web.Application:
    app = web.Application(middlewares=[_api_middleware], client_max_size=0)
    app.on_response_prepare.append(_add_headers)
    served: set[tuple[str, str]] = set()
    for router in routers:
        for method, path, handler in router.routes():
            _add(app, method, path, handler)
            served.add((method, path))
    for method, path in SPEC_ROUTES:
        if (method, path) not in served and (method, path) not in UNSERVED:
            _add(app, method, path, _not_implemented(method, path))
    return app


def _add(app: web.Application, method: str, path: str, handler: Handler) -> None:
    p = _aiohttp_path(path)
    app.router.add_route(method, "/v{version:[0-9.]+}" + p, handler)
    app.router.add_route(method, p, handler)
