"""The exec router: ``POST /containers/{id}/exec``, ``POST /exec/{id}/start``, ``POST
/exec/{id}/resize``, ``GET /exec/{id}/json`` (handlers parse HTTP and call ``ExecService``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from skiff.daemon.api.containers import _int, _json_body
from skiff.daemon.api.errors import ApiError, InvalidParameter
from skiff.daemon.api.server import Handler, Router, json_response
from skiff.daemon.containers.exec import ExecService
from skiff.daemon.streams import SlowSubscriber

log = logging.getLogger("skiff.daemon.api")

START_FIELDS = {"Detach", "Tty", "ConsoleSize"}
EXIT_POLL = 5.0      # seconds between asking containerd about an exit that has not been reported


class ExecRouter(Router):
    def __init__(self, service: ExecService) -> None:
        self.s = service

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/containers/{id}/exec", self.create),
            ("POST", "/exec/{id}/start", self.start),
            ("POST", "/exec/{id}/resize", self.resize),
            ("GET", "/exec/{id}/json", self.inspect),
        ]

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        eid = await self.s.create(request.match_info["id"], body)
        return json_response({"Id": eid}, status=201)

    async def inspect(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.s.inspect(request.match_info["id"]))

    async def resize(self, request: web.Request) -> web.StreamResponse:
        h = _int(request, "h")
        w = _int(request, "w")
        if h is None or w is None or h < 0 or w < 0:
            raise InvalidParameter("resize: h and w must be given as non-negative integers")
        await self.s.resize(request.match_info["id"], h, w)
        return web.Response(status=200, headers={"Content-Type": "text/plain; charset=utf-8"})

    async def start(self, request: web.Request) -> web.StreamResponse:
        from skiff.daemon.api import hijack

        body = await _json_body(request)
        if not isinstance(body, dict):
            raise InvalidParameter("exec start: the body must be a JSON object")
        unknown = sorted(set(body) - START_FIELDS)
        if unknown:
            raise InvalidParameter(f"exec start: unsupported field(s) {', '.join(unknown)} "
                                   f"(supported: {', '.join(sorted(START_FIELDS))})")
        ec, c = self.s.begin_start(request.match_info["id"], body.get("ConsoleSize"))
        if body.get("Detach"):
            await self.s.open_io(ec)      # output read and dropped, as dockerd does
            await self.s.launch(ec, c)
            return web.Response(status=200)
        io = await self.s.open_io(ec)
        sub = io.subscribe(stdout=ec.open_stdout, stderr=ec.open_stderr)
        try:
            hj = await hijack.hijack(request, hijack.stream_content_type(request, ec.tty))
        except BaseException:
            sub.close()
            await self.s.abandon(ec, c)
            raise
        abort = False
        try:
            try:
                await self.s.launch(ec, c)
            except ApiError as e:
                # after the hijack the error goes into the stream (dockerd writes it to stdout)
                msg = f"{e}\r\n".encode()
                hj.write(msg if ec.tty else hijack.frame(hijack.STDOUT, msg))
                return hj.response
            detached = False

            def on_detach() -> None:
                nonlocal detached
                detached = True
                self.s.cs.publish(c, "exec_detach", execID=ec.id)

            await hijack.attach_streams(
                hj, io, sub, tty=ec.tty, stdin=ec.open_stdin, stdin_once=True,
                keys=(ec.detach_keys or hijack.parse_detach_keys(hijack.DEFAULT_DETACH_KEYS))
                if ec.tty else b"",    # dockerd matches detach keys with a terminal only
                # shielded: attach_streams cancels its wait when the output ends first
                done=asyncio.shield(ec.done), close_stdin=io.close_stdin, on_detach=on_detach)
            if not detached:
                # the output can end before containerd reports the exit: the connection closes
                # only once the exit code is recorded (the client inspects it right after)
                waits: list[asyncio.Future[Any]] = [ec.done, hj.lost]
                while not (ec.done.done() or hj.lost.done()):
                    finished, _ = await asyncio.wait(waits, timeout=EXIT_POLL,
                                                     return_when=asyncio.FIRST_COMPLETED)
                    if not finished:
                        await self.s.check_exit(ec)
        except SlowSubscriber as e:
            log.warning("exec start %s: %s: disconnected", ec.id, e)
            abort = True
        except ConnectionError as e:
            log.debug("exec start %s: %s", ec.id, e)
        except Exception as e:
            log.exception("exec start %s: failed", ec.id)
            msg = f"exec attach failed: {e}\r\n".encode()
            try:
                hj.write(msg if ec.tty else hijack.frame(hijack.SYSTEMERR, msg))
            except ConnectionError:
                pass
        finally:
            sub.close()
            await hj.close(abort=abort)
        return hj.response
