"""The exec router + ExecService over a fake containerd (no root): create checks, hijacked and
detached start, exit codes from ``/tasks/exit`` events, start failures (126), resize before
start, inspect, events, retention; and top/stats/update through the containers router.

The fake containerd plays the shim for exec processes: ``exec`` opens the output FIFOs for
writing, ``start`` writes the prepared output, and the test makes the process exit (closing the
FIFOs and sending the exit event)."""

from __future__ import annotations

import asyncio
import json
import os
import struct

from aiohttp.test_utils import TestClient, TestServer

from skiff.containerd.protos import load
from skiff.daemon.api import exec as exec_api
from skiff.daemon.api.errors import ApiError, NotFound
from skiff.daemon.containerd.client import Envelope, TaskInfo
from skiff.daemon.containers import exec as exec_mod
from skiff.daemon.containers.exec import ExecService
from unit.test_daemon_containers_api import FakeContainerd, _create, _service, _until


class ExecCd(FakeContainerd):
    def __init__(self) -> None:
        super().__init__()
        self.procs: dict[str, dict] = {}
        self.exec_output: dict[str, bytes] = {}
        self.fail_exec_start = ""
        self.spec_updates: list[dict] = []
        self.resource_updates: list[tuple[str, dict]] = []

    async def exec(self, id, exec_id, process_spec, stdin, stdout, stderr, terminal):
        self.calls.append(("exec", id, exec_id, stdin, stdout, stderr, terminal))
        fds = [os.open(p, os.O_WRONLY | os.O_NONBLOCK) for p in (stdout, stderr) if p]
        stdin_fd = os.open(stdin, os.O_RDONLY | os.O_NONBLOCK) if stdin else -1
        self.procs[exec_id] = {"fds": fds, "spec": process_spec, "stdin": stdin, "cid": id,
                               "stdin_fd": stdin_fd}

    async def start(self, id, exec_id=""):
        if not exec_id:
            return await super().start(id)
        if self.fail_exec_start:
            raise ApiError(self.fail_exec_start)
        p = self.procs[exec_id]
        for i, data in enumerate(self.exec_output.get("all", b"").split(b"|")):
            if data:
                os.write(p["fds"][min(i, len(p["fds"]) - 1)], data)
        return 5000

    def exec_exit(self, exec_id: str, status: int) -> None:
        p = self.procs[exec_id]
        for fd in p["fds"] + ([p["stdin_fd"]] if p["stdin_fd"] >= 0 else []):
            os.close(fd)
        p["fds"], p["stdin_fd"] = [], -1
        self.events.put_nowait(Envelope(0, "skiff", "/tasks/exit", {
            "container_id": p["cid"], "id": exec_id, "exit_status": status, "exited_at": 0}))

    async def get_task(self, id, exec_id=""):
        p = self.procs.get(exec_id) if exec_id else None
        if exec_id:
            if p is None:
                return None
            return TaskInfo(exec_id, 5000, "stopped" if "lost_exit" in p else "running",
                            p.get("lost_exit", 0), 0)
        t = self.tasks.get(id)
        return None if t is None else TaskInfo(id, t.pid, t.status, t.exit_status)

    def exec_exit_unreported(self, exec_id: str, status: int) -> None:
        """The process ends (its output closes) but the exit event is lost."""
        p = self.procs[exec_id]
        for fd in p["fds"] + ([p["stdin_fd"]] if p["stdin_fd"] >= 0 else []):
            os.close(fd)
        p["fds"], p["stdin_fd"] = [], -1
        p["lost_exit"] = status

    async def delete_process(self, id, exec_id):
        self.calls.append(("delete_process", id, exec_id))
        if self.procs.pop(exec_id, None) is None:
            raise NotFound(f"process {exec_id}")
        return 0, 0

    async def resize(self, id, w, h, exec_id=""):
        self.calls.append(("resize", id, w, h, exec_id))

    async def close_stdin(self, id, exec_id=""):
        self.calls.append(("close_stdin", id, exec_id))

    async def pids(self, id):
        return [os.getpid()]

    async def metrics(self, id):
        t = self.tasks.get(id)
        if t is None or t.status == "stopped":
            raise NotFound(f"task {id}: no metrics")
        m = load().cgroups_v1.Metrics()
        m.memory.usage.usage = 1 << 20
        m.memory.usage.limit = 64 << 20
        m.cpu.usage.total = 1000
        m.pids.current = 1
        return m

    async def update_container_spec(self, id, spec):
        self.spec_updates.append(spec)

    async def update_resources(self, id, resources):
        self.resource_updates.append((id, resources))


def run(tmp_path, fn):
    async def main():
        cd = ExecCd()
        d, svc, _ = await _service(tmp_path, cd)
        d.exec_service = ExecService(svc)
        try:
            async with TestClient(TestServer(d.app())) as client:
                return await fn(client, svc, cd, d.exec_service)
        finally:
            await d.exec_service.shutdown()
            await svc.shutdown()
    return asyncio.run(main())


async def _running(c, cd, name="box") -> str:
    cid = await _create(c, name, Cmd=["sleep", "300"])
    r = await c.post(f"/containers/{cid}/start")
    assert r.status == 204, await r.text()
    return cid


async def _exec(c, cid, **body) -> str:
    r = await c.post(f"/containers/{cid}/exec", json={"AttachStdout": True, "AttachStderr": True, **body})
    assert r.status == 201, await r.text()
    return (await r.json())["Id"]


async def _raw_start(c, eid, body: dict, stdin: bytes = b"", half_close: bool = True):
    """POST /exec/{id}/start as the docker CLI does (Upgrade), returns (head, reader, writer)."""
    host, port = c.server.host, c.server.port
    reader, writer = await asyncio.open_connection(host, port)
    data = json.dumps(body).encode()
    writer.write(f"POST /v1.47/exec/{eid}/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                 f"Upgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                 .encode() + data)
    head = await reader.readuntil(b"\r\n\r\n")
    if stdin:
        writer.write(stdin)
    if half_close:
        writer.write_eof()
    return head.decode(), reader, writer


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        stream, n = struct.unpack(">BxxxL", data[:8])
        out.append((stream, data[8:8 + n]))
        data = data[8 + n:]
    return out


def test_exec_hijacked_output_exit_code_and_inspect(tmp_path):
    async def fn(c, svc, cd, es):
        cid = await _running(c, cd)
        eid = await _exec(c, "box", Cmd=["sh", "-c", "echo hi; exit 3"], Env=["K=v"], User="1000",
                          WorkingDir="/tmp")
        r = await c.get(f"/exec/{eid}/json")
        i = await r.json()
        assert i["Running"] is False and i["ExitCode"] is None and i["ContainerID"] == cid
        assert i["ProcessConfig"] == {"tty": False, "entrypoint": "sh", "arguments": ["-c", "echo hi; exit 3"],
                                      "privileged": False, "user": "1000"}
        assert (await (await c.get(f"/containers/{cid}/json")).json())["ExecIDs"] == [eid]
        cd.exec_output["all"] = b"out\n|err\n"
        head, reader, writer = await _raw_start(c, eid, {"Detach": False, "Tty": False})
        assert head.startswith("HTTP/1.1 101 UPGRADED\r\n")
        assert "application/vnd.docker.multiplexed-stream" in head
        await _until(lambda: _true(eid in cd.procs and "spec" in cd.procs[eid]), "the exec")
        spec = cd.procs[eid]["spec"]
        assert spec["args"] == ["sh", "-c", "echo hi; exit 3"] and spec["cwd"] == "/tmp"
        assert "K=v" in spec["env"] and spec["user"]["uid"] == 1000 and spec["terminal"] is False
        i = await (await c.get(f"/exec/{eid}/json")).json()
        assert i["Running"] is True and i["Pid"] == 5000
        cd.exec_exit(eid, 3)
        data = await asyncio.wait_for(reader.read(), 10)     # the daemon closes after the exit
        writer.close()
        assert sorted(_frames(data)) == [(1, b"out\n"), (2, b"err\n")]
        i = await (await c.get(f"/exec/{eid}/json")).json()
        assert i["Running"] is False and i["ExitCode"] == 3
        assert ("delete_process", cid, eid) in cd.calls
        assert (await (await c.get(f"/containers/{cid}/json")).json())["ExecIDs"] is None
        r = await c.post(f"/exec/{eid}/start", json={"Detach": True})
        assert r.status == 409 and "has already run" in (await r.json())["message"]
    run(tmp_path, fn)


async def _true(v):
    return v


def test_exec_events(tmp_path):
    async def fn(c, svc, cd, es):
        seen = []
        orig = svc.events.publish

        def publish(kind, action, id, attrs):
            seen.append((action, dict(attrs)))
            return orig(kind, action, id, attrs)
        svc.events.publish = publish
        await _running(c, cd)
        eid = await _exec(c, "box", Cmd=["true"])
        r = await c.post(f"/exec/{eid}/start", json={"Detach": True})
        assert r.status == 200
        cd.exec_exit(eid, 0)
        await _until(lambda: _true(es.get(eid).exit_code == 0), "the exit")
        ex = [(a, at) for a, at in seen if a.startswith("exec_")]
        assert [a for a, _ in ex] == ["exec_create: true ", "exec_start: true ", "exec_die"]   # dockerd's trailing space
        assert ex[0][1]["execID"] == eid and ex[0][1]["name"] == "box"
        assert ex[2][1]["exitCode"] == "0" and ex[2][1]["execID"] == eid
    run(tmp_path, fn)


def test_exec_start_failure_is_126_and_written_in_the_stream(tmp_path):
    async def fn(c, svc, cd, es):
        await _running(c, cd)
        eid = await _exec(c, "box", Cmd=["nosuch"])
        cd.fail_exec_start = 'OCI runtime exec failed: exec: "nosuch": executable file not found in $PATH'
        head, reader, writer = await _raw_start(c, eid, {"Detach": False, "Tty": False})
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert head.startswith("HTTP/1.1 101")
        [(stream, msg)] = _frames(data)
        assert stream == 1 and b"executable file not found" in msg and msg.endswith(b"\r\n")
        i = await (await c.get(f"/exec/{eid}/json")).json()
        assert i["ExitCode"] == 126 and i["Running"] is False
        # detached: the error is the answer
        eid2 = await _exec(c, "box", Cmd=["nosuch"])
        r = await c.post(f"/exec/{eid2}/start", json={"Detach": True})
        assert r.status == 500 and "executable file not found" in (await r.json())["message"]
        assert not [n for n in os.listdir(svc.fifo_dir(svc.get("box").id)) if n.startswith(eid)]
    run(tmp_path, fn)


def test_exec_stdin_tty_and_resize_before_start(tmp_path):
    async def fn(c, svc, cd, es):
        cid = await _running(c, cd)
        eid = await _exec(c, "box", Cmd=["sh"], Tty=True, AttachStdin=True, ConsoleSize=[10, 20])
        r = await c.post(f"/exec/{eid}/resize?h=30&w=100")      # before start: kept
        assert r.status == 200
        assert es.get(eid).console_size == [30, 100]
        cd.exec_output["all"] = b"prompt$ "
        head, reader, writer = await _raw_start(c, eid, {"Detach": False, "Tty": True}, stdin=b"ls\n")
        assert "application/vnd.docker.raw-stream" in head
        await _until(lambda: _true(("close_stdin", cid, eid) in cd.calls), "stdin closed at half-close")
        proc = cd.procs[eid]
        assert proc["spec"]["terminal"] is True and proc["spec"]["consoleSize"] == {"height": 30, "width": 100}
        assert proc["stdin"].endswith(f"{eid}-stdin")
        assert os.read(proc["stdin_fd"], 100) == b"ls\n"
        assert ("resize", cid, 100, 30, eid) in cd.calls
        r = await c.post(f"/exec/{eid}/resize?h=40&w=120")       # running: resized now
        assert r.status == 200 and ("resize", cid, 120, 40, eid) in cd.calls
        cd.exec_exit(eid, 0)
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert data == b"prompt$ "                                 # raw with a terminal
        r = await c.post(f"/exec/{eid}/resize?h=x&w=1")
        assert r.status == 400
    run(tmp_path, fn)


def test_exec_create_checks(tmp_path):
    async def fn(c, svc, cd, es):
        cid = await _create(c, "stopped", Cmd=["sleep", "1"])
        r = await c.post(f"/containers/{cid}/exec", json={"Cmd": ["true"]})
        assert r.status == 409 and (await r.json())["message"] == f"container {cid} is not running"
        await _running(c, cd)
        for body, want in (({}, "No exec command specified"), ({"Cmd": []}, "No exec command specified"),
                           ({"Cmd": ["x"], "Bogus": 1}, "unsupported field(s) Bogus"),
                           ({"Cmd": ["x"], "WorkingDir": "tmp"}, "needs to be an absolute path"),
                           ({"Cmd": ["x"], "DetachKeys": "ctrl-"}, "Invalid escape keys (ctrl-) provided"),
                           ({"Cmd": ["x"], "Env": ["=x"]}, "invalid environment variable"),
                           ({"Cmd": ["x"], "ConsoleSize": [1]}, "ConsoleSize")):
            r = await c.post("/containers/box/exec", json=body)
            assert r.status == 400 and want in (await r.json())["message"], (body, await r.text())
        r = await c.post("/containers/nope/exec", json={"Cmd": ["x"]})
        assert r.status == 404
        r = await c.post("/containers/box/pause")
        assert r.status == 204
        r = await c.post("/containers/box/exec", json={"Cmd": ["x"]})
        assert r.status == 409 and "is paused, unpause the container before exec" in (await r.json())["message"]
        for path in ("/exec/nope/json", "/exec/nope/resize?h=1&w=1"):
            r = await (c.get(path) if path.endswith("json") else c.post(path))
            assert r.status == 404 and (await r.json())["message"] == "No such exec instance: nope"
        r = await c.post("/exec/nope/start", json={"Detach": True})
        assert r.status == 404
        # docker-py's body carries "Container"
        r = await c.post("/containers/box/unpause")
        eid = await _exec(c, "box", Cmd="true", Container="box", Privileged=False)
        assert es.get(eid).entrypoint == "true"
        r = await c.post(f"/exec/{eid}/start", json={"Detach": True, "Nope": 1})
        assert r.status == 400
    run(tmp_path, fn)


def test_exited_instances_are_kept_for_a_while_then_dropped(tmp_path, monkeypatch):
    async def fn(c, svc, cd, es):
        await _running(c, cd)
        eid = await _exec(c, "box", Cmd=["true"])
        assert (await c.post(f"/exec/{eid}/start", json={"Detach": True})).status == 200
        cd.exec_exit(eid, 0)
        await _until(lambda: _true(es.get(eid).exit_code == 0), "the exit")
        es._gc()
        assert es.get(eid).exit_code == 0                          # still inspectable
        monkeypatch.setattr(exec_mod, "KEEP_EXITED", -1.0)
        await _exec(c, "box", Cmd=["true"])                         # creating runs the clean-up
        r = await c.get(f"/exec/{eid}/json")
        assert r.status == 404
    run(tmp_path, fn)


def test_top_stats_update_through_the_router(tmp_path):
    async def fn(c, svc, cd, es):
        cid = await _create(c, "box", Cmd=["sleep", "300"], HostConfig={"Memory": 64 << 20})
        r = await c.get(f"/containers/{cid}/top")
        assert r.status == 409 and "is not running" in (await r.json())["message"]
        r = await c.get(f"/containers/{cid}/stats?stream=0")
        s = await r.json()
        assert r.status == 200 and s["id"] == cid and s["name"] == "/box" and s["memory_stats"] == {}
        assert (await c.post(f"/containers/{cid}/start")).status == 204
        r = await c.get(f"/containers/{cid}/top?ps_args=-o pid,comm")
        top = await r.json()
        assert r.status == 200 and top["Titles"] == ["PID", "COMMAND"]
        assert [p[0] for p in top["Processes"]] == [str(os.getpid())]      # only the listed pids
        r = await c.get(f"/containers/{cid}/stats?stream=0&one-shot=1")
        s = await r.json()
        assert s["memory_stats"]["usage"] == 1 << 20 and s["memory_stats"]["limit"] == 64 << 20
        assert s["cpu_stats"]["online_cpus"] >= 1 and s["cpu_stats"]["system_cpu_usage"] > 0
        assert s["preread"] == "0001-01-01T00:00:00Z" and s["read"] != s["preread"]
        r = await c.get(f"/containers/{cid}/stats?stream=1&one-shot=1")
        assert r.status == 400
        r = await c.get(f"/containers/{cid}/stats")                   # streamed, one per second
        first = json.loads(await r.content.readline())
        second = json.loads(await r.content.readline())
        r.close()
        assert first["pids_stats"] == {"current": 1} and second["preread"] == first["read"]
        assert second["precpu_stats"] == first["cpu_stats"]
        r = await c.post(f"/containers/{cid}/update", json={"Memory": 128 << 20, "MemorySwap": 256 << 20,
                                                             "RestartPolicy": {"Name": "on-failure",
                                                                               "MaximumRetryCount": 2}})
        assert r.status == 200, await r.text()
        assert "Warnings" in await r.json()
        i = await (await c.get(f"/containers/{cid}/json")).json()
        assert i["HostConfig"]["Memory"] == 128 << 20 and i["HostConfig"]["MemorySwap"] == 256 << 20
        assert i["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
        [(uid, res)] = cd.resource_updates
        assert uid == cid and res["memory"]["limit"] == 128 << 20 and "disableOOMKiller" not in res["memory"]
        assert cd.spec_updates[-1]["linux"]["resources"]["memory"]["limit"] == 128 << 20
        assert svc.container_spec(svc.get(cid))["linux"]["resources"]["memory"]["limit"] == 128 << 20
        r = await c.post(f"/containers/{cid}/update", json={"Memory": 1 << 20})
        assert r.status == 400 and "Minimum memory limit" in (await r.json())["message"]
        r = await c.post(f"/containers/{cid}/update", json={"Memory": 512 << 20})
        assert r.status == 409 and "update the memoryswap at the same time" in (await r.json())["message"]
    run(tmp_path, fn)


def test_lost_exit_event_is_asked_of_containerd(tmp_path, monkeypatch):
    monkeypatch.setattr(exec_api, "EXIT_POLL", 0.05)

    async def fn(c, svc, cd, es):
        await _running(c, cd)
        eid = await _exec(c, "box", Cmd=["sh", "-c", "exit 9"])
        head, reader, writer = await _raw_start(c, eid, {"Detach": False, "Tty": False})
        await _until(lambda: _true(eid in cd.procs), "the exec")
        await _until(lambda: _true(es.get(eid).pid == 5000), "the start")
        cd.exec_exit_unreported(eid, 9)
        data = await asyncio.wait_for(reader.read(), 10)   # closed once the exit is known
        writer.close()
        assert data == b""
        i = await (await c.get(f"/exec/{eid}/json")).json()
        assert i["ExitCode"] == 9 and i["Running"] is False
    run(tmp_path, fn)


def test_detach_keys_with_a_terminal_end_the_stream_not_the_process(tmp_path):
    async def fn(c, svc, cd, es):
        seen = []
        orig = svc.events.publish

        def publish(kind, action, id, attrs):
            seen.append(action)
            return orig(kind, action, id, attrs)
        svc.events.publish = publish
        await _running(c, cd)
        eid = await _exec(c, "box", Cmd=["sh"], Tty=True, AttachStdin=True, DetachKeys="ctrl-x")
        assert es.inspect(eid)["DetachKeys"] == "GA=="              # base64 of b"\x18", as dockerd
        head, reader, writer = await _raw_start(c, eid, {"Detach": False, "Tty": True},
                                                stdin=b"ab\x18", half_close=False)
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert data == b"" and "exec_detach" in seen
        assert os.read(cd.procs[eid]["stdin_fd"], 100) == b"ab"     # the keys are not passed on
        i = es.inspect(eid)
        assert i["Running"] is True and i["ExitCode"] is None
        cd.exec_exit(eid, 0)
        await _until(lambda: _true(es.get(eid).exit_code == 0), "the exit")
    run(tmp_path, fn)
