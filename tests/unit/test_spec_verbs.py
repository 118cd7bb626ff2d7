"""The ``spec`` and ``features`` verbs of skiff-runc."""

from __future__ import annotations

import json
import os
import platform
import stat
from pathlib import Path

import pytest

from skiff.oci.defaults import OCI_VERSION, default_config
from skiff.oci.validate import SchemaError, validate_config, validate_features
from skiff.runtime import cli
from skiff.runtime.cli import Context, RuntimeFailure
from skiff.runtime.flags import UsageError
from skiff.runtime.verbs import features, spec

# --- spec ----------------------------------------------------------------------------------


def _read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def test_spec_writes_default_config_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        assert spec.run(Context(), []) == 0
    finally:
        os.umask(old)
    path = tmp_path / "config.json"
    doc = _read(str(path))
    assert doc == default_config()
    validate_config(doc)
    text = path.read_text()
    assert text.startswith('{\n\t"ociVersion": "1.2.0",\n\t"process": {\n\t\t"terminal": true')
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


@pytest.mark.parametrize("form", [["--bundle", "{}"], ["-b", "{}"], ["--bundle={}"], ["-bundle", "{}"]])
def test_spec_bundle_flag_forms(tmp_path: Path, form: list[str]) -> None:
    args = [a.format(tmp_path) for a in form]
    assert spec.run(Context(), args) == 0
    assert _read(str(tmp_path / "config.json")) == default_config()


def test_spec_rootless(tmp_path: Path) -> None:
    assert spec.run(Context(), ["--rootless", "-b", str(tmp_path)]) == 0
    doc = _read(str(tmp_path / "config.json"))
    assert doc == default_config(rootless=True)
    validate_config(doc)
    assert {"type": "user"} in doc["linux"]["namespaces"]


def test_spec_refuses_to_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text("mine")
    with pytest.raises(RuntimeFailure) as ei:
        spec.run(Context(), [])
    assert str(ei.value) == "File config.json exists. Remove it first"
    assert (tmp_path / "config.json").read_text() == "mine"
    with pytest.raises(RuntimeFailure) as ei:
        spec.run(Context(), ["-b", str(tmp_path)])
    assert str(ei.value) == f"File {tmp_path}/config.json exists. Remove it first"


def test_spec_refuses_to_follow_a_dangling_symlink(tmp_path: Path) -> None:
    os.symlink(tmp_path / "elsewhere.json", tmp_path / "config.json")
    with pytest.raises(RuntimeFailure, match=r"exists\. Remove it first$"):
        spec.run(Context(), ["-b", str(tmp_path)])
    assert not (tmp_path / "elsewhere.json").exists()


def test_spec_missing_bundle_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(RuntimeFailure) as ei:
        spec.run(Context(), ["--bundle", str(missing)])
    assert str(ei.value) == f"spec: create {missing}/config.json: no such file or directory"


def test_spec_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="too many arguments: extra"):
        spec.run(Context(), ["-b", str(tmp_path), "extra"])
    with pytest.raises(UsageError, match="flag provided but not defined: --nope"):
        spec.run(Context(), ["--nope"])
    with pytest.raises(UsageError, match="flag needs an argument: --bundle"):
        spec.run(Context(), ["--bundle"])
    assert os.listdir(tmp_path) == []


def test_spec_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["spec"]) == 0
    assert cli.main(["spec"]) == 1
    assert capsys.readouterr().err == "skiff-runc: File config.json exists. Remove it first\n"


# --- features ------------------------------------------------------------------------------

SECCOMP_254 = features.Libseccomp((2, 5, 4), ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                                   api=6)


def test_features_document_is_valid_and_true() -> None:
    doc = features.build(40, SECCOMP_254)
    validate_features(doc)
    assert doc["ociVersionMin"] == "1.0.0" and doc["ociVersionMax"] == OCI_VERSION
    assert doc["hooks"] == ["prestart", "createRuntime", "createContainer", "startContainer",
                            "poststart", "poststop"]
    opts = doc["mountOptions"]
    assert "tmpcopyup" not in opts and opts == sorted(opts) and len(opts) == len(set(opts))
    assert {"ro", "rw", "bind", "rbind", "rprivate", "nosymfollow", "lazytime"} <= set(opts)
    lx = doc["linux"]
    assert lx["namespaces"] == ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"]
    assert len(lx["capabilities"]) == 41
    assert lx["capabilities"][0] == "CAP_CHOWN" and lx["capabilities"][-1] == "CAP_CHECKPOINT_RESTORE"
    assert lx["capabilities"][21] == "CAP_SYS_ADMIN" and lx["capabilities"][38] == "CAP_PERFMON"
    assert lx["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                            "rdma": False}
    assert lx["seccomp"]["enabled"] is True
    assert lx["seccomp"]["actions"] == ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                                        "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                                        "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"]
    assert lx["seccomp"]["operators"] == ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
                                          "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ",
                                          "SCMP_CMP_NE"]
    assert lx["seccomp"]["archs"] == ["SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"]
    assert set(lx["seccomp"]["knownFlags"]) == {
        "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"}
    # WAIT_KILLABLE_RECV needs libseccomp 2.6
    assert lx["seccomp"]["supportedFlags"] == ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                               "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
    assert lx["apparmor"] == {"enabled": False} and lx["selinux"] == {"enabled": False}
    assert lx["intelRdt"] == {"enabled": False}
    assert lx["mountExtensions"] == {"idmap": {"enabled": False}}
    assert doc["annotations"] == {"org.skiff.runtime.version": "0.1.0",
                                  "io.github.seccomp.libseccomp.version": "2.5.4"}


def test_features_namespace_names_are_the_schema_enum() -> None:
    from skiff.oci import validate as v

    enum = v._resolve("defs-linux.json#/definitions/NamespaceType", "defs.json")[0]["enum"]
    assert sorted(features.NAMESPACES) == sorted(enum)


def test_features_without_libseccomp() -> None:
    doc = features.build(40, None)
    validate_features(doc)
    assert doc["linux"]["seccomp"] == {"enabled": False}
    assert "io.github.seccomp.libseccomp.version" not in doc["annotations"]


def test_features_seccomp_matches_what_the_seccomp_module_accepts() -> None:
    from skiff.runtime import seccomp

    sec = features.build(40, SECCOMP_254)["linux"]["seccomp"]
    for action in sec["actions"]:
        seccomp.check({"defaultAction": action})
    with pytest.raises(seccomp.SeccompError):
        seccomp.check({"defaultAction": "SCMP_ACT_NOTIFY"})
    for op in sec["operators"]:
        seccomp.check({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": op}]}]})
    seccomp.check({"defaultAction": "SCMP_ACT_ERRNO", "architectures": sec["archs"],
                   "flags": sec["supportedFlags"]})


def test_features_supported_flags_follow_the_api_level() -> None:
    low = features.build(40, features.Libseccomp((2, 5, 4), [], api=3))["linux"]["seccomp"]
    assert low["supportedFlags"] == ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"]
    unknown = features.build(40, features.Libseccomp((2, 6, 0), [], api=0))["linux"]["seccomp"]
    assert len(unknown["supportedFlags"]) == 4


def test_features_seccomp_actions_follow_libseccomp_version() -> None:
    old = features.build(40, features.Libseccomp((2, 3, 3), ["SCMP_ARCH_X86_64"]))
    validate_features(old)
    actions = old["linux"]["seccomp"]["actions"]
    assert "SCMP_ACT_ERRNO" in actions
    assert not {"SCMP_ACT_LOG", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_NOTIFY"} & set(actions)
    mid = features.build(40, features.Libseccomp((2, 4, 1), []))["linux"]["seccomp"]["actions"]
    assert "SCMP_ACT_LOG" in mid and "SCMP_ACT_NOTIFY" not in mid


@pytest.mark.parametrize(("last", "count"), [(36, 37), (40, 41), (45, 41)])
def test_features_capabilities_follow_the_kernel(last: int, count: int) -> None:
    doc = features.build(last, None)
    validate_features(doc)
    assert len(doc["linux"]["capabilities"]) == count


def test_capability_table_is_well_formed() -> None:
    names = features.CAPABILITIES
    assert len(names) == len(set(names)) == 41
    validate_features({"ociVersionMin": "1.0.0", "ociVersionMax": "1.2.0",
                       "linux": {"capabilities": list(names)}})


def test_capability_table_agrees_with_the_runtime_caps_module() -> None:
    from skiff.runtime import caps

    assert caps.names((1 << len(features.CAPABILITIES)) - 1) == list(features.CAPABILITIES)
    assert caps.parse(list(features.CAPABILITIES), "test", last=40) == (1 << 41) - 1


def test_features_schema_catches_a_bad_document() -> None:
    doc = features.build(40, SECCOMP_254)
    doc["linux"]["seccomp"]["archs"].append("SCMP_ARCH_Z80")
    with pytest.raises(SchemaError, match=r"^linux\.seccomp\.archs\[3\]: 'SCMP_ARCH_Z80' is not one of"):
        validate_features(doc)


def test_read_cap_last_cap(tmp_path: Path) -> None:
    f = tmp_path / "cap_last_cap"
    f.write_text("38\n")
    assert features.read_cap_last_cap(str(f)) == 38
    f.write_text("lots\n")
    with pytest.raises(RuntimeFailure, match=rf"^features: read {f}: not a number: 'lots'$"):
        features.read_cap_last_cap(str(f))
    with pytest.raises(RuntimeFailure, match=rf"^features: read {tmp_path}/none: no such file"):
        features.read_cap_last_cap(str(tmp_path / "none"))


def test_probe_libseccomp_on_this_machine() -> None:
    lib = features.probe_libseccomp()
    if lib is None:
        pytest.skip("libseccomp is not installed here")
    assert lib.version >= (2, 0, 0)
    from skiff.runtime.seccomp import ARCHES

    assert set(lib.archs) <= set(ARCHES)
    assert lib.version < (2, 4) or lib.api >= 1
    if platform.machine() == "x86_64":
        assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"} <= set(lib.archs)


def test_features_verb_prints_valid_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert features.run(Context(), []) == 0
    doc = json.loads(capsys.readouterr().out)
    validate_features(doc)
    with open(features.CAP_LAST_CAP) as f:
        assert len(doc["linux"]["capabilities"]) == min(int(f.read()) + 1, len(features.CAPABILITIES))


def test_features_verb_takes_no_arguments() -> None:
    with pytest.raises(UsageError, match="too many arguments: x"):
        features.run(Context(), ["x"])
