"""skiffd's HTTP layer with aiohttp's test client: routing, negotiation, errors, system, events."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp.test_utils import TestClient, TestServer

from skiff.daemon.backend import ContainerCounts, NoContainers, NoImages
from skiff.daemon.config import DaemonConfig, RuntimeConfig
from skiff.daemon.server import Daemon


class FakeContainers(NoContainers):
    def counts(self) -> ContainerCounts:
        return ContainerCounts(total=3, running=1, paused=0, stopped=2)


class FakeImages(NoImages):
    def count(self) -> int:
        return 7


def _daemon(tmp_path) -> Daemon:
    cfg = DaemonConfig(data_root=str(tmp_path / "data"), exec_root=str(tmp_path / "run"))
    return Daemon(cfg.validate())


def run(tmp_path, fn, daemon=None):
    d = daemon or _daemon(tmp_path)

    async def main():
        async with TestClient(TestServer(d.app())) as client:
            return await fn(client, d)
    return asyncio.run(main())


def test_ping_get_and_head(tmp_path):
    async def fn(c, d):
        for method in ("GET", "HEAD"):
            r = await c.request(method, "/_ping")
            assert r.status == 200
            body = await r.read()
            assert body == (b"OK" if method == "GET" else b"")
            h = r.headers
            assert h["Api-Version"] == "1.47"
            assert h["Docker-Experimental"] == "false"
            assert h["Ostype"] == "linux"
            assert h["Builder-Version"] == "1"
            assert h["Cache-Control"] == "no-cache, no-store, must-revalidate"
            assert h["Pragma"] == "no-cache"
            assert h["Content-Type"] == "text/plain; charset=utf-8"
            assert h["Server"].startswith("Skiff/")
        r = await c.get("/v1.47/_ping")
        assert r.status == 200 and await r.text() == "OK"
    run(tmp_path, fn)


def test_version_fields_versioned_and_unversioned(tmp_path):
    async def fn(c, d):
        for path in ("/version", "/v1.24/version", "/v1.41/version", "/v1.47/version"):
            r = await c.get(path)
            assert r.status == 200, path
            assert r.headers["Content-Type"] == "application/json"
            assert r.headers["Api-Version"] == "1.47"
            v = await r.json()
            assert v["ApiVersion"] == "1.47" and v["MinAPIVersion"] == "1.24"
            assert v["Os"] == "linux" and v["Version"] and v["KernelVersion"]
            engine = v["Components"][0]
            assert engine["Name"] == "Engine"
            assert engine["Details"]["ApiVersion"] == "1.47"
            assert engine["Details"]["MinAPIVersion"] == "1.24"
            assert [x["Name"] for x in v["Components"]][1:] == ["skiff-containerd", "skiff-runc"]
    run(tmp_path, fn)


def test_version_too_new_and_too_old(tmp_path):
    async def fn(c, d):
        r = await c.get("/v1.99/version")
        assert r.status == 400
        assert r.headers["Content-Type"] == "application/json"
        assert await r.json() == {"message": "client version 1.99 is too new. Maximum supported API version is 1.47"}
        r = await c.get("/v1.50/info")
        assert r.status == 400
        assert (await r.json())["message"] == "client version 1.50 is too new. Maximum supported API version is 1.47"
        r = await c.head("/v1.12/_ping")
        assert r.status == 400
        r = await c.get("/v1.23/version")
        assert await r.json() == {"message": "client version 1.23 is too old. Minimum supported API version "
                                             "is 1.24, please upgrade your client to a newer version"}
    run(tmp_path, fn)


def test_unknown_routes_page_not_found(tmp_path):
    async def fn(c, d):
        for method, path in (("GET", "/nope"), ("GET", "/v1.47/nope"), ("POST", "/grpc"),
                             ("POST", "/session"), ("POST", "/v1.47/session"), ("DELETE", "/_ping"),
                             ("GET", "/v1.99/nope")):
            r = await c.request(method, path)
            assert r.status == 404, (method, path)
            assert r.headers["Content-Type"] == "application/json"
            assert await r.json() == {"message": "page not found"}
            assert "Api-Version" not in r.headers
    run(tmp_path, fn)


def test_spec_routes_not_built_answer_501(tmp_path):
    async def fn(c, d):
        r = await c.get("/v1.47/containers/json")
        assert r.status == 501
        msg = (await r.json())["message"]
        assert msg.startswith("GET /containers/json: not implemented yet")
        r = await c.get("/images/library/busybox/json")
        assert r.status == 501
        r = await c.post("/v1.47/containers/create", json={})
        assert r.status == 501
        assert r.headers["Api-Version"] == "1.47"
    run(tmp_path, fn)


def test_info_reports_config_host_and_backends(tmp_path):
    sysroot = tmp_path / "sys"
    (sysroot / "sys/fs/cgroup").mkdir(parents=True)
    (sysroot / "proc").mkdir()
    (sysroot / "proc/meminfo").write_text("MemTotal:       1024 kB\n")
    (sysroot / "etc").mkdir()
    (sysroot / "etc/os-release").write_text('PRETTY_NAME="Test OS 1"\nVERSION_ID="1"\n')
    cfg = DaemonConfig(data_root=str(tmp_path / "data"), exec_root=str(tmp_path / "run"),
                       runtimes={"mine": RuntimeConfig("mine", "/opt/mine", ["--x"])},
                       default_runtime="mine", live_restore=True, debug=True,
                       insecure_registries=["10.0.0.0/8", "reg.local:5000"],
                       registry_mirrors=["https://m.example"]).validate()
    d = Daemon(cfg, containers=FakeContainers(), images=FakeImages())
    d.system.sysroot = str(sysroot)

    async def fn(c, d):
        info = await (await c.get("/v1.47/info")).json()
        assert info["Driver"] == "overlayfs"
        assert ["driver-type", "io.containerd.snapshotter.v1"] not in info["DriverStatus"]
        assert info["CgroupDriver"] == "cgroupfs" and info["CgroupVersion"] == "1"
        assert info["DefaultRuntime"] == "mine"
        assert info["Runtimes"]["mine"] == {"path": "/opt/mine", "runtimeArgs": ["--x"]}
        assert "skiff-runc" in info["Runtimes"]
        assert (info["Containers"], info["ContainersRunning"], info["ContainersStopped"], info["Images"]) == (3, 1, 2, 7)
        assert info["MemTotal"] == 1024 * 1024 and info["OperatingSystem"] == "Test OS 1"
        assert info["LiveRestoreEnabled"] is True and info["Debug"] is True
        assert info["DockerRootDir"] == str(tmp_path / "data")
        assert info["Swarm"]["LocalNodeState"] == "inactive"
        assert info["RegistryConfig"]["InsecureRegistryCIDRs"] == ["10.0.0.0/8"]
        assert info["RegistryConfig"]["IndexConfigs"]["reg.local:5000"]["Secure"] is False
        assert info["RegistryConfig"]["Mirrors"] == ["https://m.example"]
        first_id = info["ID"]
        (sysroot / "sys/fs/cgroup/cgroup.controllers").write_text("cpu\n")
        info = await (await c.get("/info")).json()
        assert info["CgroupVersion"] == "2" and info["ID"] == first_id
    run(tmp_path, fn, d)


def _lines(body: bytes) -> list[dict]:
    return [json.loads(x) for x in body.decode().splitlines() if x]


def test_events_history_since_until(tmp_path):
    async def fn(c, d):
        base = time.time_ns() - 10_000_000_000
        d.events.publish("container", "create", "a" * 64, {"image": "busybox", "name": "one"}, time_nano=base)
        d.events.publish("container", "start", "a" * 64, {"image": "busybox", "name": "one"}, time_nano=base + 1_000_000_000)
        d.events.publish("network", "create", "n1", {"name": "net", "type": "bridge"}, time_nano=base + 2_000_000_000)
        until = f"{(base + 1_500_000_000) // 10**9}.{(base + 1_500_000_000) % 10**9:09d}"
        r = await c.get("/v1.47/events", params={"since": "0", "until": until})
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        evs = _lines(await r.read())
        assert [e["Action"] for e in evs] == ["create", "start"]
        e = evs[0]
        assert e["Type"] == "container" and e["status"] == "create" and e["id"] == "a" * 64
        assert e["from"] == "busybox" and e["Actor"]["Attributes"]["name"] == "one"
        assert e["scope"] == "local" and e["timeNano"] == base and e["time"] == base // 10**9
        # filters: map-of-sets and list forms
        now = str(time.time())
        r = await c.get("/events", params={"since": "0", "until": now, "filters": json.dumps({"type": {"network": True}})})
        evs = _lines(await r.read())
        assert [(e["Type"], e["Action"]) for e in evs] == [("network", "create")]
        assert "status" not in evs[0]
        r = await c.get("/events", params={"since": "0", "until": now,
                                           "filters": json.dumps({"container": ["one"], "event": ["start"]})})
        assert [e["Action"] for e in _lines(await r.read())] == ["start"]
        r = await c.get("/events", params={"since": "0", "until": now,
                                           "filters": json.dumps({"container": ["aaaa"]})})
        assert len(_lines(await r.read())) == 2
    run(tmp_path, fn)


def test_events_live_stream_ends_at_until(tmp_path):
    async def fn(c, d):
        until = time.time() + 1.0
        r = await c.get("/events", params={"until": f"{until:.9f}",
                                           "filters": json.dumps({"type": {"container": True}})})
        assert r.status == 200   # headers arrive before any event
        for _ in range(100):
            if d.events.subscriber_count() == 1:
                break
            await asyncio.sleep(0.01)
        d.events.publish("image", "pull", "busybox:latest", {"name": "busybox:latest"})
        d.events.publish("container", "die", "c1", {"exitCode": "0", "image": "busybox"})
        t0 = time.monotonic()
        evs = _lines(await r.read())
        assert [(e["Type"], e["Action"]) for e in evs] == [("container", "die")]
        assert time.monotonic() - t0 < 3
        for _ in range(100):
            if d.events.subscriber_count() == 0:
                break
            await asyncio.sleep(0.01)
        assert d.events.subscriber_count() == 0
    run(tmp_path, fn)


def test_events_published_from_another_thread_and_disconnect(tmp_path):
    import threading

    async def fn(c, d):
        r = await c.get("/events")
        for _ in range(100):
            if d.events.subscriber_count() == 1:
                break
            await asyncio.sleep(0.01)
        t = threading.Thread(target=d.events.publish, args=("volume", "create", "v1", {"driver": "local"}))
        t.start()
        t.join()
        line = await asyncio.wait_for(r.content.readline(), 5)
        assert json.loads(line)["Actor"] == {"ID": "v1", "Attributes": {"driver": "local"}}
        r.close()   # the client goes away: the subscription must go too
        for _ in range(200):
            if d.events.subscriber_count() == 0:
                break
            await asyncio.sleep(0.01)
        assert d.events.subscriber_count() == 0
    run(tmp_path, fn)


def test_events_bad_parameters(tmp_path):
    async def fn(c, d):
        r = await c.get("/events", params={"filters": json.dumps({"colour": ["red"]})})
        assert r.status == 400 and await r.json() == {"message": "invalid filter 'colour'"}
        r = await c.get("/events", params={"filters": "{nope"})
        assert r.status == 400 and (await r.json())["message"].startswith("invalid filter")
        r = await c.get("/events", params={"filters": json.dumps({"type": ["bogus"]})})
        assert r.status == 400
        r = await c.get("/events", params={"since": "20", "until": "10"})
        assert r.status == 400 and "cannot be after until" in (await r.json())["message"]
        r = await c.get("/events", params={"since": "yesterday-ish"})
        assert r.status == 400 and (await r.json())["message"].startswith("since: cannot parse")
    run(tmp_path, fn)


def test_events_hub_close_ends_streams(tmp_path):
    async def fn(c, d):
        r = await c.get("/events")
        for _ in range(100):
            if d.events.subscriber_count() == 1:
                break
            await asyncio.sleep(0.01)
        d.events.close()
        assert await asyncio.wait_for(r.read(), 5) == b""
    run(tmp_path, fn)
