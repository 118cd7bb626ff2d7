"""Crash safety: a process killed with SIGKILL at any moment of an ingest, a commit, a delete or
a metadata transaction loses nothing it acknowledged and leaves nothing inconsistent.

A child process loops over: ingest a blob (resuming any ingest left by a killed predecessor),
record an image for it, record a container + lease + lease resource in one transaction, and
now and then delete an older image and its blob. It prints an ``ack`` line after each
operation returns. The parent kills it (``os.kill(pid, SIGKILL)``) at a random point, then
reopens the store and checks: ``PRAGMA integrity_check`` is ok, every acknowledged object is
there (and every acknowledged deletion is gone), every blob file holds exactly the bytes its
name says (no partial blob), every content record has its file, each multi-statement
transaction is all or nothing, and ingests left behind resume to the right blob. A second test
kills the child at each named point inside commit and delete through the fault hook.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from skiff.images import gc
from skiff.images.content import ContentStore
from skiff.images.metadata import MetaDB

CHILD = r'''
import os, random, signal, sys
from skiff.images import content
from skiff.images.content import ContentStore, Descriptor, digest_bytes
from skiff.images.metadata import AnyValue, ContainerRecord, ImageRecord, MetaDB

root, start, crash_point = sys.argv[1], int(sys.argv[2]), sys.argv[3]
LAYER = "application/vnd.oci.image.layer.v1.tar"

def blob(i):
    rnd = random.Random(i)
    return rnd.randbytes(rnd.randrange(1, 1_500_000))

def ack(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()

if crash_point != "-":
    point, nth = crash_point.split("@")
    seen = [0]
    def hook(name):
        if name == point:
            seen[0] += 1
            if seen[0] == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)
    content._fault_hook = hook

db = MetaDB(os.path.join(root, "meta.db"))
store = ContentStore(os.path.join(root, "content"), db)
rnd = random.Random(start)

def ingest(i):
    data = blob(i)
    d = digest_bytes(data)
    w = store.writer(f"blob-{i}", expected=d, total=len(data))
    if w.offset:
        ack("resumed", i, w.offset)
    while w.offset < len(data):
        n = rnd.randrange(1, 300_000)
        w.write(data[w.offset:w.offset + n])
        ack("writing", i, w.offset)
    w.commit()
    ack("blob", i, d)
    return d, len(data)

# first finish what a killed predecessor left
for st in store.list_statuses():
    ingest(int(st.ref.split("-")[1]))

done = []
i = start
while True:
    d, size = ingest(i)
    with db.transaction() as tx:
        tx.create_image("default", ImageRecord(f"img-{i}", Descriptor(LAYER, d, size), {"n": str(i)}))
    ack("image", i)
    with db.transaction() as tx:
        tx.create_container("default", ContainerRecord(f"c-{i}", "io.containerd.runc.v2",
                                                       AnyValue("x", b"{}"), image=f"img-{i}"))
        tx.create_lease("default", f"l-{i}")
        tx.add_lease_resource("default", f"l-{i}", "content", d)
    ack("container", i)
    done.append((i, d))
    if len(done) > 3 and rnd.random() < 0.4:
        j, dj = done.pop(0)
        with db.transaction() as tx:
            tx.delete_image("default", f"img-{j}")
            tx.delete_container("default", f"c-{j}")
            tx.delete_lease("default", f"l-{j}")
        ack("unimage", j)
        store.delete(dj)
        ack("unblob", j, dj)
    i += 1
'''


def blob_data(i: int) -> bytes:
    rnd = random.Random(i)
    return rnd.randbytes(rnd.randrange(1, 1_500_000))


class Acks:
    def __init__(self) -> None:
        self.blobs: dict[int, str] = {}
        self.images: set[int] = set()
        self.containers: set[int] = set()
        self.unimages: set[int] = set()
        self.unblobs: set[int] = set()
        self.resumed = 0
        self.writing = 0

    def feed(self, line: str) -> None:
        words = line.split()
        if not words:
            return
        kind = words[0]
        if kind == "blob":
            self.blobs[int(words[1])] = words[2]
            self.unblobs.discard(int(words[1]))
        elif kind == "image":
            self.images.add(int(words[1]))
        elif kind == "container":
            self.containers.add(int(words[1]))
        elif kind == "unimage":
            self.unimages.add(int(words[1]))
        elif kind == "unblob":
            self.unblobs.add(int(words[1]))
        elif kind == "resumed":
            self.resumed += 1
        elif kind == "writing":
            self.writing += 1
        else:
            raise AssertionError(f"unexpected line from the child: {line!r}")


def run_child(root: str, start: int, crash_point: str = "-", kill_after: tuple[int, float] | None = None,
              acks: Acks | None = None, kill_on: str = "") -> tuple[Acks, int]:
    """Run the child; kill it after ``kill_after`` = (n lines, then s seconds; only lines starting
    with ``kill_on`` count when given), or let the fault hook kill it. Returns the acks and the
    child's exit status."""
    acks = acks or Acks()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, root, str(start), crash_point],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        count = 0
        if kill_after is not None:
            for line in proc.stdout:
                acks.feed(line)
                if line.startswith(kill_on):
                    count += 1
                if count >= kill_after[0]:
                    break
            time.sleep(kill_after[1])
            os.kill(proc.pid, signal.SIGKILL)
        for line in proc.stdout:  # what it acknowledged before dying
            acks.feed(line)
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    if status != -signal.SIGKILL:
        raise AssertionError(f"child exited with {status}, not by SIGKILL: {proc.stderr.read() if proc.stderr else ''}")
    return acks, status


def check_consistent(root: str, acks: Acks) -> None:
    db = MetaDB(os.path.join(root, "meta.db"))
    try:
        assert db.integrity_check() == ["ok"]
        store = ContentStore(os.path.join(root, "content"), db)
        # no partial blob: every file in blobs/ is complete, read-only, and named by its hash
        for digest, path in store._backend.blob_digests():
            algorithm, hexpart = digest.split(":")
            with open(path, "rb") as f:
                assert hashlib.new(algorithm, f.read()).hexdigest() == hexpart, f"partial blob {path}"
            assert os.stat(path).st_mode & 0o777 == 0o444
        assert sorted(os.listdir(os.path.join(root, "content", "blobs"))) in ([], ["sha256"])
        with db.view() as tx:
            # every record has its file
            for _ns, info in tx.all_content():
                assert os.path.getsize(store.blob_path(info.digest)) == info.size
            images = {img.name: img for _ns, img in tx.all_images()}
            containers = {c.id for _ns, c in tx.all_containers()}
            leases = {lease.id: res for _ns, lease, res in tx.all_leases()}
        for i, d in acks.blobs.items():
            if i in acks.unblobs:
                assert not store.exists(d), f"blob {i} deleted (acknowledged) but still there"
            elif i in acks.unimages and not store.exists(d):
                pass  # killed inside its (unacknowledged) delete: gone is as right as there
            else:
                assert store.read_all(d) == blob_data(i), f"blob {i} acknowledged but not there"
        for i in acks.images - acks.unimages:
            assert f"img-{i}" in images
            assert images[f"img-{i}"].target.digest == acks.blobs[i]
        for i in acks.unimages:
            assert f"img-{i}" not in images
            assert f"c-{i}" not in containers
        for i in acks.containers - acks.unimages:
            assert f"c-{i}" in containers
        # the container, lease and resource transaction is all or nothing
        for cid in containers:
            n = cid.split("-")[1]
            assert f"l-{n}" in leases, f"container {cid} without its lease"
            assert [r.id for r in leases[f"l-{n}"]] == [images[f"img-{n}"].target.digest]
        for lid in leases:
            assert f"c-{lid.split('-')[1]}" in containers, f"lease {lid} without its container"
        # whatever ingest is left is well-formed and within its announced size
        for st in store.list_statuses():
            assert st.ref.startswith("blob-")
            assert 0 <= st.offset <= st.total
    finally:
        db.close()


@pytest.mark.slow
def test_random_kills_lose_nothing_acknowledged(tmp_path):
    root = str(tmp_path)
    seed = int.from_bytes(os.urandom(4), "big")
    rnd = random.Random(seed)
    acks = Acks()
    for round_ in range(12):
        kill_after = (rnd.randrange(1, 40), rnd.choice([0.0, 0.0005, 0.002, 0.01, 0.03]))
        acks, _ = run_child(root, 1000 * (round_ + 1), kill_after=kill_after, acks=acks)
        try:
            check_consistent(root, acks)
        except AssertionError as e:
            raise AssertionError(f"seed {seed}, round {round_}, killed after {kill_after}: {e}") from e
    assert acks.blobs, f"seed {seed}: not one blob acknowledged in 12 runs"
    # After all that, a collection with every image gone leaves an empty store: orphans from
    # crashes between rename and record included.
    db = MetaDB(os.path.join(root, "meta.db"))
    try:
        with db.transaction() as tx:
            for ns, lease, _ in tx.all_leases():
                tx.delete_lease(ns, lease.id)
            for ns, image in tx.all_images():
                tx.delete_image(ns, image.name)
        store = ContentStore(os.path.join(root, "content"), db)
        gc.collect(store)
        assert list(store._backend.blob_digests()) == []
        with db.view() as tx:
            assert tx.all_content() == []
    finally:
        db.close()


@pytest.mark.parametrize("point", [
    "commit:after-fsync@2", "commit:after-rename@1", "commit:after-rename@3", "commit:after-db@2",
    "delete:after-db@1",
])
def test_kill_at_each_commit_point(tmp_path, point):
    root = str(tmp_path)
    acks, _ = run_child(root, 1, crash_point=point)
    check_consistent(root, acks)
    # the next run resumes what was left and goes on
    acks, _ = run_child(root, 100, kill_after=(4, 0.0), acks=acks)
    check_consistent(root, acks)
    if point.startswith("commit:after-fsync"):
        assert acks.resumed >= 1  # the killed commit's ingest was resumed, not restarted


def test_kill_in_the_middle_of_an_ingest_leaves_a_resumable_ingest(tmp_path):
    """Kill as soon as the child says it has written a chunk, then resume by hand."""
    root = str(tmp_path)
    for attempt in range(20):
        acks, _ = run_child(root, 10 * (attempt + 1), kill_after=(1, 0.0), kill_on="writing")
        db = MetaDB(os.path.join(root, "meta.db"))
        try:
            store = ContentStore(os.path.join(root, "content"), db)
            statuses = store.list_statuses()
            if not statuses:
                continue
            st = statuses[0]
            i = int(st.ref.split("-")[1])
            data = blob_data(i)
            with store.writer(st.ref) as w:
                assert w.offset == st.offset
                w.write(data[w.offset:])
                assert w.commit().digest == st.expected
            assert store.read_all(st.expected) == data
            return
        finally:
            db.close()
    raise AssertionError("20 kills and never one in the middle of an ingest")
