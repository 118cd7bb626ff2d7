"""skiff-containerd's TOML configuration and its runtimes table."""

from __future__ import annotations

import tomllib

import pytest

from skiff.containerd import config as cfgmod
from skiff.containerd.config import Config, ConfigError, load, parse


def test_defaults():
    cfg = Config().validate()
    assert cfg.address == "/run/skiff/containerd.sock"
    assert cfg.root == "/var/lib/skiff/containerd" and cfg.state == "/run/skiff/containerd"
    assert cfg.snapshotter == "overlayfs" and cfg.default_runtime == "skiff-runc"
    assert sorted(cfg.runtimes) == ["crun", "runc", "skiff-runc"]
    assert cfg.pid_file == "/run/skiff/containerd/containerd.pid"


def test_full_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('''
version = 2
root = "/srv/r"
state = "/srv/s"
snapshotter = "native"
default_runtime = "runc"
[grpc]
address = "/srv/c.sock"
uid = 1
gid = 2
max_workers = 8
[debug]
level = "debug"
[runtimes.runc.options]
systemd_cgroup = true
[runtimes.mine]
binary = "/opt/bin/myrt"
[runtimes.mine.options]
root = "/run/myrt"
args = ["--debug"]
''')
    cfg = load(str(path))
    assert (cfg.root, cfg.state, cfg.snapshotter, cfg.default_runtime) == ("/srv/r", "/srv/s", "native", "runc")
    assert (cfg.address, cfg.uid, cfg.gid, cfg.max_workers, cfg.log_level) == ("/srv/c.sock", 1, 2, 8, "debug")
    assert cfg.runtimes["runc"].binary == "runc" and cfg.runtimes["runc"].systemd_cgroup
    mine = cfg.runtimes["mine"]
    assert mine.argv("state", "x") == ["/opt/bin/myrt", "--root", "/run/myrt", "--debug", "state", "x"]
    assert cfg.runtime("io.containerd.runc.v2") is cfg.runtimes["runc"]
    assert cfg.runtime("mine") is mine
    with pytest.raises(ConfigError, match="runtime 'nope': not configured"):
        cfg.runtime("nope")


@pytest.mark.parametrize("text, message", [
    ('rooot = "/x"', "rooot: unknown key"),
    ('[grpc]\nadress = "/x"', "grpc.adress: unknown key"),
    ('root = "relative"', "root: 'relative' is not an absolute path"),
    ('[grpc]\nuid = true', "grpc.uid: expected an integer, got a boolean"),
    ('[grpc]\naddress = "/' + "x" * 120 + '"', "longer than a unix socket path"),
    ('snapshotter = "zfs"', "snapshotter: 'zfs' is not one of"),
    ('default_runtime = "kata"', "default_runtime: 'kata' is not in the runtimes table"),
    ('[runtimes.new]\n[runtimes.new.options]\nroot = "/x"', "runtimes.new.binary: required"),
    ('[runtimes.runc.options]\nargs = [1]', r"runtimes.runc.options.args\[0\]: expected a string"),
    ('[runtimes.runc.options]\nsystemd = true', "runtimes.runc.options.systemd: unknown key"),
    ("version = 3", "version: 3 is not supported"),
    ('[debug]\nlevel = "loud"', "debug.level: 'loud' is not one of"),
])
def test_invalid_files_name_the_key(text, message):
    with pytest.raises(ConfigError, match=message):
        parse(tomllib.loads(text))


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("root = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(str(bad))


def test_crun_runs_without_the_unified_hierarchy():
    crun = Config().runtimes["crun"]
    argv = crun.argv("run", "x")
    assert argv[:6] == ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
    assert "umount -l /sys/fs/cgroup/unified" in argv[6] and 'exec "$0" "$@"' in argv[6]
    assert argv[7].endswith("crun") and argv[8:] == ["run", "x"]
    assert Config().runtimes["runc"].argv("list")[1:] == ["list"]


def test_dump_round_trips():
    cfg = Config(address="/tmp/a b.sock", default_runtime="crun").validate()
    again = parse(tomllib.loads(cfgmod.dump(cfg)))
    assert again.address == "/tmp/a b.sock" and again.default_runtime == "crun"
    assert {n: vars(r) for n, r in again.runtimes.items()} == {n: vars(r) for n, r in cfg.runtimes.items()}


def test_cli_config_commands_and_errors(tmp_path, capsys):
    from skiff.containerd.main import main
    assert main(["config", "default"]) == 0
    out = capsys.readouterr().out
    assert parse(tomllib.loads(out)).address == cfgmod.DEFAULT_ADDRESS
    path = tmp_path / "c.toml"
    path.write_text('root = "/srv/x"\n')
    assert main(["--config", str(path), "--address", "/tmp/a.sock", "config", "dump"]) == 0
    dumped = tomllib.loads(capsys.readouterr().out)
    assert dumped["root"] == "/srv/x" and dumped["grpc"]["address"] == "/tmp/a.sock"
    path.write_text("rooot = 1\n")
    assert main(["--config", str(path)]) == 1
    assert f"config file {path}: rooot: unknown key" in capsys.readouterr().err
    assert main(["frob"]) == 2
