"""skiff.runtime.clib, the lean ctypes of the runtime: libc calls with errno, the integer
types' sizes, structures, arrays and string buffers behave as ctypes' own."""

from __future__ import annotations

import ctypes
import errno
import os

from skiff.runtime import clib


def test_libc_calls_return_int_and_save_errno():
    libc = clib.Library(None)
    assert libc.getpid() == os.getpid()
    assert libc.close(-1) == -1
    assert clib.get_errno() == errno.EBADF
    assert libc.getpid is libc.getpid  # made once per name


def test_restype_and_wide_arguments():
    libc = clib.Library(None)
    libc.syscall.restype = clib.c_long
    getpid_nr = {"x86_64": 39, "aarch64": 172}[os.uname().machine]
    assert libc.syscall(clib.c_long(getpid_nr)) == os.getpid()
    PR_GET_DUMPABLE = 3
    assert libc.prctl(clib.c_int(PR_GET_DUMPABLE), clib.c_ulong(0), clib.c_ulong(0), clib.c_ulong(0),
                      clib.c_ulong(0)) in (0, 1, 2)


def test_sizes_match_ctypes():
    for name in ("c_int", "c_uint", "c_long", "c_ulong", "c_ushort", "c_char", "c_char_p", "c_void_p",
                 "c_int32", "c_uint32", "c_int64", "c_uint64", "c_size_t"):
        assert clib.sizeof(getattr(clib, name)) == ctypes.sizeof(getattr(ctypes, name)), name


def test_structure_array_byref_and_pointer():
    class Pair(clib.Structure):
        _fields_ = [("a", clib.c_uint32), ("b", clib.c_int)]

    arr = (Pair * 2)()
    arr[1].a, arr[1].b = 7, -3
    assert clib.sizeof(arr) == 16 and (arr[1].a, arr[1].b) == (7, -3)
    p = clib.pointer(arr[1])
    assert p.contents.b == -3
    assert clib.addressof(arr[1]) == clib.addressof(arr) + 8
    words = (clib.c_uint64 * 4)(1, 2, 3, 4)
    assert list(words) == [1, 2, 3, 4]
    # byref into libc: clock_gettime(CLOCK_MONOTONIC, &ts)
    ts = (clib.c_long * 2)()
    assert clib.Library(None).clock_gettime(1, clib.byref(ts)) == 0 and ts[0] > 0


def test_create_string_buffer_as_ctypes():
    for init, size in ((b"abc", None), (b"a\0b", 3), (b"xy", 8), (5, None)):
        ours = clib.create_string_buffer(init, size)
        theirs = ctypes.create_string_buffer(init, size)
        assert ours.raw == theirs.raw and clib.sizeof(ours) == ctypes.sizeof(theirs)
    buf = clib.create_string_buffer(4)
    buf[1:3] = b"hi"
    assert buf.raw == b"\0hi\0"
