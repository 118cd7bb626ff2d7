"""skiffd's view of containerd's content store as the image library's ContentStore
(``skiff.daemon.images.cdcontent``), against skiff-containerd's real gRPC services in process
(native snapshotter, no root): ingests written over one Write stream, resumed, truncated,
verified at commit, refused while another writer holds them; blobs containerd already has;
streamed reads with seek; and the library's archive load and save through it."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile

import pytest

from skiff.containerd.config import Config
from skiff.containerd.server import Server
from skiff.daemon.containerd.client import Containerd
from skiff.daemon.images.cdcontent import ContainerdContent, PresentBlobWriter
from skiff.images import errors as ie
from skiff.images.metadata import MetaDB


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def address(tmp_path):
    cfg = Config(root=str(tmp_path / "root"), state=str(tmp_path / "state"), address=str(tmp_path / "c.sock"),
                 snapshotter="native", uid=os.geteuid(), gid=os.getegid()).validate()
    srv = Server(cfg)
    srv.start()
    yield cfg.address
    srv.stop(grace=1)


def run(address: str, fn, *, lease: bool = True):
    """``fn(store, cd)`` in a worker thread while the client's event loop runs here."""
    async def main():
        cd = await Containerd.connect(address)
        try:
            lid = await cd.create_lease() if lease else ""
            store = ContainerdContent(cd, asyncio.get_running_loop(), lid)
            return await asyncio.to_thread(fn, store, cd)
        finally:
            await cd.close()
    return asyncio.run(main())


def test_write_commit_read_back_with_labels(address):
    data = os.urandom(3 * (1 << 20) + 12345)       # more than one 1 MiB request
    digest = sha(data)

    def go(store, cd):
        assert not store.exists(digest)
        with store.writer("t-1", digest, len(data)) as w:
            assert w.offset == 0
            for i in range(0, len(data), 100_000):
                w.write(data[i:i + 100_000])
            assert w.offset == len(data)
            info = w.commit(len(data), digest, {"a": "b"})
        assert info.digest == digest and info.size == len(data)
        assert store.exists(digest)
        got = store.info(digest)
        assert got.size == len(data) and got.labels == {"a": "b"}
        store.update_labels(digest, {"c": "d"})
        assert store.info(digest).labels == {"a": "b", "c": "d"}
        assert store.read_all(digest) == data
        with pytest.raises(ie.InvalidArgument):
            store.read_all(digest, 1000)
        with store.open(digest) as f:
            head = f.read(10)
            assert head == data[:10] and f.tell() == 10
            f.seek(2 * (1 << 20) + 7)
            assert f.read(5) == data[2 * (1 << 20) + 7:2 * (1 << 20) + 12]
            f.seek(0)
            assert f.read() == data
            assert f.read(10) == b""
        with pytest.raises(ie.NotFound):
            store.info(sha(b"nothing"))
    run(address, go)


def test_wrong_digest_fails_the_commit_and_abort_removes_the_ingest(address):
    def go(store, cd):
        w = store.writer("t-bad", sha(b"right"), 5)
        w.write(b"wrong")
        with pytest.raises(ie.DigestMismatch, match="t-bad"):
            w.commit(5, sha(b"right"))
        w.close()
        assert not store.exists(sha(b"right"))
        assert store.status("t-bad").offset == 5      # kept, as containerd keeps it
        store.abort("t-bad")
        with pytest.raises(ie.NotFound):
            store.status("t-bad")
        store.abort("t-bad")                          # gone already: nothing to do
    run(address, go)


def test_closed_ingest_resumes_from_its_offset_and_truncate_starts_again(address):
    data = os.urandom(2 * (1 << 20) + 99)
    digest = sha(data)

    def go(store, cd):
        w = store.writer("t-resume", digest, len(data))
        w.write(data[:1 << 20])
        w.write(data[1 << 20:(1 << 20) + 500])       # buffered: sent by close
        w.close()
        w = store.writer("t-resume", digest, len(data))
        assert w.offset == (1 << 20) + 500
        w.write(data[w.offset:])
        w.commit(len(data), digest)
        assert store.read_all(digest) == data

        other = os.urandom(3 << 20)
        w = store.writer("t-trunc", sha(other), len(other))
        w.write(os.urandom(2 << 20))                  # garbage, sent
        w.truncate(0)
        assert w.offset == 0
        w.write(other)
        w.commit(len(other), sha(other))
        assert store.read_all(sha(other)) == other
        with pytest.raises(ie.InvalidArgument):
            store.writer("t-x", None, None).truncate(3)
    run(address, go)


def test_second_writer_of_an_open_ingest_is_unavailable(address):
    def go(store, cd):
        w = store.writer("t-busy", None, None)
        w.write(b"x")
        with pytest.raises(ie.Unavailable):
            store.writer("t-busy", None, None)
        w.commit(1, sha(b"x"))
    run(address, go)


def test_blob_present_already_is_checked_not_rewritten(address):
    data = b"present" * 1000
    digest = sha(data)

    def go(store, cd):
        with store.writer("t-a", digest, len(data)) as w:
            w.write(data)
            w.commit(len(data), digest, {"x": "1"})
        w = store.writer("t-b", digest, len(data))
        assert isinstance(w, PresentBlobWriter)
        w.write(data)
        info = w.commit(len(data), digest, {"y": "2"})
        assert info.labels == {"x": "1", "y": "2"}
        w = store.writer("t-c", digest, len(data))
        w.write(b"not the same bytes")
        with pytest.raises(ie.DigestMismatch):
            w.commit(len(data), digest)
        # no digest known to the writer (a docker-archive's layer.tar): containerd's is used
        with store.writer("t-d", None, None) as w:
            assert not isinstance(w, PresentBlobWriter)
            w.write(data)
            info = w.commit(len(data), None, {"z": "3"})
        assert info.digest == digest
        assert store.info(digest).labels == {"x": "1", "y": "2", "z": "3"}
        with pytest.raises(ie.NotFound):
            store.status("t-d")
        fresh = b"unknown digest"
        with store.writer("t-e") as w:
            w.write(fresh)
            assert w.commit().digest == sha(fresh)
        assert store.read_all(sha(fresh)) == fresh
    run(address, go)


def test_a_blob_found_under_a_lease_is_added_to_it(address):
    data = b"kept"

    def go(store, cd):
        bare = ContainerdContent(cd, store.loop)            # no lease: the blob is only in the store
        with bare.writer("t-kept", sha(data), len(data)) as w:
            w.write(data)
            w.commit(len(data), sha(data))
        assert store.exists(sha(data))

        async def resources():
            resp = await cd._call(cd.leases.ListResources, cd.api.leases.ListResourcesRequest(id=store.lease))
            return [(r.type, r.id) for r in resp.resources]
        assert ("content", sha(data)) in store._run(resources())
    run(address, go)


def _docker_archive(path, layers: list[bytes], tag: str) -> str:
    diff_ids = [sha(raw) for raw in layers]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    with tarfile.open(path, "w") as t:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        paths = []
        for raw in layers:
            add(f"{sha(raw)[7:]}/layer.tar", raw)
            paths.append(f"{sha(raw)[7:]}/layer.tar")
        add(f"{sha(cfg)[7:]}.json", cfg)
        add("manifest.json", json.dumps([{"Config": f"{sha(cfg)[7:]}.json", "RepoTags": [tag],
                                          "Layers": paths}]).encode())
    return sha(cfg)


def _layer(name: str, size: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo(name)
        info.size = size
        t.addfile(info, io.BytesIO(os.urandom(size)))
    return raw.getvalue()


def test_library_archive_load_and_save_through_containerd(address, tmp_path):
    from skiff.images.archive import load, save
    layers = [_layer("a.bin", 300_000), _layer("b.bin", 1_500_000)]
    src = tmp_path / "in.tar"
    image_id = _docker_archive(src, layers, "ex/img:1")

    def go(store, cd):
        with MetaDB(str(tmp_path / "meta.db")) as meta:
            with open(src, "rb") as f:
                loaded = load(f, store, meta, "skiff")
            assert [img.config_digest for img in loaded] == [image_id]
            for raw in layers:
                assert store.exists(sha(raw))
            out = io.BytesIO()
            save(["ex/img:1"], store, meta, out, "skiff")
        with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
            manifest = json.load(t.extractfile("manifest.json"))
            assert manifest[0]["Config"] == f"blobs/sha256/{image_id[7:]}"
            got = [t.extractfile(p).read() for p in manifest[0]["Layers"]]
        assert got == layers
        # loaded again: every blob is there, nothing is written twice
        with MetaDB(str(tmp_path / "meta2.db")) as meta:
            again = load(io.BytesIO(out.getvalue()), store, meta, "skiff")
            assert [img.config_digest for img in again] == [image_id]
    run(address, go)
