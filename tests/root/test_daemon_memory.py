"""The daemons' process-level memory settings hold in the real processes (docs/memory.md):
skiffd and skiff-containerd keep one malloc arena (no per-thread 64 MiB heaps although they run
gRPC's and their own threads), and skiff-containerd leaves asyncio unloaded (neither asyncio's
nor ssl's C module is mapped) while it serves."""

from __future__ import annotations

import pytest
from ctr_util import SkiffContainerd, ctr
from skiffd_util import Skiffd

pytestmark = pytest.mark.root

HEAP_MAX = 64 << 20  # glibc maps each thread arena as a 64 MiB-aligned, 64 MiB reservation


def _maps(pid: int) -> list[tuple[int, int, str]]:
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi, parts[5].strip() if len(parts) > 5 else ""))
    return out


def thread_arenas(pid: int) -> int:
    """Anonymous runs of mappings that start 64 MiB-aligned and span exactly 64 MiB."""
    maps = _maps(pid)
    n = 0
    for i, (lo, hi, path) in enumerate(maps):
        if path or lo % HEAP_MAX:
            continue
        end, j = hi, i + 1
        while j < len(maps) and maps[j][0] == end and not maps[j][2] and end - lo < HEAP_MAX:
            end = maps[j][1]
            j += 1
        if end - lo == HEAP_MAX:
            n += 1
    return n


def mapped_files(pid: int) -> set[str]:
    return {path.rsplit("/", 1)[-1] for _lo, _hi, path in _maps(pid) if path.startswith("/")}


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


def test_skiff_containerd_one_arena_and_no_asyncio(state_dirs):
    d = SkiffContainerd(state_dirs.short).start()
    try:
        for _ in range(3):   # requests run on the pool's threads
            ctr(d.address, "version")
            ctr(d.address, "namespaces", "ls")
        pid = d.pid
        assert threads(pid) > 4, "expected gRPC's threads and a request thread"
        assert thread_arenas(pid) == 0
        files = mapped_files(pid)
        assert any(f.startswith("cygrpc.") for f in files), sorted(files)
        loaded = [f for f in files if f.startswith(("_asyncio.", "_ssl."))]
        assert loaded == [], f"asyncio or ssl loaded in skiff-containerd: {loaded}"
    finally:
        code = d.stop()
    assert code == 0, f"skiff-containerd exited {code}; log:\n{d.log()}"


def test_skiffd_one_arena_and_containerd_without_asyncio_after_a_container(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    try:
        r = d.docker("run", "--rm", "--network", "none", "busybox", "sh", "-c", "echo hi")
        assert r.returncode == 0 and r.stdout == "hi\n", r.stderr
        assert d.proc is not None
        pid = d.proc.pid
        assert threads(pid) > 4, "expected grpc's and asyncio's threads"
        assert thread_arenas(pid) == 0
        # skiffd does use asyncio, and grpc (its containerd client)
        files = mapped_files(pid)
        assert any(f.startswith("_asyncio.") for f in files) and any(f.startswith("cygrpc.") for f in files)
        # a whole container lifecycle (create, start, events, exit, delete) left asyncio unloaded
        cpid = d.containerd_pid()
        assert cpid is not None
        assert thread_arenas(cpid) == 0
        loaded = [f for f in mapped_files(cpid) if f.startswith(("_asyncio.", "_ssl."))]
        assert loaded == [], f"asyncio or ssl loaded in skiff-containerd: {loaded}"
    finally:
        d.stop()
