"""The runtime's command line: flag parsing, signals, units, durations, dispatch errors."""

import pytest

from skiff.runtime.cli import main
from skiff.runtime.flags import Flag, UsageError, parse
from skiff.runtime.verbs import update as update_verb
from skiff.runtime.verbs.events import parse_duration
from skiff.runtime.verbs.kill import parse_signal
from skiff.runtime.verbs.update import parse_bytes, resources_from_flags


def test_flags_forms():
    flags = [Flag("--bundle,-b", default="."), Flag("--detach,-d", "bool"), Flag("--env,-e", "list"),
             Flag("--preserve-fds", "int", 0)]
    v, pos = parse(["-b", "x", "--env=A=1", "id", "-e", "B=2", "--detach", "--preserve-fds", "2"], flags)
    assert v == {"bundle": "x", "detach": True, "env": ["A=1", "B=2"], "preserve_fds": 2}
    assert pos == ["id"]
    v, pos = parse(["--bundle=y", "--detach=false", "--", "-x"], flags)
    assert v["bundle"] == "y" and v["detach"] is False and pos == ["-x"]
    v, _ = parse(["-bundle", "z"], flags)  # runc (urfave/cli) takes single-dash long flags
    assert v["bundle"] == "z"


def test_flags_errors():
    with pytest.raises(UsageError, match="not defined: --nope"):
        parse(["--nope"], [])
    with pytest.raises(UsageError, match="needs an argument"):
        parse(["--bundle"], [Flag("--bundle")])
    with pytest.raises(UsageError, match="integer"):
        parse(["--n", "x"], [Flag("--n", "int")])
    with pytest.raises(UsageError, match="too many"):
        parse(["a", "b"], [], positional_max=1)


def test_exec_style_stops_at_first_positional():
    v, pos = parse(["-t", "id", "ls", "-l"], [Flag("--tty,-t", "bool")], stop_at_first_positional=True)
    assert v["tty"] and pos == ["id", "ls", "-l"]


@pytest.mark.parametrize("text, num", [("9", 9), ("KILL", 9), ("SIGKILL", 9), ("sigterm", 15),
                                       ("TERM", 15), ("RTMIN", 34), ("RTMIN+3", 37), ("WINCH", 28)])
def test_parse_signal(text, num):
    assert parse_signal(text) == num


def test_parse_signal_refuses_garbage():
    from skiff.runtime.cli import RuntimeFailure

    for bad in ("FOO", "0", "65", "RTMIN+99"):
        with pytest.raises(RuntimeFailure):
            parse_signal(bad)


def test_units_and_durations():
    assert parse_bytes("1024", "--memory") == 1024
    assert parse_bytes("100m", "--memory") == 100 << 20
    assert parse_bytes("1g", "--memory") == 1 << 30
    assert parse_bytes("512KiB", "--memory") == 512 << 10
    assert parse_bytes("-1", "--memory-swap") == -1
    with pytest.raises(UsageError):
        parse_bytes("lots", "--memory")
    assert parse_duration("5s") == 5.0
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("250ms") == pytest.approx(0.25)
    for bad in ("", "5", "s", "0s"):
        with pytest.raises(UsageError):
            parse_duration(bad)


def test_update_flags_become_oci_resources():
    opts, _ = parse(["--memory", "64m", "--cpu-quota", "50000", "--cpu-period", "100000",
                     "--pids-limit", "20", "--cpuset-cpus", "0"], update_verb.FLAGS)
    assert resources_from_flags(opts) == {
        "memory": {"limit": 64 << 20},
        "cpu": {"quota": 50000, "period": 100000, "cpus": "0"},
        "pids": {"limit": 20},
    }


def test_cli_reports_unknown_verb_and_flags(capsys):
    assert main(["bogus"]) == 1
    assert "no such command: bogus" in capsys.readouterr().err
    assert main(["--bogus", "state", "x"]) == 1
    assert "flag provided but not defined: --bogus" in capsys.readouterr().err


def test_cli_missing_container_is_an_error_in_the_json_log(tmp_path, capsys):
    log = tmp_path / "log.json"
    rc = main(["--root", str(tmp_path / "root"), "--log", str(log), "--log-format", "json", "state", "nope"])
    assert rc == 1
    assert "container does not exist: nope" in capsys.readouterr().err
    import json

    rec = json.loads(log.read_text().splitlines()[-1])
    assert rec["level"] == "error" and rec["msg"] == "container does not exist: nope" and rec["time"]


def test_cli_refuses_bad_ids(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "state", "../etc"]) == 1
    assert "invalid container id format" in capsys.readouterr().err


def test_cli_errors_of_container_stdio_verbs_go_to_the_log_only(tmp_path, capsys):
    """In create/run/exec the runtime's stderr is the container's: with --log, the error goes
    only there (as crun), so it never shows up as the container's output."""
    import json

    log = tmp_path / "log.json"
    base = ["--root", str(tmp_path / "root"), "--log", str(log), "--log-format", "json"]
    assert main([*base, "create", "--bundle", str(tmp_path / "nobundle"), "c1"]) == 1
    assert capsys.readouterr().err == ""
    rec = json.loads(log.read_text().splitlines()[-1])
    assert rec["level"] == "error" and "nobundle" in rec["msg"]
    assert main([*base, "exec", "nope", "true"]) == 1
    assert capsys.readouterr().err == ""
    assert "container does not exist: nope" in json.loads(log.read_text().splitlines()[-1])["msg"]
    # without --log the error is on stderr
    assert main(["--root", str(tmp_path / "root"), "create", "--bundle", str(tmp_path / "nobundle"), "c1"]) == 1
    assert "nobundle" in capsys.readouterr().err
