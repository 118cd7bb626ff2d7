"""``GET /system/df`` over fake image and container services: the shape, the ``type`` query
(API 1.42+), the containers-per-image count and an unknown type refused."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from skiff.daemon.api.df import DiskUsageRouter
from skiff.daemon.api.server import make_app

IMG = "sha256:" + "a" * 64


class FakeImages:
    def __init__(self) -> None:
        self.counts: list[dict[str, int]] = []

    async def disk_usage(self, counts: dict[str, int]) -> tuple[int, list[dict]]:
        self.counts.append(counts)
        return 1234, [{"Id": IMG, "Size": 1234, "SharedSize": 0, "Containers": counts.get(IMG, 0)}]


class FakeContainers:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    async def list(self, *, all: bool, limit: int, size: bool, filters: dict) -> list[dict]:
        self.calls.append({"all": all, "limit": limit, "size": size, "filters": filters})
        return [{"Id": f"{n}" * 64, "ImageID": IMG, **({"SizeRw": 10, "SizeRootFs": 1244} if size else {})}
                for n in "12"]


def call(path: str) -> tuple[int, dict, FakeImages, FakeContainers]:
    images, containers = FakeImages(), FakeContainers()

    async def go() -> tuple[int, dict]:
        async with TestClient(TestServer(make_app([DiskUsageRouter(images, containers)]))) as c:
            r = await c.get(path)
            return r.status, await r.json()
    status, body = asyncio.run(go())
    return status, body, images, containers


def test_df_answers_every_type_by_default():
    status, body, images, containers = call("/v1.47/system/df")
    assert status == 200
    assert body["LayersSize"] == 1234 and body["Volumes"] == [] and body["BuildCache"] == []
    assert body["Images"] == [{"Id": IMG, "Size": 1234, "SharedSize": 0, "Containers": 2}]
    assert [c["SizeRw"] for c in body["Containers"]] == [10, 10]
    assert containers.calls == [{"all": True, "limit": -1, "size": True, "filters": {}}]
    assert images.counts == [{IMG: 2}]


def test_df_type_query_limits_the_answer():
    status, body, images, containers = call("/v1.47/system/df?type=image")
    assert status == 200 and body["Containers"] is None and body["Volumes"] is None
    assert body["Images"][0]["Containers"] == 2
    assert containers.calls[0]["size"] is False        # counts only: no sizes computed
    status, body, images, containers = call("/v1.47/system/df?type=container&type=volume")
    assert body["Images"] is None and body["LayersSize"] == 0 and body["Volumes"] == []
    assert images.counts == [] and len(body["Containers"]) == 2
    # before 1.42 the query is ignored
    status, body, _, _ = call("/v1.41/system/df?type=volume")
    assert body["Images"] is not None and body["Containers"] is not None


def test_df_unknown_type_is_a_400():
    status, body, _, _ = call("/v1.47/system/df?type=nope")
    assert status == 400 and body["message"] == "unknown object type: nope"
