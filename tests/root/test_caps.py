"""Capabilities for real: a forked child drops and sets them through LinuxSyscalls, then reads
/proc/self/status (and execs busybox to see what survives execve)."""

from __future__ import annotations

import errno
import json
import os

import pytest

from skiff.oci.spec import Capabilities
from skiff.runtime import caps
from skiff.runtime.syscalls import PR_SET_KEEPCAPS, LinuxSyscalls

pytestmark = pytest.mark.root

BUSYBOX = "/bin/busybox"
UID = GID = 1000


def mask(*names: str) -> int:
    m = 0
    for n in names:
        m |= 1 << caps.CAPS[n]
    return m


def status_fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep and (k.startswith("Cap") or k in ("Uid", "Gid")):
            out[k] = v.strip()
    return out


def read_status() -> dict[str, str]:
    with open("/proc/self/status") as f:
        return status_fields(f.read())


def in_child(body) -> tuple[int, bytes]:
    """Run ``body(report_fd)`` in a forked child; return (wait status, what it wrote)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
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


def caps_bits(fields: dict[str, str]) -> dict[str, int]:
    return {k: int(v, 16) for k, v in fields.items() if k.startswith("Cap")}


def setup(c: Capabilities, uid: int | None = None) -> None:
    """What the container's init does, in order."""
    s = LinuxSyscalls()
    last = caps.last_cap()
    caps.drop_bounding(s, caps.parse(c.bounding, "process.capabilities.bounding", last), last)
    if uid is not None:
        s.prctl(PR_SET_KEEPCAPS, 1)
        s.setgroups([])
        s.setresgid(GID)
        s.setresuid(uid)
    caps.apply(s, c, last)


def test_drop_bounding_setuid_capset_ambient() -> None:
    c = Capabilities(
        bounding=["CAP_CHOWN", "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"],
        effective=["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        permitted=["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        inheritable=["CAP_NET_BIND_SERVICE"],
        ambient=["CAP_NET_BIND_SERVICE"])

    def body(w: int) -> None:
        setup(c, uid=UID)
        os.write(w, (json.dumps(read_status()) + "\n").encode())
        os.dup2(w, 1)
        os.execv(BUSYBOX, ["busybox", "grep", "-E", "^(Cap|Uid|Gid)", "/proc/self/status"])

    status, data = in_child(body)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, data)
    first, _, after_exec = data.decode().partition("\n")
    before = json.loads(first)
    assert before["Uid"].split() == [str(UID)] * 4 and before["Gid"].split() == [str(GID)] * 4
    assert caps_bits(before) == {
        "CapBnd": mask(*c.bounding),
        "CapEff": mask("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"),
        "CapPrm": mask("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"),
        "CapInh": mask("CAP_NET_BIND_SERVICE"),
        "CapAmb": mask("CAP_NET_BIND_SERVICE"),
    }
    # after execve as a non-root user, only the ambient set carries over into P and E
    assert caps_bits(status_fields(after_exec)) == {
        "CapBnd": mask(*c.bounding),
        "CapEff": mask("CAP_NET_BIND_SERVICE"),
        "CapPrm": mask("CAP_NET_BIND_SERVICE"),
        "CapInh": mask("CAP_NET_BIND_SERVICE"),
        "CapAmb": mask("CAP_NET_BIND_SERVICE"),
    }


def _try_chown(path: str, keep_chown: bool):
    every = [n for n in caps.CAPS if keep_chown or n != "CAP_CHOWN"]
    c = Capabilities(bounding=every, effective=every, permitted=every)

    def body(_w: int) -> dict:
        setup(c)  # stays uid 0: only the capability decides
        try:
            os.chown(path, UID, GID)
            err = 0
        except OSError as e:
            err = e.errno or -1
        return {"chown": err, "eff": read_status()["CapEff"]}

    return in_child(body)


def test_without_cap_chown_root_cannot_chown(tmp_path) -> None:
    f = tmp_path / "owned-by-root"
    f.write_text("x")
    status, data = _try_chown(str(f), keep_chown=False)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, data
    got = json.loads(data)
    assert got["chown"] == errno.EPERM
    assert int(got["eff"], 16) & mask("CAP_CHOWN") == 0
    assert f.stat().st_uid == 0

    # control: the same child with CAP_CHOWN can
    status, data = _try_chown(str(f), keep_chown=True)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, data
    assert json.loads(data)["chown"] == 0
    assert f.stat().st_uid == UID


def test_every_cap_requested_gets_what_the_host_has(capfd) -> None:
    host_bnd = int(read_status()["CapBnd"], 16)
    every = list(caps.CAPS)
    c = Capabilities(bounding=every, effective=every, permitted=every)

    def body(_w: int) -> dict:
        setup(c)
        return caps_bits(read_status())

    status, data = in_child(body)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, data
    got = json.loads(data)
    assert got["CapEff"] == got["CapPrm"] == got["CapBnd"] == host_bnd
    missing = ((1 << (caps.last_cap() + 1)) - 1) & ~host_bnd
    err = capfd.readouterr().err
    if missing:  # e.g. CAP_SYS_RESOURCE on this kind of machine: a warning, not a failure
        assert "ignoring capabilities the runtime does not hold: " + ", ".join(caps.names(missing)) in err


def test_absent_capabilities_keep_nothing(tmp_path) -> None:
    c = caps.configured(None)
    f = tmp_path / "f"
    f.write_text("x")

    def body(w: int) -> None:
        setup(c)
        try:
            os.chown(f, UID, GID)
            err = 0
        except OSError as e:
            err = e.errno or -1
        os.write(w, (json.dumps({"chown": err, **caps_bits(read_status())}) + "\n").encode())
        os.dup2(w, 1)
        os.execv(BUSYBOX, ["busybox", "grep", "^Cap", "/proc/self/status"])

    status, data = in_child(body)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, data
    first, _, after_exec = data.decode().partition("\n")
    assert json.loads(first) == {"chown": errno.EPERM, "CapBnd": 0, "CapEff": 0, "CapPrm": 0,
                                 "CapInh": 0, "CapAmb": 0}
    # uid 0 gets no capability back from execve: the bounding set is empty
    assert set(caps_bits(status_fields(after_exec)).values()) == {0}
