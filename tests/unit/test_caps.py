"""Capabilities through the Syscalls seam, checked against RecordingSyscalls (no root)."""

from __future__ import annotations

import errno
import os

import pytest

from skiff.oci.spec import Capabilities, SpecError, parse_process
from skiff.runtime import caps
from skiff.runtime.syscalls import (
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    RecordingSyscalls,
    SyscallError,
)

ALL = (1 << 41) - 1


def bit(*names: str) -> int:
    m = 0
    for n in names:
        m |= 1 << caps.CAPS[n]
    return m


def test_caps_table() -> None:
    assert len(caps.CAPS) == 41
    assert caps.CAPS["CAP_CHOWN"] == 0
    assert caps.CAPS["CAP_SETPCAP"] == 8
    assert caps.CAPS["CAP_SYS_ADMIN"] == 21
    assert caps.CAPS["CAP_SETFCAP"] == 31
    assert caps.CAPS["CAP_AUDIT_READ"] == 37
    assert caps.CAPS["CAP_CHECKPOINT_RESTORE"] == 40
    assert sorted(caps.CAPS.values()) == list(range(41))
    assert caps.names(bit("CAP_KILL", "CAP_CHOWN", "CAP_BPF") | 1 << 45) == [
        "CAP_CHOWN", "CAP_KILL", "CAP_BPF", "CAP_45"]


def test_last_cap(tmp_path) -> None:
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/cap_last_cap").write_text("37\n")
    assert caps.last_cap(str(tmp_path)) == 37
    with pytest.raises(OSError, match=r"read .*/nowhere/sys/kernel/cap_last_cap: No such file"):
        caps.last_cap(str(tmp_path / "nowhere"))
    (tmp_path / "sys/kernel/cap_last_cap").write_text("many\n")
    with pytest.raises(OSError, match="not a number"):
        caps.last_cap(str(tmp_path))
    assert caps.last_cap() >= 36  # this machine's kernel


def test_parse() -> None:
    assert caps.parse([], "x", last=40) == 0
    assert caps.parse(["CAP_CHOWN", "CAP_KILL", "CAP_CHOWN"], "x", last=40) == bit("CAP_CHOWN", "CAP_KILL")
    with pytest.raises(ValueError, match=r"process.capabilities.bounding\[1\]: unknown capability 'CAP_FLY'"):
        caps.parse(["CAP_KILL", "CAP_FLY"], "process.capabilities.bounding", last=40)
    with pytest.raises(SpecError, match="unknown capability 'chown'"):
        caps.parse(["chown"], "x", last=40)


def test_parse_skips_caps_the_kernel_does_not_know(capsys) -> None:
    m = caps.parse(["CAP_KILL", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"], "process.capabilities.effective", last=38)
    assert m == bit("CAP_KILL")
    err = capsys.readouterr().err
    assert "warning" in err and "process.capabilities.effective" in err
    assert "CAP_BPF" in err and "CAP_CHECKPOINT_RESTORE" in err


def test_parse_reads_last_cap_from_proc() -> None:
    assert caps.parse(["CAP_CHOWN"], "x") == 1


def test_configured_and_check() -> None:
    none = caps.configured(None)
    assert [getattr(none, s) for s in caps.SETS] == [[]] * 5  # runc: absent means nothing kept
    c = Capabilities(bounding=["CAP_KILL"])
    assert caps.configured(c) is c
    caps.check(None)
    caps.check(c)
    proc = parse_process({"args": ["sh"], "cwd": "/", "capabilities": {"ambient": ["CAP_KILL", "CAP_NOPE"]}})
    with pytest.raises(ValueError, match=r"process.capabilities.ambient\[1\]: unknown capability 'CAP_NOPE'"):
        caps.check(proc.capabilities)
    # a name newer than the running kernel is not a spec error
    caps.check(Capabilities(effective=["CAP_CHECKPOINT_RESTORE"]))


def test_drop_bounding() -> None:
    s = RecordingSyscalls()
    keep = bit("CAP_CHOWN", "CAP_KILL", "CAP_SETPCAP")
    caps.drop_bounding(s, keep, 40)
    dropped = [c[2] for c in s.calls]
    assert all(c[:2] == ("prctl", PR_CAPBSET_DROP) for c in s.calls)
    assert dropped == [n for n in range(41) if n not in (0, 5, 8)]
    s = RecordingSyscalls()
    caps.drop_bounding(s, 0, 36)
    assert [c[2] for c in s.calls] == list(range(37))
    s = RecordingSyscalls()
    caps.drop_bounding(s, ALL, 40)
    assert s.calls == []


def test_drop_bounding_error_names_the_cap() -> None:
    s = RecordingSyscalls(fail={"prctl": errno.EPERM})
    with pytest.raises(SyscallError) as e:
        caps.drop_bounding(s, bit("CAP_CHOWN"), 40)
    assert e.value.errno == errno.EPERM
    assert "drop CAP_DAC_OVERRIDE from the bounding set" in str(e.value)
    assert "needs CAP_SETPCAP" in str(e.value)


def full() -> RecordingSyscalls:
    s = RecordingSyscalls()
    s.caps = (0, ALL, 0)  # after setresuid with KEEPCAPS: effective cleared, permitted kept
    return s


def test_apply_sequence() -> None:
    s = full()
    c = Capabilities(bounding=["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                     effective=["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
                     permitted=["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"],
                     inheritable=["CAP_NET_BIND_SERVICE", "CAP_KILL"],
                     ambient=["CAP_KILL", "CAP_NET_BIND_SERVICE"])
    caps.apply(s, c, 40)
    assert s.calls == [
        ("capget",),
        ("capset", bit("CAP_CHOWN", "CAP_NET_BIND_SERVICE"),
         bit("CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"), bit("CAP_NET_BIND_SERVICE", "CAP_KILL")),
        ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
        ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, caps.CAPS["CAP_KILL"], 0, 0),
        ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, caps.CAPS["CAP_NET_BIND_SERVICE"], 0, 0),
    ]


def test_apply_empty_clears_everything() -> None:
    s = full()
    caps.apply(s, caps.configured(None), 40)
    assert s.calls == [("capget",), ("capset", 0, 0, 0),
                       ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)]


def test_apply_leaves_out_caps_not_held(capsys) -> None:
    s = RecordingSyscalls()
    held = ALL & ~bit("CAP_SYS_RESOURCE")  # a host whose bounding set lacks CAP_SYS_RESOURCE
    s.caps = (held, held, 0)
    every = list(caps.CAPS)
    caps.apply(s, Capabilities(bounding=every, effective=every, permitted=every), 40)
    assert s.calls[1] == ("capset", held, held, 0)
    err = capsys.readouterr().err
    assert "ignoring capabilities the runtime does not hold: CAP_SYS_RESOURCE" in err


def test_apply_skips_caps_beyond_last(capsys) -> None:
    s = full()
    caps.apply(s, Capabilities(effective=["CAP_BPF", "CAP_KILL"], permitted=["CAP_BPF", "CAP_KILL"],
                               ambient=["CAP_BPF"]), 38)
    assert s.calls[1] == ("capset", bit("CAP_KILL"), bit("CAP_KILL"), 0)
    assert not [c for c in s.calls if c[:3] == ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE)]
    assert "kernel does not know: CAP_BPF" in capsys.readouterr().err


def test_apply_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"process.capabilities.permitted\[0\]: unknown capability"):
        caps.apply(full(), Capabilities(permitted=["CAP_WHATEVER"]), 40)


def test_apply_capset_failure_is_explained() -> None:
    s = RecordingSyscalls(fail={"capset": errno.EPERM})
    s.caps = (0, ALL, 0)
    with pytest.raises(SyscallError) as e:
        caps.apply(s, Capabilities(effective=["CAP_KILL", "CAP_CHOWN"], permitted=["CAP_CHOWN"]), 40)
    msg = e.value.strerror
    assert msg.startswith("capset (effective [CAP_CHOWN, CAP_KILL], permitted [CAP_CHOWN], inheritable []):")
    assert "Operation not permitted (effective CAP_KILL not in the permitted set)" in msg
    assert e.value.errno == errno.EPERM


class AmbientRefused(RecordingSyscalls):
    """The kernel's answer to raising an ambient cap that is not permitted and inheritable."""

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        super().prctl(option, arg2, arg3, arg4, arg5)
        if option == PR_CAP_AMBIENT and arg2 == PR_CAP_AMBIENT_RAISE:
            raise SyscallError(errno.EPERM, "prctl: Operation not permitted")
        return 0


def test_ambient_that_cannot_be_raised_is_a_warning(capsys) -> None:
    s = AmbientRefused()
    s.caps = (0, ALL, 0)
    caps.apply(s, Capabilities(permitted=["CAP_KILL", "CAP_CHOWN"], inheritable=["CAP_KILL", "CAP_CHOWN"],
                               ambient=["CAP_KILL", "CAP_CHOWN"]), 40)
    raised = [c[3] for c in s.calls if c[:3] == ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE)]
    assert raised == [0, 5]  # both tried
    err = capsys.readouterr().err
    assert "can't raise ambient capability CAP_KILL: Operation not permitted" in err


def test_ambient_without_inheritable_is_skipped_quietly(capsys) -> None:
    """runc's default spec lists ambient caps but no inheritable ones: the kernel would refuse
    them, so they are not raised and nothing is printed (as runc does)."""
    s = AmbientRefused()
    s.caps = (0, ALL, 0)
    caps.apply(s, Capabilities(permitted=["CAP_KILL"], ambient=["CAP_KILL"]), 40)
    assert not [c for c in s.calls if c[:3] == ("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE)]
    assert capsys.readouterr().err == ""


def test_ambient_clear_failure_is_an_error() -> None:
    s = RecordingSyscalls(fail={"prctl": errno.EINVAL})
    s.caps = (0, ALL, 0)
    with pytest.raises(SyscallError, match="clear the ambient capability set: Invalid argument"):
        caps.apply(s, Capabilities(), 40)


def test_status_of_this_process_is_parseable() -> None:
    # the root tests compare /proc/self/status with masks; the field format is hex
    with open("/proc/self/status") as f:
        fields = dict(line.split(":\t", 1) for line in f.read().splitlines() if line.startswith("Cap"))
    assert set(fields) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
    assert int(fields["CapBnd"], 16) & ~((1 << (caps.last_cap() + 1)) - 1) == 0
    assert os.path.exists("/proc/sys/kernel/cap_last_cap")
