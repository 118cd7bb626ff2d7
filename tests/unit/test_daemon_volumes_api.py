"""The volumes router over a real VolumeService in a temporary data root: create (201, name,
anonymous), list with filters, inspect 404, remove 409 / 204 / force, prune by API version and
the ``all`` filter, bad filters 400, and /system/df's Volumes part."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from skiff.daemon.api.df import DiskUsageRouter
from skiff.daemon.api.server import make_app
from skiff.daemon.api.volumes import VolumesRouter
from skiff.daemon.volumes.service import VolumeService


class NoImages:
    async def disk_usage(self, counts: dict) -> tuple[int, list]:
        return 0, []


class NoContainers:
    async def list(self, **kw: object) -> list:
        return []


def run(svc: VolumeService, steps):
    async def go():
        app = make_app([VolumesRouter(svc), DiskUsageRouter(NoImages(), NoContainers(), svc)])
        async with TestClient(TestServer(app)) as c:
            return await steps(c)
    return asyncio.run(go())


def test_volume_api_round_trip(tmp_path):
    svc = VolumeService(str(tmp_path / "data"))
    svc.load()

    async def steps(c):
        out = {}
        r = await c.post("/v1.47/volumes/create", json={"Name": "v1", "Labels": {"a": "1"}})
        out["create"] = (r.status, await r.json())
        r = await c.post("/v1.47/volumes/create", json={})
        out["anon"] = (r.status, await r.json())
        r = await c.get('/v1.47/volumes?filters={"label":["a=1"]}')
        out["list"] = (r.status, await r.json())
        r = await c.get('/v1.47/volumes?filters={"bogus":["x"]}')
        out["badfilter"] = r.status
        r = await c.get("/v1.47/volumes/nope")
        out["missing"] = (r.status, (await r.json())["message"])
        r = await c.get("/v1.47/system/df?type=volume")
        out["df"] = (await r.json())["Volumes"]
        svc.points["c" * 64] = [{"Type": "volume", "Name": "v1", "Destination": "/d"}]
        r = await c.delete("/v1.47/volumes/v1")
        out["inuse"] = (r.status, (await r.json())["message"])
        del svc.points["c" * 64]
        r = await c.post("/v1.47/volumes/prune")
        out["prune"] = await r.json()
        r = await c.post('/v1.47/volumes/prune?filters={"all":["true"]}')
        out["prune_all"] = await r.json()
        r = await c.delete("/v1.47/volumes/v1?force=1")
        out["force_missing"] = r.status
        r = await c.delete("/v1.47/volumes/v1")
        out["rm_missing"] = r.status
        await c.post("/v1.41/volumes/create", json={"Name": "old1"})
        r = await c.post("/v1.41/volumes/prune")
        out["prune_old"] = await r.json()
        return out
    out = run(svc, steps)
    status, v = out["create"]
    assert status == 201 and v["Name"] == "v1" and v["Labels"] == {"a": "1"} and v["Scope"] == "local"
    status, anon = out["anon"]
    assert status == 201 and len(anon["Name"]) == 64
    assert anon["Labels"] == {"com.docker.volume.anonymous": ""}
    assert out["list"][0] == 200 and [x["Name"] for x in out["list"][1]["Volumes"]] == ["v1"]
    assert out["badfilter"] == 400
    assert out["missing"] == (404, "get nope: no such volume")
    assert sorted(x["Name"] for x in out["df"]) == sorted(["v1", anon["Name"]])
    assert out["inuse"] == (409, f"remove v1: volume is in use - [{'c' * 64}]")
    assert out["prune"]["VolumesDeleted"] == [anon["Name"]]       # API >= 1.42: anonymous only
    assert out["prune_all"]["VolumesDeleted"] == ["v1"]
    assert out["force_missing"] == 204 and out["rm_missing"] == 404
    assert out["prune_old"]["VolumesDeleted"] == ["old1"]          # API 1.41: named too
