"""skiff-runc resolves args[0] as runc 1.1 does (Go 1.19's exec.LookPath, then access(X_OK)),
with runc's messages, which the docker CLI maps to exit codes 126/127."""

from __future__ import annotations

import os

import pytest

from skiff.runtime.process import ProcessSetupError, find_executable


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "bin" / "tool", 0o755)
    (tmp_path / "bin" / "plain").write_text("data\n")
    os.chmod(tmp_path / "bin" / "plain", 0o644)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "plain").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "other" / "plain", 0o755)
    return tmp_path


def err(name: str, env: list[str]) -> str:
    with pytest.raises(ProcessSetupError) as ei:
        find_executable(name, env)
    return str(ei.value)


def test_paths_with_a_slash(tree):
    assert find_executable(f"{tree}/bin/tool", []) == f"{tree}/bin/tool"
    assert err(f"{tree}/bin/plain", []) == f'exec: "{tree}/bin/plain": permission denied'
    assert err(f"{tree}/bin", []) == f'exec: "{tree}/bin": permission denied'     # as runc 1.1
    assert err(f"{tree}/nope", []) == f'exec: "{tree}/nope": stat {tree}/nope: no such file or directory'
    assert err(f"{tree}/bin/tool/x", []) == (
        f'exec: "{tree}/bin/tool/x": stat {tree}/bin/tool/x: not a directory')


def test_path_search_skips_non_executables_and_directories(tree):
    env = [f"PATH={tree}/bin:{tree}/other"]
    assert find_executable("tool", env) == f"{tree}/bin/tool"
    assert find_executable("plain", env) == f"{tree}/other/plain"     # bin/plain has no x bit
    assert err("bin", [f"PATH={tree}"]) == 'exec: "bin": executable file not found in $PATH'
    assert err("nosuch", env) == 'exec: "nosuch": executable file not found in $PATH'
