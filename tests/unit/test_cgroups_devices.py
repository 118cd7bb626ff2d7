"""Device rules: parsing, v1 lines, and the eBPF program's decisions (run in an interpreter)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skiff.runtime.cgroups import DEFAULT_RULES, CgroupError
from skiff.runtime.cgroups._devices import Rule, build_program, decide, parse_rules, run_program, v1_writes

DEVICES = [("c", 1, 3), ("c", 1, 5), ("c", 1, 9), ("b", 8, 0), ("b", 8, 16), ("c", 136, 4), ("c", 10, 200),
           ("b", 1, 3), ("c", 5, 2)]
ACCESSES = ["r", "w", "m", "rw", "rm", "wm", "rwm"]


def _rules(*rules: dict) -> list[Rule]:
    return parse_rules(list(rules))


def _reachable(prog: bytes) -> set[int]:
    """Instructions reachable from the first (the kernel's verifier refuses any that is not)."""
    n = len(prog) // 8
    seen: set[int] = set()
    todo = [0]
    while todo:
        pc = todo.pop()
        if pc in seen or not 0 <= pc < n:
            continue
        seen.add(pc)
        code, _, off, _ = struct.unpack_from("<BBhi", prog, pc * 8)
        if code == 0x95:  # exit
            continue
        if code == 0x05:  # ja
            todo.append(pc + 1 + off)
        elif code & 0x07 == 0x05:  # conditional jumps
            todo += [pc + 1, pc + 1 + off]
        else:
            todo.append(pc + 1)
    return seen


def _check_program(rules: list[Rule]) -> None:
    prog = build_program(rules)
    assert _reachable(prog) == set(range(len(prog) // 8)), "unreachable instructions"
    for t, major, minor in DEVICES:
        for acc in ACCESSES:
            want = decide(rules, t, major, minor, acc)
            assert run_program(prog, t, major, minor, acc) == int(want), (rules, t, major, minor, acc)


def test_parse_defaults_and_normalisation() -> None:
    r = _rules({"allow": True}, {"allow": False, "type": "c", "major": 1, "minor": -1, "access": "wr"})
    assert (r[0].type, r[0].major, r[0].minor, r[0].access) == ("a", None, None, "rwm")
    assert (r[1].type, r[1].major, r[1].minor, r[1].access) == ("c", 1, None, "rw")
    for bad, msg in (({"allow": True, "type": "u"}, r"\[0\].type: 'u'"),
                     ({"allow": True, "access": "rr"}, r"\[0\].access: 'rr'"),
                     ({"allow": True, "major": -2}, r"\[0\].major: -2"),
                     ({"allow": True, "minor": 1 << 40}, r"\[0\].minor")):
        with pytest.raises(CgroupError, match=r"linux.resources.devices" + msg):
            parse_rules([bad])


def test_v1_lines() -> None:
    assert v1_writes(_rules({"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"})) == [
        ("devices.deny", "a"), ("devices.allow", "c 1:3 rwm")]
    # "a" alone means every device and access to the kernel: partial 'a' rules are split
    assert v1_writes(_rules({"allow": True, "access": "rwm"}))[1:] == [("devices.allow", "a")]
    assert v1_writes(_rules({"allow": False, "minor": 7, "access": "w"}))[1:] == [
        ("devices.deny", "b *:7 w"), ("devices.deny", "c *:7 w")]


def test_decide_is_per_access_bit_and_last_match_wins() -> None:
    rules = _rules({"allow": False, "access": "rwm"},
                   {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
                   {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "w"})
    assert decide(rules, "c", 1, 5, "r")
    assert not decide(rules, "c", 1, 5, "w")
    assert not decide(rules, "c", 1, 5, "rw")
    assert decide(rules, "c", 1, 5, "m")
    assert not decide(rules, "c", 1, 3, "r")
    assert not decide([], "c", 1, 3, "r")  # nothing allowed by default


@pytest.mark.parametrize("rules", [
    [],
    [{"allow": True}],
    [{"allow": False}],
    [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
    [{"allow": True}, {"allow": False, "type": "b"}, {"allow": True, "type": "b", "major": 8, "minor": 0,
                                                       "access": "r"}],
    [{"allow": False, "access": "rwm"}, *DEFAULT_RULES],
    [{"allow": True, "type": "c", "major": 1, "access": "rw"}, {"allow": True, "access": "m"},
     {"allow": False, "type": "c", "minor": 5, "access": "w"}],
])
def test_program_matches_the_reference(rules: list[dict]) -> None:
    _check_program(parse_rules(rules))


_rule = st.fixed_dictionaries(
    {"allow": st.booleans()},
    optional={"type": st.sampled_from(["a", "b", "c"]), "major": st.sampled_from([-1, 1, 8, 136]),
              "minor": st.sampled_from([-1, 0, 3, 5]), "access": st.sampled_from(ACCESSES)})


@settings(max_examples=300, deadline=None)
@given(st.lists(_rule, max_size=8))
def test_program_matches_the_reference_for_any_rules(rules: list[dict]) -> None:
    _check_program(parse_rules(rules))


def test_program_size_with_docker_like_rules() -> None:
    prog = build_program(parse_rules([{"allow": False, "access": "rwm"}, *DEFAULT_RULES]))
    assert len(prog) % 8 == 0 and len(prog) // 8 < 200  # far below the verifier's limits
