"""The content store: ingest, resume, commit checks, namespaces, labels, deletion, locking."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from skiff.images import content as content_mod
from skiff.images.content import ContentStore, Descriptor, digest_bytes, parse_digest
from skiff.images.errors import (
    AlreadyExists,
    DigestMismatch,
    FailedPrecondition,
    ImageError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from skiff.images.leases import LeaseManager
from skiff.images.metadata import MetaDB, Resource


@pytest.fixture
def db(tmp_path):
    meta = MetaDB(tmp_path / "meta.db")
    yield meta
    meta.close()


@pytest.fixture
def store(tmp_path, db):
    return ContentStore(tmp_path / "content", db)


def ingest(store: ContentStore, data: bytes, ref: str = "ref", **labels: str) -> str:
    d = digest_bytes(data)
    with store.writer(ref, expected=d, total=len(data)) as w:
        w.write(data)
        w.commit(labels=labels or None)
    return d


def blob_files(store: ContentStore) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(os.path.join(store.root, "blobs")):
        out.extend(os.path.join(dirpath, f) for f in files)
    return sorted(out)


# --- digests and descriptors ----------------------------------------------------------------

def test_parse_digest_accepts_sha256_and_sha512():
    assert parse_digest("sha256:" + "a" * 64) == ("sha256", "a" * 64)
    assert parse_digest("sha512:" + "0" * 128) == ("sha512", "0" * 128)


@pytest.mark.parametrize("bad, why", [
    ("sha256:" + "A" * 64, "lowercase hex"),
    ("sha256:" + "a" * 63, "64 lowercase hex"),
    ("md5:" + "a" * 32, "unsupported digest algorithm 'md5'"),
    ("sha256", "not a digest"),
    ("sha512:" + "a" * 64, "128 lowercase hex"),
])
def test_parse_digest_refuses(bad, why):
    with pytest.raises(InvalidArgument, match=why):
        parse_digest(bad)


def test_descriptor_round_trip_keeps_go_field_order():
    data = b"{}"
    obj = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_bytes(data),
           "size": 2, "urls": ["https://example.com/x"], "annotations": {"b": "2", "a": "1"},
           "data": "e30=", "platform": {"architecture": "amd64", "os": "linux"},
           "artifactType": "application/x"}
    d = Descriptor.from_json(obj)
    out = d.to_json()
    assert list(out) == ["mediaType", "digest", "size", "urls", "annotations", "data", "platform",
                         "artifactType"]
    assert list(out["annotations"]) == ["a", "b"]
    assert Descriptor.from_json(out) == d
    assert d.data == b"{}"


@pytest.mark.parametrize("obj, where", [
    ({"digest": "sha256:" + "a" * 64, "size": 1}, "layers[0].mediaType"),
    ({"mediaType": "x", "digest": "sha256:zz", "size": 1}, "layers[0].digest"),
    ({"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": -1}, "layers[0].size"),
    ({"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": True}, "layers[0].size"),
    ({"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": 1, "platform": {"os": "linux"}},
     "layers[0].platform.architecture"),
    ({"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": 2, "data": "e30="}, "layers[0].data"),
    ({"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": 1, "annotations": {"a": 1}},
     "layers[0].annotations"),
])
def test_descriptor_from_json_names_the_bad_field(obj, where):
    with pytest.raises(InvalidArgument) as e:
        Descriptor.from_json(obj, "layers[0]")
    assert str(e.value).startswith(where)


# --- ingest and commit ----------------------------------------------------------------------

def test_commit_moves_blob_into_place_and_records_it(store):
    data = os.urandom(3 * 1024 * 1024 + 17)
    d = ingest(store, data, a="b")
    algorithm, hexpart = parse_digest(d)
    path = os.path.join(store.root, "blobs", algorithm, hexpart)
    assert store.blob_path(d) == path
    with open(path, "rb") as f:
        assert f.read() == data
    assert os.stat(path).st_mode & 0o777 == 0o444
    info = store.info(d)
    assert (info.digest, info.size, info.labels) == (d, len(data), {"a": "b"})
    assert store.read_all(d) == data
    with store.open(d) as f:
        f.seek(len(data) - 17)
        assert f.read() == data[-17:]
    assert os.listdir(os.path.join(store.root, "ingest")) == []
    assert store.list_statuses() == []


def test_commit_without_expected_computes_sha256(store):
    with store.writer("r") as w:
        w.write(b"abc")
        info = w.commit()
    assert info.digest == "sha256:" + hashlib.sha256(b"abc").hexdigest()


def test_sha512_ingest(store):
    data = b"x" * 5000
    d = "sha512:" + hashlib.sha512(data).hexdigest()
    with store.writer("r", expected=d) as w:
        w.write(data)
        assert w.digest() == d
        info = w.commit(len(data))
    assert info.digest == d
    assert os.path.exists(os.path.join(store.root, "blobs", "sha512", d.split(":")[1]))


def test_commit_with_sha512_expected_on_a_sha256_writer_rehashes(store):
    data = b"y" * 100
    with store.writer("r") as w:
        w.write(data)
        info = w.commit(expected="sha512:" + hashlib.sha512(data).hexdigest())
    assert info.digest.startswith("sha512:")


def test_wrong_digest_is_refused_and_keeps_the_ingest(store):
    wrong = digest_bytes(b"other")
    w = store.writer("r")
    w.write(b"data")
    with pytest.raises(DigestMismatch, match=f"ingest ref 'r' in namespace default: commit: unexpected "
                                             f"digest {digest_bytes(b'data')}, expected {wrong}"):
        w.commit(4, wrong)
    assert blob_files(store) == []
    assert not store.exists(wrong)
    # still there, still usable: fix it up and commit
    assert store.status("r").offset == 4
    w.truncate(0)
    w.write(b"other")
    assert w.commit(5, wrong).digest == wrong


def test_wrong_size_is_refused(store):
    with store.writer("r") as w:
        w.write(b"abcd")
        with pytest.raises(DigestMismatch, match="unexpected size 4, expected 5"):
            w.commit(5)
    assert blob_files(store) == []
    assert store.status("r").offset == 4


def test_write_past_the_expected_size_is_refused_before_writing(store):
    with store.writer("r", total=3) as w:
        w.write(b"ab")
        with pytest.raises(FailedPrecondition, match="writing 2 bytes at offset 2 would exceed the expected "
                                                     "size 3"):
            w.write(b"cd")
        assert w.offset == 2
    assert store.status("r").offset == 2


def test_resume_after_close(store):
    data = os.urandom(200_000)
    d = digest_bytes(data)
    w = store.writer("layer-1", expected=d, total=len(data))
    w.write(data[:70_000])
    w.close()
    st = store.status("layer-1")
    assert (st.ref, st.offset, st.total, st.expected) == ("layer-1", 70_000, len(data), d)
    w = store.writer("layer-1")  # expected and total come back from the ingest
    assert (w.offset, w.expected, w.total) == (70_000, d, len(data))
    w.write(data[70_000:])
    assert w.commit().digest == d
    assert store.read_all(d) == data


def test_resume_with_other_expected_digest_is_refused(store):
    with store.writer("r", expected=digest_bytes(b"a")) as w:
        w.write(b"a")
    with pytest.raises(FailedPrecondition, match="started for sha256:.*abort the ingest"):
        store.writer("r", expected=digest_bytes(b"b"))
    with store.writer("r", total=1):
        pass
    with pytest.raises(FailedPrecondition, match="started with expected size 1, now asked for 2"):
        store.writer("r", total=2)


def test_truncate_rehashes(store):
    with store.writer("r") as w:
        w.write(b"hello world")
        w.truncate(5)
        assert w.offset == 5
        assert w.digest() == digest_bytes(b"hello")
        w.write(b"!")
        assert w.commit().digest == digest_bytes(b"hello!")
    with store.writer("r2") as w:
        with pytest.raises(InvalidArgument, match="cannot truncate to 3"):
            w.truncate(3)


def test_second_writer_on_same_ref_is_unavailable(store):
    w = store.writer("r")
    try:
        with pytest.raises(Unavailable, match="ingest ref 'r' in namespace default: locked by another writer"):
            store.writer("r")
        with pytest.raises(Unavailable, match="cannot abort, a writer has it open"):
            store.abort("r")
    finally:
        w.close()
    store.writer("r").close()  # free again


def test_same_ref_in_two_namespaces_are_two_ingests(store):
    other = store.using("other")
    with store.writer("r") as a, other.writer("r") as b:
        a.write(b"aa")
        b.write(b"b")
    assert [s.offset for s in store.list_statuses()] == [2]
    assert [s.offset for s in other.list_statuses()] == [1]


def test_abort(store):
    with store.writer("r") as w:
        w.write(b"x")
    store.abort("r")
    with pytest.raises(NotFound, match="ingest ref 'r': not found in namespace default"):
        store.status("r")
    with pytest.raises(NotFound):
        store.abort("r")
    assert os.listdir(os.path.join(store.root, "ingest")) == []


def test_list_statuses_filters(store):
    for ref in ("layer-sha256:1", "config-sha256:2"):
        store.writer(ref).close()
    assert [s.ref for s in store.list_statuses()] == ["config-sha256:2", "layer-sha256:1"]
    assert [s.ref for s in store.list_statuses(["ref~=^layer-"])] == ["layer-sha256:1"]


def test_commit_of_existing_blob_is_idempotent_and_merges_labels(store):
    d = ingest(store, b"same", "r1", a="1")
    info = ingest_info = None
    with store.writer("r2") as w:
        w.write(b"same")
        info = w.commit(labels={"b": "2"})
    ingest_info = store.info(d)
    assert info.digest == d
    assert ingest_info.labels == {"a": "1", "b": "2"}
    assert len(blob_files(store)) == 1
    assert store.list_statuses() == []


def test_commit_of_existing_blob_with_exist_ok_false_raises_already_exists(store):
    d = ingest(store, b"same", "r1")
    with store.writer("r2") as w:
        w.write(b"same")
        with pytest.raises(AlreadyExists, match=f"content {d}: already exists in namespace default"):
            w.commit(exist_ok=False)
    assert store.list_statuses() == []


def test_writer_exist_ok_false_refuses_existing_content(store):
    d = ingest(store, b"here", "r1")
    with pytest.raises(AlreadyExists, match="already exists in namespace default"):
        store.writer("r2", expected=d, exist_ok=False)
    assert store.list_statuses() == []


def test_namespaces_see_their_own_content_and_share_blobs(store):
    other = store.using("other")
    d = ingest(store, b"shared")
    assert not other.exists(d)
    with pytest.raises(NotFound, match=f"content {d}: not found in namespace other"):
        other.info(d)
    with pytest.raises(NotFound):
        other.open(d)
    # containerd's shared policy: a writer that expects a blob already on disk adopts it
    with pytest.raises(AlreadyExists, match="shared with another namespace"):
        other.writer("r", expected=d, total=6, exist_ok=False)
    assert other.info(d).size == 6
    assert other.list_statuses() == []
    assert len(blob_files(store)) == 1
    # deleting from one namespace keeps the file for the other
    store.delete(d)
    assert not store.exists(d)
    assert other.read_all(d) == b"shared"
    other.delete(d)
    assert blob_files(store) == []


def test_adoption_needs_the_right_size(store):
    d = ingest(store, b"shared")
    other = store.using("other")
    w = other.writer("r", expected=d, total=7, exist_ok=False)  # wrong size: a normal ingest
    w.close()
    assert not other.exists(d)


def test_update_labels(store):
    d = ingest(store, b"l", a="1", b="2")
    assert store.update_labels(d, {"a": "9", "c": "3"}, ["labels.a", "labels.b"]).labels == {"a": "9"}
    assert store.update_labels(d, {"x": "y"}).labels == {"x": "y"}
    with pytest.raises(InvalidArgument, match="label 'k': key and value length"):
        store.update_labels(d, {"k": "v" * 4096})
    with pytest.raises(InvalidArgument, match="cannot update field 'size'"):
        store.update_labels(d, {}, ["size"])
    with pytest.raises(NotFound):
        store.using("other").update_labels(d, {"a": "b"})


def test_walk_with_filters(store):
    d1 = ingest(store, b"1", "r1", **{"containerd.io/gc.root": "x"})
    d2 = ingest(store, b"2", "r2", kind="layer")
    seen = []
    store.walk(seen.append)
    assert sorted(i.digest for i in seen) == sorted([d1, d2])
    assert [i.digest for i in store.infos(['labels."containerd.io/gc.root"'])] == [d1]
    assert [i.digest for i in store.infos(["labels.kind==layer"])] == [d2]
    assert sorted(i.digest for i in store.infos(["labels.kind==layer", f"digest=={d1}"])) == sorted([d1, d2])
    assert [i.digest for i in store.infos([f"digest=={d1},size==1"])] == [d1]
    with pytest.raises(InvalidArgument, match="filter"):
        store.infos(["labels.kind=="])


def test_delete_and_not_found(store):
    d = ingest(store, b"gone")
    store.delete(d)
    assert blob_files(store) == []
    with pytest.raises(NotFound):
        store.delete(d)
    with pytest.raises(NotFound):
        store.read_all(d)


def test_read_all_limit(store):
    d = ingest(store, b"0123456789")
    with pytest.raises(FailedPrecondition, match="10 bytes, more than the 4 allowed"):
        store.read_all(d, max_size=4)


def test_bad_refs_and_namespaces_are_refused(store):
    with pytest.raises(InvalidArgument, match="ingest ref ''"):
        store.writer("")
    with pytest.raises(InvalidArgument, match="namespace 'a/b'"):
        store.using("a/b")


def test_missing_blob_of_a_record_is_reported(store):
    d = ingest(store, b"x")
    os.chmod(store.blob_path(d), 0o644)
    os.unlink(store.blob_path(d))
    with pytest.raises(NotFound, match=f"content {d}: recorded in namespace default but its blob .* is missing"):
        store.open(d)


def test_leased_writer_adds_ingest_then_content(store, db):
    leases = LeaseManager(db)
    lease = leases.create("pull")
    leased = store.using(lease=lease.id)
    w = leased.writer("r")
    assert leases.list_resources("pull") == [Resource("ingests", "r")]
    w.write(b"leased")
    d = w.commit().digest
    assert leases.list_resources("pull") == [Resource("content", d)]
    with pytest.raises(NotFound, match="lease 'nope': not found"):
        store.using(lease="nope").writer("r2")


def test_concurrent_commits_of_the_same_blob_from_threads(store):
    data = os.urandom(512 * 1024)
    errors = []

    def run(i: int) -> None:
        try:
            ns = store.using(f"ns{i % 3}")
            with ns.writer(f"r{i}") as w:
                for off in range(0, len(data), 65536):
                    w.write(data[off:off + 65536])
                w.commit(len(data), digest_bytes(data))
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(blob_files(store)) == 1
    for i in range(3):
        assert store.using(f"ns{i}").read_all(digest_bytes(data)) == data


def test_fault_after_rename_leaves_an_orphan_that_a_later_commit_reuses(store, monkeypatch):
    """In-process stand-in for a crash between the rename and the database write (the
    subprocess crash test kills for real): the blob is on disk, not recorded, and a new ingest of
    the same content commits fine."""
    data = b"orphan"

    def boom(point: str) -> None:
        if point == "commit:after-rename":
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(content_mod, "_fault_hook", boom)
    w = store.writer("r")
    w.write(data)
    with pytest.raises(RuntimeError):
        w.commit()
    w.close()
    monkeypatch.setattr(content_mod, "_fault_hook", None)
    d = digest_bytes(data)
    assert not store.exists(d)
    assert os.path.exists(store.blob_path(d))
    w = store.writer("r")  # the data file was moved away: the ingest starts again empty
    assert w.offset == 0
    w.write(data)
    assert w.commit().digest == d
    assert store.read_all(d) == data


def test_errors_map_to_grpc_codes():
    assert NotFound.code == "NOT_FOUND"
    assert AlreadyExists.code == "ALREADY_EXISTS"
    assert DigestMismatch.code == "FAILED_PRECONDITION"
    assert issubclass(DigestMismatch, ImageError)
    assert Unavailable.code == "UNAVAILABLE"
    assert InvalidArgument.code == "INVALID_ARGUMENT"
