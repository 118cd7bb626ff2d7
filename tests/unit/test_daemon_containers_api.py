"""The containers router + backend over a fake containerd (no root): create/start/wait/stop/kill/
rm, exit handling from events, --rm also after a failed start, restart policy, live restore.

The fake containerd plays the shim: at Tasks.Create it opens the FIFOs for writing, and a task
"exits" when the test (or a kill) says so: it writes the output, closes the FIFOs and sends a
``/tasks/exit`` event on the subscription."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass, field

from aiohttp.test_utils import TestClient, TestServer

from skiff.daemon.api.errors import NotFound
from skiff.daemon.config import DaemonConfig
from skiff.daemon.containerd.client import Envelope, Mount, TaskInfo
from skiff.daemon.containers.backend import ContainerService
from skiff.daemon.server import Daemon


@dataclass
class FakeImage:
    id: str = "sha256:" + "e" * 64
    names: list[str] = field(default_factory=lambda: ["busybox:latest"])
    config: dict = field(default_factory=lambda: {"config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]}})
    chain_id: str = "sha256:" + "c" * 64
    size: int = 1000


class FakeImages:
    def __init__(self) -> None:
        self.image = FakeImage()

    async def resolve(self, ref: str) -> FakeImage:
        if ref in ("busybox", "busybox:latest", self.image.id):
            return self.image
        raise NotFound(f"No such image: {ref}")

    async def ensure_unpacked(self, img: FakeImage) -> str:
        return img.chain_id


class Task:
    def __init__(self, cid: str, fds: list[int]) -> None:
        self.cid = cid
        self.fds = fds
        self.status = "created"
        self.pid = 4242
        self.exit_status = 0


class FakeContainerd:
    namespace = "skiff"

    def __init__(self) -> None:
        self.containers: dict[str, dict] = {}
        self.snapshots: dict[str, str] = {}
        self.tasks: dict[str, Task] = {}
        self.events: asyncio.Queue[Envelope] = asyncio.Queue()
        self.calls: list[tuple] = []
        self.fail_create: str = ""
        self.ignore_signals: set[int] = set()
        self.output: dict[str, bytes] = {}

    async def subscribe(self, filters):
        while True:
            yield await self.events.get()

    image_events_live = False
    images_changes = 0

    def images_changed(self) -> None:
        self.images_changes += 1

    async def list_tasks(self):
        return [TaskInfo(t.cid, t.pid, t.status, t.exit_status) for t in self.tasks.values()]

    @contextlib.asynccontextmanager
    async def temporary_lease(self):
        self.calls.append(("lease", "create"))
        yield "lease-1"
        self.calls.append(("lease", "delete"))

    async def prepare_snapshot(self, key, parent, snapshotter="overlayfs", lease=""):
        assert lease == "lease-1", "a new container's snapshot is prepared under a lease"
        self.snapshots[key] = parent
        return [Mount("bind", "/nonexistent-rootfs", ["rbind"])]

    async def snapshot_mounts(self, key, snapshotter="overlayfs"):
        return [Mount("bind", "/nonexistent-rootfs", ["rbind"])]

    async def remove_snapshot(self, key, snapshotter="overlayfs"):
        if key not in self.snapshots:
            raise NotFound(f"snapshot {key}")
        del self.snapshots[key]

    async def snapshot_usage(self, key, snapshotter="overlayfs"):
        return 4096, 1

    async def create_container(self, id, spec, runtime, runtime_binary="", labels=None, image="",
                               snapshot_key="", snapshotter="overlayfs"):
        self.containers[id] = {"spec": spec, "runtime": runtime, "binary": runtime_binary}

    async def delete_container(self, id):
        if id not in self.containers:
            raise NotFound(f"container {id}")
        del self.containers[id]

    async def create_task(self, id, rootfs, stdin, stdout, stderr, terminal):
        self.calls.append(("create_task", id, stdin, stdout, stderr, terminal))
        if self.fail_create:
            from skiff.daemon.api.errors import ApiError
            raise ApiError(self.fail_create)
        fds = [os.open(p, os.O_WRONLY | os.O_NONBLOCK) for p in (stdout, stderr) if p]
        self.tasks[id] = Task(id, fds)
        return 4242

    async def start(self, id, exec_id=""):
        self.tasks[id].status = "running"
        out = self.output.get(id)
        if out:
            os.write(self.tasks[id].fds[0], out)
        return 4242

    def exit(self, id: str, status: int) -> None:
        t = self.tasks[id]
        t.status = "stopped"
        t.exit_status = status
        for fd in t.fds:
            os.close(fd)
        t.fds = []
        self.events.put_nowait(Envelope(0, "skiff", "/tasks/exit",
                                        {"container_id": id, "id": id, "exit_status": status,
                                         "exited_at": 0}))

    async def kill(self, id, signal_, all=False, exec_id=""):
        self.calls.append(("kill", id, signal_))
        t = self.tasks.get(id)
        if t is None or t.status == "stopped":
            raise NotFound(f"task {id}: not found")
        if signal_ not in self.ignore_signals:
            self.exit(id, 128 + signal_)

    async def delete_task(self, id):
        t = self.tasks.pop(id, None)
        if t is None:
            raise NotFound(f"task {id}")
        return t.exit_status, 1

    async def pause(self, id):
        self.tasks[id].status = "paused"

    async def resume(self, id):
        self.tasks[id].status = "running"

    async def resize(self, id, w, h, exec_id=""):
        self.calls.append(("resize", id, w, h))

    async def close_stdin(self, id, exec_id=""):
        self.calls.append(("close_stdin", id))


def _cfg(tmp_path) -> DaemonConfig:
    return DaemonConfig(data_root=str(tmp_path / "data"), exec_root=str(tmp_path / "run")).validate()


async def _service(tmp_path, cd: FakeContainerd | None = None) -> tuple[Daemon, ContainerService, FakeContainerd]:
    cfg = _cfg(tmp_path)
    cd = cd or FakeContainerd()
    d = Daemon(cfg)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\n")
    svc = ContainerService(cfg, cd, FakeImages(), d.events, host_resolv_conf=str(resolv))
    svc.load()
    await svc.start_monitor()
    await svc.reconcile()
    d.container_service = svc
    d.containers = svc
    d.system.containers = svc
    return d, svc, cd


def run(tmp_path, fn):
    async def main():
        d, svc, cd = await _service(tmp_path)
        try:
            async with TestClient(TestServer(d.app())) as client:
                return await fn(client, svc, cd)
        finally:
            await svc.shutdown()
    return asyncio.run(main())


async def _create(c, name="", **config) -> str:
    body = {"Image": "busybox", **config}
    r = await c.post("/v1.47/containers/create" + (f"?name={name}" if name else ""), json=body)
    assert r.status == 201, await r.text()
    return (await r.json())["Id"]


async def _inspect(c, ref) -> dict:
    r = await c.get(f"/containers/{ref}/json")
    assert r.status == 200, await r.text()
    return await r.json()


async def _until(pred, what: str) -> None:
    for _ in range(400):
        if await pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_create_inspect_list_and_files(tmp_path):
    async def fn(c, svc, cd):
        cid = await _create(c, "web", Cmd=["echo", "hi"], Labels={"a": "b"})
        i = await _inspect(c, "web")
        assert i["Id"] == cid and i["Name"] == "/web" and i["State"]["Status"] == "created"
        assert i["Path"] == "echo" and i["Args"] == ["hi"] and i["Config"]["Env"] == ["PATH=/bin"]
        assert i["Config"]["Hostname"] == cid[:12] and i["HostConfig"]["LogConfig"]["Type"] == "json-file"
        d = os.path.join(svc.root, cid)
        assert open(os.path.join(d, "hostname")).read() == cid[:12] + "\n"
        assert "nameserver" not in open(os.path.join(d, "resolv.conf")).read().replace("no nameserver", "")
        assert json.load(open(os.path.join(d, "config.v2.json")))["name"] == "/web"
        spec = cd.containers[cid]["spec"]
        assert spec["process"]["args"] == ["echo", "hi"] and cd.containers[cid]["runtime"] == "skiff-runc"
        assert cd.snapshots[cid] == "sha256:" + "c" * 64
        r = await c.get("/containers/json")
        assert await r.json() == []
        r = await c.get("/containers/json?all=1&size=1&filters=" + json.dumps({"label": ["a=b"]}))
        [s] = await r.json()
        assert s["Id"] == cid and s["Status"] == "Created" and s["SizeRw"] == 4096 and s["SizeRootFs"] == 5096
        r = await c.post("/containers/create?name=web", json={"Image": "busybox"})
        assert r.status == 409 and "is already in use by container" in (await r.json())["message"]
        r = await c.post("/containers/create", json={"Image": "busybox:nope"})
        assert r.status == 404 and (await r.json())["message"] == "No such image: busybox:nope"
        r = await c.post("/containers/create", json={"Image": "busybox", "HostConfig": {"Runtime": "nope"}})
        assert r.status == 400 and "Unknown runtime specified nope" in (await r.json())["message"]
        r = await c.post("/containers/create", json={"Image": "busybox", "HostConfig": {
            "AutoRemove": True, "RestartPolicy": {"Name": "always"}}})
        assert r.status == 400 and "cannot specify both --restart and --rm" in (await r.json())["message"]
        r = await c.get("/containers/nope/json")
        assert r.status == 404 and (await r.json())["message"] == "No such container: nope"
    run(tmp_path, fn)


def test_wait_start_output_exit_and_events(tmp_path):
    async def fn(c, svc, cd):
        cid = await _create(c, "tt", Cmd=["echo", "hi"])
        cd.output[cid] = b"hi\n"
        r = await c.post(f"/containers/{cid}/wait?condition=next-exit")
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"   # headers at once
        body = asyncio.ensure_future(r.read())
        r2 = await c.post(f"/containers/{cid}/start")
        assert r2.status == 204
        r2 = await c.post(f"/containers/{cid}/start")
        assert r2.status == 304
        i = await _inspect(c, cid)
        assert i["State"]["Running"] and i["State"]["Pid"] == 4242
        cd.exit(cid, 3)
        assert json.loads(await body) == {"StatusCode": 3, "Error": None}
        i = await _inspect(c, cid)
        assert (i["State"]["Status"], i["State"]["ExitCode"], i["State"]["Pid"]) == ("exited", 3, 0)
        assert ("kill", cid, 9) not in cd.calls and cid not in cd.tasks      # the task was deleted
        r = await c.post(f"/containers/{cid}/wait")           # not-running: at once
        assert await r.json() == {"StatusCode": 3, "Error": None}
        log = open(i["LogPath"]).read().splitlines()
        assert [json.loads(x)["log"] for x in log] == ["hi\n"]
        r = await c.post(f"/containers/{cid}/wait?condition=bogus")
        assert r.status == 400 and (await r.json())["message"] == 'invalid condition: "bogus"'
        r = await c.post(f"/containers/{cid}/kill")
        assert r.status == 409 and "is not running" in (await r.json())["message"]
        actions = [e.action for e in svc.events._history if e.actor_id == cid]
        assert actions == ["create", "start", "die"]
        r = await c.delete(f"/containers/{cid}")
        assert r.status == 204 and not os.path.exists(os.path.join(svc.root, cid))
        assert cid not in cd.containers and cid not in cd.snapshots
        assert [e.action for e in svc.events._history if e.actor_id == cid][-1] == "destroy"
    run(tmp_path, fn)


def test_start_failure_maps_exit_code_and_autoremoves(tmp_path):
    async def fn(c, svc, cd):
        cid = await _create(c, "", Cmd=["nosuch"], HostConfig={"AutoRemove": True})
        r = await c.post(f"/containers/{cid}/wait?condition=removed")
        body = asyncio.ensure_future(r.read())
        cd.fail_create = 'OCI runtime create failed: exec: "nosuch": executable file not found in $PATH'
        r = await c.post(f"/containers/{cid}/start")
        assert r.status == 400
        msg = (await r.json())["message"]
        assert msg.startswith("failed to create task for container: ") and "executable file not found" in msg
        assert json.loads(await body) == {"StatusCode": 127, "Error": None}
        r = await c.get(f"/containers/{cid}/json")
        assert r.status == 404
        cd.fail_create = "cgroup exploded"
        cid = await _create(c, "keep", Cmd=["x"])
        r = await c.post(f"/containers/{cid}/start")
        assert r.status == 500
        st = (await _inspect(c, cid))["State"]
        assert (st["Status"], st["ExitCode"]) == ("created", 128) and "cgroup exploded" in st["Error"]
    run(tmp_path, fn)


def test_stop_signal_timeout_kill_and_rm_force(tmp_path):
    async def fn(c, svc, cd):
        cid = await _create(c, "ss", Cmd=["sleep", "300"], StopSignal="SIGUSR1")
        await c.post(f"/containers/{cid}/start")
        cd.ignore_signals = {int(signal.SIGUSR1)}
        r = await c.post(f"/containers/{cid}/stop?t=0")
        assert r.status == 204
        assert [x for x in cd.calls if x[0] == "kill"] == [("kill", cid, signal.SIGUSR1), ("kill", cid, 9)]
        st = (await _inspect(c, cid))["State"]
        assert (st["Status"], st["ExitCode"]) == ("exited", 137)
        r = await c.post(f"/containers/{cid}/stop")
        assert r.status == 304
        await c.post(f"/containers/{cid}/start")
        r = await c.delete(f"/containers/{cid}")
        assert r.status == 409 and "container is running: stop the container before removing" in \
            (await r.json())["message"]
        r = await c.post(f"/containers/{cid}/pause")
        assert r.status == 204 and (await _inspect(c, cid))["State"]["Status"] == "paused"
        r = await c.post(f"/containers/{cid}/pause")
        assert r.status == 409
        r = await c.delete(f"/containers/{cid}?force=1")
        assert r.status == 204
        r = await c.get(f"/containers/{cid}/json")
        assert r.status == 404
        actions = [e.action for e in svc.events._history if e.actor_id == cid]
        assert actions[:5] == ["create", "start", "kill", "kill", "die"] and actions[5] == "stop"
        assert actions[-3:] == ["kill", "die", "destroy"] and "pause" in actions
    run(tmp_path, fn)


def test_rename_kill_signal_resize_prune(tmp_path):
    async def fn(c, svc, cd):
        cid = await _create(c, "aa", Cmd=["sleep", "1"], Tty=True)
        await c.post(f"/containers/{cid}/start")
        r = await c.post(f"/containers/{cid}/resize?h=30&w=100")
        assert r.status == 200 and ("resize", cid, 100, 30) in cd.calls
        r = await c.post(f"/containers/{cid}/rename?name=bb")
        assert r.status == 204 and (await _inspect(c, "bb"))["Name"] == "/bb"
        assert (await c.get("/containers/aa/json")).status == 404
        r = await c.post(f"/containers/{cid}/kill?signal=TERM")
        assert r.status == 204 and ("kill", cid, 15) in cd.calls
        r = await c.post(f"/containers/{cid}/wait")
        assert (await r.json())["StatusCode"] == 143
        r = await c.post(f"/containers/{cid}/kill?signal=NOPE")
        assert r.status == 400
        r = await c.post("/containers/prune")
        assert await r.json() == {"ContainersDeleted": [cid], "SpaceReclaimed": 4096}
    run(tmp_path, fn)


def test_restart_policy_on_failure_restarts_with_count(tmp_path):
    async def fn(c, svc, cd):
        cid = await _create(c, "rr", Cmd=["false"], HostConfig={"RestartPolicy": {
            "Name": "on-failure", "MaximumRetryCount": 2}})
        await c.post(f"/containers/{cid}/start")
        for n in (1, 2):
            cd.exit(cid, 1)

            async def restarted(n=n):
                return svc.get(cid).restart_count == n and svc.get(cid).state.status == "running"
            await _until(restarted, f"restart {n}")
        cd.exit(cid, 1)

        async def gave_up():
            return svc.get(cid).state.status == "exited"
        await _until(gave_up, "the policy to give up")
        i = await _inspect(c, cid)
        assert (i["RestartCount"], i["State"]["ExitCode"]) == (2, 1)
    run(tmp_path, fn)


def test_live_restore_adopts_running_and_reaps_exited(tmp_path):
    async def main():
        d, svc, cd = await _service(tmp_path)
        async with TestClient(TestServer(d.app())) as c:
            a = await _create(c, "aa", Cmd=["sleep", "300"])
            b = await _create(c, "bb", Cmd=["sleep", "300"])
            await c.post(f"/containers/{a}/start")
            await c.post(f"/containers/{b}/start")
        await svc.shutdown()
        # while skiffd is away, b exits
        t = cd.tasks[b]
        t.status, t.exit_status = "stopped", 5
        for fd in t.fds:
            os.close(fd)
        t.fds = []
        d2, svc2, _ = await _service(tmp_path, cd)
        try:
            assert svc2.get("aa").state.status == "running" and svc2.get("aa").state.pid == 4242
            sb = svc2.get("bb").state
            assert (sb.status, sb.exit_code) == ("exited", 5) and b not in cd.tasks
            cd.exit(a, 0)

            async def a_exited():
                return svc2.get("aa").state.status == "exited"
            await _until(a_exited, "a's exit after the restore")
        finally:
            await svc2.shutdown()
            for t in cd.tasks.values():
                for fd in t.fds:
                    os.close(fd)
    asyncio.run(main())
