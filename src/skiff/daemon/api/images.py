"""The images router: list, inspect, load, tag, delete, history, prune, save (get), create
(pull / import), push, commit, and ``POST /auth``. Handlers parse HTTP and call
``ImageService`` and ``skiff.daemon.images.transfer``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from skiff.daemon.api.errors import ApiError, InvalidParameter
from skiff.daemon.api.httputils import bool_value, parse_filters
from skiff.daemon.api.server import Handler, Router, api_version, json_response, version_tuple
from skiff.daemon.images import transfer
from skiff.daemon.images.service import LIST_FILTERS, ImageService

log = logging.getLogger("skiff.daemon.api.images")

PRUNE_FILTERS = ("dangling", "until", "label", "label!")


async def stream_json(request: web.Request, messages: AsyncIterator[dict]) -> web.StreamResponse:
    """Stream progress messages as JSON lines. An error before the first message is an HTTP
    error; after it, Docker's in-stream ``{"errorDetail": ..., "error": ...}``."""
    it = messages.__aiter__()
    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        first = None
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    if first is not None:
        await resp.write((json.dumps(first) + "\n").encode())
        try:
            async for msg in it:
                await resp.write((json.dumps(msg) + "\n").encode())
        except ApiError as e:
            log.info("%s %s: %s", request.method, request.path, e)
            await resp.write((json.dumps({"errorDetail": {"message": str(e)}, "error": str(e)}) + "\n").encode())
    await resp.write_eof()
    return resp


class ImagesRouter(Router):
    def __init__(self, images: ImageService, containers: Any = None, tmp_dir: str | None = None) -> None:
        self.images = images
        self.containers = containers
        self.tmp_dir = tmp_dir

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/images/json", self.list_images),
            ("GET", "/images/get", self.get_images),
            ("GET", "/images/{name:.+}/json", self.inspect_image),
            ("GET", "/images/{name:.+}/history", self.history),
            ("GET", "/images/{name:.+}/get", self.get_image),
            ("POST", "/images/load", self.load_images),
            ("POST", "/images/prune", self.prune),
            ("POST", "/images/create", self.create),
            ("POST", "/images/{name:.+}/tag", self.tag),
            ("POST", "/images/{name:.+}/push", self.push),
            ("DELETE", "/images/{name:.+}", self.delete),
            ("POST", "/auth", self.auth),
            ("POST", "/commit", self.commit),
        ]

    # --- tag / delete / history / prune -------------------------------------------------------

    async def tag(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        await self.images.tag(request.match_info["name"], q.get("repo", ""), q.get("tag", ""))
        return web.Response(status=201)

    async def delete(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        out = await self.images.delete(request.match_info["name"], force=bool_value(q.get("force")),
                                       noprune=bool_value(q.get("noprune")))
        return json_response(out)

    async def history(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("platform"):
            raise InvalidParameter(f"history: platform {request.query['platform']!r}: choosing a platform is not "
                                   "supported")
        return json_response(await self.images.history(request.match_info["name"]))

    async def prune(self, request: web.Request) -> web.StreamResponse:
        filters = parse_filters(request.query.get("filters"), PRUNE_FILTERS)
        return json_response(await self.images.prune(filters))

    # --- save ---------------------------------------------------------------------------------

    async def get_image(self, request: web.Request) -> web.StreamResponse:
        return await self._save(request, [request.match_info["name"]])

    async def get_images(self, request: web.Request) -> web.StreamResponse:
        return await self._save(request, request.query.getall("names", []))

    async def _save(self, request: web.Request, names: list[str]) -> web.StreamResponse:
        platform = request.query.get("platform") or None
        if platform:
            try:
                json.loads(platform)
            except ValueError:
                pass
            else:
                raise InvalidParameter("save: platform: a JSON platform object is not supported; give os/arch")
        for n in names:           # fail before the 200 when an image is missing
            await self.images.resolve(n)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/x-tar"})
        started = False

        async def send(chunk: bytes) -> None:
            nonlocal started
            if not started:
                await resp.prepare(request)
                started = True
            await resp.write(chunk)
        await transfer.save(self.images, names, send, self.tmp_dir, platform)
        if not started:
            await resp.prepare(request)
        await resp.write_eof()
        return resp

    # --- create (pull, import) / push / auth ---------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        platform = q.get("platform") or None
        if q.get("fromImage"):
            ref = q["fromImage"]
            tag = q.get("tag", "")
            if tag:
                ref = f"{ref}@{tag}" if tag.startswith("sha256:") else f"{ref}:{tag}"
            elif "@" not in ref and ":" not in ref.rpartition("/")[2]:
                raise InvalidParameter(f"pull {ref}: pulling every tag of a repository (docker pull --all-tags) "
                                       "is not supported; name a tag")
            auth = transfer.decode_registry_auth(request.headers.get("X-Registry-Auth", ""))
            return await stream_json(request, transfer.pull_messages(self.images, ref, auth, platform,
                                                                     self.tmp_dir))
        if q.get("fromSrc"):
            if q["fromSrc"] != "-":
                raise InvalidParameter(f"import: fromSrc {q['fromSrc']!r}: importing from a URL is not supported; "
                                       "send the tarball in the request body (fromSrc=-)")
            img = await transfer.import_image(self.images, request.content.read, q.get("repo", ""),
                                              q.get("tag", ""), q.getall("changes", []), q.get("message", ""),
                                              platform, self.tmp_dir)

            async def one() -> AsyncIterator[dict]:
                yield {"status": img.id}
            return await stream_json(request, one())
        raise InvalidParameter("create image: give fromImage (pull) or fromSrc (import)")

    async def push(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if q.get("platform"):
            raise InvalidParameter(f"push: platform {q['platform']!r}: choosing a platform is not supported")
        auth = transfer.decode_registry_auth(request.headers.get("X-Registry-Auth", ""))
        return await stream_json(request, transfer.push_messages(self.images, request.match_info["name"],
                                                                 q.get("tag", ""), auth, self.tmp_dir))

    async def auth(self, request: web.Request) -> web.StreamResponse:
        import asyncio
        try:
            body = await request.json()
        except ValueError as e:
            raise InvalidParameter(f"auth: the body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise InvalidParameter("auth: expected a JSON object")
        token = await asyncio.to_thread(
            transfer.login, str(body.get("serveraddress") or ""), str(body.get("username") or ""),
            str(body.get("password") or ""), str(body.get("identitytoken") or ""),
            list(self.images.insecure_registries))
        return json_response({"Status": "Login Succeeded", "IdentityToken": token})

    # --- commit -------------------------------------------------------------------------------

    async def commit(self, request: web.Request) -> web.StreamResponse:
        if self.containers is None:
            raise ApiError("commit: no container service")
        q = request.query
        ref = q.get("container", "")
        if not ref:
            raise InvalidParameter("commit: no container given")
        c = self.containers.store.get(ref)
        body: dict = {}
        raw = await request.read()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError as e:
                raise InvalidParameter(f"commit: the body is not JSON: {e}") from None
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise InvalidParameter("commit: the body must be a container config object")
        cfg = {k: v for k, v in (c.config or {}).items() if k in transfer.IMAGE_CONFIG_KEYS}
        for k, v in body.items():
            if k in transfer.IMAGE_CONFIG_KEYS and v not in (None, "", [], {}):
                cfg[k] = v
        pause = q.get("pause", "1")
        do_pause = bool_value(pause) if pause != "" else True
        paused_here = do_pause and c.state.status == "running"
        new_id = await transfer.commit(
            self.images, container_id=c.id, container_name=c.name, image_id=c.image_id, container_config=cfg,
            repo=q.get("repo", ""), tag=q.get("tag", ""), comment=q.get("comment", ""),
            author=q.get("author", ""), changes=q.getall("changes", []),
            pause=(lambda: self.containers.pause(c.id)) if paused_here else None,
            resume=(lambda: self.containers.unpause(c.id)) if paused_here else None)
        return json_response({"Id": new_id}, status=201)

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
        messages = await transfer.load(self.images, request.content.read, self.tmp_dir)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for m in messages:
            await resp.write((json.dumps(m) + "\n").encode())
        await resp.write_eof()
        return resp
