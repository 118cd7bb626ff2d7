"""Garbage collection: roots (images, containers, leases, gc.root), references (labels, the JSON of
indexes and manifests, chain IDs of configs, snapshot parents), and the sweep of content records,
blob files, snapshots, leases and ingests."""

from __future__ import annotations

import datetime as dt
import json
import os
import re

import pytest

from skiff.images import manifest as mf
from skiff.images import ocilayout
from skiff.images.content import ContentStore, Descriptor, digest_bytes
from skiff.images.errors import FailedPrecondition, ImageError
from skiff.images.gc import chain_ids, collect, content_refs, snapshot_refs
from skiff.images.leases import LeaseManager
from skiff.images.metadata import AnyValue, ContainerRecord, ImageRecord, MetaDB, Resource
from skiff.images.snapshots.native import NativeSnapshotter


@pytest.fixture
def db(tmp_path):
    meta = MetaDB(tmp_path / "meta.db")
    yield meta
    meta.close()


@pytest.fixture
def store(tmp_path, db):
    return ContentStore(tmp_path / "content", db)


@pytest.fixture
def native(tmp_path):
    ss = NativeSnapshotter(str(tmp_path / "native"))
    yield ss
    ss.close()


def put(store: ContentStore, data: bytes, **labels: str) -> str:
    d = digest_bytes(data)
    with store.writer(f"w-{d}") as w:
        w.write(data)
        w.commit(labels=labels or None)
    return d


def layer(name: str, text: str) -> ocilayout.Blob:
    tar = ocilayout.reproducible_tar([ocilayout.file_member(name, text.encode())])
    return ocilayout.Blob(ocilayout.MEDIA_TYPE_LAYER, tar)


def make_image(layers: list[ocilayout.Blob], arch: str = "amd64", docker: bool = False) -> ocilayout.Image:
    diff_ids = [ocilayout.sha256_digest(b.data) for b in layers]  # uncompressed: diff ID = digest
    config = {"architecture": arch, "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    img = ocilayout.assemble(config, layers)
    if docker:  # the same image in Docker schema 2 media types
        cfg = ocilayout.Blob(mf.DOCKER_CONFIG, img.config.data)
        dl = [ocilayout.Blob(mf.DOCKER_LAYER, b.data) for b in layers]
        manifest = {"schemaVersion": 2, "mediaType": mf.DOCKER_MANIFEST, "config": cfg.descriptor(),
                    "layers": [b.descriptor() for b in dl]}
        img = ocilayout.Image(cfg, dl, ocilayout.Blob(mf.DOCKER_MANIFEST, ocilayout.json_bytes(manifest)))
    return img


def store_image(store: ContentStore, name: str, img: ocilayout.Image, target: ocilayout.Blob | None = None) -> None:
    """Ingest an image's blobs (no GC labels, as an archive import would) and record it."""
    for blob in img.blobs:
        put(store, blob.data)
    target = target or img.manifest
    with store.meta.transaction() as tx:
        tx.create_image(store.namespace, ImageRecord(name, Descriptor(target.media_type, target.digest, target.size)))


def delete_image(store: ContentStore, name: str) -> None:
    with store.meta.transaction() as tx:
        tx.delete_image(store.namespace, name)


def digests(store: ContentStore) -> set[str]:
    return {i.digest for i in store.infos()}


def files(store: ContentStore) -> set[str]:
    return {d for d, _ in store._backend.blob_digests()}


def all_digests(img: ocilayout.Image) -> set[str]:
    return {b.digest for b in img.blobs}


# --- label helpers --------------------------------------------------------------------------

def test_label_parsing():
    d = digest_bytes(b"x")
    assert content_refs({"containerd.io/gc.ref.content": d, "containerd.io/gc.ref.content.l.0": d,
                         "containerd.io/gc.ref.content/m": d, "containerd.io/gc.ref.contentX": d,
                         "containerd.io/gc.ref.content.bad": "not-a-digest"}) == [d, d, d]
    assert sorted(snapshot_refs({"containerd.io/gc.ref.snapshot.overlayfs": "a",
                                 "containerd.io/gc.ref.snapshot.native/x": "b",
                                 "containerd.io/gc.ref.snapshot.": "c"})) == [("native", "b"), ("overlayfs", "a")]


def test_chain_ids():
    a, b = digest_bytes(b"a"), digest_bytes(b"b")
    import hashlib
    assert chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]
    assert chain_ids([]) == []


# --- content --------------------------------------------------------------------------------

def test_unreferenced_content_goes_and_image_content_stays(store):
    img = make_image([layer("a", "1"), layer("b", "2")])
    store_image(store, "img", img)
    loose = put(store, b"nobody wants me")
    result = collect(store)
    assert result.removed_content == [("default", loose)]
    assert result.removed_blobs == [loose]
    assert digests(store) == all_digests(img)
    assert files(store) == all_digests(img)


def test_deleted_image_layers_go_shared_layer_stays(store):
    shared = layer("shared", "s")
    a = make_image([shared, layer("a", "only-a")])
    b = make_image([shared, layer("b", "only-b")], arch="arm64")
    store_image(store, "a", a)
    store_image(store, "b", b)
    delete_image(store, "a")
    result = collect(store)
    assert digests(store) == all_digests(b)
    assert shared.digest in files(store)
    assert set(d for _, d in result.removed_content) == all_digests(a) - all_digests(b)
    assert files(store) == all_digests(b)
    delete_image(store, "b")
    collect(store)
    assert digests(store) == set() and files(store) == set()


@pytest.mark.parametrize("docker", [False, True])
def test_index_and_manifest_list_are_followed(store, docker):
    amd = make_image([layer("x", "amd")], "amd64", docker)
    arm = make_image([layer("x", "arm")], "arm64", docker)
    index_type = mf.DOCKER_MANIFEST_LIST if docker else mf.OCI_INDEX
    manifests = []
    for img, arch in ((amd, "amd64"), (arm, "arm64")):
        d = img.manifest.descriptor()
        d["platform"] = {"architecture": arch, "os": "linux"}
        manifests.append(d)
    index = ocilayout.Blob(index_type, ocilayout.json_bytes(
        {"schemaVersion": 2, "mediaType": index_type, "manifests": manifests}))
    for img in (amd, arm):
        for blob in img.blobs:
            put(store, blob.data)
    put(store, index.data)
    with store.meta.transaction() as tx:
        tx.create_image("default", ImageRecord("multi", Descriptor(index_type, index.digest, index.size)))
    put(store, b"stray")
    collect(store)
    assert digests(store) == all_digests(amd) | all_digests(arm) | {index.digest}


def test_partially_pulled_index_keeps_what_is_there(store):
    """An index whose other platforms were never fetched: missing children are dead edges."""
    amd = make_image([layer("x", "amd")])
    missing = {"mediaType": mf.OCI_MANIFEST, "digest": digest_bytes(b"never fetched"), "size": 13}
    index = ocilayout.Blob(mf.OCI_INDEX, ocilayout.json_bytes(
        {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [amd.manifest.descriptor(), missing]}))
    store_image(store, "img", amd, target=index)
    put(store, index.data)
    collect(store)
    assert digests(store) == all_digests(amd) | {index.digest}


def test_gc_labels_and_gc_root(store):
    child = put(store, b"child")
    grandchild = put(store, b"grandchild")
    put(store, b"child", **{"containerd.io/gc.ref.content.x": grandchild})
    parent = put(store, b"parent", **{"containerd.io/gc.ref.content.l.0": child})
    root = put(store, b"root", **{"containerd.io/gc.root": "yes", "containerd.io/gc.ref.content/p": parent})
    loose = put(store, b"loose")
    result = collect(store)
    assert digests(store) == {child, grandchild, parent, root}
    assert result.removed_content == [("default", loose)]


def test_image_labels_reference_content(store):
    extra = put(store, b"extra")
    img = make_image([layer("a", "1")])
    store_image(store, "img", img)
    with store.meta.transaction() as tx:
        rec = tx.get_image("default", "img")
        rec.labels = {"containerd.io/gc.ref.content.sig": extra}
        tx.update_image("default", rec, ["labels"])
    collect(store)
    assert extra in digests(store)


def test_namespaces_are_collected_separately(store):
    img = make_image([layer("a", "1")])
    other = store.using("other")
    store_image(store, "img", img)
    for blob in img.blobs:
        put(other, blob.data)  # recorded in "other", no image there
    result = collect(store)
    assert {d for ns, d in result.removed_content if ns == "other"} == all_digests(img)
    assert digests(other) == set()
    assert files(store) == all_digests(img)  # still held by "default"
    assert result.removed_blobs == []


def test_orphan_file_without_record_is_removed(store):
    d = put(store, b"orphan")
    with store.meta.transaction() as tx:  # as after a crash between rename and record
        tx.delete_content("default", d)
    kept = put(store, b"kept", **{"containerd.io/gc.root": "1"})
    result = collect(store)
    assert result.removed_blobs == [d]
    assert files(store) == {kept}


def test_unparsable_manifest_stops_the_collection(store):
    bad = put(store, b"{not json")
    loose = put(store, b"loose")
    with store.meta.transaction() as tx:
        tx.create_image("default", ImageRecord("bad", Descriptor(mf.OCI_MANIFEST, bad, 9)))
    with pytest.raises(FailedPrecondition, match=f"gc: namespace default: {re.escape(mf.OCI_MANIFEST)} {bad}: "
                                                 "cannot follow its references: .*not valid JSON.*nothing was "
                                                 "removed"):
        collect(store)
    assert loose in digests(store) and loose in files(store)


def test_image_whose_target_is_missing_is_a_dead_edge(store):
    loose = put(store, b"loose")
    with store.meta.transaction() as tx:
        tx.create_image("default", ImageRecord("ghost", Descriptor(mf.OCI_MANIFEST, digest_bytes(b"?"), 1)))
    collect(store)
    assert digests(store) == set()
    assert loose not in files(store)


def test_dry_run_removes_nothing(store):
    loose = put(store, b"loose")
    result = collect(store, dry_run=True)
    assert result.dry_run
    assert result.removed_content == [("default", loose)]
    assert result.removed_blobs == [loose]
    assert digests(store) == {loose} and files(store) == {loose}


# --- leases ---------------------------------------------------------------------------------

def test_lease_holds_content_until_it_expires(store, db):
    leases = LeaseManager(db)
    img = make_image([layer("a", "1")])
    for blob in img.blobs:
        put(store, blob.data)
    lease = leases.create("pull", expire=dt.timedelta(hours=1))
    leases.add_resource("pull", Resource("content", img.manifest.digest))
    collect(store)
    # a lease resource carries no media type: the manifest is held, not parsed
    assert digests(store) == {img.manifest.digest}
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    result = collect(store, now=later)
    assert result.removed_leases == [("default", lease.id)]
    assert digests(store) == set()


def test_leased_content_references_are_followed_by_labels(store, db):
    leases = LeaseManager(db)
    child = put(store, b"child")
    parent = put(store, b"parent", **{"containerd.io/gc.ref.content.0": child})
    leases.create("l")
    leases.add_resource("l", Resource("content", parent))
    collect(store)
    assert digests(store) == {parent, child}


def test_flat_lease_holds_only_its_resources(store, db):
    leases = LeaseManager(db)
    child = put(store, b"child")
    parent = put(store, b"parent", **{"containerd.io/gc.ref.content.0": child})
    leases.create("l", flat=True)
    leases.add_resource("l", Resource("content", parent))
    collect(store)
    assert digests(store) == {parent}


# --- ingests --------------------------------------------------------------------------------

def test_stale_ingests(store, db):
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with store.writer("fresh") as w:
        w.write(b"x")
    assert collect(store).removed_ingests == []
    with store.writer("leased-ref") as w:
        w.write(b"y")
    LeaseManager(db).create("hold")
    LeaseManager(db).add_resource("hold", Resource("ingests", "leased-ref"))
    held_open = store.writer("open")
    try:
        result = collect(store, now=later)
        assert result.removed_ingests == [("default", "fresh")]
        assert sorted(s.ref for s in store.list_statuses()) == ["leased-ref", "open"]
    finally:
        held_open.close()
    result = collect(store, now=later)
    assert result.removed_ingests == [("default", "open")]


# --- snapshots ------------------------------------------------------------------------------

def unpack_chain(ss: NativeSnapshotter, img: ocilayout.Image) -> list[str]:
    """Committed snapshots named by chain ID, as the unpacker makes them (trees left empty)."""
    parent = ""
    ids = chain_ids(img.diff_ids())
    for chain_id in ids:
        if chain_id in snapshot_names(ss):  # already unpacked (a layer shared with another image)
            parent = chain_id
            continue
        ss.prepare(f"extract-{chain_id}", parent)
        ss.commit(chain_id, f"extract-{chain_id}")
        parent = chain_id
    return ids


def snapshot_names(ss: NativeSnapshotter) -> set[str]:
    names: set[str] = set()
    ss.walk(lambda info: names.add(info.name))
    return names


def test_image_keeps_its_unpacked_snapshots_by_chain_id(store, native):
    shared = layer("shared", "s")
    a = make_image([shared, layer("a", "1")])
    b = make_image([shared, layer("b", "2")], arch="arm64")
    store_image(store, "a", a)
    store_image(store, "b", b)
    ids_a = unpack_chain(native, a)
    ids_b = unpack_chain(native, b)
    native.prepare("stray-active", "")
    collect(store, {"native": native})
    assert snapshot_names(native) == set(ids_a) | set(ids_b)
    delete_image(store, "a")
    result = collect(store, {"native": native})
    assert result.removed_snapshots == [("native", ids_a[1])]
    assert snapshot_names(native) == set(ids_b)  # the shared base layer stays


def test_container_holds_its_snapshot_and_parents(store, db, native):
    img = make_image([layer("a", "1"), layer("b", "2")])
    store_image(store, "img", img)
    ids = unpack_chain(native, img)
    native.prepare("ctr-rootfs", ids[-1])
    with db.transaction() as tx:
        tx.create_container("default", ContainerRecord("ctr", "io.containerd.runc.v2", AnyValue("t", b"{}"),
                                                       image="img", snapshotter="native", snapshot_key="ctr-rootfs"))
        tx.delete_image("default", "img")
    result = collect(store, {"native": native})
    assert snapshot_names(native) == {"ctr-rootfs", *ids}
    assert digests(store) == set()  # the image is gone; its content with it
    assert result.removed_snapshots == []
    with db.transaction() as tx:
        tx.delete_container("default", "ctr")
    result = collect(store, {"native": native})
    # children before parents
    assert result.removed_snapshots == [("native", "ctr-rootfs"), ("native", ids[1]), ("native", ids[0])]
    assert snapshot_names(native) == set()


def test_snapshot_roots_labels_and_leases(store, db, native):
    native.prepare("base-active", "")
    native.commit("base", "base-active")
    native.prepare("rooted", "base", {"containerd.io/gc.root": "x"})
    native.prepare("by-label", "")
    native.prepare("by-lease", "")
    native.prepare("by-snapshot-label", "", {})
    native.commit("target-of-label", "by-snapshot-label")
    native.prepare("labels-another", "", {"containerd.io/gc.ref.snapshot.native": "target-of-label",
                                          "containerd.io/gc.root": "1"})
    native.prepare("unreferenced", "")
    put(store, b"config", **{"containerd.io/gc.root": "1", "containerd.io/gc.ref.snapshot.native": "by-label"})
    LeaseManager(db).create("l")
    LeaseManager(db).add_resource("l", Resource("snapshots/native", "by-lease"))
    result = collect(store, {"native": native})
    assert result.removed_snapshots == [("native", "unreferenced")]
    assert snapshot_names(native) == {"base", "rooted", "by-label", "by-lease", "target-of-label",
                                      "labels-another"}


def test_snapshot_key_map(store, db, native):
    native.prepare("default/7/rootfs", "")
    with db.transaction() as tx:
        tx.create_container("default", ContainerRecord("c", "rt", AnyValue("t", b"{}"), snapshotter="native",
                                                       snapshot_key="rootfs"))
    collect(store, {"native": native}, snapshot_key=lambda ns, ss, key: f"{ns}/7/{key}")
    assert snapshot_names(native) == {"default/7/rootfs"}


class FailingRemove:
    """A snapshotter whose remove fails: GC goes on with the rest and reports it at the end."""

    def __init__(self, inner: NativeSnapshotter) -> None:
        self.inner = inner

    def walk(self, fn, filters=()):
        self.inner.walk(fn, filters)

    def remove(self, key: str) -> None:
        raise ImageError(f"remove snapshot {key}: device busy")


def test_snapshot_removal_failure_is_reported_after_the_rest(store, native):
    native.prepare("stuck", "")
    loose = put(store, b"loose")
    with pytest.raises(ImageError, match="gc: snapshot native/stuck: remove snapshot stuck: device busy") as e:
        collect(store, {"native": FailingRemove(native)})  # type: ignore[dict-item]
    assert e.value.result.removed_content == [("default", loose)]
    assert files(store) == set()
    assert snapshot_names(native) == {"stuck"}


def test_config_json_of_a_real_image_is_read(store, native):
    """Sanity check of the helpers: the config the chain IDs come from is the image's."""
    img = make_image([layer("a", "1")])
    assert json.loads(img.config.data)["rootfs"]["diff_ids"] == img.diff_ids()
    assert os.path.isdir(native.root)
