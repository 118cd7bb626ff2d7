"""The part of ``ctypes`` that the runtime's system calls use, built directly on ``_ctypes``.

``import ctypes`` costs ~3 ms of CPU in a fresh interpreter (its ``__init__`` defines every C
type and several function prototypes and imports ``struct``); importing ``_ctypes`` alone costs
~0.5 ms. The runtime starts once per container operation and needs only this: C functions of a
shared library that save ``errno`` (``Library``, as ``ctypes.CDLL(name, use_errno=True)``), a
few integer types, ``Structure``, arrays (``c_uint64 * 4``), byte buffers and ``byref``. Every
class here is declared the way ``ctypes`` declares it, on the same C implementation, so it
behaves the same; code that needs more of ctypes (libseccomp's compiler) imports ctypes itself.

Sizes are those of Linux's LP64 ABI (x86_64, aarch64): int 32 bits, long and size_t 64 bits.
"""

from __future__ import annotations

import _ctypes
from _ctypes import POINTER, Structure, addressof, byref, get_errno, pointer, sizeof

__all__ = ["POINTER", "Library", "Structure", "addressof", "byref", "c_char", "c_char_p", "c_int",
           "c_int32", "c_int64", "c_long", "c_size_t", "c_uint", "c_uint32", "c_uint64", "c_ulong",
           "c_ushort", "c_void_p", "create_string_buffer", "get_errno", "pointer", "sizeof"]


class c_int(_ctypes._SimpleCData):
    _type_ = "i"


class c_uint(_ctypes._SimpleCData):
    _type_ = "I"


class c_long(_ctypes._SimpleCData):
    _type_ = "l"


class c_ulong(_ctypes._SimpleCData):
    _type_ = "L"


class c_ushort(_ctypes._SimpleCData):
    _type_ = "H"


class c_char(_ctypes._SimpleCData):
    _type_ = "c"


class c_char_p(_ctypes._SimpleCData):
    _type_ = "z"


class c_void_p(_ctypes._SimpleCData):
    _type_ = "P"


c_int32 = c_int
c_uint32 = c_uint
c_int64 = c_long
c_uint64 = c_ulong
c_size_t = c_ulong


class _Function(_ctypes.CFuncPtr):
    """A C function that returns int unless its ``restype`` says otherwise, with errno saved
    after each call (``get_errno``)."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class Library:
    """A shared library opened with ``dlopen`` (``None``: the program and what it loaded,
    libc included), as ``ctypes.CDLL(name, use_errno=True)``: ``lib.name`` is its function
    ``name`` (a ``_Function``, made once per name)."""

    def __init__(self, name: str | None) -> None:
        self._name = name
        self._handle = _ctypes.dlopen(name, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type]  # NULL: the program

    def __getattr__(self, name: str) -> _Function:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        func = _Function((name, self))  # type: ignore[arg-type]  # any object with a _handle
        func.__name__ = name  # type: ignore[attr-defined]
        setattr(self, name, func)
        return func


def create_string_buffer(init: bytes | int, size: int | None = None) -> _ctypes.Array:
    """A mutable ``char`` array, as ``ctypes.create_string_buffer``: of ``init`` bytes (plus a
    NUL unless ``size`` says otherwise), or of ``init`` zero bytes."""
    if isinstance(init, bytes):
        buf = (c_char * (len(init) + 1 if size is None else size))()
        buf.value = init  # type: ignore[misc,assignment]  # the stubs know only ctypes.c_char
        return buf
    if isinstance(init, int):
        return (c_char * init)()
    raise TypeError(init)
