"""skiffd's volume store and service (issue 8): metadata, validation, mount points of
containers (precedence, anonymous volumes, VolumesFrom, -v creating host dirs), copy-up
(symlink-safe), references and 409, release of anonymous volumes, list filters, prune."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from skiff.daemon.api.errors import Conflict, InvalidParameter, NotFound
from skiff.daemon.volumes.service import MOUNTPOINTS_FILE, VolumeService
from skiff.daemon.volumes.store import ANON_LABEL, VolumeStore, parse_mount_options


@pytest.fixture
def image(tmp_path):
    """A one-layer image root: /etc/passwd, /etc/sub/x, a symlink leading out (/evil -> ../../..)
    and /etc2 -> /etc."""
    root = tmp_path / "layer"
    (root / "etc" / "sub").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "sub" / "x").write_text("x")
    os.chmod(root / "etc" / "sub", 0o700)
    (root / "etc" / "link").symlink_to("/etc/passwd")
    (root / "evil").symlink_to("../../../../../../../..")
    (root / "etc2").symlink_to("/etc")
    return str(root)


@pytest.fixture
def svc(tmp_path):
    ids = {"src": "a" * 64, "self": "c" * 64}

    def resolve(ref: str) -> str:
        if ref not in ids:
            raise NotFound(f"No such container: {ref}")
        return ids[ref]
    s = VolumeService(str(tmp_path / "data"), resolve)
    s.load()
    return s


def prepare(svc, cid, config=None, host=None, layers=()):
    return asyncio.run(svc.prepare(cid, config or {}, host or {}, list(layers)))


def test_store_create_persists_and_reloads(tmp_path):
    st = VolumeStore(str(tmp_path / "v"))
    st.load()
    v, created = st.create("data1", labels={"a": "b"})
    assert created and os.path.isdir(st.data_path("data1"))
    again, created2 = st.create("data1")
    assert again is v and not created2
    st2 = VolumeStore(str(tmp_path / "v"))
    assert st2.load() == []
    got = st2.inspect(st2.get("data1"))
    assert got["Name"] == "data1" and got["Labels"] == {"a": "b"} and got["Driver"] == "local"
    assert got["Mountpoint"] == st.data_path("data1") and got["Options"] is None


@pytest.mark.parametrize("kw, msg", [
    ({"name": "a"}, "includes invalid characters"),
    ({"name": "bad/name"}, "includes invalid characters"),
    ({"name": "ok1", "driver": "nfs"}, "plugin \"nfs\" not found"),
    ({"name": "ok1", "options": {"size": "1g"}}, 'invalid option key: "size"'),
    ({"name": "ok1", "options": {"o": "size=1m"}}, 'missing required option: "type"'),
    ({"name": "ok1", "options": {"type": "none", "o": "bind", "device": "rel"}}, "absolute device"),
])
def test_store_create_refuses(tmp_path, kw, msg):
    st = VolumeStore(str(tmp_path / "v"))
    with pytest.raises((InvalidParameter, NotFound), match=msg):
        st.create(kw.pop("name"), **kw)
    assert not os.path.exists(tmp_path / "v" / "ok1")


def test_parse_mount_options():
    assert parse_mount_options("size=1m,ro,uid=5") == (1, "size=1m,uid=5")
    assert parse_mount_options("bind") == (4096, "")


def test_named_and_anonymous_volumes_and_copy_up(svc, image):
    cid = "b" * 64
    vm = prepare(svc, cid, {"Volumes": {"/etc": {}, "/anon": {}}},
                 {"Binds": ["named1:/etc2:ro"]}, [image])
    by_dst = {d: (src, ro) for d, src, ro in vm}
    assert set(by_dst) == {"/etc", "/anon", "/etc2"}
    assert by_dst["/etc2"] == (svc.store.data_path("named1"), True)
    # copy-up of /etc2 followed the image's symlink inside the image: its /etc
    assert open(os.path.join(by_dst["/etc2"][0], "passwd")).read().startswith("root:x:0:0")
    assert os.readlink(os.path.join(by_dst["/etc2"][0], "link")) == "/etc/passwd"
    assert os.stat(os.path.join(by_dst["/etc2"][0], "sub")).st_mode & 0o777 == 0o700
    anon = [p for p in svc.points[cid] if p["Destination"] == "/anon"][0]
    assert len(anon["Name"]) == 64 and svc.store.get(anon["Name"]).anonymous
    assert svc.store.get(anon["Name"]).labels == {ANON_LABEL: ""}
    with open(os.path.join(svc.containers_root, cid, MOUNTPOINTS_FILE)) as f:
        assert json.load(f) == svc.points[cid]
    mounts = {m["Destination"]: m for m in svc.mounts_of(cid)}
    assert mounts["/etc2"] == {"Type": "volume", "Name": "named1", "Source": by_dst["/etc2"][0],
                               "Destination": "/etc2", "Driver": "local", "Mode": "ro",
                               "RW": False, "Propagation": ""}


def test_copy_up_never_leaves_the_image(svc, image, tmp_path):
    # /evil -> ../../.. resolves to the image root itself, not the host's /
    vm = prepare(svc, "b" * 64, {"Volumes": {"/evil": {}}}, {}, [image])
    got = sorted(os.listdir(vm[0][1]))
    assert got == sorted(os.listdir(image))


def test_nocopy_and_non_empty_volume(svc, image):
    prepare(svc, "b" * 64, {}, {"Binds": ["v1:/etc:nocopy"]}, [image])
    assert os.listdir(svc.store.data_path("v1")) == []
    with open(os.path.join(svc.store.data_path("v1"), "mine"), "w") as f:
        f.write("1")
    prepare(svc, "d" * 64, {}, {"Binds": ["v1:/etc"]}, [image])
    assert os.listdir(svc.store.data_path("v1")) == ["mine"]


def test_bind_precedence_and_host_dir_creation(svc, image, tmp_path):
    host_dir = str(tmp_path / "made" / "here")
    vm = prepare(svc, "b" * 64, {"Volumes": {"/data": {}}}, {"Binds": [f"{host_dir}:/data"]}, [image])
    assert os.path.isdir(host_dir)
    assert vm == []           # the bind is specgen's; no anonymous volume under it
    assert svc.store.volumes == {}
    assert svc.mounts_of("b" * 64) == [{"Type": "bind", "Source": host_dir, "Destination": "/data",
                                        "Mode": "", "RW": True, "Propagation": "rprivate"}]


def test_volumes_from_and_in_use(svc, image, tmp_path):
    src = "a" * 64
    prepare(svc, src, {}, {"Binds": ["shared:/data", f"{tmp_path}:/host:ro"], "Tmpfs": {"/t": ""}},
            [image])
    vm = prepare(svc, "b" * 64, {}, {"VolumesFrom": ["src:ro"]}, [image])
    assert sorted(vm) == [("/data", svc.store.data_path("shared"), True), ("/host", str(tmp_path), True)]
    vm = prepare(svc, "e" * 64, {}, {"VolumesFrom": ["src"]}, [image])
    assert sorted(vm) == [("/data", svc.store.data_path("shared"), False), ("/host", str(tmp_path), True)]
    assert svc.users("shared") == sorted([src, "b" * 64, "e" * 64])
    with pytest.raises(Conflict, match=r"remove shared: volume is in use - \[aaaa"):
        svc.remove("shared")
    with pytest.raises(Conflict):
        svc.remove("shared", force=True)
    with pytest.raises(InvalidParameter, match="VolumesFrom: No such container: nope"):
        prepare(svc, "f" * 64, {}, {"VolumesFrom": ["nope"]})
    with pytest.raises(InvalidParameter, match='plugin "nfs" not found'):
        prepare(svc, "f" * 64, {}, {"Mounts": [{"Type": "volume", "Source": "x1", "Target": "/x",
                                                "VolumeOptions": {"DriverConfig": {"Name": "nfs"}}}]})
    with pytest.raises(InvalidParameter, match="invalid mode for volumes-from: rx"):
        prepare(svc, "f" * 64, {}, {"VolumesFrom": ["src:rx"]})


def test_release_removes_only_unused_anonymous(svc, image):
    a, b = "a" * 64, "b" * 64
    prepare(svc, a, {"Volumes": {"/x": {}}}, {"Binds": ["keepme:/k"]}, [image])
    anon = [p["Name"] for p in svc.points[a] if p["Destination"] == "/x"][0]
    prepare(svc, b, {}, {"VolumesFrom": ["src"]}, [image])   # "src" resolves to a
    asyncio.run(svc.release(a, True))
    assert anon in svc.store.volumes                 # b still uses it
    asyncio.run(svc.release(b, True))
    assert anon not in svc.store.volumes and "keepme" in svc.store.volumes
    svc.remove("keepme")
    with pytest.raises(NotFound, match="get keepme: no such volume"):
        svc.inspect("keepme")
    svc.remove("keepme", force=True)                 # force: a missing volume is fine


def test_list_filters_and_prune(svc, image):
    svc.create({"Name": "lab1", "Labels": {"tier": "db"}})
    svc.create({"Name": "free1"})
    anon = svc.create({})["Name"]
    prepare(svc, "a" * 64, {}, {"Binds": ["lab1:/d"]}, [image])

    def names(**f):
        return [v["Name"] for v in svc.list_volumes({k.replace("_", "!"): x for k, x in f.items()})]
    assert names(label=["tier=db"]) == ["lab1"]
    assert names(label=["tier"]) == ["lab1"]
    assert "lab1" not in names(label_=["tier"])
    assert sorted(names(dangling=["true"])) == sorted([anon, "free1"])
    assert names(dangling=["false"]) == ["lab1"]
    assert names(name=["free"]) == ["free1"]
    assert names(driver=["other"]) == []
    with pytest.raises(InvalidParameter):
        names(dangling=["maybe"])
    out = svc.prune({}, all_volumes=False)
    assert out["VolumesDeleted"] == [anon]
    out = svc.prune({}, all_volumes=True)
    assert out["VolumesDeleted"] == ["free1"]          # lab1 is in use
    du = svc.disk_usage()
    assert [(d["Name"], d["UsageData"]["RefCount"]) for d in du] == [("lab1", 1)]


def test_reload_keeps_references(svc, image, tmp_path):
    prepare(svc, "a" * 64, {}, {"Binds": ["keep2:/d"]}, [image])
    s2 = VolumeService(svc.data_root)
    assert s2.load() == []
    assert s2.users("keep2") == ["a" * 64]
    with pytest.raises(Conflict):
        s2.remove("keep2")


def test_failed_prepare_removes_what_it_made(svc, image):
    with pytest.raises(InvalidParameter):
        prepare(svc, "b" * 64, {"Volumes": {"/x": {}}},
                {"Binds": ["new1:/n", "new2:/m"], "Mounts": [
                    {"Type": "volume", "Source": "zz1", "Target": "/z",
                     "VolumeOptions": {"DriverConfig": {"Options": {"bogus": "1"}}}}]}, [image])
    assert svc.store.volumes == {} and "b" * 64 not in svc.points


@pytest.mark.parametrize("dest", ["/", "rel", "//"])
def test_bad_image_volume_paths_are_refused(svc, image, dest):
    with pytest.raises(InvalidParameter, match="must be an absolute path other than /"):
        prepare(svc, "b" * 64, {"Volumes": {dest: {}}}, {}, [image])
    assert svc.store.volumes == {}


def test_volume_events(tmp_path, image):
    class Events:
        def __init__(self):
            self.seen = []

        def publish(self, type, action, actor, attrs):
            self.seen.append((type, action, actor, attrs))
    ev = Events()
    svc = VolumeService(str(tmp_path / "data"), events=ev)
    svc.load()
    cid = "b" * 64
    prepare(svc, cid, {}, {"Binds": ["ev1:/d:ro", "/anon"]}, [image])
    anon = [p["Name"] for p in svc.points[cid] if p["Destination"] == "/anon"][0]
    asyncio.run(svc.started(cid))
    asyncio.run(svc.stopped(cid))
    asyncio.run(svc.release(cid, True))
    svc.remove("ev1")
    got = [(a, n, attrs.get("destination"), attrs.get("read/write")) for _t, a, n, attrs in ev.seen]
    assert got == [("create", "ev1", None, None), ("create", anon, None, None),
                   ("mount", anon, "/anon", "true"), ("mount", "ev1", "/d", "false"),
                   ("unmount", anon, None, None), ("unmount", "ev1", None, None),
                   ("destroy", anon, None, None), ("destroy", "ev1", None, None)]
    assert all(t == "volume" and attrs["driver"] == "local" for t, _a, _n, attrs in ev.seen)
