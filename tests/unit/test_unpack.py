"""unpack(): manifests and indexes from a content store into snapshots named by chain ID."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from skiff.images.content import ContentStore, Descriptor, digest_bytes
from skiff.images.errors import DigestMismatch, InvalidArgument, NotFound
from skiff.images.metadata import MetaDB
from skiff.images.snapshots import Kind, new_snapshotter
from skiff.images.snapshots.fsutil import describe_tree
from skiff.images.unpack import chain_id, chain_ids, unpack

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def tar(*members: tuple[str, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1000
            if data is None:
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def store(tmp_path):
    db = MetaDB(tmp_path / "meta.db")
    yield ContentStore(tmp_path / "content", db)
    db.close()


def put(store: ContentStore, data: bytes, media_type: str) -> Descriptor:
    d = digest_bytes(data)
    if not store.exists(d):
        with store.writer(f"ref-{d}", expected=d, total=len(data)) as w:
            w.write(data)
            w.commit()
    return Descriptor(media_type, d, len(data))


def image(store: ContentStore, layers: list[bytes], compress: list[str] | None = None,
          diff_ids: list[str] | None = None) -> Descriptor:
    descs = []
    for i, raw in enumerate(layers):
        how = (compress or ["none"] * len(layers))[i]
        if how == "gzip":
            descs.append(put(store, gzip.compress(raw), "application/vnd.oci.image.layer.v1.tar+gzip"))
        else:
            descs.append(put(store, raw, "application/vnd.oci.image.layer.v1.tar"))
    ids = diff_ids or ["sha256:" + hashlib.sha256(raw).hexdigest() for raw in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": ids}}).encode()
    cdesc = put(store, config, "application/vnd.oci.image.config.v1+json")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cdesc.to_json(),
                           "layers": [d.to_json() for d in descs]}).encode()
    return put(store, manifest, OCI_MANIFEST)


LAYERS = [
    tar(("etc", None), ("etc/os-release", b"skiff\n"), ("bin", None), ("bin/sh", b"#!sh")),
    tar(("etc", None), ("etc/.wh.os-release", b""), ("etc/hosts", b"127.0.0.1\n")),
    tar(("data", None), ("data/blob", os.urandom(70_000))),
]


def test_chain_ids():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_ids([a]) == [a]
    second = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_ids([a, b]) == [a, second]
    assert chain_id([]) == ""


@pytest.mark.parametrize("kind", ["native", "overlayfs"])
def test_unpack_layers_into_chain_snapshots(tmp_path, store, kind):
    desc = image(store, LAYERS, ["gzip", "none", "gzip"])
    sn = new_snapshotter(kind, str(tmp_path / kind))
    top = unpack(desc, store, sn, snapshotter_name=kind)
    ids = chain_ids(["sha256:" + hashlib.sha256(x).hexdigest() for x in LAYERS])
    assert top == ids[-1]
    for i, cid in enumerate(ids):
        info = sn.stat(cid)
        assert info.kind == Kind.COMMITTED and info.parent == (ids[i - 1] if i else "")
        assert info.labels["containerd.io/snapshot.ref"] == cid
    names: list[str] = []
    sn.walk(lambda i: names.append(i.name))
    assert sorted(names) == sorted(ids)  # no extract-* snapshot left
    # labels on the content, as containerd's unpacker sets them
    manifest = json.loads(store.read_all(desc.digest))
    assert store.info(manifest["config"]["digest"]).labels[f"containerd.io/gc.ref.snapshot.{kind}"] == top
    assert store.info(manifest["layers"][0]["digest"]).labels["containerd.io/uncompressed"] == \
        "sha256:" + hashlib.sha256(LAYERS[0]).hexdigest()
    # the merged tree: native's top snapshot holds it all
    if kind == "native":
        t = describe_tree(sn.dirs(top)[0])
        assert sorted(t) == ["", "bin", "bin/sh", "data", "data/blob", "etc", "etc/hosts"]
    # a second unpack finds everything there
    assert unpack(desc, store, sn) == top
    sn.close()


def test_shared_lower_layers_are_reused(tmp_path, store):
    sn = new_snapshotter("native", str(tmp_path / "n"))
    a = unpack(image(store, LAYERS[:2]), store, sn)
    b = unpack(image(store, LAYERS), store, sn)
    names: list[str] = []
    sn.walk(lambda i: names.append(i.name))
    assert a in names and b in names and len(names) == 3
    sn.close()


def test_index_selects_the_platform(tmp_path, store):
    m = image(store, LAYERS[:1])
    entry = m.to_json()
    entry["platform"] = {"architecture": "amd64", "os": "linux"}
    other = dict(entry, platform={"architecture": "s390x", "os": "linux"},
                 digest="sha256:" + "0" * 64)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [other, entry]}).encode()
    idesc = put(store, index, OCI_INDEX)
    sn = new_snapshotter("native", str(tmp_path / "n"))
    assert unpack(idesc, store, sn, platform="linux/amd64") == "sha256:" + hashlib.sha256(LAYERS[0]).hexdigest()
    with pytest.raises(NotFound, match="no matching manifest for linux/arm64"):
        unpack(idesc, store, sn, platform="linux/arm64")
    sn.close()


def test_wrong_diff_id_leaves_no_snapshot(tmp_path, store):
    desc = image(store, LAYERS[:2], diff_ids=["sha256:" + hashlib.sha256(LAYERS[0]).hexdigest(),
                                              "sha256:" + "f" * 64])
    sn = new_snapshotter("native", str(tmp_path / "n"))
    with pytest.raises(DigestMismatch, match="diff ID sha256:.*, the config says sha256:ffff"):
        unpack(desc, store, sn)
    names: list[str] = []
    sn.walk(lambda i: names.append(i.name))
    assert names == ["sha256:" + hashlib.sha256(LAYERS[0]).hexdigest()]  # the good first layer stays
    sn.close()


def test_hostile_layer_fails_cleanly(tmp_path, store):
    bad = tar(("../escape", b"x"))
    sn = new_snapshotter("native", str(tmp_path / "n"))
    with pytest.raises(InvalidArgument, match="leaves the root"):
        unpack(image(store, [bad]), store, sn)
    names: list[str] = []
    sn.walk(lambda i: names.append(i.name))
    assert names == []
    assert not os.path.exists(tmp_path / "escape") and not os.path.exists(tmp_path / "n" / "escape")
    sn.close()


def test_mismatched_layer_count(tmp_path, store):
    desc = image(store, LAYERS[:2], diff_ids=["sha256:" + "a" * 64])
    sn = new_snapshotter("native", str(tmp_path / "n"))
    with pytest.raises(InvalidArgument, match="2 layers but the config lists 1 diff IDs"):
        unpack(desc, store, sn)
    sn.close()


def test_not_a_manifest(tmp_path, store):
    d = put(store, b"{}", "application/vnd.oci.image.config.v1+json")
    sn = new_snapshotter("native", str(tmp_path / "n"))
    with pytest.raises(InvalidArgument, match="neither an image manifest nor an index"):
        unpack(d, store, sn)
    sn.close()


def test_builtin_busybox_image(tmp_path, store):
    """The built-in image, loaded blob by blob from its OCI layout, unpacks to the tree its
    layer describes."""
    from skiff.images import builtin
    built = builtin.build(str(tmp_path / "img"))
    layout = built.layout_dir
    index = json.load(open(os.path.join(layout, "index.json")))
    for dirpath, _dirs, files in os.walk(os.path.join(layout, "blobs")):
        for f in files:
            data = open(os.path.join(dirpath, f), "rb").read()
            put(store, data, "application/octet-stream")
    desc = Descriptor.from_json(index["manifests"][0])
    sn = new_snapshotter("native", str(tmp_path / "n"))
    top = unpack(desc, store, sn)
    assert top == built.diff_id
    fs = sn.dirs(top)[0]
    assert os.readlink(os.path.join(fs, "bin/sh")) == "busybox"
    assert os.stat(os.path.join(fs, "tmp")).st_mode & 0o7777 == 0o1777
    assert open(os.path.join(fs, "etc/passwd")).read().startswith("root:x:0:0:")
    sn.close()
