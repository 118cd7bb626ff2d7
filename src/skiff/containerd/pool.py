"""The gRPC server's request threads: a pool that grows with concurrent requests, as
``ThreadPoolExecutor`` does, and shrinks again when they are over.

``ThreadPoolExecutor`` keeps every thread it ever started. A burst of concurrent requests (the
docker CLI removes 50 containers with 50 parallel requests; skiffd forwards them) leaves
skiff-containerd with 50 idle threads for good, each holding its stack pages, malloc caches and
the metadata database connection it opened (one per thread): about 0.2 MiB each. Here a thread
that found no work for ``idle_seconds`` ends (its database connection is closed with it).

Same contract as ``concurrent.futures.Executor``; ``max_workers`` bounds the threads (a request
beyond waits in the queue, as with ``ThreadPoolExecutor``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

_STOP = None


class ElasticThreadPool(futures.Executor):
    def __init__(self, max_workers: int, idle_seconds: float = 10.0, thread_name_prefix: str = "pool") -> None:
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self.max_workers = max_workers
        self.idle_seconds = idle_seconds
        self.prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # workers waiting for work (or started and about to) minus the items queued: below zero,
        # queued work has nobody to take it. Kept under the lock by submit and the workers.
        self._idle = 0
        self._threads: set[threading.Thread] = set()
        self._counter = 0
        self._shutdown = False

    @property
    def thread_count(self) -> int:
        with self._lock:
            return len(self._threads)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        f: futures.Future[Any] = futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.put((f, fn, args, kwargs))
            self._idle -= 1
            if self._idle < 0 and len(self._threads) < self.max_workers:
                self._start_locked()
        return f

    def _start_locked(self) -> None:
        self._counter += 1
        t = threading.Thread(target=self._work, name=f"{self.prefix}_{self._counter}", daemon=True)
        self._threads.add(t)
        self._idle += 1  # counted as waiting from now on
        t.start()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            try:
                item = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._idle - 1 >= 0:  # the other waiters cover what is queued: leave
                        self._idle -= 1
                        self._threads.discard(me)
                        return
                continue
            if item is _STOP:
                self._queue.put(_STOP)  # for the next worker
                with self._lock:
                    self._threads.discard(me)
                return
            f, fn, args, kwargs = item
            del item
            result: Any = None
            error: BaseException | None = None
            run = f.set_running_or_notify_cancel()
            if run:
                try:
                    result = fn(*args, **kwargs)
                except BaseException as e:
                    error = e
            with self._lock:
                self._idle += 1  # waiting again (before the caller learns the result and submits more)
            if run:
                if error is not None:
                    f.set_exception(error)
                else:
                    f.set_result(result)
            del f, fn, args, kwargs, result, error

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    item[0].cancel()
        self._queue.put(_STOP)
        if wait:
            for t in threads:
                t.join()
