"""skiffd's image verbs over a fake containerd (no server): tag, delete (untag vs delete,
containers using the image, force, by ID), history, prune; and the transfer helpers:
X-Registry-Auth decoding, registry mirror entries, library errors in Docker's words, the
routes of the images router."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from daemon_fakes import FakeContainerd
from skiff.daemon.api.errors import Conflict, InvalidParameter, NotFound
from skiff.daemon.containerd.client import ImageRecord
from skiff.daemon.events import EventFilter, EventsHub
from skiff.daemon.images import transfer
from skiff.daemon.images.service import ImageService, _parse_until


class WritableContainerd(FakeContainerd):
    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[tuple[str, bool]] = []

    async def create_image(self, name, target, labels=None, lease=""):
        if name in self.records:
            raise Conflict(f"image {name}: already exists")
        self.name(name, target)

    async def update_image(self, name, target, labels=None, lease=""):
        if name not in self.records:
            raise NotFound(f"image {name}: not found")
        self.records[name] = ImageRecord(name, target, {}, 0, 0)

    async def delete_image(self, name, sync=False):
        if name not in self.records:
            raise NotFound(f"image {name}: not found")
        del self.records[name]
        self.deleted.append((name, sync))


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def world():
    cd = WritableContainerd()
    a = cd.image("2024-01-02T03:04:05Z", 2, {"team": "x"})
    b = cd.image("2023-01-01T00:00:00Z", 1)
    cd.name("docker.io/library/busybox:latest", a)
    cd.name("docker.io/library/app:v1", b)
    events = EventsHub()
    svc = ImageService(cd, events)  # type: ignore[arg-type]
    users: dict[str, list[tuple[str, bool]]] = {}
    svc.containers_using = lambda image_id: users.get(image_id, [])
    return cd, svc, events, users


def image_id(svc: ImageService, ref: str) -> str:
    return run(svc.resolve(ref)).id


def actions(events: EventsHub) -> list[tuple[str, str]]:
    async def get() -> list[tuple[str, str]]:
        past, sub = events.subscribe(EventFilter({}), since_nano=0, until_nano=2**63)
        sub.close()
        return [(e.action, e.attributes.get("name", "")) for e in past]
    return run(get())


def test_tag_adds_a_name_and_refuses_digests(world):
    cd, svc, events, _ = world
    assert run(svc.tag("busybox", "mine/bb", "")) == "mine/bb:latest"
    assert run(svc.tag("busybox", "localhost:5000/x", "v2")) == "localhost:5000/x:v2"
    assert cd.records["docker.io/mine/bb:latest"].target == cd.records["docker.io/library/busybox:latest"].target
    with pytest.raises(InvalidParameter, match="invalid reference format"):
        run(svc.tag("busybox", "UPPER", "x"))
    with pytest.raises(NotFound, match="No such image: nope"):
        run(svc.tag("nope", "x", "y"))
    assert ("tag", "mine/bb:latest") in actions(events)


def test_delete_untags_while_other_names_remain(world):
    cd, svc, events, _ = world
    run(svc.tag("busybox", "other", "1"))
    assert run(svc.delete("other:1")) == [{"Untagged": "other:1"}]
    iid = image_id(svc, "busybox")
    out = run(svc.delete("busybox"))
    assert out == [{"Untagged": "busybox:latest"}, {"Deleted": iid}]
    assert cd.deleted[-1] == ("docker.io/library/busybox:latest", True)   # the last one synchronously
    assert ("delete", iid) in actions(events)


def test_delete_with_containers(world):
    cd, svc, _, users = world
    iid = image_id(svc, "app:v1")
    users[iid] = [("c" * 64, False)]
    with pytest.raises(Conflict, match=r'unable to remove repository reference "app:v1" \(must force\) - '
                                       rf"container cccccccccccc is using its referenced image {iid[7:19]}"):
        run(svc.delete("app:v1"))
    with pytest.raises(Conflict, match=r"\(must be forced\) - image is being used by stopped container cccccccccccc"):
        run(svc.delete(iid[7:19]))
    # forced: the name goes, the image stays for its container (dangling)
    assert run(svc.delete("app:v1", force=True)) == [{"Untagged": "app:v1"}]
    assert run(svc.resolve(iid)).names == []
    users[iid] = [("d" * 64, True)]
    with pytest.raises(Conflict, match=r"\(cannot be forced\) - image is being used by running container dddddddddddd"):
        run(svc.delete(iid, force=True))
    users.clear()
    assert run(svc.delete(iid)) == [{"Deleted": iid}]
    with pytest.raises(NotFound):
        run(svc.resolve(iid))


def test_delete_by_id_with_several_names_needs_force(world):
    _, svc, _, _ = world
    run(svc.tag("busybox", "second", "1"))
    iid = image_id(svc, "busybox")
    with pytest.raises(Conflict, match="image is referenced in multiple repositories"):
        run(svc.delete(iid[7:19]))
    out = run(svc.delete(iid[7:19], force=True))
    assert sorted(d.get("Untagged", "") for d in out if "Untagged" in d) == ["busybox:latest", "second:1"]
    assert out[-1] == {"Deleted": iid}


def test_history_newest_first(world):
    cd, svc, _, _ = world
    rows = run(svc.history("busybox"))
    assert rows[0]["Id"] == image_id(svc, "busybox")
    assert rows[0]["Tags"] == ["busybox:latest"]
    assert all(r["Id"] == "<missing>" for r in rows[1:])
    assert len(rows) == 2 and all(r["Size"] == 1000 for r in rows)


def test_prune_dangling_and_all(world):
    cd, svc, _, users = world
    iid = image_id(svc, "app:v1")
    assert run(svc.prune({})) == {"ImagesDeleted": None, "SpaceReclaimed": 0}
    users[image_id(svc, "busybox")] = [("e" * 64, False)]
    out = run(svc.prune({"dangling": ["false"]}))
    assert out["ImagesDeleted"] == [{"Untagged": "app:v1"}, {"Deleted": iid}]
    assert out["SpaceReclaimed"] == 1000
    assert run(svc.resolve("busybox")).names == ["busybox:latest"]
    with pytest.raises(InvalidParameter, match="invalid filter 'bogus'"):
        run(svc.prune({"bogus": ["1"]}))


def test_parse_until():
    assert _parse_until("1700000000") == 1700000000
    assert _parse_until("2024-01-02T03:04:05Z") == 1704164645
    with pytest.raises(InvalidParameter, match="until=soon"):
        _parse_until("soon")


def test_decode_registry_auth():
    doc = {"username": "u", "password": "p?>", "serveraddress": "r:5000"}
    raw = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    assert transfer.decode_registry_auth(raw) == doc
    assert transfer.decode_registry_auth("") is None
    assert transfer.decode_registry_auth(base64.urlsafe_b64encode(b"{}").decode()) is None
    with pytest.raises(InvalidParameter, match="X-Registry-Auth"):
        transfer.decode_registry_auth("!!!")
    with pytest.raises(InvalidParameter, match="expected a JSON object"):
        transfer.decode_registry_auth(base64.urlsafe_b64encode(b"[1]").decode())


def test_mirror_entries():
    assert transfer._mirror_netloc("http://127.0.0.1:5000") == ("127.0.0.1:5000", True)
    assert transfer._mirror_netloc("https://mirror.example/") == ("mirror.example", False)
    assert transfer._mirror_netloc("mirror.example:443") == ("mirror.example:443", False)


def test_pull_errors_in_dockers_words():
    from skiff.images.reference import parse_docker_ref
    from skiff.images.registry.client import RegistryError, RegistryNotFound
    named = parse_docker_ref("127.0.0.1:5000/a/b:1")
    e = transfer.pull_error(RegistryNotFound("x", status=404, errors=[("MANIFEST_UNKNOWN", "manifest unknown", None)]),
                            named)
    assert isinstance(e, NotFound)
    assert str(e) == "manifest for 127.0.0.1:5000/a/b:1 not found: manifest unknown: manifest unknown"
    e = transfer.pull_error(RegistryError("x", status=404, errors=[("NAME_UNKNOWN", "repository name not known "
                                                                    "to registry", None)]), named)
    assert str(e).startswith("pull access denied for 127.0.0.1:5000/a/b, repository does not exist")


def test_router_lists_the_image_routes():
    from skiff.daemon.api.images import ImagesRouter
    r = ImagesRouter(None)  # type: ignore[arg-type]
    got = {(m, p) for m, p, _ in r.routes()}
    for want in [("POST", "/images/{name:.+}/tag"), ("DELETE", "/images/{name:.+}"),
                 ("GET", "/images/{name:.+}/history"), ("POST", "/images/prune"), ("GET", "/images/get"),
                 ("GET", "/images/{name:.+}/get"), ("POST", "/images/create"), ("POST", "/images/{name:.+}/push"),
                 ("POST", "/auth"), ("POST", "/commit")]:
        assert want in got


def test_a_name_moved_to_another_image_leaves_the_old_one_dangling(world):
    cd, svc, _, _ = world
    old = run(svc.resolve("app:v1"))
    new_target = cd.image("2025-05-05T00:00:00Z", 1)
    run(svc.add_image(["docker.io/library/app:v1"], new_target, ""))
    assert run(svc.resolve("app:v1")).target.digest == new_target.digest
    kept = run(svc.resolve(old.id))
    assert kept.names == [] and f"moby-dangling@{old.target.digest}" in cd.records
    # an unnamed image that is already named gets no dangling record
    busy = run(svc.resolve("busybox")).target
    run(svc.add_image([], busy, ""))
    assert f"moby-dangling@{busy.digest}" not in cd.records
    # naming a dangling image removes its dangling record
    run(svc.add_image(["docker.io/library/back:1"], old.target, ""))
    assert f"moby-dangling@{old.target.digest}" not in cd.records


def test_registry_credentials_come_only_from_the_request(tmp_path, monkeypatch):
    # a CLI config file with credentials in the daemon's environment is never read
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"r:5000": {"auth": base64.b64encode(
        b"root:secret").decode()}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert transfer.authorizer(None).credentials_for("r:5000") is None
    creds = transfer.authorizer({"username": "u", "password": "p"}).credentials_for("r:5000")
    assert (creds.username, creds.password) == ("u", "p")
