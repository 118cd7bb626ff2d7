"""Round trips of issue 4's proof, against skopeo and umoci as the reference.

For the built-in busybox image and a generated multi-layer image (files of several owners and
modes, deletions, opaque directories, hard links, symbolic links, extended attributes; gzip and
uncompressed layers, small files and one past the blob path's window), each saved as a
docker-archive and as an OCI archive:

1. saved from the store that holds it, loaded into a second store, pushed from there to
   Debian's docker-registry on 127.0.0.1;
2. pulled into a third store and unpacked into a snapshotter (overlayfs, mounted; native, its
   directory), a container snapshot prepared on top;
3. the same registry copied by ``skopeo copy`` to an OCI layout, and that layout unpacked by
   ``umoci raw unpack``;
4. the two trees compared entry for entry with ``describe_tree`` (type, mode, owner, mtime,
   xattrs, content digest, link target, hard-link groups): whiteouts are applied by both, so
   what a deletion or an opaque directory hides is absent from both.

Digests are checked on the way: the loaded image keeps the saved one's layers, the pulled
manifest is the pushed one, and skopeo sees the same manifest digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile

import pytest

from registry_util import Registry
from skiff.images import archive, builtin
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

BUSYBOX = "/bin/busybox"
MTIME = 1_600_000_000


def _tar(*members: tuple) -> bytes:
    """Members: (name, kind, data/target, mode, uid, xattrs)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, value, *rest in members:
            mode = rest[0] if rest else None
            uid = rest[1] if len(rest) > 1 else 0
            xattrs = rest[2] if len(rest) > 2 else {}
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            info.uid = info.gid = uid
            data = None
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, mode or 0o755
            elif kind == "file":
                info.mode, info.size = mode or 0o644, len(value)
                data = io.BytesIO(value)
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, value, 0o777
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, value
            if xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
            t.addfile(info, data)
    return out.getvalue()


BIG = hashlib.shake_256(b"skiff round trip").digest(300_000)  # past the blob path's 128 KiB window

# each layer lists the directories of what it changes, as Docker's layers do
LAYERS = [
    (_tar(("etc", "dir", None), ("etc/passwd", "file", b"root:x:0:0::/root:/bin/sh\n"),
          ("etc/shadow", "file", b"root:*:1::::::\n", 0o640),
          ("bin", "dir", None), ("bin/tool", "file", b"\x7fELF tool", 0o755),
          ("bin/suid", "file", b"\x7fELF suid", 0o4755), ("bin/alias", "hardlink", "bin/tool"),
          ("lib", "symlink", "bin"), ("passwd-link", "symlink", "/etc/passwd"),
          ("home", "dir", None), ("home/user", "dir", None, 0o700, 1000),
          ("home/user/notes", "file", b"mine\n", 0o600, 1000, {"user.tag": "notes"}),
          ("home/user/empty", "file", b"", 0o644, 1000),
          ("var", "dir", None), ("var/cache", "dir", None), ("var/cache/a", "file", b"a"),
          ("var/cache/sub", "dir", None), ("var/cache/sub/b", "file", b"b"),
          ("opt", "dir", None), ("opt/app", "dir", None), ("opt/app/run", "file", b"run", 0o755),
          ("opt/app/big", "file", BIG)), "gzip"),
    (_tar(("etc", "dir", None), ("etc/.wh.shadow", "file", b""),
          ("var", "dir", None), ("var/cache", "dir", None), ("var/cache/.wh..wh..opq", "file", b""),
          ("var/cache/c", "file", b"c"),
          ("opt", "dir", None), ("opt/.wh.app", "file", b""),
          ("bin", "dir", None), ("bin/tool", "file", b"\x7fELF tool v2", 0o755),
          ("usr", "dir", None, 0o755, 0, {"user.dir": "x"}), ("usr/share", "dir", None),
          ("usr/share/doc", "file", b"doc " * 100, 0o644, 0, {"user.note": "kept", "user.other": "2"}),
          ("usr/share/doc-link", "hardlink", "usr/share/doc")), "none"),
    (_tar((".wh.passwd-link", "file", b""),
          ("lib", "dir", None), ("lib/libc.so", "file", b"\x7fELF libc", 0o755),
          ("var", "dir", None), ("var/cache", "dir", None), ("var/cache/sub", "dir", None),
          ("var/cache/sub/new", "file", b"new"),
          ("home", "dir", None), ("home/user", "dir", None, 0o700, 1000),
          ("home/user/.wh.empty", "file", b""),
          ("home/user/big", "file", BIG[::-1], 0o644, 1000)), "gzip"),
]


def _put(store: ContentStore, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with store.writer(f"t-{digest}", digest, len(data)) as w:
        w.write(data)
        w.commit(len(data), digest)
    return digest


def _generated(store: ContentStore, meta: MetaDB, name: str) -> Descriptor:
    diff_ids, layers = [], []
    for raw, compression in LAYERS:
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        blob = gzip.compress(raw, mtime=0) if compression == "gzip" else raw
        layers.append({"mediaType": mf.OCI_LAYER_GZIP if compression == "gzip" else mf.OCI_LAYER,
                       "digest": _put(store, blob), "size": len(blob)})
    cfg = mf.json_bytes({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/tool"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    manifest = mf.json_bytes({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                              "config": {"mediaType": mf.OCI_CONFIG, "digest": _put(store, cfg), "size": len(cfg)},
                              "layers": layers})
    target = Descriptor(mf.OCI_MANIFEST, _put(store, manifest), len(manifest))
    with meta.transaction() as tx:
        tx.create_image("default", ImageRecord(name, target))
    return target


def _skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry.start(tmp_path_factory.mktemp("reg") / "open")
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def busybox_archive(tmp_path_factory) -> str:
    if not os.path.exists(BUSYBOX):
        pytest.fail("busybox-static is not installed at /bin/busybox (scripts/setup.sh installs it)")
    return builtin.build(str(tmp_path_factory.mktemp("builtin")), BUSYBOX).archive_path


def _diff_ids(store: ContentStore, target: Descriptor) -> list[str]:
    manifest = json.loads(store.read_all(target.digest))
    return json.loads(store.read_all(manifest["config"]["digest"]))["rootfs"]["diff_ids"]


@pytest.mark.parametrize("kind", ["overlayfs", "native"])
@pytest.mark.parametrize("fmt", ["docker", "oci"])
@pytest.mark.parametrize("image", ["busybox", "generated"])
def test_save_load_push_pull_unpack_matches_skopeo_and_umoci(registry, busybox_archive, tmp_path, image, fmt,
                                                             kind):
    name = f"{registry.host}/roundtrip/{image}:{fmt}-{kind}"
    # 1. the image in a first store, saved
    saved = io.BytesIO()
    with MetaDB(tmp_path / "a" / "meta.db") as meta:
        store = ContentStore(tmp_path / "a" / "content", meta)
        if image == "busybox":
            with open(busybox_archive, "rb") as f:
                (loaded,) = archive.load(f, store, meta)
            with meta.transaction() as tx:
                tx.create_image("default", ImageRecord(name, loaded.target))
        else:
            _generated(store, meta, name)
        with meta.transaction() as tx:
            source = tx.get_image("default", name).target
        source_diff_ids = _diff_ids(store, source)
        archive.save([name], store, meta, saved, format=fmt)

    # 2. loaded into a second store, pushed from there
    with MetaDB(tmp_path / "b" / "meta.db") as meta:
        store = ContentStore(tmp_path / "b" / "content", meta)
        (img,) = archive.load(io.BytesIO(saved.getvalue()), store, meta)
        assert name in img.names
        pushed = img.target
        assert _diff_ids(store, pushed) == source_diff_ids
        push(name, store, meta, auth=AuthConfig())
    assert json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{name}"))["Digest"] == pushed.digest

    # 3. pulled into a third store, unpacked, a container snapshot on top
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with MetaDB(tmp_path / "c" / "meta.db") as meta:
        store = ContentStore(tmp_path / "c" / "content", meta)
        snapshotter = new_snapshotter(kind, str(tmp_path / kind))
        try:
            record = pull(name, store, meta, auth=AuthConfig(),
                          unpack=lambda d, c: unpack(d, c, snapshotter, snapshotter_name=kind))
            assert record.target.digest == pushed.digest
            mounts = snapshotter.prepare("container", chain_id(source_diff_ids))
            mount_all(mounts, str(mnt))
            try:
                ours = describe_tree(str(mnt))
            finally:
                unmount_all(str(mnt))
            snapshotter.remove("container")
        finally:
            snapshotter.close()
    assert not os.path.ismount(mnt)

    # 4. the reference: skopeo copies the registry's image to an OCI layout, umoci unpacks it
    layout = tmp_path / "layout"
    _skopeo("copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{layout}:ref")
    proc = subprocess.run(["umoci", "raw", "unpack", "--image", f"{layout}:ref", str(tmp_path / "umoci")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    theirs = describe_tree(str(tmp_path / "umoci"))
    if image == "generated":
        assert ours.get("etc/shadow") is None and ours.get("opt/app") is None  # deleted
        assert sorted(k for k in ours if k.startswith("var/cache/")) == [
            "var/cache/c", "var/cache/sub", "var/cache/sub/new"]  # opaque: a and sub/b hidden
        assert ours["usr/share/doc"][5] == (("user.note", b"kept"), ("user.other", b"2"))
        assert ours["home/user/notes"][2:4] == (1000, 1000) and ours["bin/suid"][1] == 0o4755
        assert ours["usr/share/doc-link"][6] == ours["usr/share/doc"][6]  # one inode
        assert "passwd-link" not in ours and ours["lib"][0] == "dir"
    else:
        assert ours["bin/busybox"][0] == "file" and len(ours) > 100
    # the root directory is the mount point (ours) or umoci's rootfs directory: not the image's
    ours.pop("")
    theirs.pop("")
    assert ours == theirs
