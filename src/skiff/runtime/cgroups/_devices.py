"""Device access rules: v1 ``devices.allow``/``devices.deny`` lines and the v2 eBPF program.

OCI rules (``linux.resources.devices``) apply in order on top of "deny everything", so the
last rule that matches a device decides. v1 gets exactly that sequence written to the
devices controller. cgroup v2 has no devices files: access is decided by a
``BPF_PROG_TYPE_CGROUP_DEVICE`` program attached to the cgroup, which the kernel runs on every
open/mknod with the device type, major, minor and the access asked for.

The program decides each access bit (read, write, mknod) separately: for each bit asked for,
the rules that mention that bit are tried from last to first and the first match decides;
no match denies. An open for read+write is allowed only if both bits are. This is the
per-bit meaning of the ordered list (a later ``deny c 1:5 w`` takes write away from an
earlier ``allow c 1:5 rwm`` but leaves read), without runc's rule-list emulator.
"""

from __future__ import annotations

import _struct as struct  # the C module: struct.py only re-exports it

from ._util import CgroupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from skiff.runtime.syscalls import Syscalls

# linux/bpf.h
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2

_ACCESS_BITS = (("r", BPF_DEVCG_ACC_READ), ("w", BPF_DEVCG_ACC_WRITE), ("m", BPF_DEVCG_ACC_MKNOD))
_TYPES = {"b": BPF_DEVCG_DEV_BLOCK, "c": BPF_DEVCG_DEV_CHAR}
_MAX_NUM = (1 << 31) - 1

WHERE = "linux.resources.devices"


class Rule:
    """One checked rule; ``major``/``minor`` ``None`` mean any (``*``)."""

    __slots__ = ("allow", "type", "major", "minor", "access")

    def __init__(self, allow: bool, type: str, major: int | None, minor: int | None,
                 access: str) -> None:
        self.allow = allow
        self.type = type
        self.major = major
        self.minor = minor
        self.access = access

    def __repr__(self) -> str:
        return f"Rule({'allow' if self.allow else 'deny'} {self.v1_line()})"

    def matches(self, dev_type: str, major: int, minor: int) -> bool:
        return ((self.type == "a" or self.type == dev_type)
                and (self.major is None or self.major == major)
                and (self.minor is None or self.minor == minor))

    def v1_line(self) -> str:
        def num(n: int | None) -> str:
            return "*" if n is None else str(n)

        return f"{self.type} {num(self.major)}:{num(self.minor)} {self.access}"


def parse_rules(rules: list[dict]) -> list[Rule]:
    """Check OCI device rules (already type-checked by ``_resources.check``).

    ``type`` unset means ``a``; ``major``/``minor`` unset or -1 mean any; ``access`` unset or
    empty means ``rwm`` (the spec leaves it optional; the kernel's ``a`` rule means all three).
    """
    out = []
    for i, r in enumerate(rules):
        w = f"{WHERE}[{i}]"
        t = r.get("type") or "a"
        if t not in ("a", "b", "c"):
            raise CgroupError(f"{w}.type: {t!r} is not a, b or c")
        nums: list[int | None] = []
        for k in ("major", "minor"):
            n = r.get(k)
            if n is None or n == -1:
                nums.append(None)
            elif not 0 <= n <= _MAX_NUM:
                raise CgroupError(f"{w}.{k}: {n} is not a device number or -1 (any)")
            else:
                nums.append(n)
        acc = r.get("access") or "rwm"
        if any(c not in "rwm" for c in acc) or len(set(acc)) != len(acc):
            raise CgroupError(f"{w}.access: {acc!r} is not a combination of r, w and m")
        acc = "".join(c for c in "rwm" if c in acc)
        out.append(Rule(r["allow"], t, nums[0], nums[1], acc))
    return out


def decide(rules: list[Rule], dev_type: str, major: int, minor: int, access: str) -> bool:
    """The reference meaning of a rule list (what the eBPF program computes)."""
    for bit in access:
        verdict = False
        for r in reversed(rules):
            if bit in r.access and r.matches(dev_type, major, minor):
                verdict = r.allow
                break
        if not verdict:
            return False
    return True


# --- v1 --------------------------------------------------------------------------------------

def v1_writes(rules: list[Rule]) -> list[tuple[str, str]]:
    """(file, line) pairs for the v1 devices controller, starting by denying everything.

    The kernel reads ``a`` as "every device, every access" whatever follows it, so a type-``a``
    rule is written as ``a`` only when it really covers everything; otherwise it is split into
    a ``b`` and a ``c`` rule.
    """
    out = [("devices.deny", "a")]
    for r in rules:
        f = "devices.allow" if r.allow else "devices.deny"
        if r.type == "a":
            if r.major is None and r.minor is None and r.access == "rwm":
                out.append((f, "a"))
            else:
                for t in ("b", "c"):
                    out.append((f, Rule(r.allow, t, r.major, r.minor, r.access).v1_line()))
        else:
            out.append((f, r.v1_line()))
    return out


# --- v2: the eBPF program ----------------------------------------------------------------------

# opcodes (linux/bpf_common.h, linux/bpf.h)
_LDX_MEM_W = 0x61          # BPF_LDX | BPF_MEM | BPF_W
_ALU32_MOV_X = 0xBC        # BPF_ALU | BPF_MOV | BPF_X
_ALU32_AND_K = 0x54        # BPF_ALU | BPF_AND | BPF_K
_ALU32_RSH_K = 0x74        # BPF_ALU | BPF_RSH | BPF_K
_ALU64_MOV_K = 0xB7        # BPF_ALU64 | BPF_MOV | BPF_K
_JMP_JA = 0x05             # BPF_JMP | BPF_JA
_JMP_JNE_K = 0x55          # BPF_JMP | BPF_JNE | BPF_K
_JMP_JSET_K = 0x45         # BPF_JMP | BPF_JSET | BPF_K
_JMP_EXIT = 0x95           # BPF_JMP | BPF_EXIT

# registers: r1 = context; r2 = access bits; r3 = device type; r4 = major; r5 = minor
_R0, _R1, _R2, _R3, _R4, _R5 = range(6)


class _Asm:
    """A tiny assembler: instructions with symbolic jump targets resolved at the end."""

    def __init__(self) -> None:
        self.insns: list[list] = []  # [code, dst, src, off (int or label), imm]
        self.labels: dict[str, int] = {}
        self._n = 0

    def label(self) -> str:
        self._n += 1
        return f"L{self._n}"

    def place(self, label: str) -> None:
        self.labels[label] = len(self.insns)

    def emit(self, code: int, dst: int = 0, src: int = 0, off: int | str = 0, imm: int = 0) -> None:
        self.insns.append([code, dst, src, off, imm])

    def ret(self, verdict: int) -> None:
        self.emit(_ALU64_MOV_K, _R0, imm=verdict)
        self.emit(_JMP_EXIT)

    def assemble(self) -> bytes:
        out = bytearray()
        for pc, (code, dst, src, off, imm) in enumerate(self.insns):
            if isinstance(off, str):
                off = self.labels[off] - (pc + 1)
            out += struct.pack("<BBhi", code, (src << 4) | dst, off, imm)
        return bytes(out)


def build_program(rules: list[Rule]) -> bytes:
    """The eBPF instructions (8 bytes each) deciding device access for ``rules``.

    The verifier refuses unreachable instructions, so nothing is emitted after a rule that
    matches every device of its bit.
    """
    a = _Asm()
    # struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
    # access_type = (access << 16) | type
    a.emit(_LDX_MEM_W, _R2, _R1, 0)
    a.emit(_ALU32_MOV_X, _R3, _R2)
    a.emit(_ALU32_AND_K, _R3, imm=0xFFFF)
    a.emit(_ALU32_RSH_K, _R2, imm=16)
    a.emit(_LDX_MEM_W, _R4, _R1, 4)
    a.emit(_LDX_MEM_W, _R5, _R1, 8)
    for bit_name, bit in _ACCESS_BITS:
        next_bit = a.label()
        asked = a.label()
        # if (access & bit) goto asked; else goto next_bit
        a.emit(_JMP_JSET_K, _R2, off=asked, imm=bit)
        a.emit(_JMP_JA, off=next_bit)
        a.place(asked)
        decided = False
        for r in reversed(rules):
            if bit_name not in r.access:
                continue
            next_rule = a.label()
            if r.type != "a":
                a.emit(_JMP_JNE_K, _R3, off=next_rule, imm=_TYPES[r.type])
            if r.major is not None:
                a.emit(_JMP_JNE_K, _R4, off=next_rule, imm=r.major)
            if r.minor is not None:
                a.emit(_JMP_JNE_K, _R5, off=next_rule, imm=r.minor)
            if r.allow:
                a.emit(_JMP_JA, off=next_bit)
            else:
                a.ret(0)
            a.place(next_rule)
            if r.type == "a" and r.major is None and r.minor is None:
                decided = True  # matches everything: later (earlier-listed) rules are dead
                break
        if not decided:
            a.ret(0)  # no rule for this bit matched
        a.place(next_bit)
    a.ret(1)
    return a.assemble()


def run_program(prog: bytes, dev_type: str, major: int, minor: int, access: str) -> int:
    """Interpret ``prog`` for one access (only the opcodes ``build_program`` emits).

    This lets unit tests check the program's decisions without loading it into a kernel.
    """
    acc = sum(b for n, b in _ACCESS_BITS if n in access)
    ctx = (acc << 16 | _TYPES[dev_type], major, minor)
    regs = [0] * 11
    pc = 0
    n = len(prog) // 8
    steps = 0
    while 0 <= pc < n:
        steps += 1
        if steps > 100000:
            raise AssertionError("program does not terminate")
        code, regs_b, off, imm = struct.unpack_from("<BBhi", prog, pc * 8)
        dst, src = regs_b & 0xF, regs_b >> 4
        pc += 1
        if code == _LDX_MEM_W:
            regs[dst] = ctx[off // 4]
        elif code == _ALU32_MOV_X:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code == _ALU32_AND_K:
            regs[dst] = (regs[dst] & imm) & 0xFFFFFFFF
        elif code == _ALU32_RSH_K:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == _ALU64_MOV_K:
            regs[dst] = imm
        elif code == _JMP_JA:
            pc += off
        elif code == _JMP_JNE_K:
            if regs[dst] != imm:
                pc += off
        elif code == _JMP_JSET_K:
            if regs[dst] & imm:
                pc += off
        elif code == _JMP_EXIT:
            return regs[_R0]
        else:
            raise AssertionError(f"opcode {code:#x} at {pc - 1}")
    raise AssertionError(f"jump out of the program (pc {pc})")


def attach_program(sys: Syscalls, cgroup_dir: str, rules: list[Rule]) -> None:
    """Load the program for ``rules`` and make it the only device program of ``cgroup_dir``.

    The new program is attached (with BPF_F_ALLOW_MULTI) before the old ones are detached,
    so a running container never goes through a moment without device restrictions.
    """
    import errno
    import os

    prog = build_program(rules)
    try:
        dfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError(f"open {cgroup_dir}: {e.strerror}", e.errno) from None
    try:
        try:
            old = sys.bpf_prog_query(dfd, BPF_CGROUP_DEVICE)
        except OSError as e:
            raise CgroupError(f"{WHERE}: query the device programs of {cgroup_dir}: {e.strerror}",
                              e.errno) from None
        try:
            pfd = sys.bpf_prog_load(BPF_PROG_TYPE_CGROUP_DEVICE, prog, "Apache-2.0", "skiff_devices")
        except OSError as e:
            raise CgroupError(f"{WHERE}: load the eBPF device program ({len(prog) // 8} "
                              f"instructions) for {cgroup_dir}: {e}", e.errno) from None
        try:
            try:
                sys.bpf_prog_attach(dfd, pfd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
            except OSError as e:
                raise CgroupError(f"{WHERE}: attach the eBPF device program to {cgroup_dir}: "
                                  f"{e.strerror}", e.errno) from None
        finally:
            os.close(pfd)
        for prog_id in old:
            try:
                ofd = sys.bpf_prog_get_fd_by_id(prog_id)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    continue  # unloaded meanwhile
                raise CgroupError(f"{WHERE}: open the old device program {prog_id} of "
                                  f"{cgroup_dir}: {e.strerror}", e.errno) from None
            try:
                sys.bpf_prog_detach(dfd, ofd, BPF_CGROUP_DEVICE)
            except OSError as e:
                raise CgroupError(f"{WHERE}: detach the old device program {prog_id} from "
                                  f"{cgroup_dir}: {e.strerror}", e.errno) from None
            finally:
                os.close(ofd)
    finally:
        os.close(dfd)
