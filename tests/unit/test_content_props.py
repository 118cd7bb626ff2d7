"""Property tests: however an ingest is chunked, interrupted, resumed and rewound, the committed
blob is the data, byte for byte, under its digest."""

from __future__ import annotations

import hashlib
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skiff.images.content import ContentStore, digest_bytes
from skiff.images.errors import DigestMismatch
from skiff.images.metadata import MetaDB

# An operation between two writes: go on, close and reopen the writer (a clean restart), drop
# the writer's descriptors without closing it (a crash of the writing process: nothing is
# flushed or recorded on the way out), or rewind to an earlier offset (a client that restarts
# a range, as the gRPC Write service's truncate does).
Op = st.one_of(
    st.just(("continue",)),
    st.just(("reopen",)),
    st.just(("crash",)),
    st.tuples(st.just("rewind"), st.floats(min_value=0.0, max_value=1.0)),
)


def crash(writer) -> None:
    """Forget a writer the way a killed process does: its descriptors close, nothing else runs."""
    os.close(writer._fd)
    os.close(writer._dirfd)
    writer._fd = writer._dirfd = -1
    writer._closed = True


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=300_000),
       steps=st.lists(st.tuples(st.integers(min_value=1, max_value=70_000), Op), min_size=1, max_size=12),
       algorithm=st.sampled_from(["sha256", "sha512"]),
       announce=st.booleans())
def test_interrupted_ingest_gives_the_same_blob(data, steps, algorithm, announce):
    digest = digest_bytes(data, algorithm)
    writers = []
    with tempfile.TemporaryDirectory() as tmp:
        db = MetaDB(os.path.join(tmp, "meta.db"))
        try:
            store = ContentStore(os.path.join(tmp, "content"), db)
            expected = digest if (announce or algorithm == "sha512") else None
            total = len(data) if announce else None
            w = store.writer("blob", expected=expected, total=total)
            writers.append(w)
            i = 0
            while w.offset < len(data):
                size, op = steps[i % len(steps)]
                if i >= len(steps):
                    op = ("continue",)  # each interruption happens once: the ingest must finish
                i += 1
                w.write(data[w.offset:w.offset + size])
                if op[0] == "reopen":
                    w.close()
                    w = store.writer("blob")
                    writers.append(w)
                elif op[0] == "crash":
                    crash(w)
                    w = store.writer("blob")
                    writers.append(w)
                elif op[0] == "rewind":
                    w.truncate(int(w.offset * op[1]))
                assert store.status("blob").offset == w.offset
                assert w.digest() == digest_bytes(data[:w.offset], w.digest().split(":")[0])
            info = w.commit(len(data), digest)
            assert info.digest == digest
            assert info.size == len(data)
            with store.open(digest) as f:
                assert hashlib.new(algorithm, f.read()).hexdigest() == digest.split(":")[1]
            assert store.list_statuses() == []
        finally:
            for w in writers:
                w.close()
            db.close()


@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=1, max_size=50_000), cut=st.integers(min_value=0, max_value=49_999),
       garbage=st.binary(min_size=1, max_size=100))
def test_corrupted_resume_is_caught_by_the_digest_check(data, cut, garbage):
    """Whatever is in the ingest file when it is resumed (here: bytes that were never the data),
    a commit cannot produce a blob whose content does not match its digest."""
    cut = min(cut, len(data) - 1)
    digest = digest_bytes(data)
    with tempfile.TemporaryDirectory() as tmp:
        db = MetaDB(os.path.join(tmp, "meta.db"))
        try:
            store = ContentStore(os.path.join(tmp, "content"), db)
            with store.writer("blob", expected=digest) as w:
                w.write(data[:cut])
            path = os.path.join(store._backend.ingest_path("default/blob"), "data")
            with open(path, "ab") as f:
                f.write(garbage)  # a torn tail
            with store.writer("blob") as w:
                assert w.offset == cut + len(garbage)
                if cut + len(garbage) <= len(data):
                    w.write(data[w.offset:])
                try:
                    w.commit(len(data))
                except DigestMismatch:
                    assert not store.exists(digest)
                    assert not os.path.exists(store.blob_path(digest))
                else:
                    # only possible when the garbage happened to equal the data it replaced
                    assert store.read_all(digest) == data
        finally:
            db.close()
