"""The containers router: ``/containers/...`` (handlers parse HTTP and call the backend)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from skiff.daemon.api.errors import Conflict, InvalidParameter, NotModified
from skiff.daemon.api.httputils import bool_value, parse_filters
from skiff.daemon.api.server import Handler, Router, json_response
from skiff.daemon.containers.backend import ContainerService
from skiff.daemon.containers.store import LIST_FILTERS
from skiff.daemon.system import go_arch

log = logging.getLogger("skiff.daemon.api")

PRUNE_FILTERS = ("until", "label", "label!")


def _int(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidParameter(f"{name}: invalid value {raw!r}: not an integer") from None


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype and ctype != "application/json":
        raise InvalidParameter(f"unsupported Content-Type header ({ctype}): must be 'application/json'")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidParameter(f"invalid JSON body: {e}") from None


def _drop(request: web.Request) -> None:
    """Close the connection under a streamed answer that failed after its headers."""
    if request.transport is not None:
        request.transport.close()


def _empty(status: int = 204) -> web.Response:
    return web.Response(status=status)


class ContainersRouter(Router):
    def __init__(self, backend: ContainerService) -> None:
        from skiff.daemon.containers.archive import ArchiveService
        from skiff.daemon.containers.stats import ResourceService

        self.b = backend
        self.res = ResourceService(backend)
        self.archive = ArchiveService(backend)

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/containers/create", self.create),
            ("GET", "/containers/json", self.list),
            ("GET", "/containers/{id}/json", self.inspect),
            ("POST", "/containers/{id}/start", self.start),
            ("POST", "/containers/{id}/stop", self.stop),
            ("POST", "/containers/{id}/restart", self.restart),
            ("POST", "/containers/{id}/kill", self.kill),
            ("POST", "/containers/{id}/wait", self.wait),
            ("POST", "/containers/{id}/pause", self.pause),
            ("POST", "/containers/{id}/unpause", self.unpause),
            ("POST", "/containers/{id}/rename", self.rename),
            ("POST", "/containers/{id}/resize", self.resize),
            ("DELETE", "/containers/{id}", self.remove),
            ("POST", "/containers/prune", self.prune),
            ("GET", "/containers/{id}/logs", self.logs),
            ("POST", "/containers/{id}/attach", self.attach),
            # top, stats, update (skiff.daemon.containers.stats)
            ("GET", "/containers/{id}/top", self.top),
            ("GET", "/containers/{id}/stats", self.stats),
            ("POST", "/containers/{id}/update", self.update),
            # docker cp / export / diff (skiff.daemon.containers.archive)
            ("HEAD", "/containers/{id}/archive", self.archive_stat),
            ("GET", "/containers/{id}/archive", self.archive_get),
            ("PUT", "/containers/{id}/archive", self.archive_put),
            ("GET", "/containers/{id}/export", self.export),
            ("GET", "/containers/{id}/changes", self.changes),
        ]

    async def create(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("name", "")
        platform = request.query.get("platform", "")
        if platform:
            parts = platform.split("/")
            if parts[0] != "linux" or (len(parts) > 1 and parts[1] != go_arch()):
                raise InvalidParameter(f"platform {platform!r}: skiffd runs linux/{go_arch()} containers only")
        body = await _json_body(request)
        return json_response(await self.b.create(name, body), status=201)

    async def list(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        filters = parse_filters(q.get("filters"), LIST_FILTERS)
        limit = _int(request, "limit", -1)
        out = await self.b.list(all=bool_value(q.get("all")), limit=-1 if limit is None else limit,
                                size=bool_value(q.get("size")), filters=filters)
        return json_response(out)

    async def inspect(self, request: web.Request) -> web.StreamResponse:
        return json_response(await self.b.inspect(request.match_info["id"],
                                                  size=bool_value(request.query.get("size"))))

    async def start(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("checkpoint"):
            raise InvalidParameter("start: checkpoints are not supported by skiffd")
        await self.b.start(request.match_info["id"])
        return _empty()

    async def stop(self, request: web.Request) -> web.StreamResponse:
        try:
            await self.b.stop(request.match_info["id"], _int(request, "t"),
                              request.query.get("signal") or None)
        except NotModified:
            return _empty(304)
        return _empty()

    async def restart(self, request: web.Request) -> web.StreamResponse:
        await self.b.restart(request.match_info["id"], _int(request, "t"),
                             request.query.get("signal") or None)
        return _empty()

    async def kill(self, request: web.Request) -> web.StreamResponse:
        await self.b.kill(request.match_info["id"], request.query.get("signal") or None)
        return _empty()

    async def wait(self, request: web.Request) -> web.StreamResponse:
        c = self.b.get(request.match_info["id"])
        fut = self.b.wait(c, request.query.get("condition") or "not-running")
        try:
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            await resp.prepare(request)         # the CLI needs the headers before it starts
            code, err = await fut
            body = {"StatusCode": code, "Error": {"Message": err} if err else None}
            await resp.write((json.dumps(body) + "\n").encode())
            await resp.write_eof()
            return resp
        finally:
            self.b.forget_wait(c, fut)

    async def pause(self, request: web.Request) -> web.StreamResponse:
        await self.b.pause(request.match_info["id"])
        return _empty()

    async def unpause(self, request: web.Request) -> web.StreamResponse:
        await self.b.unpause(request.match_info["id"])
        return _empty()

    async def rename(self, request: web.Request) -> web.StreamResponse:
        await self.b.rename(request.match_info["id"], request.query.get("name", ""))
        return _empty()

    async def resize(self, request: web.Request) -> web.StreamResponse:
        h = _int(request, "h")
        w = _int(request, "w")
        if h is None or w is None or h < 0 or w < 0:
            raise InvalidParameter("resize: h and w must be given as non-negative integers")
        await self.b.resize(request.match_info["id"], h, w)
        return web.Response(status=200, headers={"Content-Type": "text/plain; charset=utf-8"})

    async def remove(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if bool_value(q.get("link")):
            raise InvalidParameter("rm --link: legacy container links are not supported by skiffd")
        await self.b.remove(request.match_info["id"], force=bool_value(q.get("force")),
                            volumes=bool_value(q.get("v")))
        return _empty()

    async def prune(self, request: web.Request) -> web.StreamResponse:
        filters = parse_filters(request.query.get("filters"), PRUNE_FILTERS)
        return json_response(await self.b.prune(filters))

    async def logs(self, request: web.Request) -> web.StreamResponse:
        from skiff.daemon.api import hijack

        c = self.b.get(request.match_info["id"])
        stop = asyncio.Event()
        done = self.b.run_done(c) if self.b.is_running(c) else None
        if done is not None and not done.done():
            done.add_done_callback(lambda _f: stop.set())
        else:
            stop.set()
        return await hijack.serve_logs(request, log_path=c.log_path or None, tty=c.tty, stop=stop)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        from skiff.daemon.api import hijack

        c = self.b.get(request.match_info["id"])
        if c.state.status == "paused":
            raise Conflict(f"container {c.id} is paused, unpause the container before attach")
        if c.state.status in ("removing", "dead"):
            raise Conflict(f"container {c.id}: cannot attach to a {c.state.status} container")
        io, done = await self.b.io_for(c)
        self.b.publish(c, "attach")

        async def close_stdin() -> None:
            await self.b.close_stdin(c, io)

        return await hijack.serve_attach(
            request, io, tty=c.tty, open_stdin=bool(c.config.get("OpenStdin")),
            stdin_once=bool(c.config.get("StdinOnce")), log_path=c.log_path or None, done=done,
            close_stdin=close_stdin, on_detach=lambda: self.b.publish(c, "detach"))

    # -- top, stats, update ------------------------------------------------------------------------
    async def top(self, request: web.Request) -> web.StreamResponse:
        return json_response(await self.res.top(request.match_info["id"],
                                                request.query.get("ps_args", "")))

    async def stats(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        stream = bool_value(q.get("stream")) if "stream" in q else True
        one_shot = bool_value(q.get("one-shot"))
        if one_shot and stream:
            raise InvalidParameter("cannot have stream=true and one-shot=true")
        samples = self.res.stats(request.match_info["id"], stream, one_shot)
        first = await anext(samples)             # a 404 is still a plain error answer
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            await resp.write(first)
            async for line in samples:
                await resp.write(line)
        finally:
            await samples.aclose()
        await resp.write_eof()
        return resp

    async def update(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        return json_response(await self.res.update(request.match_info["id"], body))

    # -- archive (docker cp), export, changes (docker diff) ----------------------------------------
    async def archive_stat(self, request: web.Request) -> web.StreamResponse:
        from skiff.daemon.containers.archive import STAT_HEADER, stat_header

        st = await self.archive.stat(request.match_info["id"], request.query.get("path", ""))
        return web.Response(status=200, headers={STAT_HEADER: stat_header(st)})

    async def archive_get(self, request: web.Request) -> web.StreamResponse:
        from skiff.daemon.containers.archive import STAT_HEADER, stat_header

        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/x-tar"})

        async def start(st: dict) -> None:
            resp.headers[STAT_HEADER] = stat_header(st)
            await resp.prepare(request)

        try:
            await self.archive.get(request.match_info["id"], request.query.get("path", ""), start, resp.write)
        except Exception:
            if not resp.prepared:
                raise
            _drop(request)   # cut short: the client sees a broken tar
            return resp
        await resp.write_eof()
        return resp

    async def archive_put(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        await self.archive.put(request.match_info["id"], q.get("path", ""), request.content,
                               no_overwrite_dir_non_dir=bool_value(q.get("noOverwriteDirNonDir")),
                               copy_uid_gid=bool_value(q.get("copyUIDGID")))
        return web.Response(status=200)

    async def export(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/x-tar"})

        async def start() -> None:
            await resp.prepare(request)

        try:
            await self.archive.export(request.match_info["id"], start, resp.write)
        except Exception:
            if not resp.prepared:
                raise
            _drop(request)
            return resp
        await resp.write_eof()
        return resp

    async def changes(self, request: web.Request) -> web.StreamResponse:
        c = self.b.get(request.match_info["id"])
        return json_response(await self.b.changes(c))
