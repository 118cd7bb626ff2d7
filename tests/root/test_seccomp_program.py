"""A cached seccomp program, loaded with seccomp(2) directly, filters for real."""

import os

import pytest

from skiff.runtime import seccomp

pytestmark = pytest.mark.root


def test_cached_program_filters_in_a_child(tmp_path):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18}]}
    cache = str(tmp_path / "cache")
    seccomp.compile_cached(profile, cache)
    prog = seccomp.compile_cached(profile, cache)  # from the cache
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            prog.load()
            try:
                os.mkdir(str(tmp_path / "blocked"))
                os.write(w, b"made")
            except OSError as e:
                os.write(w, str(e.errno).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 100)
    os.close(r)
    os.waitpid(pid, 0)
    assert out == b"18"  # EXDEV, the errnoRet
    assert not (tmp_path / "blocked").exists()
