"""Give freed heap memory back to the kernel, for the long-lived daemons (skiffd, skiff-containerd).

glibc's malloc keeps what a process freed at the top of its heap and in the holes below it;
after start-up (every ``.pyc`` is read into a buffer, unmarshalled and freed) and after bursts
of requests that is several MiB of resident memory nobody uses: ``malloc_trim(0)`` returns it
(3-4 MiB for skiffd after start-up, more after a burst). ``Trimmer`` runs it after start-up and
then every ``interval`` seconds in a daemon thread (it takes malloc's lock for about a
millisecond). Without glibc (musl has no ``malloc_trim``) it does nothing.
"""

from __future__ import annotations

import threading
from typing import Any

_trim: Any = None  # malloc_trim, or False without glibc


def trim() -> bool:
    """``malloc_trim(0)``; True when memory was released. False without glibc."""
    global _trim
    if _trim is None:
        import ctypes

        try:
            fn = ctypes.CDLL(None).malloc_trim
        except AttributeError:
            _trim = False
            return False
        fn.argtypes = [ctypes.c_size_t]
        fn.restype = ctypes.c_int
        _trim = fn
    if _trim is False:
        return False
    return bool(_trim(0))


class Trimmer:
    """Trims now and every ``interval`` seconds until ``stop``."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        trim()
        self._thread = threading.Thread(target=self._loop, name="malloc-trim", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            trim()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
