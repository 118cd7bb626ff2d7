"""skiff.containerd.pool.ElasticThreadPool: grows with concurrent work, shrinks when idle."""

from __future__ import annotations

import threading
import time

import pytest

from skiff.containerd.pool import ElasticThreadPool

DEADLINE = 30.0


def _until(cond) -> bool:
    end = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_results_exceptions_and_reuse():
    pool = ElasticThreadPool(max_workers=4, idle_seconds=60)
    try:
        assert pool.submit(lambda a, b=0: a + b, 2, b=3).result(DEADLINE) == 5
        f = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            f.result(DEADLINE)
        # sequential work reuses the idle thread
        for i in range(20):
            assert pool.submit(lambda x=i: x).result(DEADLINE) == i
        assert pool.thread_count == 1
    finally:
        pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_grows_to_the_concurrency_bounded_then_shrinks():
    pool = ElasticThreadPool(max_workers=5, idle_seconds=0.2)
    gate = threading.Event()
    started = threading.Semaphore(0)

    def blocked(i: int) -> int:
        started.release()
        gate.wait(DEADLINE)
        return i

    try:
        futs = [pool.submit(blocked, i) for i in range(8)]
        for _ in range(5):
            assert started.acquire(timeout=DEADLINE)
        assert pool.thread_count == 5          # bounded: 3 wait in the queue
        gate.set()
        assert [f.result(DEADLINE) for f in futs] == list(range(8))
        assert _until(lambda: pool.thread_count == 0), f"{pool.thread_count} threads left"
        # and it grows again afterwards
        assert pool.submit(lambda: "again").result(DEADLINE) == "again"
    finally:
        pool.shutdown()
    assert pool.thread_count == 0


def test_shutdown_cancels_queued_work():
    pool = ElasticThreadPool(max_workers=1, idle_seconds=60)
    gate = threading.Event()
    first = pool.submit(gate.wait, DEADLINE)
    queued = pool.submit(lambda: "never")
    threading.Timer(0.1, gate.set).start()
    pool.shutdown(wait=True, cancel_futures=True)
    assert first.result(DEADLINE) is True
    assert queued.cancelled()


def test_metadata_connections_of_ended_threads_are_closed(tmp_path):
    """The pool ends idle threads: the metadata database's per-thread connections go with them."""
    from skiff.images.metadata import MetaDB

    db = MetaDB(tmp_path / "meta.db")
    try:
        pool = ElasticThreadPool(max_workers=4, idle_seconds=0.05)
        try:
            for _ in range(3):
                gate = threading.Barrier(4)

                def use(gate=gate):
                    gate.wait(DEADLINE)
                    with db._tx(False):
                        pass

                for f in [pool.submit(use) for _ in range(4)]:
                    f.result(DEADLINE)
                assert _until(lambda: pool.thread_count == 0)
            import gc

            gc.collect()
            assert len(db._conns) <= 1, f"{len(db._conns)} connections kept"   # the creating thread's
        finally:
            pool.shutdown()
    finally:
        db.close()
