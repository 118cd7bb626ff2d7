"""Registry to running filesystem, with real mounts: a multi-layer image (deletions, an opaque
directory, hard links, symlinks, extended attributes) is pushed to a local docker-registry,
pulled into another store and unpacked into the overlayfs and native snapshotters; a container
snapshot is mounted and compared with what umoci unpacks from our OCI archive of the same
image, and exported (``docker export``); the pulled image saved and loaded again keeps its
digests."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile

import pytest

from registry_util import Registry
from skiff.images import archive
from skiff.images import manifest as mf
from skiff.images.content import ContentStore, Descriptor
from skiff.images.metadata import ImageRecord, MetaDB
from skiff.images.mount import mount_all, unmount_all
from skiff.images.pull import pull
from skiff.images.push import push
from skiff.images.registry.auth import AuthConfig
from skiff.images.snapshots import new_snapshotter
from skiff.images.snapshots.fsutil import describe_tree
from skiff.images.unpack import chain_id, unpack

pytestmark = pytest.mark.root


def _tar(*members: tuple) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data, *rest in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_000_000
            if isinstance(data, tuple):
                info.type, info.linkname = data
                t.addfile(info)
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            else:
                info.mode = rest[0] if rest else 0o644
                if len(rest) > 1:
                    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in rest[1].items()}
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return out.getvalue()


LAYERS = [
    _tar(("etc", None), ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"), ("bin", None),
         ("bin/tool", b"\x7fELF tool", 0o755), ("bin/alias", (tarfile.LNKTYPE, "bin/tool")),
         ("lib", (tarfile.SYMTYPE, "bin")), ("var", None), ("var/cache", None), ("var/cache/a", b"a")),
    _tar(("var", None), ("var/cache", None), ("var/cache/.wh..wh..opq", b""), ("var/cache/c", b"c"),
         ("etc", None), ("etc/.wh.passwd", b""),
         ("etc/group", b"root:x:0:\n", 0o640, {"user.note": "kept"})),
]
EXPECTED = {  # name -> (type, content or link target)
    # the export walks in sorted order: the first name of the hard-linked pair carries the data
    "bin": ("dir", None), "bin/alias": ("file", b"\x7fELF tool"), "bin/tool": ("hardlink", "bin/alias"),
    "lib": ("symlink", "bin"), "etc": ("dir", None), "etc/group": ("file", b"root:x:0:\n"),
    "var": ("dir", None), "var/cache": ("dir", None), "var/cache/c": ("file", b"c"),
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry.start(tmp_path_factory.mktemp("reg") / "open")
    yield reg
    reg.stop()


def _put(store: ContentStore, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with store.writer(f"t-{digest}", digest, len(data)) as w:
        w.write(data)
        w.commit(len(data), digest)
    return digest


def _push_image(name: str, root) -> tuple[Descriptor, list[str]]:
    with MetaDB(root / "meta.db") as meta:
        store = ContentStore(root / "content", meta)
        diff_ids = [_put(store, layer) for layer in LAYERS]
        cfg = mf.json_bytes({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": diff_ids}})
        manifest = mf.json_bytes({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                                  "config": {"mediaType": mf.OCI_CONFIG, "digest": _put(store, cfg),
                                             "size": len(cfg)},
                                  "layers": [{"mediaType": mf.OCI_LAYER, "digest": d, "size": len(b)}
                                             for d, b in zip(diff_ids, LAYERS, strict=True)]})
        target = Descriptor(mf.OCI_MANIFEST, _put(store, manifest), len(manifest))
        with meta.transaction() as tx:
            tx.create_image("default", ImageRecord(name, target))
        push(name, store, meta, auth=AuthConfig())
    return target, diff_ids


def _exported(data: bytes) -> dict:
    got = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        for m in t.getmembers():
            if m.isdir():
                got[m.name] = ("dir", None)
            elif m.islnk():
                got[m.name] = ("hardlink", m.linkname)
            elif m.issym():
                got[m.name] = ("symlink", m.linkname)
            elif m.isfile():
                got[m.name] = ("file", t.extractfile(m).read())
                if m.name == "etc/group":
                    assert m.pax_headers.get("SCHILY.xattr.user.note") == "kept"
            else:
                got[m.name] = (f"type {m.type!r}", None)
    return got


@pytest.mark.parametrize("kind", ["overlayfs", "native"])
def test_pull_unpack_mount_compare_with_umoci_and_export(registry, tmp_path, kind):
    name = f"{registry.host}/e2e/layers:1"
    target, diff_ids = _push_image(name, tmp_path / "src")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with MetaDB(tmp_path / "dst" / "meta.db") as meta:
        store = ContentStore(tmp_path / "dst" / "content", meta)
        snapshotter = new_snapshotter(kind, str(tmp_path / kind))
        try:
            record = pull(name, store, meta, auth=AuthConfig(),
                          unpack=lambda d, c: unpack(d, c, snapshotter, snapshotter_name=kind))
            assert record.target.digest == target.digest
            mounts = snapshotter.prepare("container-1", chain_id(diff_ids))
            mount_all(mounts, str(mnt))
            try:
                ours = describe_tree(str(mnt))
            finally:
                unmount_all(str(mnt))
            exported = io.BytesIO()
            archive.export_mounts(mounts, exported, tmp_parent=str(tmp_path))
            snapshotter.remove("container-1")
            # the pulled image, saved both ways
            oci_tar, docker_tar = io.BytesIO(), io.BytesIO()
            archive.save([name], store, meta, oci_tar, format="oci")
            archive.save([name], store, meta, docker_tar)
        finally:
            snapshotter.close()
    assert _exported(exported.getvalue()) == EXPECTED

    # umoci unpacks our OCI archive to the same tree (types, modes, owners, mtimes, xattrs, links)
    layout = tmp_path / "layout"
    with tarfile.open(fileobj=io.BytesIO(oci_tar.getvalue())) as t:
        members = t.getmembers()
        assert all((m.isfile() or m.isdir()) and not m.name.startswith("/") and ".." not in m.name.split("/")
                   for m in members)
        t.extractall(layout, members)  # our own archive, checked above (3.11.2 has no extraction filter)
    proc = subprocess.run(["umoci", "raw", "unpack", "--image", f"{layout}:1", str(tmp_path / "umoci")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    theirs = describe_tree(str(tmp_path / "umoci"))
    ours.pop("")
    theirs.pop("")
    assert ours == theirs

    # and the saved docker archive loads back to the same image
    with MetaDB(tmp_path / "again" / "meta.db") as meta:
        store = ContentStore(tmp_path / "again" / "content", meta)
        (img,) = archive.load(io.BytesIO(docker_tar.getvalue()), store, meta)
        assert img.target.digest == target.digest and img.names == [name]
        assert [store.read_all(d) for d in diff_ids] == LAYERS
    assert not os.path.ismount(mnt)
