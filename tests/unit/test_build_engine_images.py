"""The image store side of the builder over a fake containerd: build records (parent, cache
key), intermediate images hidden from ``docker images``, ``Parent``, the rmi cascade, the
build-cache prune, image prune keeping a tagged image's parents, history rows with IDs."""

from __future__ import annotations

import asyncio

import pytest

from daemon_fakes import FakeContainerd
from skiff.daemon.api.errors import Conflict, NotFound
from skiff.daemon.containerd.client import ImageRecord
from skiff.daemon.events import EventsHub
from skiff.daemon.images.service import BUILD_PREFIX, LABEL_BUILD_KEY, LABEL_BUILD_PARENT, ImageService


class BuildContainerd(FakeContainerd):
    async def create_image(self, name, target, labels=None, lease=""):
        if name in self.records:
            raise Conflict(f"image {name}: already exists")
        self.records[name] = ImageRecord(name, target, dict(labels or {}), len(self.records), len(self.records))

    async def update_image(self, name, target, labels=None, lease=""):
        if name not in self.records:
            raise NotFound(f"image {name}: not found")
        self.records[name] = ImageRecord(name, target, dict(labels or {}), 0, 0)

    async def delete_image(self, name, sync=False):
        if name not in self.records:
            raise NotFound(f"image {name}: not found")
        del self.records[name]


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def world():
    """busybox <- step1 <- step2 (tagged app:1), and a failed build's leftover on busybox."""
    cd = BuildContainerd()
    svc = ImageService(cd, EventsHub())  # type: ignore[arg-type]
    svc.containers_using = lambda image_id: []
    base = cd.image("2020-01-01T00:00:00Z", 1)
    cd.name("docker.io/library/busybox:latest", base)
    ids = {"base": run(svc.resolve("busybox")).id}
    for name, created, parent in (("step1", "2024-01-01T00:00:01Z", "base"), ("step2", "2024-01-01T00:00:02Z", "step1"),
                                  ("left", "2024-01-01T00:00:03Z", "base")):
        target = cd.image(created, 2)
        run(svc.add_build_image(target, ids[parent], f"key-{name}", ""))
        ids[name] = next(i.id for i in run(svc.images()) if i.target is not None and i.target.digest == target.digest)
    run(svc.tag(ids["step2"], "app", "1"))
    return cd, svc, ids


def test_build_records_give_parents_and_keys(world):
    cd, svc, ids = world
    rec = next(r for r in cd.records.values() if r.name.startswith(BUILD_PREFIX) and
               r.labels.get(LABEL_BUILD_KEY) == "key-step2")
    assert rec.labels[LABEL_BUILD_PARENT] == ids["step1"]
    assert run(svc.inspect("app:1"))["Parent"] == ids["step1"]
    assert [i.id for i in run(svc.build_children(ids["base"]))] == [ids["left"], ids["step1"]]


def test_intermediate_images_hidden_without_all(world):
    _, svc, ids = world
    shown = {s["Id"] for s in run(svc.list())}
    assert shown == {ids["base"], ids["step2"], ids["left"]}     # step1 has a child and no name
    assert {s["Id"] for s in run(svc.list(all=True))} == set(ids.values())
    assert {s["Id"] for s in run(svc.list({"dangling": ["true"]}))} == {ids["left"]}
    summary = next(s for s in run(svc.list()) if s["Id"] == ids["step2"])
    assert summary["ParentId"] == ids["step1"]


def test_rmi_cascade(world):
    _, svc, ids = world
    with pytest.raises(Conflict, match="image has dependent child images"):
        run(svc.delete(ids["step1"]))
    out = run(svc.delete("app:1"))
    assert out == [{"Untagged": "app:1"}, {"Deleted": ids["step2"]}, {"Deleted": ids["step1"]}]
    assert run(svc.resolve("busybox")).id == ids["base"]
    with pytest.raises(NotFound):
        run(svc.resolve(ids["step1"]))


def test_untag_of_an_image_with_children_keeps_it(world):
    _, svc, ids = world
    run(svc.tag(ids["step1"], "mid", "1"))
    assert run(svc.delete("mid:1")) == [{"Untagged": "mid:1"}]
    assert run(svc.resolve(ids["step1"])).id == ids["step1"]


def test_build_cache_prune_and_image_prune(world):
    _, svc, ids = world
    deleted, reclaimed = run(svc.prune_build_cache())
    assert deleted == [ids["left"]] and reclaimed >= 0      # the leftover; step1 serves app:1
    assert run(svc.prune({}))["ImagesDeleted"] is None       # step1 is app:1's parent: kept
    assert run(svc.delete("app:1", noprune=True)) == [{"Untagged": "app:1"}, {"Deleted": ids["step2"]}]
    assert run(svc.prune({}))["ImagesDeleted"] == [{"Deleted": ids["step1"]}]   # now a dangling leaf


def test_history_rows_carry_the_chain_ids(world):
    _, svc, ids = world
    rows = run(svc.history("app:1"))       # (the fake configs have no history: a row per layer)
    assert [r["Id"] for r in rows] == [ids["step2"], ids["step1"]]
