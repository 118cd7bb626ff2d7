"""skiffd's ImageService over a fake containerd (no server): lookup by name, familiar name, ID,
ID prefix and digest; grouping of names by image; list filters; the API shapes; RFC 3339."""

from __future__ import annotations

import asyncio

import pytest

from daemon_fakes import OCI_MANIFEST, FakeContainerd
from skiff.daemon.api.errors import InvalidParameter, NotFound
from skiff.daemon.events import EventsHub
from skiff.daemon.images.service import ImageService, familiar, parse_rfc3339


@pytest.fixture
def world():
    cd = FakeContainerd()
    a = cd.image("2024-01-02T03:04:05.123456789Z", 2, {"team": "x"})
    b = cd.image("2023-01-01T00:00:00Z", 1)
    cd.name("docker.io/library/busybox:latest", a)
    cd.name("docker.io/library/busybox:1.36", a)
    cd.name("registry.local:5000/tools/app:v1", b)
    svc = ImageService(cd, EventsHub())  # type: ignore[arg-type]
    return cd, svc, a, b


def run(coro):
    return asyncio.run(coro)


def test_names_of_one_image_are_grouped_newest_first(world):
    cd, svc, a, b = world
    images = run(svc.images())
    assert [i.names for i in images] == [["busybox:latest", "busybox:1.36"], ["registry.local:5000/tools/app:v1"]]
    assert images[0].size == 2000            # not unpacked: layer blob sizes stand in
    assert images[0].created_unix == 1704164645
    assert len(images[0].diff_ids) == 2 and images[0].chain_id != images[0].diff_ids[-1]
    assert images[1].chain_id == images[1].diff_ids[0]
    reads = cd.reads
    run(svc.images())
    assert cd.reads == reads                 # manifests and configs are cached by digest


def test_resolve_by_every_form(world):
    _, svc, _, _ = world
    img = run(svc.resolve("busybox"))
    hexid = img.id[7:]
    for ref in ("busybox:latest", "busybox:1.36", "docker.io/library/busybox:latest", "library/busybox",
                img.id, hexid, hexid[:12], hexid[:3], "sha256:" + hexid[:5], f"busybox@{img.target.digest}"):
        assert run(svc.resolve(ref)).id == img.id, ref
    assert run(svc.resolve("registry.local:5000/tools/app:v1")).id != img.id


@pytest.mark.parametrize("ref", ["busybox:nope", "alpine", "sha256:" + "a" * 64, "f" * 64, "Bad/Name", "zzz"])
def test_resolve_not_found_says_no_such_image(world, ref):
    _, svc, _, _ = world
    with pytest.raises(NotFound) as e:
        run(svc.resolve(ref))
    assert str(e.value) == f"No such image: {ref}"


def test_ambiguous_id_prefix_is_refused():
    cd = FakeContainerd()
    for n in range(17):      # 17 IDs: two share their first hex digit
        cd.name(f"docker.io/library/img{n}:latest", cd.image(f"2020-01-{n + 1:02d}T00:00:00Z", 1))
    svc = ImageService(cd, EventsHub())  # type: ignore[arg-type]
    firsts = [i.id[7] for i in run(svc.images())]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    with pytest.raises(InvalidParameter, match=f"image ID prefix '{shared}' is ambiguous"):
        run(svc.resolve(shared))
    full = run(svc.images())[0].id
    assert run(svc.resolve(full[7:20])).id == full        # a longer prefix is unique


def test_index_target_picks_this_platform(world):
    cd, svc, a, _ = world
    idx = cd.image("2022-05-05T00:00:00Z", 1, index=True)
    cd.name("docker.io/library/multi:latest", idx)
    img = run(svc.resolve("multi"))
    assert img.target == idx and img.manifest is not None and img.manifest.media_type == OCI_MANIFEST
    assert img.config["architecture"] == "amd64"


def test_list_filters_and_shapes(world):
    cd, svc, a, b = world
    cd.name("moby-dangling@" + b.digest, b)
    listed = run(svc.list({}))
    assert [e["RepoTags"] for e in listed] == [["busybox:latest", "busybox:1.36"], ["registry.local:5000/tools/app:v1"]]
    e = listed[0]
    assert set(e) == {"Id", "ParentId", "RepoTags", "RepoDigests", "Created", "Size", "SharedSize", "Labels",
                      "Containers"}
    assert e["SharedSize"] == -1 and e["Containers"] == -1 and e["Labels"] == {"team": "x"}
    assert e["RepoDigests"] == [f"busybox@{a.digest}"]
    assert [x["RepoTags"] for x in run(svc.list({"reference": ["busybox:1.*"]}))] == [["busybox:1.36"]]
    assert [x["RepoTags"] for x in run(svc.list({"reference": ["busybox"]}))] == [["busybox:latest", "busybox:1.36"]]
    assert run(svc.list({"reference": ["*app"]})) == []          # * does not cross "/"
    assert len(run(svc.list({"reference": ["registry.local:5000/*/app"]}))) == 1
    assert [x["Labels"] for x in run(svc.list({"label": ["team"]}))] == [{"team": "x"}]
    assert run(svc.list({"label": ["team=y"]})) == []
    assert run(svc.list({"dangling": ["true"]})) == []
    assert len(run(svc.list({"dangling": ["false"]}))) == 2
    assert [x["RepoTags"] for x in run(svc.list({"before": ["busybox"]}))] == [["registry.local:5000/tools/app:v1"]]
    assert [x["RepoTags"] for x in run(svc.list({"since": ["registry.local:5000/tools/app:v1"]}))] == [
        ["busybox:latest", "busybox:1.36"]]
    with pytest.raises(InvalidParameter, match="invalid filter 'dangling=maybe'"):
        run(svc.list({"dangling": ["maybe"]}))
    with pytest.raises(InvalidParameter, match="invalid filter 'bogus'"):
        run(svc.list({"bogus": ["1"]}))


def test_dangling_only_image():
    cd = FakeContainerd()
    t = cd.image("2020-01-01T00:00:00Z", 1)
    cd.name("moby-dangling@" + t.digest, t)
    svc = ImageService(cd, EventsHub())  # type: ignore[arg-type]
    listed = run(svc.list({"dangling": ["true"]}))
    assert len(listed) == 1 and listed[0]["RepoTags"] == [] and listed[0]["RepoDigests"] == []


def test_inspect_shape(world):
    _, svc, _, _ = world
    d = run(svc.inspect("busybox:1.36"))
    assert d["RepoTags"] == ["busybox:latest", "busybox:1.36"]
    assert d["Created"] == "2024-01-02T03:04:05.123456789Z" and d["Config"]["Cmd"] == ["sh"]
    assert d["RootFS"]["Type"] == "layers" and len(d["RootFS"]["Layers"]) == 2
    assert d["GraphDriver"]["Name"] == "overlay2" and d["Os"] == "linux" and d["Architecture"] == "amd64"
    assert d["Metadata"] == {"LastTagTime": "0001-01-01T00:00:00Z"}


@pytest.mark.parametrize("text,expected", [
    ("1970-01-01T00:00:00Z", 0), ("", 0), ("2024-01-02T03:04:05.123456789Z", 1704164645),
    ("2024-01-02T04:04:05+01:00", 1704164645), ("garbage", 0)])
def test_parse_rfc3339(text, expected):
    assert parse_rfc3339(text) == expected


def test_familiar():
    assert familiar("docker.io/library/busybox:latest") == "busybox:latest"
    assert familiar("docker.io/me/app:1") == "me/app:1"
    assert familiar("localhost:5000/x:y") == "localhost:5000/x:y"
