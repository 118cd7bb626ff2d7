"""skiffd's containerd client, supervisor and image service against a real skiff-containerd
started by the supervisor: the built-in busybox loaded and unpacked, image lookup and listing,
``docker load``, the images routes over HTTP, and a task run end to end through the client
(container record, snapshot, FIFOs, create/start/wait/delete, the /tasks/exit event), also
with a runtime named by path (``containerd.runc.v1.Options.binary_name``)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from skiff.daemon.api.errors import NotFound
from skiff.daemon.api.images import ImagesRouter
from skiff.daemon.api.server import make_app
from skiff.daemon.config import DaemonConfig
from skiff.daemon.containerd import supervisor
from skiff.daemon.containerd.client import Containerd, Envelope
from skiff.daemon.events import EventFilter, EventsHub
from skiff.daemon.images.service import ImageService
from skiff.oci.defaults import default_config

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
BUSYBOX_TAR = REPO / "build" / "images" / "busybox.tar"
DEADLINE = 60.0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while _alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} still alive {DEADLINE}s after SIGTERM")
        time.sleep(0.05)


async def _cleanup_containerd_objects(address: str) -> None:
    cd = await Containerd.connect(address)
    try:
        for t in await cd.list_tasks():
            if t.status != "stopped":
                await cd.kill(t.id, signal.SIGKILL, all=True)
                await cd.wait(t.id)
            await cd.delete_task(t.id)
        for cid in await cd.list_containers():
            await cd.delete_container(cid)
    finally:
        await cd.close()


def stop_containerd(cfg: DaemonConfig, pid: int) -> None:
    """Delete what a failed test left, then SIGTERM skiff-containerd by pid and wait for it."""
    try:
        asyncio.run(_cleanup_containerd_objects(cfg.containerd_address()))
    finally:
        os.kill(pid, signal.SIGTERM)
        proc = supervisor._spawned.pop(cfg.containerd_address(), None)
        if proc is not None and proc.pid == pid:
            assert proc.wait(DEADLINE) == 0
        else:
            _wait_gone(pid)


def make_cfg(state_dirs) -> DaemonConfig:
    return DaemonConfig(data_root=str(state_dirs.data), exec_root=str(state_dirs.short / "exec")).validate()


@pytest.fixture
def supervised(state_dirs) -> Iterator[tuple[DaemonConfig, str, int]]:
    cfg = make_cfg(state_dirs)
    address = supervisor.ensure_containerd_sync(cfg)
    pid = supervisor.containerd_pid(cfg)
    assert pid is not None and _alive(pid)
    try:
        yield cfg, address, pid
    finally:
        stop_containerd(cfg, pid)


def test_supervisor_starts_detached_containerd_and_reuses_it(supervised):
    cfg, address, pid = supervised
    assert address == os.path.join(cfg.exec_root, "containerd.sock")
    assert stat.S_ISSOCK(os.stat(address).st_mode)
    # its own session (it must outlive skiffd), its log where the plan says
    assert os.getsid(pid) == pid
    assert os.path.exists(os.path.join(cfg.exec_root, "containerd.log"))
    assert os.path.isdir(os.path.join(cfg.data_root, "containerd"))
    assert supervisor.ensure_containerd_sync(cfg) == address       # a second call reuses it
    assert supervisor.containerd_pid(cfg) == pid

    async def version() -> str:
        cd = await Containerd.connect(address)
        try:
            return await cd.version()
        finally:
            await cd.close()
    assert asyncio.run(version())


def test_containerd_outlives_a_killed_skiffd(state_dirs):
    """A stand-in skiffd process starts containerd and is SIGKILLed; containerd keeps serving
    and the next ensure_containerd uses it."""
    cfg = make_cfg(state_dirs)
    code = ("import sys, time\n"
            "from skiff.daemon.config import DaemonConfig\n"
            "from skiff.daemon.containerd.supervisor import ensure_containerd_sync, containerd_pid\n"
            f"cfg = DaemonConfig(data_root={cfg.data_root!r}, exec_root={cfg.exec_root!r})\n"
            "ensure_containerd_sync(cfg)\n"
            "print(containerd_pid(cfg), flush=True)\n"
            "time.sleep(600)\n")
    skiffd = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    pid = 0
    try:
        assert skiffd.stdout is not None
        line = skiffd.stdout.readline()
        pid = int(line)
    finally:
        skiffd.kill()
        skiffd.wait()
    try:
        assert _alive(pid)
        assert supervisor.answers(cfg.containerd_address())
        assert supervisor.ensure_containerd_sync(cfg) == cfg.containerd_address()
        assert supervisor.containerd_pid(cfg) == pid
        assert cfg.containerd_address() not in supervisor._spawned     # not started again
    finally:
        if pid:
            stop_containerd(cfg, pid)


def _run(coro):
    return asyncio.run(coro)


def test_builtin_image_resolve_list_and_inspect(supervised, state_dirs):
    cfg, address, _ = supervised

    async def go() -> None:
        cd = await Containerd.connect(address)
        hub = EventsHub()
        svc = ImageService(cd, hub, tmp_dir=str(state_dirs.data / "tmp"))
        try:
            assert await svc.count() == 0
            await svc.ensure_builtin()
            await svc.ensure_builtin()            # already there: nothing more
            assert await svc.count() == 1
            recs = await cd.list_images()
            assert [r.name for r in recs] == ["docker.io/library/busybox:latest"]
            img = await svc.resolve("busybox")
            assert img.id.startswith("sha256:") and len(img.id) == 71
            assert img.names == ["busybox:latest"]
            assert img.config["config"]["Cmd"] == ["sh"]
            for name in ("busybox:latest", "docker.io/library/busybox:latest", "library/busybox",
                         img.id, img.id[7:], img.id[7:19], "sha256:" + img.id[7:19]):
                assert (await svc.resolve(name)).id == img.id, name
            for bad in ("busybox:nope", "nosuch", "sha256:" + "0" * 64, "0" * 64):
                with pytest.raises(NotFound) as e:
                    await svc.resolve(bad)
                assert str(e.value) == f"No such image: {bad}"
            # unpacked: one committed snapshot per layer, named by ChainID, kept by the GC label
            snap = await cd.stat_snapshot(img.chain_id)
            assert snap is not None and snap["kind"] == "COMMITTED"
            assert snap["labels"]["containerd.io/snapshot.ref"] == img.chain_id
            assert img.chain_id == img.diff_ids[0]            # one layer: ChainID == DiffID
            info = await cd.content_info(img.id)
            assert info is not None
            assert info["labels"]["containerd.io/gc.ref.snapshot.overlayfs"] == img.chain_id
            minfo = await cd.content_info(recs[0].target.digest)
            assert minfo is not None and minfo["labels"]["containerd.io/gc.ref.content.config"] == img.id
            assert img.size > 500_000                           # the unpacked busybox
            listed = await svc.list({})
            assert listed == [{"Id": img.id, "ParentId": "", "RepoTags": ["busybox:latest"],
                               "RepoDigests": [f"busybox@{recs[0].target.digest}"], "Created": 0,
                               "Size": img.size, "SharedSize": -1, "Labels": {}, "Containers": -1}]
            assert await svc.list({"reference": ["busy*"]}) == listed
            assert await svc.list({"reference": ["alpine"]}) == []
            assert await svc.list({"dangling": ["true"]}) == []
            assert await svc.list({"label": ["x=y"]}) == []
            d = await svc.inspect("busybox")
            assert d["Id"] == img.id and d["RepoTags"] == ["busybox:latest"]
            assert d["RootFS"] == {"Type": "layers", "Layers": img.diff_ids}
            assert d["Created"] == "1970-01-01T00:00:00Z" and d["Os"] == "linux" and d["Architecture"]

            # the routes over HTTP
            client = TestClient(TestServer(make_app([ImagesRouter(svc)])))
            await client.start_server()
            try:
                r = await client.get("/v1.47/images/json")
                assert r.status == 200 and await r.json() == listed
                r = await client.get("/v1.43/images/json")
                assert (await r.json())[0]["VirtualSize"] == img.size
                r = await client.get("/images/docker.io/library/busybox:latest/json")
                assert r.status == 200 and (await r.json())["Id"] == img.id
                r = await client.get("/images/busybox:nope/json")
                assert r.status == 404 and await r.json() == {"message": "No such image: busybox:nope"}
                r = await client.get("/images/json", params={"filters": json.dumps({"bogus": ["x"]})})
                assert r.status == 400 and "invalid filter 'bogus'" in (await r.json())["message"]
                with open(BUSYBOX_TAR, "rb") as f:
                    r = await client.post("/images/load?quiet=1", data=f.read(),
                                          headers={"Content-Type": "application/x-tar"})
                assert r.status == 200
                lines = [json.loads(x) for x in (await r.text()).splitlines()]
                assert lines == [{"stream": "Loaded image: busybox:latest\n"}]
                r = await client.post("/images/load?platform=linux/s390x", data=b"")
                assert r.status == 400 and "choosing a platform is not supported" in (await r.json())["message"]
                r = await client.post("/images/load", data=b"not a tar archive at all" * 40)
                assert r.status == 400 and "not a tar archive" in (await r.json())["message"]
            finally:
                await client.close()
            # the archive holds the same image (same busybox binary): still one image
            assert [i.id for i in await svc.images()] == [img.id]
            past, sub = hub.subscribe(EventFilter(), since_nano=0)
            sub.close()
            loads = [e for e in past if e.action == "load"]
            assert [(e.type, e.actor_id, e.attributes) for e in loads] == [
                ("image", img.id, {"name": "busybox:latest"})]
        finally:
            await cd.close()
    _run(go())


def _spec(args: list[str]) -> dict:
    spec = default_config(args=args, terminal=False)
    spec["root"] = {"path": "rootfs", "readonly": False}
    spec["process"]["env"] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    return spec


async def _run_echo(cd: Containerd, svc: ImageService, fifo_dir: Path, runtime: str, runtime_binary: str,
                    text: str) -> tuple[int, str, list[Envelope]]:
    img = await svc.resolve("busybox")
    parent = await svc.ensure_unpacked(img)
    cid = secrets.token_hex(32)
    events: list[Envelope] = []
    subscribed = asyncio.Event()

    async def collect() -> None:
        agen = cd.subscribe(['namespace=="skiff"'])
        subscribed.set()
        async for env in agen:
            events.append(env)
            if env.topic == "/tasks/exit" and env.event.get("container_id") == cid:
                return
    collector = asyncio.create_task(collect())
    await subscribed.wait()
    await cd.create_container(cid, _spec(["echo", text]), runtime, runtime_binary=runtime_binary,
                              image="docker.io/library/busybox:latest", snapshot_key=cid)
    try:
        mounts = await cd.prepare_snapshot(cid, parent)
        try:
            out_path = fifo_dir / f"{cid[:12]}-stdout"
            err_path = fifo_dir / f"{cid[:12]}-stderr"
            os.mkfifo(out_path)
            os.mkfifo(err_path)
            # read ends open first (non-blocking), so the shim's opens for writing do not block
            out_fd = os.open(out_path, os.O_RDONLY | os.O_NONBLOCK)
            err_fd = os.open(err_path, os.O_RDONLY | os.O_NONBLOCK)
            try:
                pid = await cd.create_task(cid, mounts, "", str(out_path), str(err_path), False)
                assert pid > 0
                info = await cd.get_task(cid)
                assert info is not None and info.status == "created" and info.pid == pid
                assert await cd.start(cid) == pid
                status, exited_at = await cd.wait(cid)
                assert exited_at > 0
                output = b""
                deadline = time.monotonic() + DEADLINE
                while time.monotonic() < deadline:
                    try:
                        chunk = os.read(out_fd, 65536)
                    except OSError as e:
                        if e.errno != errno.EAGAIN:
                            raise
                        await asyncio.sleep(0.02)
                        continue
                    if not chunk:
                        if output.endswith(b"\n"):
                            break
                        await asyncio.sleep(0.02)
                        continue
                    output += chunk
                stopped = await cd.get_task(cid)
                assert stopped is not None and stopped.status == "stopped"
                assert await cd.delete_task(cid) == (status, exited_at)
                assert await cd.get_task(cid) is None
            finally:
                os.close(out_fd)
                os.close(err_fd)
        finally:
            await cd.remove_snapshot(cid)
    finally:
        await cd.delete_container(cid)
    await asyncio.wait_for(collector, DEADLINE)
    exits = [e for e in events if e.topic == "/tasks/exit"]
    assert [e.event for e in exits] == [{"container_id": cid, "id": cid, "pid": pid, "exit_status": status,
                                         "exited_at": exits[0].event["exited_at"]}]
    assert exits[0].event["exited_at"] > 0 and exits[0].namespace == "skiff"
    return status, output.decode(), events


def test_task_end_to_end_through_the_client(supervised, state_dirs):
    cfg, address, _ = supervised

    async def go() -> None:
        cd = await Containerd.connect(address)
        svc = ImageService(cd, EventsHub())
        try:
            await svc.ensure_builtin()
            status, out, events = await _run_echo(cd, svc, state_dirs.run, "skiff-runc", "", "hello from skiffd")
            assert (status, out) == (0, "hello from skiffd\n")
            topics = [e.topic for e in events]
            for t in ("/containers/create", "/snapshot/prepare", "/tasks/create", "/tasks/start", "/tasks/exit"):
                assert t in topics
            assert await cd.list_containers() == [] and await cd.list_tasks() == []
        finally:
            await cd.close()
    _run(go())


def test_runtime_named_by_path_runs_that_binary(supervised, state_dirs):
    """``runtime_binary`` -> containerd.runc.v1.Options.binary_name: the shim runs that binary."""
    cfg, address, _ = supervised
    log = state_dirs.short / "wrapper.log"
    wrapper = state_dirs.short / "my-runtime"
    real = os.path.join(os.path.dirname(sys.executable), "skiff-runc")
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)

    async def go() -> None:
        cd = await Containerd.connect(address)
        svc = ImageService(cd, EventsHub())
        try:
            await svc.ensure_builtin()
            status, out, _ = await _run_echo(cd, svc, state_dirs.run, "", str(wrapper), "via wrapper")
            assert (status, out) == (0, "via wrapper\n")
        finally:
            await cd.close()
    _run(go())
    calls = log.read_text().splitlines()
    assert any(" create " in f" {c} " for c in calls) and any(" delete " in f" {c} " for c in calls)
    # its --root is a directory of its own under containerd's state
    roots = {c.split("--root ", 1)[1].split()[0] for c in calls if "--root " in c}
    assert len(roots) == 1
    root = roots.pop()
    assert root.startswith(os.path.join(cfg.exec_root, "containerd", "binary-")) and root.endswith("/skiff")
