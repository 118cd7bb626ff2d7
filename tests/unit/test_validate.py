"""The OCI schema validator (skiff.oci.validate) and the default config (skiff.oci.defaults)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skiff.oci import validate as v
from skiff.oci.defaults import OCI_VERSION, default_config
from skiff.oci.validate import SchemaError, validate, validate_config, validate_features


def _fails(doc: object, expected: str) -> SchemaError:
    with pytest.raises(SchemaError) as ei:
        validate_config(doc)
    assert str(ei.value) == expected
    return ei.value


# --- valid documents ---------------------------------------------------------------------

def test_default_config_is_valid() -> None:
    doc = default_config()
    validate_config(doc)
    assert doc["ociVersion"] == OCI_VERSION
    assert doc["process"]["args"] == ["sh"] and doc["process"]["terminal"] is True
    assert [n["type"] for n in doc["linux"]["namespaces"]] == ["pid", "network", "ipc", "uts",
                                                               "mount", "cgroup"]
    assert doc["root"] == {"path": "rootfs", "readonly": True}
    assert [m["destination"] for m in doc["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    devpts = doc["mounts"][2]
    assert devpts["options"] == ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                                 "gid=5"]
    assert doc["process"]["capabilities"]["bounding"] == ["CAP_AUDIT_WRITE", "CAP_KILL",
                                                          "CAP_NET_BIND_SERVICE"]
    assert doc["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert "uidMappings" not in doc["linux"]


def test_rootless_default_config_is_valid() -> None:
    doc = default_config(rootless=True)
    validate_config(doc)
    types = [n["type"] for n in doc["linux"]["namespaces"]]
    assert "network" not in types and "user" in types
    assert doc["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert doc["linux"]["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    sys_mount = next(m for m in doc["mounts"] if m["destination"] == "/sys")
    assert sys_mount["type"] == "none" and sys_mount["source"] == "/sys"
    assert "rbind" in sys_mount["options"] and "ro" in sys_mount["options"]
    assert not any(o.startswith(("uid=", "gid=")) for m in doc["mounts"] for o in m.get("options", []))
    assert "resources" not in doc["linux"]


def test_default_config_args_terminal_and_fresh_copies() -> None:
    a = default_config(args=["echo", "hi"], terminal=False)
    validate_config(a)
    assert a["process"]["args"] == ["echo", "hi"] and a["process"]["terminal"] is False
    b = default_config()
    b["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    b["linux"]["maskedPaths"].clear()
    c = default_config()
    assert "CAP_SYS_ADMIN" not in c["process"]["capabilities"]["bounding"]
    assert c["linux"]["maskedPaths"]


def test_minimal_config_is_valid() -> None:
    validate_config({"ociVersion": "1.0.0"})  # the schema requires nothing else


def _full_config() -> dict:
    doc = default_config()
    doc["annotations"] = {"org.example.key": "value"}
    doc["hooks"] = {"prestart": [{"path": "/bin/true", "args": ["true"], "env": ["A=1"],
                                  "timeout": 5}],
                    "poststop": [{"path": "/bin/true"}]}
    doc["process"]["consoleSize"] = {"height": 24, "width": 80}
    doc["process"]["user"].update({"umask": 18, "additionalGids": [1, 2], "username": "root"})
    doc["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_BE", "priority": 4}
    doc["process"]["scheduler"] = {"policy": "SCHED_OTHER", "nice": -5,
                                   "flags": ["SCHED_FLAG_RESET_ON_FORK"]}
    doc["process"]["execCPUAffinity"] = {"initial": "0-1, 3", "final": "0"}
    doc["process"]["oomScoreAdj"] = -500
    doc["linux"].update({
        "devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229,
                     "fileMode": 438, "uid": 0, "gid": 0}],
        "netDevices": {"eth1": {"name": "eth0"}},
        "sysctl": {"net.ipv4.ip_forward": "1"},
        "cgroupsPath": "/skiff/test",
        "rootfsPropagation": "private",
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
                    "architectures": ["SCMP_ARCH_X86_64"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                    "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                                 {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                                  "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]},
        "intelRdt": {"closID": "g", "memBwSchema": "MB:0=100"},
        "personality": {"domain": "LINUX"},
        "timeOffsets": {"monotonic": {"secs": -10, "nanosecs": 5}},
        "memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]},
    })
    doc["linux"]["resources"].update({
        "memory": {"limit": 1 << 30, "swap": -1, "disableOOMKiller": False},
        "cpu": {"shares": 1024, "quota": -1, "period": 100000, "cpus": "0-1"},
        "pids": {"limit": 100},
        "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 10}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1 << 20}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
        "network": {"classID": 1, "priorities": [{"name": "eth0", "priority": 1}]},
        "rdma": {"mlx5_1": {"hcaHandles": 3}},
        "unified": {"memory.high": "max"},
    })
    doc["windows"] = {"anything": ["not", "validated", "on", "linux"]}
    return doc


def test_full_config_is_valid() -> None:
    validate_config(_full_config())


def test_uint64_bounds() -> None:
    doc = default_config()
    doc["process"]["rlimits"][0]["hard"] = 2**64 - 1
    validate_config(doc)
    doc["process"]["rlimits"][0]["hard"] = 2**64
    _fails(doc, "process.rlimits[0].hard: 18446744073709551616 is greater than the maximum of "
                "18446744073709551615")


# --- broken documents: each names the field --------------------------------------------

def _broken(mutate: Callable[[dict], object]) -> dict:
    doc = _full_config()
    mutate(doc)
    return doc


BROKEN = [
    (lambda d: d.pop("ociVersion"), "ociVersion: is required"),
    (lambda d: d.update(ociVersion=1), "ociVersion: 1 is not of type 'string' (got integer)"),
    (lambda d: d["root"].pop("path"), "root.path: is required"),
    (lambda d: d["root"].update(readonly="yes"),
     "root.readonly: 'yes' is not of type 'boolean' (got string)"),
    (lambda d: d["process"].pop("cwd"), "process.cwd: is required"),
    (lambda d: d["process"]["user"].update(uid=-1),
     "process.user.uid: -1 is less than the minimum of 0"),
    (lambda d: d["process"]["user"].update(gid=2**32),
     "process.user.gid: 4294967296 is greater than the maximum of 4294967295"),
    (lambda d: d["process"]["user"].update(uid="0"),
     "process.user.uid: '0' is not of type 'integer' (got string)"),
    (lambda d: d["process"]["user"].update(uid=True),
     "process.user.uid: True is not of type 'integer' (got boolean)"),
    (lambda d: d["process"]["user"].update(uid=0.0),
     "process.user.uid: 0.0 is not of type 'integer' (got number)"),
    (lambda d: d["process"]["user"]["additionalGids"].append(-3),
     "process.user.additionalGids[2]: -3 is less than the minimum of 0"),
    (lambda d: d["process"]["args"].append(5),
     "process.args[1]: 5 is not of type 'string' (got integer)"),
    (lambda d: d["process"].update(env="PATH=/bin"),
     "process.env: 'PATH=/bin' is not of type 'array' (got string)"),
    (lambda d: d["process"]["rlimits"][0].update(type="NOFILE"),
     "process.rlimits[0].type: 'NOFILE' does not match '^RLIMIT_[A-Z]+$'"),
    (lambda d: d["process"]["rlimits"][0].update(type="RLIMIT_NOFILE\n"),
     "process.rlimits[0].type: 'RLIMIT_NOFILE\\n' does not match '^RLIMIT_[A-Z]+$'"),
    (lambda d: d["process"]["rlimits"][0].pop("soft"), "process.rlimits[0].soft: is required"),
    (lambda d: d["process"]["consoleSize"].pop("width"), "process.consoleSize.width: is required"),
    (lambda d: d["process"]["ioPriority"].update(**{"class": "RT"}),
     "process.ioPriority.class: 'RT' is not one of ['IOPRIO_CLASS_RT', 'IOPRIO_CLASS_BE', "
     "'IOPRIO_CLASS_IDLE']"),
    (lambda d: d["process"]["ioPriority"].update(priority=2**31),
     "process.ioPriority.priority: 2147483648 is greater than the maximum of 2147483647"),
    (lambda d: d["process"]["scheduler"].update(policy="SCHED_NORMAL"),
     "process.scheduler.policy: 'SCHED_NORMAL' is not one of ['SCHED_OTHER', 'SCHED_FIFO', "
     "'SCHED_RR', 'SCHED_BATCH', 'SCHED_ISO', 'SCHED_IDLE', 'SCHED_DEADLINE']"),
    (lambda d: d["process"]["execCPUAffinity"].update(initial="0-1;3"),
     "process.execCPUAffinity.initial: '0-1;3' does not match '^[0-9, -]*$'"),
    (lambda d: d["linux"]["namespaces"][0].update(type="foo"),
     "linux.namespaces[0].type: 'foo' is not one of ['mount', 'pid', 'network', 'uts', 'ipc', "
     "'user', 'cgroup', 'time']"),
    (lambda d: d["linux"]["namespaces"][1].pop("type"), "linux.namespaces[1].type: is required"),
    (lambda d: d["linux"]["namespaces"].append("pid"),
     "linux.namespaces[6]: 'pid' is not of type 'object' (got string)"),
    (lambda d: d.update(linux={"uidMappings": [{"containerID": 0, "hostID": 1000}]}),
     "linux.uidMappings[0].size: is required"),
    (lambda d: d["mounts"][2].pop("destination"), "mounts[2].destination: is required"),
    (lambda d: d["mounts"][0].update(options="ro"),
     "mounts[0].options: 'ro' is not of type 'array' (got string)"),
    (lambda d: d["annotations"].update({"org.example.n": 1}),
     'annotations["org.example.n"]: 1 is not of type \'string\' (got integer)'),
    (lambda d: d["linux"]["sysctl"].update({"net.ipv4.ip_forward": 1}),
     'linux.sysctl["net.ipv4.ip_forward"]: 1 is not of type \'string\' (got integer)'),
    (lambda d: d["hooks"]["prestart"][0].pop("path"), "hooks.prestart[0].path: is required"),
    (lambda d: d["hooks"]["poststop"][0].update(timeout=0),
     "hooks.poststop[0].timeout: 0 is less than the minimum of 1"),
    (lambda d: d["linux"]["devices"][0].update(type="x"),
     "linux.devices[0].type: 'x' does not match '^[cbup]$'"),
    (lambda d: d["linux"]["devices"][0].update(fileMode=0o1777),
     "linux.devices[0].fileMode: 1023 is greater than the maximum of 511"),
    (lambda d: d["linux"]["seccomp"]["syscalls"][0].update(names=[]),
     "linux.seccomp.syscalls[0].names: has 0 items, fewer than the minimum of 1"),
    (lambda d: d["linux"]["seccomp"].update(defaultAction="ALLOW"),
     "linux.seccomp.defaultAction: 'ALLOW' is not one of ['SCMP_ACT_KILL', "
     "'SCMP_ACT_KILL_PROCESS', 'SCMP_ACT_KILL_THREAD', 'SCMP_ACT_TRAP', 'SCMP_ACT_ERRNO', "
     "'SCMP_ACT_TRACE', 'SCMP_ACT_ALLOW', 'SCMP_ACT_LOG', 'SCMP_ACT_NOTIFY']"),
    (lambda d: d["linux"]["seccomp"]["syscalls"][1]["args"][0].pop("op"),
     "linux.seccomp.syscalls[1].args[0].op: is required"),
    (lambda d: d["linux"]["resources"]["hugepageLimits"][0].update(pageSize="2M"),
     "linux.resources.hugepageLimits[0].pageSize: '2M' does not match '^[1-9][0-9]*[KMG]B$'"),
    (lambda d: d["linux"]["resources"]["blockIO"]["weightDevice"][0].pop("major"),
     "linux.resources.blockIO.weightDevice[0].major: is required"),
    (lambda d: d["linux"]["resources"]["blockIO"]["weightDevice"][0].update(weight=70000),
     "linux.resources.blockIO.weightDevice[0].weight: 70000 is greater than the maximum of 65535"),
    (lambda d: d["linux"]["resources"]["blockIO"]["throttleReadBpsDevice"][0].update(rate=-1),
     "linux.resources.blockIO.throttleReadBpsDevice[0].rate: -1 is less than the minimum of 0"),
    (lambda d: d["linux"]["resources"]["pids"].pop("limit"), "linux.resources.pids.limit: is required"),
    (lambda d: d["linux"]["resources"]["devices"][0].pop("allow"),
     "linux.resources.devices[0].allow: is required"),
    (lambda d: d["linux"]["resources"]["memory"].update(limit="1g"),
     "linux.resources.memory.limit: '1g' is not of type 'integer' (got string)"),
    (lambda d: d["linux"]["netDevices"].update(eth2="eth0"),
     "linux.netDevices.eth2: 'eth0' is not of type 'object' (got string)"),
    (lambda d: d["linux"]["resources"]["rdma"]["mlx5_1"].update(hcaObjects=-2),
     "linux.resources.rdma.mlx5_1.hcaObjects: -2 is less than the minimum of 0"),
    (lambda d: d["linux"].update(rootfsPropagation="rshared"),
     "linux.rootfsPropagation: 'rshared' is not one of ['private', 'shared', 'slave', 'unbindable']"),
    (lambda d: d["linux"]["intelRdt"].update(memBwSchema="MB:0=100\nL3:0=f"),
     "linux.intelRdt.memBwSchema: 'MB:0=100\\nL3:0=f' does not match '^MB:[^\\\\n]*$'"),
    (lambda d: d["linux"]["timeOffsets"]["monotonic"].update(nanosecs=-1),
     "linux.timeOffsets.monotonic.nanosecs: -1 is less than the minimum of 0"),
    (lambda d: d["linux"]["personality"].update(domain="LINUX64"),
     "linux.personality.domain: 'LINUX64' is not one of ['LINUX', 'LINUX32']"),
    (lambda d: d["linux"]["memoryPolicy"]["flags"].append("MPOL_F_X"),
     "linux.memoryPolicy.flags[1]: 'MPOL_F_X' is not one of ['MPOL_F_NUMA_BALANCING', "
     "'MPOL_F_RELATIVE_NODES', 'MPOL_F_STATIC_NODES']"),
    (lambda d: d.update(linux=[]), "linux: [] is not of type 'object' (got array)"),
]


@pytest.mark.parametrize(("mutate", "expected"), BROKEN, ids=[e.split(":")[0] for _, e in BROKEN])
def test_broken_config_names_the_field(mutate: Callable[[dict], object], expected: str) -> None:
    err = _fails(_broken(mutate), expected)
    assert isinstance(err, ValueError) and isinstance(err, SchemaError)
    assert err.reason == expected.split(": ", 1)[1]


def test_top_level_not_an_object() -> None:
    _fails([], "config: [] is not of type 'object' (got array)")


def test_error_path_attribute() -> None:
    doc = default_config()
    doc["linux"]["namespaces"][2]["type"] = "net"
    err = _fails(doc, "linux.namespaces[2].type: 'net' is not one of ['mount', 'pid', 'network', "
                      "'uts', 'ipc', 'user', 'cgroup', 'time']")
    assert err.path == ["linux", "namespaces", 2, "type"]


def test_long_values_are_shortened_in_messages() -> None:
    doc = default_config()
    doc["hostname"] = ["x" * 200]
    with pytest.raises(SchemaError) as ei:
        validate_config(doc)
    assert str(ei.value).startswith("hostname: ['xxxx") and "..." in str(ei.value)
    assert len(str(ei.value)) < 120


def test_validation_leaves_the_document_unchanged() -> None:
    doc = _full_config()
    before = json.dumps(doc, sort_keys=True)
    validate_config(doc)
    assert json.dumps(doc, sort_keys=True) == before


# --- generic keywords, on schema objects -----------------------------------------------

def test_generic_keywords() -> None:
    validate([1, 2], {"type": "array", "uniqueItems": True, "maxItems": 2})
    with pytest.raises(SchemaError, match=r"^value\[2\]: 1 repeats item \[0\]$"):
        validate([1, 2, 1], {"type": "array", "uniqueItems": True})
    with pytest.raises(SchemaError, match=r"^value: has 3 items, more than the maximum of 2$"):
        validate([1, 2, 3], {"maxItems": 2})
    with pytest.raises(SchemaError, match=r"^value: 'ab' is shorter than 3 characters$"):
        validate("ab", {"type": "string", "minLength": 3})
    with pytest.raises(SchemaError, match=r"^value: 'abcd' is longer than 3 characters$"):
        validate("abcd", {"maxLength": 3})
    validate(None, {"type": ["string", "null"]})
    with pytest.raises(SchemaError, match=r"^value: 3 is not of type 'string' or 'null'"):
        validate(3, {"type": ["string", "null"]})
    with pytest.raises(SchemaError, match=r"^value: 5 is greater than or equal to the maximum of 5$"):
        validate(5, {"maximum": 5, "exclusiveMaximum": True})
    with pytest.raises(SchemaError, match=r"^value: 0 is less than or equal to the minimum of 0$"):
        validate(0, {"minimum": 0, "exclusiveMinimum": True})
    validate(1.5, {"type": "number", "minimum": 1})
    with pytest.raises(SchemaError, match=r"^b: is not an allowed property$"):
        validate({"a": 1, "b": 2}, {"properties": {"a": {}}, "additionalProperties": False})
    with pytest.raises(SchemaError, match=r"^value: 'x' matches a schema it must not match$"):
        validate("x", {"not": {"type": "string"}})
    validate(3, {"not": {"type": "string"}})


def test_enum_uses_json_equality() -> None:
    validate(1, {"enum": [1.0]})
    with pytest.raises(SchemaError):
        validate(True, {"enum": [1]})
    with pytest.raises(SchemaError):
        validate(0, {"enum": [False]})
    validate({"a": [1]}, {"enum": [{"a": [1]}]})


def test_one_of_and_any_of() -> None:
    one = {"oneOf": [{"type": "integer"}, {"minimum": 0}]}
    validate(-1, one)
    validate(0.5, one)
    with pytest.raises(SchemaError, match=r"matches 2 of the 2 forms, exactly one is allowed"):
        validate(3, one)
    with pytest.raises(SchemaError, match=r"matches 0 of the 2 forms"):
        validate(-0.5, one)
    anyof = {"anyOf": [{"type": "string"}, {"type": "object", "required": ["a"]}]}
    validate("s", anyof)
    with pytest.raises(SchemaError, match=r"^a: is required$"):  # the furthest reason
        validate({}, anyof)
    with pytest.raises(SchemaError, match=r"^value: 3 matches none of the 2 allowed forms"):
        validate(3, anyof)


def test_refs_in_schema_objects() -> None:
    validate(5, {"$ref": "#/definitions/uint8"})
    with pytest.raises(SchemaError, match=r"^value: 256 is greater than the maximum of 255$"):
        validate(256, {"$ref": "#/definitions/uint8"})
    with pytest.raises(SchemaError, match=r"^type: 'z' does not match"):
        validate({"type": "z", "path": "/dev/z"}, {"$ref": "defs-linux.json#/definitions/Device"})
    with pytest.raises(ValueError, match=r"does not resolve"):
        validate(1, {"$ref": "#/definitions/noSuchThing"})


def test_unknown_pattern_falls_back_to_re() -> None:
    validate("abc123", {"pattern": "^[a-c]+[0-9]{3}$"})
    with pytest.raises(SchemaError, match=r"does not match"):
        validate("abc12", {"pattern": "^[a-c]+[0-9]{3}$"})


def test_state_schema() -> None:
    state = {"ociVersion": "1.2.0", "id": "c1", "status": "running", "pid": 42, "bundle": "/b"}
    v.validate_state(state)
    del state["bundle"]
    with pytest.raises(SchemaError, match=r"^bundle: is required$"):
        v.validate_state(state)


# --- the shipped schemas ---------------------------------------------------------------

def _reachable_nodes() -> Iterator[tuple[dict, str]]:
    """Every schema node reachable from the three top-level schemas, with its file."""
    seen: set[int] = set()
    todo = [(v._load(n), n) for n in ("config-schema.json", "features-schema.json",
                                      "state-schema.json")]
    while todo:
        node, base = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node, base
        if "$ref" in node:
            todo.append(v._resolve(node["$ref"], base))
        for key in ("properties", "patternProperties", "definitions"):
            todo.extend((sub, base) for sub in node.get(key, {}).values())
        items = node.get("items")
        if isinstance(items, dict):
            todo.append((items, base))
        elif isinstance(items, list):
            todo.extend((sub, base) for sub in items)
        if isinstance(node.get("additionalProperties"), dict):
            todo.append((node["additionalProperties"], base))
        for key in ("anyOf", "allOf", "oneOf"):
            todo.extend((sub, base) for sub in node.get(key, []))
        if "not" in node:
            todo.append((node["not"], base))


def test_shipped_schemas_use_only_supported_keywords_and_known_patterns() -> None:
    nodes = list(_reachable_nodes())
    assert len(nodes) > 150
    used = {k for node, _ in nodes for k in node}
    assert used <= v.SUPPORTED_KEYWORDS, used - v.SUPPORTED_KEYWORDS
    patterns = {p for node, _ in nodes for p in ([node["pattern"]] if "pattern" in node else [])}
    patterns |= {p for node, _ in nodes for p in node.get("patternProperties", {})}
    assert patterns and patterns <= set(v._PATTERNS), patterns - set(v._PATTERNS)
    types = {t for node, _ in nodes if "type" in node
             for t in ([node["type"]] if isinstance(node["type"], str) else node["type"])}
    assert types <= {"object", "array", "string", "integer", "boolean", "number", "null"}


def test_shipped_schemas_are_the_spec_copies() -> None:
    spec = "/work/shared/specs/oci-runtime/schema"
    if not os.path.isdir(spec):
        pytest.skip(f"{spec} is not on this machine")
    for name in os.listdir(spec):
        with open(os.path.join(spec, name), "rb") as a, open(os.path.join(v.SCHEMA_DIR, name), "rb") as b:
            assert a.read() == b.read(), name


_SAMPLES = ["", "RLIMIT_", "RLIMIT_NOFILE", "RLIMIT_nofile", "RLIMIT_NOFILE\n", "XRLIMIT_A",
            "0-3", "0,2, 4-5", "0-3\n", "a", "2MB", "10GB", "0MB", "2mb", "2M", "1KBB", "MB:", "MB:0=1",
            "MB:\n", "c", "b", "u", "p", "cc", "c\n", "CAP_SYS_ADMIN", "CAP_", "CAP_sys", "CAP__",
            "\n", "\n\n", "x\n", "\u00e9", "RLIMIT_\u00c9"]


@pytest.mark.parametrize("pattern", sorted(v._PATTERNS))
def test_hand_written_patterns_agree_with_regular_expressions(pattern: str) -> None:
    # ECMA-262 "$" (what JSON Schema means) is the end of input: Python's \Z.
    rx = re.compile(pattern.replace("$", r"\Z"))
    for s in _SAMPLES:
        assert v._PATTERNS[pattern](s) == (rx.search(s) is not None), (pattern, s)


@given(st.text(alphabet="RLIMT_ANOFCPSabcup0129, -KMGB:=\n\u00c9", max_size=16))
def test_hand_written_patterns_agree_on_random_strings(s: str) -> None:
    for pattern, check in v._PATTERNS.items():
        assert check(s) == (re.search(pattern.replace("$", r"\Z"), s) is not None), (pattern, s)


def test_any_line_pattern_excludes_all_ecma_line_terminators() -> None:
    check = v._PATTERNS[".{1,}"]
    assert not check("\r\n\u2028\u2029") and check("\r\na")


def test_features_document_validation() -> None:
    validate_features({"ociVersionMin": "1.0.0", "ociVersionMax": "1.2.0",
                       "linux": {"capabilities": ["CAP_KILL"]}})
    with pytest.raises(SchemaError, match=r"^linux\.capabilities\[0\]: 'KILL' does not match"):
        validate_features({"ociVersionMin": "1.0.0", "ociVersionMax": "1.2.0",
                           "linux": {"capabilities": ["KILL"]}})
    with pytest.raises(SchemaError, match=r"^ociVersionMax: is required$"):
        validate_features({"ociVersionMin": "1.0.0"})


def test_import_is_cheap_and_does_not_load_re_itself() -> None:
    code = ("import sys; import skiff.oci.validate, skiff.oci.defaults; "
            "print(sorted(m for m in ('re', 'json', 'typing', 'dataclasses', 'enum') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
