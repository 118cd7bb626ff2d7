"""The networks router (issue 8): ``GET /networks``, ``GET /networks/{id}``, ``POST
/networks/create``, ``DELETE /networks/{id}``, ``POST /networks/{id}/connect`` and
``/disconnect``, ``POST /networks/prune``. Handlers parse HTTP; the NetworkManager does the
work, the containers backend gives containers (lookup, their record for persisting what they
are connected to)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from skiff.daemon.api.containers import _json_body
from skiff.daemon.api.errors import Conflict, InvalidParameter
from skiff.daemon.api.httputils import parse_filters
from skiff.daemon.api.server import Handler, Router, json_response
from skiff.daemon.network.bridge import NetworkError
from skiff.daemon.network.manager import NetworkManager
from skiff.daemon.network.store import NetRecord


class NetworksRouter(Router):
    def __init__(self, manager: NetworkManager, containers: Any, events: Any) -> None:
        self.m = manager
        self.c = containers
        self.events = events

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("GET", "/networks", self.list),
            ("GET", "/networks/{id}", self.inspect),
            ("POST", "/networks/create", self.create),
            ("DELETE", "/networks/{id}", self.remove),
            ("POST", "/networks/{id}/connect", self.connect),
            ("POST", "/networks/{id}/disconnect", self.disconnect),
            ("POST", "/networks/prune", self.prune),
        ]

    def _name(self, cid: str) -> str:
        c = self.c.store.by_id.get(cid)
        return c.name.lstrip("/") if c is not None else cid[:12]

    def _publish(self, action: str, net: NetRecord, **extra: str) -> None:
        self.events.publish("network", action, net.id, {"name": net.name, "type": net.driver, **extra})

    async def list(self, request: web.Request) -> web.StreamResponse:
        f = parse_filters(request.query.get("filters"),
                          ("name", "id", "driver", "label", "type", "scope", "dangling"))
        out = []
        for net in sorted(self.m.store.nets.values(), key=lambda n: n.created_ns):
            if f.get("name") and not any(v in net.name for v in f["name"]):
                continue
            if f.get("id") and not any(net.id.startswith(v) for v in f["id"]):
                continue
            if f.get("driver") and net.driver not in f["driver"]:
                continue
            if f.get("type"):
                kind = "builtin" if net.predefined else "custom"
                if kind not in f["type"]:
                    continue
            if f.get("scope") and "local" not in f["scope"]:
                continue
            if f.get("label") and not all(_label_ok(net.labels, v) for v in f["label"]):
                continue
            if f.get("dangling"):
                dangling = not net.predefined and not self.m.network_containers(net.id)
                if (f["dangling"][0] in ("true", "1")) != dangling:
                    continue
            d = self.m.inspect_network(net, self._name)
            d["Containers"] = {}
            out.append(d)
        return json_response(out)

    async def inspect(self, request: web.Request) -> web.StreamResponse:
        net = self.m.store.get(request.match_info["id"])
        return json_response(self.m.inspect_network(net, self._name))

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise InvalidParameter("network create: the body must be a JSON object")
        net = await self.m.create_network(body)
        self._publish("create", net)
        return json_response({"Id": net.id, "Warning": ""}, status=201)

    async def remove(self, request: web.Request) -> web.StreamResponse:
        net = await self.m.remove_network(request.match_info["id"])
        self._publish("destroy", net)
        return web.Response(status=204)

    async def prune(self, request: web.Request) -> web.StreamResponse:
        f = parse_filters(request.query.get("filters"), ("label", "label!", "until"))
        if f.get("until"):
            raise InvalidParameter("network prune: the until filter is not supported by skiffd")
        deleted = []
        for net in list(self.m.store.nets.values()):
            if net.predefined or self.m.network_containers(net.id) or self._configured_on(net):
                continue
            if f.get("label") and not all(_label_ok(net.labels, v) for v in f["label"]):
                continue
            if f.get("label!") and any(_label_ok(net.labels, v) for v in f["label!"]):
                continue
            await self.m.remove_network(net.id)
            self._publish("destroy", net)
            deleted.append(net.name)
        return json_response({"NetworksDeleted": deleted})

    def _configured_on(self, net: NetRecord) -> bool:
        for c in self.c.store.all():
            mode = c.host_config.get("NetworkMode") or ""
            if mode in (net.name, net.id) or net.name in ((c.networking_config or {}).get("EndpointsConfig") or {}):
                return True
        return False

    async def connect(self, request: web.Request) -> web.StreamResponse:
        net = self.m.store.get(request.match_info["id"])
        body = await _json_body(request)
        if not isinstance(body, dict) or not body.get("Container"):
            raise InvalidParameter("network connect: Container is required")
        c = self.c.get(str(body["Container"]))
        if net.predefined:
            raise InvalidParameter(f"container cannot be connected to the {net.name} network "
                                   "besides its own network mode (skiffd connects user networks only)")
        if not self.m.uses_bridge(c.host_config):
            raise Conflict(f"container {c.id}: its network mode "
                           f"{c.host_config.get('NetworkMode')} cannot be combined with other networks")
        cfg = dict(body.get("EndpointConfig") or {})
        async with self.c.lock(c.id):
            epc = dict((c.networking_config or {}).get("EndpointsConfig") or {})
            if net.name in epc or (c.host_config.get("NetworkMode") or "") in (net.name, net.id):
                raise Conflict(f"endpoint with name {c.name.lstrip('/')} already exists in network {net.name}")
            if self.c.is_running(c):
                try:
                    await self.m.connect(c.id, net, cfg)
                except NetworkError as e:
                    raise Conflict(str(e)) from None
            epc[net.name] = cfg
            c.networking_config = {**(c.networking_config or {}), "EndpointsConfig": epc}
            self.c.save(c)
        self._publish("connect", net, container=c.id)
        return web.Response(status=200)

    async def disconnect(self, request: web.Request) -> web.StreamResponse:
        net = self.m.store.get(request.match_info["id"])
        body = await _json_body(request)
        if not isinstance(body, dict) or not body.get("Container"):
            raise InvalidParameter("network disconnect: Container is required")
        c = self.c.get(str(body["Container"]))
        async with self.c.lock(c.id):
            if (c.host_config.get("NetworkMode") or "") in (net.name, net.id) or \
                    (net.name == "bridge" and (c.host_config.get("NetworkMode") or "default") == "default"):
                raise Conflict(f"container {c.id}: {net.name} is its primary network (network mode); "
                               "skiffd does not disconnect it")
            epc = dict((c.networking_config or {}).get("EndpointsConfig") or {})
            if net.name not in epc:
                raise Conflict(f"container {c.id} is not connected to network {net.name}")
            if self.c.is_running(c) and net.id in self.m.eps.get(c.id, {}):
                await self.m.disconnect(c.id, net)
            del epc[net.name]
            c.networking_config = {**(c.networking_config or {}), "EndpointsConfig": epc}
            self.c.save(c)
        self._publish("disconnect", net, container=c.id)
        return web.Response(status=200)


def _label_ok(labels: dict[str, str], want: str) -> bool:
    k, eq, v = want.partition("=")
    return k in labels and (not eq or labels[k] == v)
