"""seccomp filters for real: a forked child loads the filter, tries syscalls, and reports
through a pipe (or dies of SIGSYS). The parent never loads a filter."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import time

import pytest

from skiff.oci.seccomp_default import DEFAULT_CAPS, docker_default_profile, native_arch
from skiff.runtime import seccomp
from skiff.runtime.syscalls import PR_SET_DUMPABLE, LinuxSyscalls

pytestmark = pytest.mark.root

BUSYBOX = "/bin/busybox"
CLONE_NEWUTS = 0x04000000
NR_CLONE3 = {"x86_64": 435, "aarch64": 435}.get(os.uname().machine)
ADDR_NO_RANDOMIZE = 0x0040000
ADDR_COMPAT_LAYOUT = 0x0200000
READ_IMPLIES_EXEC = 0x0400000
PER_LINUX32 = 0x0008
QUERY = 0xFFFFFFFF

_libc = ctypes.CDLL(None, use_errno=True)
_libc.personality.argtypes = [ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def call(fn, *args) -> int:
    """0 if the libc call succeeded, else its errno."""
    ctypes.set_errno(0)
    rc = fn(*args)
    return ctypes.get_errno() if rc == -1 else 0


def in_child(body) -> tuple[int, bytes]:
    """Run ``body(report_fd)`` in a forked child; return (wait status, what it wrote)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            LinuxSyscalls().prctl(PR_SET_DUMPABLE, 0)  # a SIGSYS death leaves no core file
            out = body(w)
            if out is not None:
                os.write(w, json.dumps(out).encode())
        except BaseException as e:  # report anything to the parent, never return into pytest
            try:
                os.write(w, f"child error: {type(e).__name__}: {e}".encode())
            finally:
                code = 70
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    return status, b"".join(chunks)


def report(status: int, data: bytes) -> dict:
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, data)
    return json.loads(data)


def seccomp_mode() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    raise AssertionError("no Seccomp: line in /proc/self/status")


def test_errno_with_errno_ret_on_mkdir(tmp_path) -> None:
    f = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV}]})

    def body(_w: int) -> dict:
        before = seccomp_mode()
        f.load()
        try:
            os.mkdir(tmp_path / "refused")
            err = 0
        except OSError as e:
            err = e.errno or -1
        (tmp_path / "file").write_text("other syscalls work")
        return {"before": before, "after": seccomp_mode(), "mkdir": err,
                "nnp": LinuxSyscalls().prctl(39)}  # PR_GET_NO_NEW_PRIVS

    try:
        got = report(*in_child(body))
    finally:
        f.release()
    assert got == {"before": 0, "after": 2, "mkdir": errno.EXDEV, "nnp": 0}
    assert not (tmp_path / "refused").exists()
    assert (tmp_path / "file").read_text() == "other syscalls work"
    assert seccomp_mode() == 0  # the parent has no filter


def test_argument_conditions() -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        # the same argument twice: one rule per condition, so either value is refused
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES,
         "args": [{"index": 0, "value": ADDR_NO_RANDOMIZE, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": READ_IMPLIES_EXEC, "op": "SCMP_CMP_EQ"}]},
        # a masked test: any persona with the ADDR_COMPAT_LAYOUT bit
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
         "args": [{"index": 0, "value": ADDR_COMPAT_LAYOUT, "valueTwo": ADDR_COMPAT_LAYOUT,
                   "op": "SCMP_CMP_MASKED_EQ"}]},
        # two arguments ANDed: kill(pid, 0) refused only for pid > 1_000_000_000
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOTSUP,
         "args": [{"index": 0, "value": 1_000_000_000, "op": "SCMP_CMP_GT"},
                  {"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]},
    ]}
    f = seccomp.compile(profile)

    def body(_w: int) -> dict:
        f.load()
        p = _libc.personality
        out = {
            "query": call(p, QUERY),
            "no_randomize": call(p, ADDR_NO_RANDOMIZE),
            "read_implies_exec": call(p, READ_IMPLIES_EXEC),
            "compat": call(p, ADDR_COMPAT_LAYOUT | PER_LINUX32),
            "linux32": call(p, PER_LINUX32),
            "linux": call(p, 0),
            "kill_self_0": call(_libc.kill, os.getpid(), 0),
            "kill_big_0": call(_libc.kill, 2_000_000_000, 0),
            "kill_big_cont": call(_libc.kill, 2_000_000_000, int(signal.SIGCONT)),
        }
        return out

    try:
        got = report(*in_child(body))
    finally:
        f.release()
    assert got == {
        "query": errno.EPERM,  # 0xffffffff has the ADDR_COMPAT_LAYOUT bit too
        "no_randomize": errno.EACCES, "read_implies_exec": errno.EACCES,
        "compat": errno.EPERM, "linux32": 0, "linux": 0,
        "kill_self_0": 0, "kill_big_0": errno.ENOTSUP,
        "kill_big_cont": errno.ESRCH,  # second condition false: the kernel answers
    }


@pytest.mark.parametrize("action, dies", [
    ("SCMP_ACT_KILL_PROCESS", True),
    ("SCMP_ACT_KILL", True),  # KILL_THREAD: the only thread, so the process
    ("SCMP_ACT_TRAP", True),  # SIGSYS, not handled here
    ("SCMP_ACT_LOG", False),  # allowed (and logged)
])
def test_kill_actions(action: str, dies: bool) -> None:
    f = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW",
                         "syscalls": [{"names": ["getppid"], "action": action}]})

    def body(w: int) -> None:
        f.load()
        os.write(w, b"loaded;")
        os.getppid()
        os.write(w, b"survived")

    try:
        status, data = in_child(body)
    finally:
        f.release()
    if dies:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS, (status, data)
        assert data == b"loaded;"
    else:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, data)
        assert data == b"loaded;survived"


def test_flags_load() -> None:
    f = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW",
                         "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC",
                                   "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                         "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EIO}]})

    def body(_w: int) -> dict:
        f.load()
        try:
            os.getcwd()
            return {"getcwd": 0}
        except OSError as e:
            return {"getcwd": e.errno}

    try:
        got = report(*in_child(body))
    finally:
        f.release()
    assert got == {"getcwd": errno.EIO}


@pytest.fixture(scope="module")
def docker_filter():
    t0 = time.perf_counter()
    profile = docker_default_profile(DEFAULT_CAPS, native_arch())
    t1 = time.perf_counter()
    f = seccomp.compile(profile)
    t2 = time.perf_counter()
    print(f"\nDocker default profile: convert {1e3 * (t1 - t0):.1f} ms, compile {1e3 * (t2 - t1):.1f} ms, "
          f"{f.rules} rules, skipped {f.skipped}")
    yield f
    f.release()


def test_docker_default_allows_busybox(docker_filter: seccomp.Filter, tmp_path) -> None:
    assert os.path.exists(BUSYBOX)
    script = (f"ls / && id -u && uname -s && date +%Y >/dev/null && mkdir {tmp_path}/d && "
              f"echo hi > {tmp_path}/d/f && cat {tmp_path}/d/f && rm -r {tmp_path}/d && "
              "grep Seccomp: /proc/self/status && ps -o pid,comm | grep -c . >/dev/null && echo done")

    def body(w: int) -> None:
        t = time.perf_counter()
        docker_filter.load()
        os.write(w, f"load {1e3 * (time.perf_counter() - t):.2f} ms\n".encode())
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.execv(BUSYBOX, ["busybox", "sh", "-c", script])

    status, data = in_child(body)
    out = data.decode()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out
    lines = out.splitlines()
    print(f"\nDocker default profile: {lines[0]}")
    assert {"bin", "proc"} <= set(lines[1:])
    assert "0" in lines and "Linux" in lines and "hi" in lines
    assert "Seccomp:\t2" in lines
    assert lines[-1] == "done"
    assert not (tmp_path / "d").exists()


def test_docker_default_refuses(docker_filter: seccomp.Filter) -> None:
    def body(_w: int) -> dict:
        docker_filter.load()
        out = {
            "unshare_uts": call(_libc.unshare, CLONE_NEWUTS),
            "mount": call(_libc.mount, b"none", b"/nonexistent-skiff", b"tmpfs", ctypes.c_ulong(0), None),
            "personality_query": call(_libc.personality, QUERY),
            "personality_exec": call(_libc.personality, READ_IMPLIES_EXEC),
            "getpid": 0 if os.getpid() > 0 else -1,
        }
        if NR_CLONE3 is not None:
            out["clone3"] = call(_libc.syscall, ctypes.c_long(NR_CLONE3), None, ctypes.c_size_t(0))
        return out

    got = report(*in_child(body))
    assert got.pop("clone3", errno.ENOSYS) == errno.ENOSYS  # errnoRet 38 without CAP_SYS_ADMIN
    assert got == {"unshare_uts": errno.EPERM, "mount": errno.EPERM, "personality_query": 0,
                   "personality_exec": errno.EPERM, "getpid": 0}


def test_load_cost_of_docker_default() -> None:
    profile = docker_default_profile(DEFAULT_CAPS, native_arch())
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        f = seccomp.compile(profile)
        t1 = time.perf_counter()

        def body(_w: int, f=f) -> dict:
            t = time.perf_counter()
            f.load()
            return {"load": time.perf_counter() - t}

        try:
            got = report(*in_child(body))
        finally:
            f.release()
        samples.append((t1 - t0, got["load"]))
    compile_ms = sorted(1e3 * c for c, _ in samples)
    load_ms = sorted(1e3 * ld for _, ld in samples)
    print(f"\nDocker default profile over 5 runs: compile {compile_ms[2]:.1f} ms median "
          f"(min {compile_ms[0]:.1f}), load {load_ms[2]:.1f} ms median (min {load_ms[0]:.1f})")
    assert len(samples) == 5
