"""The derived status of a container, and the hooks runner."""

import json
import os
import subprocess
import sys

import pytest

from skiff.oci.spec import Hook
from skiff.runtime import state
from skiff.runtime.hooks import HookError, run_hook, run_hooks


def make_state(tmp_path, pid, start=None):
    st = state.ContainerState("c1", str(tmp_path / "c1"))
    os.makedirs(st.dir)
    st.pid = pid
    st.pid_start = start if start is not None else state.proc_start_time(pid)[0]
    st.bundle = "/b"
    st.config = {"ociVersion": "1.2.0"}
    st.save()
    return st


def test_status_follows_the_process(tmp_path):
    p = subprocess.Popen(["sleep", "30"])
    try:
        st = make_state(tmp_path, p.pid)
        os.mkfifo(st.fifo)
        assert state.load(str(tmp_path), "c1").status() == "created"
        os.unlink(st.fifo)
        assert state.load(str(tmp_path), "c1").status() == "running"
        # a recycled PID (different start time) is not our container
        st.pid_start += 1
        st.save()
        assert state.load(str(tmp_path), "c1").status() == "stopped"
        st.pid_start -= 1
        st.save()
    finally:
        p.kill()
        p.wait()
    loaded = state.load(str(tmp_path), "c1")
    assert loaded.status() == "stopped"
    assert loaded.oci_state()["pid"] == 0


def test_status_creating_without_state_file(tmp_path):
    os.makedirs(tmp_path / "c2")
    assert state.load(str(tmp_path), "c2").status() == "creating"


def test_load_missing_and_corrupt(tmp_path):
    from skiff.runtime.cli import RuntimeFailure

    with pytest.raises(RuntimeFailure, match="does not exist"):
        state.load(str(tmp_path), "nope")
    os.makedirs(tmp_path / "bad")
    (tmp_path / "bad" / "state.json").write_text("{")
    with pytest.raises(RuntimeFailure, match="corrupt"):
        state.load(str(tmp_path), "bad")


def test_proc_start_time_handles_odd_command_names(tmp_path):
    fake = tmp_path / "proc" / "42"
    fake.mkdir(parents=True)
    fields = ["S"] + ["0"] * 18 + ["12345"] + ["0"] * 10
    (fake / "stat").write_text("42 (a) b) c) " + " ".join(fields))
    assert state.proc_start_time(42, str(tmp_path / "proc")) == (12345, "S")
    assert state.proc_start_time(43, str(tmp_path / "proc")) is None


def write_script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_hook_gets_state_on_stdin_and_args(tmp_path):
    out = tmp_path / "out"
    script = write_script(tmp_path / "h", f'echo "$0 $1 $X" > {out}; cat >> {out}\n')
    run_hook(Hook(script, [script, "one"], ["X=envx"]), {"id": "c1", "status": "creating"}, 0, "prestart")
    first, second = out.read_text().split("\n", 1)
    assert first == f"{script} one envx"
    assert json.loads(second) == {"id": "c1", "status": "creating"}


def test_hook_failure_and_timeout(tmp_path):
    bad = write_script(tmp_path / "bad", "echo broken >&2; exit 3\n")
    with pytest.raises(HookError, match=r"prestart hook #0 .*exit status 3.*broken"):
        run_hook(Hook(bad), {}, 0, "prestart")
    slow = write_script(tmp_path / "slow", "exec sleep 30\n")
    with pytest.raises(HookError, match="timed out after 1s"):
        run_hook(Hook(slow, timeout=1), {}, 0, "createRuntime")
    with pytest.raises(HookError, match="exit status 127"):
        run_hook(Hook(str(tmp_path / "missing")), {}, 0, "prestart")


def test_poststop_failures_only_warn(tmp_path, capsys):
    bad = write_script(tmp_path / "bad", "exit 1\n")
    good_out = tmp_path / "ran"
    good = write_script(tmp_path / "good", f"touch {good_out}\n")
    run_hooks([Hook(bad), Hook(good)], {}, "poststop", warn_only=True)
    assert good_out.exists()
    assert "warning: error running poststop hook #0" in capsys.readouterr().err


def test_runtime_import_stays_lean():
    """The runtime's hot modules must not drag in the heavy stdlib modules (import cost)."""
    import skiff

    src = os.path.dirname(os.path.dirname(skiff.__file__))
    code = (f"import sys; sys.path.insert(0, {src!r}); "
            "import skiff.runtime.cli, skiff.runtime.launch, skiff.runtime.state, "
            "skiff.oci.spec, skiff.runtime.verbs.create, skiff.runtime.verbs.state; "
            "heavy = {'dataclasses', 'typing', 'enum', 're', 'argparse', 'subprocess', 'inspect', "
            "'logging', 'socket'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
