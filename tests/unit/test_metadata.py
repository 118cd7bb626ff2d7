"""The metadata database: namespaces, images, containers, leases, content records,
transactions, durability settings, concurrency, and containerd's filter syntax."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from skiff.images.content import Descriptor, digest_bytes
from skiff.images.errors import AlreadyExists, FailedPrecondition, ImageError, InvalidArgument, NotFound
from skiff.images.leases import LABEL_GC_EXPIRE, LABEL_GC_FLAT, LeaseManager, lease_expired, parse_rfc3339
from skiff.images.metadata import (
    AnyValue,
    ContainerRecord,
    ImageRecord,
    LeaseRecord,
    MetaDB,
    Resource,
    parse_filters,
)

LAYER = "application/vnd.oci.image.layer.v1.tar"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
D1 = digest_bytes(b"1")
D2 = digest_bytes(b"2")


@pytest.fixture
def db(tmp_path):
    meta = MetaDB(tmp_path / "meta.db")
    yield meta
    meta.close()


def image(name: str, digest: str = D1, **labels: str) -> ImageRecord:
    return ImageRecord(name, Descriptor(MANIFEST, digest, 1), dict(labels))


def container(cid: str, **kw) -> ContainerRecord:
    kw.setdefault("spec", AnyValue("types.containerd.io/opencontainers/runtime-spec/1/Spec", b'{"ociVersion":"1.0.2"}'))
    return ContainerRecord(cid, "io.containerd.runc.v2", **kw)


# --- the database itself --------------------------------------------------------------------

def test_wal_and_full_sync(db, tmp_path):
    conn = db._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.integrity_check() == ["ok"]


def test_survives_reopen(tmp_path):
    db = MetaDB(tmp_path / "m.db")
    with db.transaction() as tx:
        tx.create_image("default", image("busybox"))
        tx.put_content("default", D1, 1, {"a": "b"})
    db.close()
    db = MetaDB(tmp_path / "m.db")
    with db.view() as tx:
        assert tx.get_image("default", "busybox").target.digest == D1
        assert tx.get_content("default", D1).labels == {"a": "b"}
    db.close()


def test_not_a_database_is_reported(tmp_path):
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ImageError, match=f"metadata database {path}"):
        MetaDB(path)


def test_unknown_schema_version_is_refused(tmp_path):
    path = tmp_path / "m.db"
    MetaDB(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(ImageError, match="schema version 99"):
        MetaDB(path)


def test_transaction_rolls_back_on_error(db):
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            tx.create_image("default", image("a"))
            raise RuntimeError("boom")
    with db.view() as tx:
        assert tx.list_images("default") == []


def test_nested_transaction_is_a_savepoint(db):
    with db.transaction() as tx:
        tx.create_image("default", image("outer"))
        with pytest.raises(AlreadyExists):
            with db.transaction() as inner:
                inner.create_image("default", image("inner"))
                inner.create_image("default", image("outer"))
        tx.create_image("default", image("after"))
    with db.view() as tx:
        assert [i.name for i in tx.list_images("default")] == ["after", "outer"]


def test_view_is_read_only(db):
    with db.view() as tx:
        with pytest.raises(ImageError, match="write attempted inside a read-only view"):
            tx.create_image("default", image("x"))
        with pytest.raises(ImageError, match="cannot be nested in a read-only view"):
            with db.transaction():
                pass


def test_threads_use_their_own_connections(db):
    errors = []

    def run(n: int) -> None:
        try:
            for i in range(20):
                with db.transaction() as tx:
                    tx.create_image("default", image(f"t{n}-{i}"))
        except Exception as e:  # collected, asserted below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.view() as tx:
        assert len(tx.list_images("default")) == 80


WRITER = r"""
import sys
from skiff.images.content import Descriptor
from skiff.images.metadata import ImageRecord, MetaDB
db = MetaDB(sys.argv[1])
for i in range(40):
    with db.transaction() as tx:
        tx.create_image("default", ImageRecord(f"{sys.argv[2]}-{i}", Descriptor("m", "sha256:" + "a" * 64, 1)))
db.close()
"""


def test_processes_writing_at_once(db, tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, db.path, f"p{n}"], stderr=subprocess.PIPE)
             for n in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    with db.view() as tx:
        assert len(tx.list_images("default")) == 120


def test_child_after_fork_opens_its_own_connection(db):
    with db.transaction() as tx:
        tx.create_image("default", image("before-fork"))
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            with db.transaction() as tx:
                tx.create_image("default", image("from-child"))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with db.view() as tx:
        assert {i.name for i in tx.list_images("default")} == {"before-fork", "from-child"}


# --- namespaces -----------------------------------------------------------------------------

def test_namespaces(db):
    with db.transaction() as tx:
        tx.create_image("k8s.io", image("a"))  # created implicitly
        tx.create_namespace("empty", {"x": "y"})
        with pytest.raises(AlreadyExists, match="namespace empty: already exists"):
            tx.create_namespace("empty")
        assert tx.list_namespaces() == ["empty", "k8s.io"]
        assert tx.update_namespace_labels("empty", {"z": "1"}, ["labels.z"]) == {"x": "y", "z": "1"}
        with pytest.raises(FailedPrecondition, match="namespace k8s.io must be empty, but it still has images"):
            tx.delete_namespace("k8s.io")
        tx.delete_namespace("empty")
        with pytest.raises(NotFound):
            tx.delete_namespace("empty")
        for bad in ("", "a/b", "-a", "a..b", "x" * 77):
            with pytest.raises(InvalidArgument, match="namespace"):
                tx.create_namespace(bad)


# --- images ---------------------------------------------------------------------------------

def test_images_crud(db):
    with db.transaction() as tx:
        created = tx.create_image("default", image("docker.io/library/busybox:latest", a="1"))
        assert created.created_at == created.updated_at
        assert created.created_at.tzinfo is not None
        with pytest.raises(AlreadyExists, match="image 'docker.io/library/busybox:latest': already exists"):
            tx.create_image("default", image("docker.io/library/busybox:latest"))
        tx.create_image("default", image("other", D2, b="2"))
        tx.create_image("ns2", image("docker.io/library/busybox:latest"))
    with db.view() as tx:
        assert [i.name for i in tx.list_images("default")] == ["docker.io/library/busybox:latest", "other"]
        assert [i.name for i in tx.list_images("default", ["labels.a==1"])] == [
            "docker.io/library/busybox:latest"]
        assert [i.name for i in tx.list_images("default", [f"target.digest=={D2}"])] == ["other"]
        assert [i.name for i in tx.list_images("default", ["name~=^docker\\.io/"])] == [
            "docker.io/library/busybox:latest"]
        with pytest.raises(NotFound, match="image 'nope': not found in namespace default"):
            tx.get_image("default", "nope")


def test_image_update_fieldpaths(db):
    with db.transaction() as tx:
        tx.create_image("default", image("x", a="1", b="2"))
        new = image("x", D2, a="9", c="3")
        new.target.annotations = {"org.opencontainers.image.ref.name": "latest"}
        up = tx.update_image("default", new, ["labels.a", "labels.b"])
        assert up.labels == {"a": "9"}
        assert up.target.digest == D1
        up = tx.update_image("default", new, ["target"])
        assert up.target.digest == D2
        up = tx.update_image("default", new, ["annotations.org.opencontainers.image.ref.name"])
        assert up.target.annotations == {"org.opencontainers.image.ref.name": "latest"}
        up = tx.update_image("default", image("x", D1))
        assert (up.target.digest, up.labels) == (D1, {})
        assert up.updated_at >= up.created_at
        with pytest.raises(InvalidArgument, match="cannot update field 'size'"):
            tx.update_image("default", new, ["size"])
        with pytest.raises(NotFound):
            tx.update_image("default", image("missing"))
        tx.delete_image("default", "x")
        with pytest.raises(NotFound):
            tx.delete_image("default", "x")


def test_invalid_image_is_refused_and_nothing_is_written(db):
    bad = ImageRecord("bad", Descriptor(MANIFEST, "sha256:123", 1))
    with pytest.raises(InvalidArgument, match="image 'bad': target.digest 'sha256:123'"):
        with db.transaction() as tx:
            tx.create_image("default", bad)
    with pytest.raises(InvalidArgument, match="image: name must not be empty"):
        with db.transaction() as tx:
            tx.create_image("default", image(""))
    with db.view() as tx:
        assert tx.list_namespaces() == []


# --- containers -----------------------------------------------------------------------------

def test_containers_crud(db):
    ext = {"skiff.io/health": AnyValue("t", b"\x00\x01binary")}
    with db.transaction() as tx:
        c = tx.create_container("default", container("web", image="busybox", snapshotter="overlayfs",
                                                         snapshot_key="web", labels={"a": "1"}, extensions=ext,
                                                         runtime_options=AnyValue("opts", b"o")))
        assert c.spec.value == b'{"ociVersion":"1.0.2"}'
        assert c.extensions == ext
        assert c.runtime_options == AnyValue("opts", b"o")
        with pytest.raises(AlreadyExists, match="container 'web': already exists in namespace default"):
            tx.create_container("default", container("web"))
        assert [x.id for x in tx.list_containers("default", ["labels.a==1", "snapshotter==native"])] == ["web"]
        assert tx.list_containers("default", ["runtime.name==io.containerd.runc.v1"]) == []


@pytest.mark.parametrize("rec, why", [
    (ContainerRecord("c", "", AnyValue("t", b"")), "must specify a runtime name"),
    (ContainerRecord("c", "rt"), "must specify a spec"),
    (ContainerRecord("c", "rt", AnyValue("t", b""), snapshot_key="k"), "a snapshot key needs a snapshotter"),
    (ContainerRecord("bad id", "rt", AnyValue("t", b"")), "container id 'bad id'"),
    (ContainerRecord("c", "rt", AnyValue("t", b""), labels={"": "x"}), "label with an empty key"),
])
def test_invalid_container_is_refused(db, rec, why):
    with pytest.raises(InvalidArgument, match=why):
        with db.transaction() as tx:
            tx.create_container("default", rec)


def test_container_update(db):
    with db.transaction() as tx:
        created = tx.create_container("default", container("c", labels={"a": "1", "b": "2"},
                                                           snapshotter="overlayfs", snapshot_key="k"))
        up = tx.update_container("default", container("c", labels={"a": "5"}), ["labels.a", "labels.b"])
        assert up.labels == {"a": "5"}
        assert up.created_at == created.created_at
        up = tx.update_container("default", container("c", spec=AnyValue("t", b"{}"),
                                                      extensions={"e": AnyValue("t", b"x")}),
                                 ["spec", "extensions.e"])
        assert up.spec == AnyValue("t", b"{}")
        assert up.extensions == {"e": AnyValue("t", b"x")}
        assert up.snapshot_key == "k"
        with pytest.raises(InvalidArgument, match="runtime name is immutable"):
            tx.update_container("default", ContainerRecord("c", "other", AnyValue("t", b"")))
        with pytest.raises(InvalidArgument, match="snapshotter is immutable"):
            tx.update_container("default", container("c", snapshotter="native"))
        with pytest.raises(InvalidArgument, match="cannot update field 'id'"):
            tx.update_container("default", container("c"), ["id"])
        tx.delete_container("default", "c")
        with pytest.raises(NotFound):
            tx.get_container("default", "c")


# --- leases ---------------------------------------------------------------------------------

def test_leases_and_resources(db):
    with db.transaction() as tx:
        tx.create_lease("default", "pull-1", {"x": "y"})
        with pytest.raises(AlreadyExists):
            tx.create_lease("default", "pull-1")
        tx.add_lease_resource("default", "pull-1", "content", D1)
        tx.add_lease_resource("default", "pull-1", "content", D1)  # idempotent
        tx.add_lease_resource("default", "pull-1", "snapshots/overlayfs", "extract-1")
        tx.add_lease_resource("default", "pull-1", "ingests", "layer-sha256:1")
        assert tx.list_lease_resources("default", "pull-1") == [
            Resource("content", D1), Resource("ingests", "layer-sha256:1"),
            Resource("snapshots/overlayfs", "extract-1")]
        with pytest.raises(InvalidArgument, match="unsupported resource type 'images'"):
            tx.add_lease_resource("default", "pull-1", "images", "x")
        with pytest.raises(InvalidArgument, match="content resource"):
            tx.add_lease_resource("default", "pull-1", "content", "not-a-digest")
        with pytest.raises(NotFound, match="lease 'nope'"):
            tx.add_lease_resource("default", "nope", "content", D1)
        tx.delete_lease_resource("default", "pull-1", "ingests", "layer-sha256:1")
        assert [le.id for le in tx.list_leases("default", ["labels.x==y"])] == ["pull-1"]
        tx.delete_lease("default", "pull-1")
        # resources go with their lease
        assert tx._q("SELECT count(*) FROM lease_resources") == [(0,)]
        with pytest.raises(NotFound):
            tx.delete_lease("default", "pull-1")


def test_lease_manager(db):
    leases = LeaseManager(db, "ns")
    lease = leases.create(expire=dt.timedelta(hours=1), flat=True)
    assert lease.labels[LABEL_GC_FLAT] == "true"
    expiry = parse_rfc3339(lease.labels[LABEL_GC_EXPIRE])
    now = dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < expiry - now <= dt.timedelta(hours=1)
    assert not lease_expired(lease, now)
    assert lease_expired(lease, now + dt.timedelta(hours=2))
    leases.add_resource(lease.id, Resource("content", D1))
    assert leases.list_resources(lease.id) == [Resource("content", D1)]
    leases.delete_resource(lease.id, Resource("content", D1))
    assert leases.list_resources(lease.id) == []
    with leases.temporary() as tmp:
        assert {le.id for le in leases.list()} == {lease.id, tmp.id}
    assert [le.id for le in leases.list()] == [lease.id]
    with pytest.raises(NotFound):
        leases.get(tmp.id)


@pytest.mark.parametrize("text, expected", [
    ("2024-05-01T10:20:30Z", dt.datetime(2024, 5, 1, 10, 20, 30, tzinfo=dt.UTC)),
    ("2024-05-01T10:20:30.123456789Z", dt.datetime(2024, 5, 1, 10, 20, 30, 123456, tzinfo=dt.UTC)),
    ("2024-05-01T12:20:30+02:00", dt.datetime(2024, 5, 1, 10, 20, 30, tzinfo=dt.UTC)),
    ("yesterday", None),
    ("2024-13-01T00:00:00Z", None),
])
def test_parse_rfc3339(text, expected):
    assert parse_rfc3339(text) == expected


def test_unparsable_expiry_keeps_the_lease():
    assert not lease_expired(LeaseRecord("l", {LABEL_GC_EXPIRE: "soon"}), dt.datetime.now(dt.UTC))


# --- content records ------------------------------------------------------------------------

def test_content_records(db):
    with db.transaction() as tx:
        tx.put_content("a", D1, 1, {"x": "1"})
        tx.put_content("b", D1, 1, None)
        tx.put_content("a", D1, 1, None)  # keeps the labels
        assert tx.get_content("a", D1).labels == {"x": "1"}
        assert tx.content_namespaces(D1) == ["a", "b"]
        assert tx.update_content_labels("a", D1, {"y": "2"}, ["labels.y"]).labels == {"x": "1", "y": "2"}
        assert tx.delete_content("a", D1)
        assert not tx.delete_content("a", D1)
        assert tx.content_namespaces(D1) == ["b"]
        with pytest.raises(NotFound):
            tx.update_content_labels("a", D1, {})


# --- filters --------------------------------------------------------------------------------

def fields(mapping):
    def adaptor(path):
        key = ".".join(path)
        return (mapping[key], True) if key in mapping else ("", False)
    return adaptor


@pytest.mark.parametrize("filters, record, match", [
    ([], {}, True),
    (["name==a"], {"name": "a"}, True),
    (["name==a"], {"name": "b"}, False),
    (["name!=a"], {}, True),  # containerd: != matches an absent field
    (["name"], {"name": ""}, True),  # presence
    (["name"], {}, False),
    (["name~=^bu.y"], {"name": "busybox"}, True),
    (["name~=box$"], {"name": "boxes"}, False),
    (["name==a,kind==b"], {"name": "a", "kind": "c"}, False),
    (["name==x", "kind==c"], {"name": "a", "kind": "c"}, True),
    (['labels."containerd.io/gc.root"'], {"labels.containerd.io/gc.root": "x"}, True),
    (['labels."a b"=="c, d"'], {"labels.a b": "c, d"}, True),
    (["labels.`k`==`v\\n`"], {"labels.k": "v\\n"}, True),
    ([' name == a , kind==b '], {"name": "a", "kind": "b"}, True),
])
def test_filter_semantics(filters, record, match):
    assert parse_filters(filters).match(fields(record)) is match


@pytest.mark.parametrize("text, why", [
    ("name==", "expected a value"),
    ('labels."unterminated', "unterminated quoted string"),
    ("name~=(", "invalid regular expression"),
    ("name==a b", "expected ','"),
    ("==a", "expected a field name"),
])
def test_filter_errors(text, why):
    with pytest.raises(InvalidArgument, match=why):
        parse_filters([text])
