"""seccomp profiles: validation, compilation to libseccomp (read back as pseudo filter code),
and the conversion of Docker's default profile. No root needed: nothing reaches the kernel."""

from __future__ import annotations

import copy
import errno
import os
import struct

import pytest

from skiff.oci import seccomp_default
from skiff.oci.seccomp_default import DEFAULT_CAPS, ProfileError, docker_default_profile, to_oci
from skiff.runtime import seccomp
from skiff.runtime.seccomp import SeccompError, check

DOCKER_PROFILE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "specs",
                              "docker-seccomp-default.json")


# --- pseudo filter code helpers -------------------------------------------------------------

def arch_sections(pfc: str) -> dict[str, list[str]]:
    """The lines of each architecture's filter, by libseccomp's arch name."""
    out: dict[str, list[str]] = {}
    cur: list[str] | None = None
    for line in pfc.splitlines():
        if line.startswith("# filter for arch "):
            cur = out.setdefault(line.split()[4], [])
        elif line.startswith("# invalid architecture action"):
            cur = None
        elif cur is not None:
            cur.append(line)
    return out


def syscall_block(lines: list[str], name: str) -> list[str] | None:
    """The rule lines libseccomp wrote for syscall ``name`` (without the comment), or None."""
    for i, line in enumerate(lines):
        if line.strip().startswith(f'# filter for syscall "{name}" '):
            indent = len(line) - len(line.lstrip())
            block = [lines[i + 1].strip()]
            for nxt in lines[i + 2:]:
                if len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                block.append(nxt.strip())
            return block
    return None


def native(pfc: str) -> list[str]:
    return arch_sections(pfc)["x86_64"]


def actions(block: list[str]) -> list[str]:
    return [b[len("action "):-1] for b in block if b.startswith("action ")]


def default_action(lines: list[str]) -> str:
    i = lines.index("  # default action")
    return lines[i + 1].strip()[len("action "):-1]


def compile_pfc(profile: dict) -> tuple[str, seccomp.Filter]:
    f = seccomp.compile(profile)
    try:
        return f.export_pfc(), f
    finally:
        f.release()


# --- check() ----------------------------------------------------------------------------------

@pytest.mark.parametrize("profile, message", [
    ({}, "linux.seccomp.defaultAction: is required"),
    ({"defaultAction": "SCMP_ACT_MAYBE"}, "linux.seccomp.defaultAction: unknown action 'SCMP_ACT_MAYBE'"),
    ({"defaultAction": 3}, "linux.seccomp.defaultAction: expected a string"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY is not supported"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1},
     "linux.seccomp.defaultErrnoRet: SCMP_ACT_ALLOW takes no errno"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1},
     "linux.seccomp.defaultErrnoRet: -1 is out of range"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000},
     "linux.seccomp.defaultErrnoRet: 70000 is out of range"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": True},
     "linux.seccomp.defaultErrnoRet: expected an unsigned integer"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_VAX"]},
     "linux.seccomp.architectures[1]: unknown architecture 'SCMP_ARCH_VAX'"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": "SCMP_ARCH_X86_64"},
     "linux.seccomp.architectures: expected an array"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FAST"]},
     "linux.seccomp.flags[0]: unknown flag 'SECCOMP_FILTER_FLAG_FAST'"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "x"},
     "linux.seccomp.listenerMetadata: must not be set without listenerPath"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, "linux.seccomp.syscalls: expected an array"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names: must name at least one syscall"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [""], "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names[0]: empty syscall name"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"]}]},
     "linux.seccomp.syscalls[0].action: is required"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.syscalls[0].action: SCMP_ACT_NOTIFY is not supported by skiff-runc"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [{"names": ["read"], "action": "SCMP_ACT_KILL", "errnoRet": 5}]},
     "linux.seccomp.syscalls[0].errnoRet: SCMP_ACT_KILL takes no errno"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].index: 6 is out of range (0 to 5)"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].value: is required"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1 << 64, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].value: 18446744073709551616 is out of range"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 1, "valueTwo": -2, "op": "SCMP_CMP_MASKED_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].valueTwo: -2 is out of range"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]},
     "linux.seccomp.syscalls[0].args[0].op: unknown operator 'SCMP_CMP_ABOUT'"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [3]}]},
     "linux.seccomp.syscalls[0].args[0]: expected an object"),
])
def test_check_refuses(profile: dict, message: str) -> None:
    with pytest.raises(SeccompError) as e:
        check(profile)
    assert message in str(e.value)


def test_check_accepts_unknown_syscall_names_and_every_known_value() -> None:
    check({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "architectures": sorted(seccomp.ARCHES),
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "listenerPath": "/run/agent.sock",  # ignored without SCMP_ACT_NOTIFY, as the spec says
        "syscalls": [
            {"names": ["no_such_syscall_in_any_kernel"], "action": "SCMP_ACT_ALLOW"},
            *({"names": ["read"], "action": a} for a in seccomp.ACTIONS if a != "SCMP_ACT_NOTIFY"),
            {"names": ["read"], "action": "SCMP_ACT_TRACE", "errnoRet": 3},
            *({"names": ["ioctl"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 1, "value": 5, "valueTwo": 5, "op": op}]} for op in seccomp.OPS),
        ],
    })


def test_wait_killable_recv_depends_on_libseccomp() -> None:
    p = {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}
    if seccomp.libseccomp_version() >= (2, 6, 0):
        check(p)
    else:
        with pytest.raises(SeccompError, match=r"flags\[0\]: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs "
                                               r"libseccomp 2.6.0 or later \(this is 2\.5\.\d+\)"):
            check(p)


def test_compile_checks_first() -> None:
    with pytest.raises(SeccompError, match="syscalls\\[0\\].action: unknown action"):
        seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "X"}]})


# --- compile() + export ------------------------------------------------------------------------

def test_actions_and_errno() -> None:
    pfc, f = compile_pfc({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV},
            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["getpid"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
            {"names": ["getppid"], "action": "SCMP_ACT_TRACE"},
            {"names": ["gettid"], "action": "SCMP_ACT_TRAP"},
            {"names": ["uname"], "action": "SCMP_ACT_KILL"},
            {"names": ["sethostname"], "action": "SCMP_ACT_KILL_THREAD"},
            {"names": ["reboot"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["getcwd"], "action": "SCMP_ACT_LOG"},
        ],
    })
    lines = native(pfc)
    assert default_action(lines) == "ALLOW"
    expect = {"mkdir": "ERRNO(18)", "mkdirat": "ERRNO(18)", "rmdir": "ERRNO(1)", "getpid": "TRACE(7)",
              "getppid": "TRACE(1)", "gettid": "TRAP", "uname": "KILL", "sethostname": "KILL",
              "reboot": "KILL_PROCESS", "getcwd": "LOG"}
    for name, act in expect.items():
        block = syscall_block(lines, name)
        assert block is not None, name
        assert actions(block) == [act], (name, block)
    assert f.rules == 10 and f.skipped == []


def test_default_errno_and_rule_equal_to_default_is_skipped() -> None:
    pfc, f = compile_pfc({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOSYS,
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},  # == default
            {"names": ["umount2"], "action": "SCMP_ACT_ERRNO"},  # EPERM: not the default
        ],
    })
    lines = native(pfc)
    assert default_action(lines) == "ERRNO(38)"
    assert syscall_block(lines, "mount") is None
    assert actions(syscall_block(lines, "umount2") or []) == ["ERRNO(1)"]
    assert actions(syscall_block(lines, "read") or []) == ["ALLOW"]
    assert f.rules == 3


def test_unknown_syscall_names_are_skipped() -> None:
    pfc, f = compile_pfc({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["not_a_syscall", "getpid", "nor_this_one"], "action": "SCMP_ACT_ERRNO"}]})
    assert f.skipped == ["not_a_syscall", "nor_this_one"]
    assert f.rules == 1
    assert actions(syscall_block(native(pfc), "getpid") or []) == ["ERRNO(1)"]


def test_args_on_different_indexes_are_anded() -> None:
    pfc, _ = compile_pfc({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "args": [
            {"index": 0, "value": 0x7E020000, "valueTwo": 0x20000, "op": "SCMP_CMP_MASKED_EQ"},
            {"index": 2, "value": 5, "op": "SCMP_CMP_GT"}]}]})
    block = syscall_block(native(pfc), "clone")
    assert block is not None
    text = "\n".join(block)
    # one rule, both conditions nested: the action is reached only when both hold
    assert "if ($a0.lo32 & 0x7e020000 == 131072)" in text
    assert "if ($a2.lo32 > 5)" in text
    # the a0 test encloses both ways to the action (a2.hi32 > 0, or a2.hi32 == 0 && a2.lo32 > 5)
    assert actions(block) == ["ERRNO(1)", "ERRNO(1)"]
    assert text.index("$a0.lo32 & 0x7e020000") < text.index("$a2.hi32 > 0") < text.index("action ERRNO(1)")
    assert text.index("$a2.lo32 > 5") < text.rindex("action ERRNO(1)")


def test_repeated_index_becomes_one_rule_per_condition() -> None:
    pfc, f = compile_pfc({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES, "args": [
            {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": 0x20000, "op": "SCMP_CMP_EQ"}]}]})
    assert f.rules == 2
    block = syscall_block(native(pfc), "personality")
    assert block is not None
    # two sibling tests on a0 (ORed), each leading to the action
    assert "if ($a0.lo32 == 8)" in block and "if ($a0.lo32 == 131072)" in block
    assert actions(block) == ["ERRNO(13)", "ERRNO(13)"]


@pytest.mark.parametrize("op, test", [
    ("SCMP_CMP_NE", "if ($a1.lo32 == 7)"),  # libseccomp writes NE as an EQ test with the other branch
    ("SCMP_CMP_LT", "if ($a1.lo32 >= 7)"),
    ("SCMP_CMP_LE", "if ($a1.lo32 > 7)"),
    ("SCMP_CMP_EQ", "if ($a1.lo32 == 7)"),
    ("SCMP_CMP_GE", "if ($a1.lo32 >= 7)"),
    ("SCMP_CMP_GT", "if ($a1.lo32 > 7)"),
])
def test_operators(op: str, test: str) -> None:
    pfc, _ = compile_pfc({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 7, "op": op}]}]})
    block = syscall_block(native(pfc), "kill")
    assert block is not None and test in block, block


def test_architectures_and_flags() -> None:
    pfc, _ = compile_pfc({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]})
    sections = arch_sections(pfc)
    if os.uname().machine == "x86_64":
        assert set(sections) == {"x86_64", "x86", "x32"}
        # the same name, resolved for each architecture
        assert syscall_block(sections["x86"], "getpid")[0] == "if ($syscall == 20)"  # type: ignore[index]
        assert syscall_block(sections["x86_64"], "getpid")[0] == "if ($syscall == 39)"  # type: ignore[index]


def test_export_bpf_is_a_program() -> None:
    f = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW",
                         "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5}]})
    try:
        prog = f.export_bpf()
    finally:
        f.release()
    assert prog and len(prog) % 8 == 0
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    rets = {k for code, _, _, k in insns if code == 0x06}  # BPF_RET | BPF_K
    assert 0x7FFF0000 in rets  # SECCOMP_RET_ALLOW
    assert 0x00050000 | 5 in rets  # SECCOMP_RET_ERRNO | 5


def test_release_is_idempotent_and_use_after_release_fails() -> None:
    f = seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW"})
    f.release()
    f.release()
    with pytest.raises(SeccompError, match="after release"):
        f.export_pfc()
    with seccomp.compile({"defaultAction": "SCMP_ACT_KILL"}) as g:
        assert default_action(native(g.export_pfc())) == "KILL"


# --- Docker's default profile ----------------------------------------------------------------

@pytest.fixture(scope="module")
def docker_raw() -> dict:
    return seccomp_default.load_docker_profile(DOCKER_PROFILE)


def test_profile_path_finds_the_shared_copy() -> None:
    assert os.path.samefile(seccomp_default.profile_path(), DOCKER_PROFILE)


def test_docker_default_for_default_caps_on_amd64(docker_raw: dict) -> None:
    p = to_oci(docker_raw, DEFAULT_CAPS, "amd64", kernel="6.1.0-18-amd64")
    # the public entry point: the shared profile, the running kernel
    assert docker_default_profile(DEFAULT_CAPS, "amd64") == to_oci(docker_raw, DEFAULT_CAPS, "amd64")
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    assert p["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    check(p)
    names = {n for c in p["syscalls"] for n in c["names"]}
    assert {"read", "execve", "arch_prctl", "modify_ldt", "ptrace", "clone", "clone3"} <= names
    # capability-gated groups left out for Docker's default capabilities
    for gated in ("mount", "umount2", "unshare", "setns", "reboot", "init_module", "bpf", "syslog",
                  "open_by_handle_at", "settimeofday", "iopl", "perf_event_open"):
        assert gated not in names, gated
    # other architectures' groups left out
    assert "s390_runtime_instr" not in names and "riscv_flush_icache" not in names
    assert "breakpoint" not in names
    clone3 = [c for c in p["syscalls"] if c["names"] == ["clone3"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    clone = [c for c in p["syscalls"] if c["names"] == ["clone"]]
    assert clone == [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]}]


def test_docker_default_gates(docker_raw: dict) -> None:
    admin = to_oci(docker_raw, DEFAULT_CAPS | {"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}, "amd64", kernel="6.1")
    names = {n for c in admin["syscalls"] for n in c["names"]}
    assert {"mount", "unshare", "setns", "kcmp"} <= names
    # excludes.caps: with CAP_SYS_ADMIN, clone is allowed unconditionally and clone3 not refused
    assert not [c for c in admin["syscalls"] if "clone" in c["names"] and c.get("args")]
    assert not [c for c in admin["syscalls"] if c.get("errnoRet") == 38]
    old = to_oci(docker_raw, DEFAULT_CAPS, "amd64", kernel="4.4.0")
    assert "ptrace" not in {n for c in old["syscalls"] for n in c["names"]}  # includes.minKernel 4.8
    arm = to_oci(docker_raw, DEFAULT_CAPS, "arm64", kernel="6.1")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    arm_names = {n for c in arm["syscalls"] for n in c["names"]}
    assert "breakpoint" in arm_names and "arch_prctl" not in arm_names
    s390 = to_oci(docker_raw, DEFAULT_CAPS, "s390x", kernel="6.1")
    assert [c["args"][0]["index"] for c in s390["syscalls"] if c["names"] == ["clone"]] == [1]
    riscv = to_oci(docker_raw, DEFAULT_CAPS, "riscv64", kernel="6.1")
    assert riscv["architectures"] == ["SCMP_ARCH_RISCV64"]
    x86 = to_oci(docker_raw, DEFAULT_CAPS, "x86", kernel="6.1")
    assert "architectures" not in x86  # no archMap entry: libseccomp's native architecture only


def test_docker_format_errors_and_errno_names() -> None:
    with pytest.raises(ProfileError, match="'architectures' and 'archMap'"):
        to_oci({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"],
                "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}, DEFAULT_CAPS, "amd64")
    with pytest.raises(ProfileError, match=r"syscalls\[0\]: 'name' and 'names'"):
        to_oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"name": "read", "names": ["write"], "action": "SCMP_ACT_ERRNO"}]}, DEFAULT_CAPS, "amd64")
    with pytest.raises(ProfileError, match=r"syscalls\[0\].errno: unknown errno 'EWHAT'"):
        to_oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errno": "EWHAT"}]}, DEFAULT_CAPS, "amd64")
    p = to_oci({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrno": "ENOSYS", "syscalls": [
        {"name": "read", "action": "SCMP_ACT_ERRNO", "errno": "EACCES"}]}, DEFAULT_CAPS, "amd64")
    assert p == {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOSYS, "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES}]}
    with pytest.raises(ProfileError, match="read Docker's seccomp profile /nonexistent.json"):
        seccomp_default.load_docker_profile("/nonexistent.json")


def test_docker_default_compiles(docker_raw: dict) -> None:
    p = to_oci(docker_raw, DEFAULT_CAPS, "amd64", kernel="6.1")
    original = copy.deepcopy(p)
    f = seccomp.compile(p)
    try:
        pfc = f.export_pfc()
        prog = f.export_bpf()
        skipped = list(f.skipped)
    finally:
        f.release()
    assert p == original  # compile does not change the profile
    assert 0 < len(prog) // 8 <= 4096  # the kernel's limit on a filter's instructions
    # names newer than this libseccomp are skipped, never an error
    names = {n for c in p["syscalls"] for n in c["names"]}
    assert set(skipped) <= names
    sections = arch_sections(pfc)
    if os.uname().machine != "x86_64":
        return
    assert set(sections) == {"x86_64", "x86", "x32"}
    lines = sections["x86_64"]
    assert default_action(lines) == "ERRNO(1)"
    for allowed in ("read", "write", "execve", "openat", "arch_prctl", "ptrace"):
        assert actions(syscall_block(lines, allowed) or []) == ["ALLOW"], allowed
    for refused in ("mount", "unshare", "setns", "reboot", "kexec_load", "bpf", "init_module"):
        assert syscall_block(lines, refused) is None, refused  # falls to the default ERRNO(1)
    assert actions(syscall_block(lines, "clone3") or []) == ["ERRNO(38)"]
    clone = "\n".join(syscall_block(lines, "clone") or [])
    assert "$a0.lo32 & 0x7e020000 == 0" in clone and "action ALLOW;" in clone
    personality = syscall_block(lines, "personality") or []
    for v in (0, 8, 131072, 131080, 4294967295):
        assert f"if ($a0.lo32 == {v})" in personality, v
    socket = "\n".join(syscall_block(lines, "socket") or [])
    assert "$a0.lo32 >= 38" in socket and "$a0.lo32 == 39" in socket and "$a0.lo32 > 40" in socket
    # x86 (32-bit) has its own numbers: socketcall is syscall 102 there; on x86_64 libseccomp
    # only has a pseudo number for it (negative, never matched)
    assert syscall_block(sections["x86"], "socketcall") == ["if ($syscall == 102)", "action ALLOW;"]
    nr = int((syscall_block(lines, "socketcall") or ["if ($syscall == 0)"])[0].split()[3].rstrip(")"))
    assert nr >= 1 << 31
