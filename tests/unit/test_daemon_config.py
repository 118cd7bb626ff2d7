"""skiffd's configuration: daemon.json, flags, merging and validation."""

from __future__ import annotations

import json

import pytest

from skiff.daemon.api.errors import InvalidParameter
from skiff.daemon.api.httputils import bool_value, parse_filters, parse_timestamp
from skiff.daemon.config import ConfigError, DaemonConfig, merge, read_file
from skiff.daemon.main import load_config, main


def _file(tmp_path, data) -> str:
    p = tmp_path / "daemon.json"
    p.write_text(json.dumps(data))
    return str(p)


def test_file_and_flags_merge(tmp_path):
    path = _file(tmp_path, {"data-root": str(tmp_path / "d"), "log-opts": {"max-size": "10m"},
                            "runtimes": {"mine": {"path": "/opt/mine", "runtimeArgs": ["--a"]}},
                            "insecure-registries": ["127.0.0.1:5000"], "live-restore": True})
    cfg, _ = load_config(["--config-file", path, "--debug", "--default-runtime", "mine",
                          "-H", "unix:///tmp/x.sock", "-H", "unix:///tmp/y.sock",
                          "--exec-root", str(tmp_path / "r")])
    assert cfg.data_root == str(tmp_path / "d") and cfg.debug is True
    assert cfg.default_runtime == "mine" and cfg.runtimes["mine"].args == ["--a"]
    assert cfg.hosts == ["unix:///tmp/x.sock", "unix:///tmp/y.sock"]
    assert cfg.log_opts == {"max-size": "10m"} and cfg.live_restore is True
    assert cfg.effective_pidfile() == str(tmp_path / "r" / "skiffd.pid")


def test_directive_in_both_places_is_an_error(tmp_path):
    path = _file(tmp_path, {"debug": False, "data-root": "/a"})
    with pytest.raises(ConfigError) as e:
        load_config(["--config-file", path, "--debug", "--data-root", "/b"])
    assert str(e.value) == ("the following directives are specified both as a flag and in the "
                            "configuration file: data-root: (from flag: /b, from file: /a), "
                            "debug: (from flag: true, from file: false)")


def test_add_runtime_flag(tmp_path):
    cfg, _ = load_config(["--config-file", "/dev/null", "--add-runtime", "other=/opt/other",
                          "--default-runtime", "other"])
    assert cfg.runtimes["other"].path == "/opt/other" and cfg.default_runtime == "other"
    with pytest.raises(ConfigError, match="specified both as a flag and in the configuration file: runtimes"):
        load_config(["--config-file", _file(tmp_path, {"runtimes": {"a": {"path": "/a"}}}),
                     "--add-runtime", "b=/b"])


def test_unknown_keys_and_bad_types_refused(tmp_path):
    with pytest.raises(ConfigError, match="don't match any configuration option: colour, storage-driver"):
        read_file(_file(tmp_path, {"colour": 1, "storage-driver": "overlay2", "debug": True}))
    with pytest.raises(ConfigError, match="debug: expected true or false"):
        read_file(_file(tmp_path, {"debug": "yes"}))
    with pytest.raises(ConfigError, match="hosts: expected a list of strings"):
        read_file(_file(tmp_path, {"hosts": "unix:///x"}))
    with pytest.raises(ConfigError, match=r"runtimes.x.runtimeType: not supported"):
        read_file(_file(tmp_path, {"runtimes": {"x": {"runtimeType": "io.containerd.runc.v2"}}}))
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="invalid JSON"):
        read_file(str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="No such file"):
        read_file(str(tmp_path / "missing.json"))


def test_validation():
    with pytest.raises(ConfigError, match="default-runtime: no runtime named 'nope'"):
        DaemonConfig(default_runtime="nope").validate()
    with pytest.raises(ConfigError, match="runtimes.runc: runtime name 'runc' is reserved"):
        merge({"runtimes": {"runc": {"path": "/x"}}}, {}).validate()
    with pytest.raises(ConfigError, match="log-driver: 'syslog' is not supported"):
        DaemonConfig(log_driver="syslog").validate()
    with pytest.raises(ConfigError, match="data-root: 'rel' is not an absolute path"):
        DaemonConfig(data_root="rel").validate()
    with pytest.raises(ConfigError, match="unsupported address"):
        DaemonConfig(hosts=["fd://"]).validate()


def test_tcp_needs_mutual_tls(tmp_path):
    with pytest.raises(ConfigError, match="refusing to listen on tcp://127.0.0.1:2376: TCP is served only with mutual TLS"):
        DaemonConfig(hosts=["tcp://127.0.0.1:2376"]).validate()
    with pytest.raises(ConfigError, match="refusing to listen"):
        DaemonConfig(hosts=["tcp://127.0.0.1:2376"], tls=True).validate()
    with pytest.raises(ConfigError, match="tlscacert: required with tlsverify"):
        DaemonConfig(hosts=["tcp://127.0.0.1:2376"], tlsverify=True).validate()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    cfg = merge({"tlsverify": True, "tlscacert": str(tmp_path / "ca.pem"), "tlscert": str(tmp_path / "cert.pem"),
                 "tlskey": str(tmp_path / "key.pem")}, {"hosts": ["tcp://127.0.0.1:2376"]}).validate()
    assert cfg.tlsverify


def test_main_validate_and_errors(tmp_path, capsys):
    assert main(["--validate", "--data-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "configuration OK\n"
    assert main(["--validate", "-H", "tcp://0.0.0.0:2375"]) == 1
    assert "skiffd: hosts: refusing to listen on tcp://0.0.0.0:2375" in capsys.readouterr().err
    assert main(["--validate", "--log-opt", "novalue"]) == 1
    assert "--log-opt 'novalue': expected KEY=VALUE" in capsys.readouterr().err
    assert main(["--validate", "--debug=false", "--live-restore=true"]) == 0


def test_httputils():
    assert [bool_value(v) for v in ("1", "True", "yes", "", "0", "no", "False", " none ", None)] == \
        [True, True, True, False, False, False, False, False, False]
    assert parse_filters('{"a":{"x":true,"y":false}}', ("a",)) == {"a": ["x"]}
    assert parse_filters('{"a":["x"]}', ("a",)) == {"a": ["x"]}
    with pytest.raises(InvalidParameter, match="invalid filter 'b'"):
        parse_filters('{"b":["x"]}', ("a",))
    assert parse_timestamp("since", "1704067200.5") == 1704067200_500_000_000
    assert parse_timestamp("since", "0") == 0
    assert parse_timestamp("since", "10m", now_ns=3_600_000_000_000) == 3_000_000_000_000
    assert parse_timestamp("since", "1970-01-01T00:00:10Z") == 10_000_000_000


def test_bad_log_opts_are_refused_at_start():
    with pytest.raises(ConfigError, match="log-opts: log-opt max-size: invalid size"):
        DaemonConfig(log_opts={"max-size": "abc"}).validate()
    with pytest.raises(ConfigError, match="log-opts: .*compress"):
        DaemonConfig(log_opts={"compress": "true"}).validate()
    DaemonConfig(log_opts={"max-size": "10m", "max-file": "3"}).validate()


def test_cgroup_parent_key_flag_and_validation():
    from skiff.daemon.config import ConfigError, merge
    from skiff.daemon.main import load_config

    assert merge({}, {}).validate().cgroup_parent == "/skiff"
    assert merge({"cgroup-parent": "/skiff-ci/a"}, {}).validate().cgroup_parent == "/skiff-ci/a"
    cfg, _ = load_config(["--config-file", "/dev/null", "--cgroup-parent", "/skiff-x"])
    assert cfg.cgroup_parent == "/skiff-x"
    for bad in ("skiff", "/a/../b", "/a//b", "/"):
        with pytest.raises(ConfigError, match="cgroup-parent"):
            merge({"cgroup-parent": bad}, {}).validate()
