"""The build router: ``POST /build`` (the classic builder, ``skiff.daemon.build.builder``) and
``POST /build/prune`` (the build cache: untagged images builds made that nothing uses).

``/build`` reads the whole body (the context tar) before it writes anything, as dockerd. Errors
up to the first output line (bad parameters, context, Dockerfile, target) are plain JSON errors
with their status; after it, Docker's in-stream ``{"errorDetail": ..., "error": ...}`` (with the
exit code as ``errorDetail.code`` for a failing RUN). Lines end in ``\\r\\n`` as moby's. With
``q=1`` only ``{"stream":"sha256:<id>\\n"}`` is sent on success; what was held back is sent
before the error on failure.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import json
import logging
import os
import time
from typing import Any

from aiohttp import web

from skiff.daemon.api.errors import ApiError, InvalidParameter
from skiff.daemon.api.httputils import bool_value
from skiff.daemon.api.server import Handler, Router, json_response

log = logging.getLogger("skiff.daemon.api.build")


def _line(msg: dict[str, Any]) -> bytes:
    """One message as moby writes it: Go's HTML-safe JSON (``>`` as ``\\u003e``...), then CRLF."""
    text = json.dumps(msg, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return (text + "\r\n").encode()


def _error_msg(message: str, code: int | None) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": code, "message": message} if code else {"message": message}
    return {"errorDetail": detail, "error": message}


def _int(q: Any, key: str) -> int:
    v = q.get(key, "")
    if v in ("", None):
        return 0
    try:
        return int(v)
    except ValueError:
        raise InvalidParameter(f"{key}: {v!r} is not an integer") from None


def _json(q: Any, key: str, kind: type) -> Any:
    v = q.get(key, "")
    if not v:
        return kind()
    try:
        doc = json.loads(v)
    except ValueError as e:
        raise InvalidParameter(f"{key}: not JSON: {e}") from None
    if doc is None:
        return kind()
    if not isinstance(doc, kind):
        raise InvalidParameter(f"{key}: expected a JSON {'object' if kind is dict else 'array'}")
    return doc


def registry_config(header: str) -> dict[str, Any]:
    """``X-Registry-Config``: base64url JSON ``{registry: AuthConfig}`` (``e30=`` = {})."""
    if not header:
        return {}
    text = header.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError) as e:
        raise InvalidParameter(f"X-Registry-Config: not base64url-encoded JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidParameter("X-Registry-Config: expected a JSON object")
    return doc


def parse_options(q: Any, headers: Any) -> Any:
    """The query parameters of ``POST /build`` as ``BuildOptions`` (moby's
    ``newImageBuildOptions``); what skiffd cannot do is refused."""
    from skiff.daemon.build.builder import BuildOptions, validate_platform
    from skiff.daemon.images.service import tag_reference
    if q.get("remote"):
        raise InvalidParameter(f"remote={q['remote']}: remote build contexts (URLs, git) are not supported: skiffd "
                               "builds offline; send the context as the request body")
    if bool_value(q.get("squash")):
        raise InvalidParameter("squash is only supported with experimental mode (skiffd has no experimental "
                               "features)")
    version = q.get("version", "") or "1"
    if version != "1":
        raise InvalidParameter(f"version={version}: only the classic builder (version 1) is available; skiffd has no "
                               "BuildKit")
    if q.get("outputs"):
        raise InvalidParameter("outputs: build outputs are a BuildKit feature; skiffd has no BuildKit")
    isolation = q.get("isolation", "")
    if isolation not in ("", "default"):
        raise InvalidParameter(f"Unsupported isolation: {isolation!r}")
    platform = q.get("platform", "")
    validate_platform(platform)
    tags: list[str] = []
    for t in q.getall("t", []):
        if not t:
            continue
        ref = tag_reference(t, "build tag cannot contain a digest")
        if str(ref) not in tags:
            tags.append(str(ref))
    buildargs = _json(q, "buildargs", dict)
    for k, v in buildargs.items():
        if v is not None and not isinstance(v, str):
            raise InvalidParameter(f"buildargs: {k}: the value must be a string or null")
    labels = _json(q, "labels", dict)
    for k, v in labels.items():
        if not isinstance(v, str):
            raise InvalidParameter(f"labels: {k}: the value must be a string")
    cachefrom = _json(q, "cachefrom", list)
    if q.get("forcerm") and bool_value(q.get("forcerm")):
        rm = True
    elif q.get("rm", "") == "":
        rm = True
    else:
        rm = bool_value(q.get("rm"))
    host: dict[str, Any] = {}
    nm = q.get("networkmode", "")
    if nm and nm != "default":
        host["NetworkMode"] = nm
    extra = [h for h in q.getall("extrahosts", []) if h]     # repeated, as the Go client sends it
    if extra:
        host["ExtraHosts"] = extra
    for key, field in (("memory", "Memory"), ("memswap", "MemorySwap"), ("cpushares", "CpuShares"),
                       ("cpuperiod", "CpuPeriod"), ("cpuquota", "CpuQuota"), ("shmsize", "ShmSize")):
        n = _int(q, key)
        if n:
            host[field] = n
    for key, field in (("cpusetcpus", "CpusetCpus"), ("cpusetmems", "CpusetMems"), ("cgroupparent", "CgroupParent")):
        if q.get(key):
            host[field] = q[key]
    ulimits = _json(q, "ulimits", list)
    if ulimits:
        host["Ulimits"] = ulimits
    return BuildOptions(
        tags=tags, dockerfile=q.get("dockerfile", "") or "Dockerfile", nocache=bool_value(q.get("nocache")),
        pull=bool_value(q.get("pull")), rm=rm, forcerm=bool_value(q.get("forcerm")),
        buildargs=buildargs, labels=labels, target=q.get("target", ""), platform=platform,
        cachefrom=[str(c) for c in cachefrom], host_config=host,
        registry_auth=registry_config(headers.get("X-Registry-Config", "")))


def clean_mount_dir(path: str) -> None:
    """At start: mount points a killed skiffd left under ``<exec-root>/build`` are unmounted
    and removed (never recursively: a directory still mounted is left, logged)."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    from skiff.images.mount import MNT_DETACH
    from skiff.runtime import syscalls as sc
    for n in names:
        p = os.path.join(path, n)
        try:
            sc.LinuxSyscalls().umount2(p, MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                log.error("build: unmount %s left by an earlier run: %s", p, e)
        try:
            os.rmdir(p)
        except OSError as e:
            log.error("build: remove %s left by an earlier run: %s", p, e)


class BuildRouter(Router):
    def __init__(self, images: Any, containers: Any, tmp_dir: str, mount_dir: str) -> None:
        self.images = images
        self.containers = containers
        self.tmp_dir = tmp_dir
        self.mount_dir = mount_dir
        from skiff.daemon.build.context import clean_leftovers
        clean_leftovers(tmp_dir)
        clean_mount_dir(mount_dir)

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/build", self.build), ("POST", "/build/prune", self.prune)]

    async def prune(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        filters = q.get("filters", "")
        if filters and filters not in ("{}", "null"):
            raise InvalidParameter("build prune: filters are not supported by skiffd's classic build cache")
        if _int(q, "keep-storage"):
            raise InvalidParameter("build prune: keep-storage is not supported by skiffd's classic build cache")
        deleted, reclaimed = await self.images.prune_build_cache()
        if deleted:
            self.images.events.publish("builder", "prune", "", {"reclaimed": str(reclaimed)})
        return json_response({"CachesDeleted": deleted, "SpaceReclaimed": reclaimed})

    async def build(self, request: web.Request) -> web.StreamResponse:
        from skiff.daemon.build import context
        from skiff.daemon.build.builder import Builder, BuildError
        opts = parse_options(request.query, request.headers)
        quiet = bool_value(request.query.get("q"))
        t0 = time.monotonic()
        body = request.content
        ctx = await context.receive(lambda _n: body.readany(), self.tmp_dir)   # what is there, no slicing
        log.debug("build: context of %d entries received in %.3f s", len(ctx.entries), time.monotonic() - t0)
        try:
            builder = Builder(self.images, self.containers, ctx, opts, mount_dir=self.mount_dir,
                              tmp_dir=self.tmp_dir)
            await _in_thread(builder.prepare)
            resp: web.StreamResponse | None = None
            held: list[bytes] = []

            async def send(data: bytes) -> None:
                nonlocal resp
                if resp is None:
                    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
                    await resp.prepare(request)
                await resp.write(data)

            async def out(msg: dict[str, Any]) -> None:
                if quiet:
                    held.append(_line(msg))
                else:
                    await send(_line(msg))

            error: dict[str, Any] | None = None
            image_id = ""
            try:
                image_id = await builder.run(out)
                await out({"stream": f"Successfully built {image_id.removeprefix('sha256:')[:12]}\n"})
                for tag in opts.tags:
                    repo, _, t = tag.rpartition(":")
                    name = await self.images.tag(image_id, repo, t)
                    await out({"stream": f"Successfully tagged {name}\n"})
            except BuildError as e:
                log.info("build: %s", e)
                error = _error_msg(str(e), e.code)
            except ApiError as e:
                if resp is None and not held:
                    raise
                log.info("build: %s", e)
                error = _error_msg(str(e), None)
            except Exception as e:     # a bug: said in the stream, not a cut connection
                if resp is None and not held:
                    raise
                log.exception("build: internal error")
                error = _error_msg(f"build: internal error: {type(e).__name__}: {e}", None)
            log.debug("build: %s in %.3f s", "failed" if error else image_id, time.monotonic() - t0)
            if error is not None:
                for data in held:
                    await send(data)
                await send(_line(error))
            elif quiet:
                await send(_line({"stream": image_id + "\n"}))
            assert resp is not None
            await resp.write_eof()
            return resp
        finally:
            await _in_thread(ctx.close)


async def _in_thread(fn: Any) -> Any:
    import asyncio
    fut = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await fut
        raise
