"""The archive, export and changes routes over a fake backend whose container root is a plain
directory: the stat header on HEAD and GET, Docker's errors before any body, uploads refused
with the reason (the rest of the body is still read), export and changes as JSON."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from skiff.daemon.api.containers import ContainersRouter
from skiff.daemon.api.errors import NotFound
from skiff.daemon.api.server import make_app
from skiff.daemon.containers import archive as ar


@dataclass
class FakeContainer:
    id: str = "c" * 64
    config: dict = field(default_factory=dict)
    host_config: dict = field(default_factory=dict)
    snapshot_key: str = ""


class FakeBackend:
    def __init__(self, root: str, changes: list[dict]) -> None:
        self.root = root
        self.c = FakeContainer()
        self._changes = changes
        self.cd = None   # ResourceService (top/stats, same router) keeps a reference

        class Cfg:
            exec_root = root + "-exec"
        self.cfg = Cfg()

    def get(self, ref: str) -> FakeContainer:
        if ref not in ("c1", self.c.id):
            raise NotFound(f"No such container: {ref}")
        return self.c

    def container_spec(self, c: Any) -> dict:
        return {"mounts": []}

    async def changes(self, c: Any) -> list[dict]:
        return self._changes


@pytest.fixture
def run(tmp_path, monkeypatch):
    """run(fn): ``await fn(client)`` against the router over a fake backend (root: a plain dir)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "tmp").mkdir()
    (root / "tmp" / "x").symlink_to("/")

    @contextlib.asynccontextmanager
    async def fake_root(self, c):
        yield str(root)

    async def fake_export(self, ref, start, write):
        self.b.get(ref)
        await start()
        await ar._stream_out(lambda out: ar.write_export(str(root), out), write, "export")

    monkeypatch.setattr(ar.ArchiveService, "root", fake_root)
    monkeypatch.setattr(ar.ArchiveService, "export", fake_export)

    def go(fn):
        async def main():
            backend = FakeBackend(str(root), [{"Path": "/etc", "Kind": 0}, {"Path": "/new", "Kind": 1}])
            app = make_app([ContainersRouter(backend)])  # type: ignore[arg-type]
            async with TestClient(TestServer(app)) as cl:
                cl.root = root  # type: ignore[attr-defined]
                await fn(cl)
        asyncio.run(main())
    return go


def _stat(resp) -> dict:
    return json.loads(base64.b64decode(resp.headers["X-Docker-Container-Path-Stat"]))


def test_head_and_get_carry_the_stat(run):
    async def body(client):
        r = await client.head("/v1.47/containers/c1/archive", params={"path": "/etc/passwd"})
        assert r.status == 200
        st = _stat(r)
        assert st["name"] == "passwd" and st["size"] == 26 and st["linkTarget"] == ""
        r = await client.get("/v1.47/containers/c1/archive", params={"path": "/tmp/x"})
        assert r.status == 200 and r.headers["Content-Type"] == "application/x-tar"
        assert _stat(r)["linkTarget"] == "/"
        with tarfile.open(fileobj=io.BytesIO(await r.read())) as t:
            (m,) = t.getmembers()
            assert m.name == "x" and m.issym()
    run(body)


def test_errors_before_the_body(run):
    async def body(client):
        r = await client.get("/v1.47/containers/c1/archive", params={"path": "/nope"})
        assert r.status == 404
        assert (await r.json())["message"] == "Could not find the file /nope in container c1"
        r = await client.head("/v1.47/containers/c1/archive", params={"path": "/nope"})
        assert r.status == 404
        r = await client.get("/v1.47/containers/c1/archive", params={"path": ""})
        assert r.status == 400
        r = await client.get("/v1.47/containers/zz/archive", params={"path": "/etc"})
        assert r.status == 404 and (await r.json())["message"] == "No such container: zz"
    run(body)


def _tar(name: str, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def _chunks(data: bytes):
    for i in range(0, len(data), 4096):
        yield data[i:i + 4096]


def test_put_chunked_and_refusals(run):
    async def body(client):
        r = await client.put("/v1.47/containers/c1/archive", params={"path": "/tmp", "noOverwriteDirNonDir": "true"},
                             data=_chunks(_tar("up.txt", b"uploaded")), headers={"Content-Type": "text/plain"})
        assert r.status == 200, await r.text()
        assert (client.root / "tmp" / "up.txt").read_bytes() == b"uploaded"
        # a hostile member early in a large body: the reason, after the body was read
        big = _tar("../escape") + b"\0" * (4 << 20)
        r = await client.put("/v1.47/containers/c1/archive", params={"path": "/tmp"}, data=_chunks(big))
        assert r.status == 400
        assert "leaves the extraction directory" in (await r.json())["message"]
        r = await client.put("/v1.47/containers/c1/archive", params={"path": "/", "noOverwriteDirNonDir": "1"},
                             data=_tar("etc"))
        assert r.status == 409 and "cannot overwrite directory '/etc'" in (await r.json())["message"]
        r = await client.put("/v1.47/containers/c1/archive", params={"path": "/etc/passwd"}, data=_tar("a"))
        assert r.status == 400 and "extraction point is not a directory" in (await r.json())["message"]
        assert not os.path.exists(client.root.parent / "escape")
    run(body)


def test_export_and_changes(run):
    async def body(client):
        r = await client.get("/v1.47/containers/c1/export")
        assert r.status == 200
        with tarfile.open(fileobj=io.BytesIO(await r.read())) as t:
            assert "etc/passwd" in t.getnames()
        r = await client.get("/v1.47/containers/c1/changes")
        assert r.status == 200 and await r.json() == [{"Path": "/etc", "Kind": 0}, {"Path": "/new", "Kind": 1}]
        r = await client.get("/v1.47/containers/zz/changes")
        assert r.status == 404
    run(body)
