"""Give freed heap memory back to the kernel, for the long-lived daemons (skiffd, skiff-containerd).

glibc's malloc keeps what a process freed at the top of its heap and in the holes below it;
after start-up (every ``.pyc`` is read into a buffer, unmarshalled and freed) and after bursts
of requests that is several MiB of resident memory nobody uses: ``malloc_trim(0)`` returns it
(3-4 MiB for skiffd after start-up, more after a burst). ``Trimmer`` runs it after start-up and
then every ``interval`` seconds in a daemon thread (it takes malloc's lock for about a
millisecond). Without glibc (musl has no ``malloc_trim``) it does nothing.

Two more process-level settings for the daemons (docs/memory.md has the numbers):

- ``limit_arenas(n)``: glibc's malloc gives each thread that allocates an arena of its own (up to
  8 per core), and each keeps what its thread freed; one arena is enough for a GIL-bound daemon.
  Called at start-up, before threads exist.
- ``defer_import(name)``: a module that a library imports but the process never uses (grpcio's
  C core imports ``asyncio`` and ``grpc`` imports ``grpc.aio`` even for a synchronous server:
  asyncio, ssl and OpenSSL's state cost skiff-containerd ~3 MiB) is registered as a deferred
  module: importing it succeeds at no cost, and its code runs on the first access to one of
  its attributes, as if it had been imported then.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import threading
import types
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


M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_arenas(arenas: int = 1) -> bool:
    """Make glibc's malloc keep at most ``arenas`` arenas, unless ``MALLOC_ARENA_MAX`` is set in
    the environment (which wins, as it does for glibc). True when the limit is in force; False
    without glibc or when mallopt refused. Call it before the process starts threads: a thread
    that already has an arena keeps it."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return True
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:  # not glibc (musl has no mallopt and no per-thread arenas)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas) == 1)


_defer_lock = threading.RLock()


class _Deferred(types.ModuleType):
    """A module whose code has not run yet: the first access to an attribute it lacks runs it
    (in this same module object, so every reference taken before sees the real module)."""

    def __getattr__(self, attr: str) -> Any:
        with _defer_lock:
            if type(self) is _Deferred:
                spec = self.__spec__
                self.__class__ = types.ModuleType  # type: ignore[assignment]  # an ordinary module from now on
                try:
                    assert spec is not None and spec.loader is not None
                    spec.loader.exec_module(self)
                except BaseException:
                    sys.modules.pop(self.__name__, None)  # a later import tries again, as Python does
                    raise
        return object.__getattribute__(self, attr)


def _find_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of ``name`` without importing anything (not even its parent package)."""
    parent, _, _ = name.rpartition(".")
    if not parent:
        return importlib.machinery.PathFinder.find_spec(name)
    pspec = _find_spec(parent)
    if pspec is None or not pspec.submodule_search_locations:
        return None
    return importlib.machinery.PathFinder.find_spec(name, list(pspec.submodule_search_locations))


def defer_import(name: str) -> bool:
    """Register the pure-Python module ``name`` as deferred (see the module doc). False when it is
    imported already, cannot be found, or is not Python source (nothing is changed then).

    A deferred submodule is found by ``import``, ``from parent import name`` and in
    ``sys.modules``; as it is not loaded by its parent's import, it is an attribute of the parent
    only if the parent binds it itself (``grpc`` does: ``from grpc import aio``)."""
    with _defer_lock:
        if name in sys.modules:
            return False
        spec = _find_spec(name)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return False
        module = importlib.util.module_from_spec(spec)
        module.__class__ = _Deferred
        sys.modules[name] = module
        return True


def is_deferred(name: str) -> bool:
    """Whether ``name`` is registered as deferred and its code has not run."""
    return type(sys.modules.get(name)) is _Deferred
