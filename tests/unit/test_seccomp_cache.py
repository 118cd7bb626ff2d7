"""The compiled-program cache of skiff-runc's seccomp support."""

import os

import pytest

from skiff.runtime import seccomp

PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64"],
    "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18}],
}


def test_second_compile_comes_from_the_cache(tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    first = seccomp.compile_cached(PROFILE, cache)
    assert first.flags == seccomp.KERNEL_FLAGS["SECCOMP_FILTER_FLAG_LOG"]
    with seccomp.compile(PROFILE) as f:
        assert first.bpf == f.export_bpf()  # what libseccomp itself would load
    assert len(os.listdir(cache)) == 1

    def no_libseccomp(*a, **k):
        raise AssertionError("libseccomp compile called on a cache hit")

    monkeypatch.setattr(seccomp, "compile", no_libseccomp)
    second = seccomp.compile_cached(PROFILE, cache)
    assert second.bpf == first.bpf and second.flags == first.flags


def test_other_profile_other_entry(tmp_path):
    cache = str(tmp_path / "cache")
    seccomp.compile_cached(PROFILE, cache)
    other = dict(PROFILE, syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}])
    p = seccomp.compile_cached(other, cache)
    assert len(os.listdir(cache)) == 2
    assert p.bpf != seccomp.compile_cached(PROFILE, cache).bpf


def test_untrusted_or_corrupt_cache_entries_are_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    good = seccomp.compile_cached(PROFILE, str(cache))
    (entry,) = cache.iterdir()
    entry.write_bytes(b"garbage")
    assert seccomp.compile_cached(PROFILE, str(cache)).bpf == good.bpf
    assert entry.read_bytes().endswith(good.bpf)
    entry.chmod(0o666)  # writable by others: not trusted
    entry.write_bytes(entry.read_bytes()[:-8] + b"\0" * 8)
    assert seccomp.compile_cached(PROFILE, str(cache)).bpf == good.bpf


def test_invalid_profile_is_refused_before_the_cache(tmp_path):
    with pytest.raises(seccomp.SeccompError, match="defaultAction"):
        seccomp.compile_cached({"defaultAction": "SCMP_ACT_BOGUS"}, str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


def test_cache_is_pruned(tmp_path, monkeypatch):
    monkeypatch.setattr(seccomp, "_CACHE_MAX", 3)
    cache = str(tmp_path / "cache")
    for n in range(5):
        seccomp.compile_cached(dict(PROFILE, syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                                        "errnoRet": n + 1}]), cache)
    assert len(os.listdir(cache)) == 3
