"""config.json → internal types: valid documents convert, broken ones name the field."""

import json

import pytest

from skiff.oci.spec import SpecError, load_config, parse_config, parse_process


def minimal(**over):
    doc = {
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs", "readonly": True},
        "process": {"args": ["sh"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 1, "gid": 2}},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
    }
    doc.update(over)
    return doc


def test_minimal_config_converts():
    c = parse_config(minimal(hostname="box"))
    assert c.root_path == "rootfs" and c.root_readonly
    assert c.process is not None and c.process.args == ["sh"]
    assert (c.process.user.uid, c.process.user.gid) == (1, 2)
    assert [n.type for n in c.linux.namespaces] == ["pid", "mount"]
    assert c.hostname == "box"
    assert c.process.getenv("PATH") == "/bin"


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("ociVersion"), "ociVersion"),
    (lambda d: d["root"].pop("path"), "root.path"),
    (lambda d: d["process"].update(args=[]), "process.args"),
    (lambda d: d["process"].update(args="sh"), "process.args"),
    (lambda d: d["process"].update(cwd="relative"), "process.cwd"),
    (lambda d: d["process"]["user"].update(uid="0"), "process.user.uid"),
    (lambda d: d["process"]["user"].update(uid=-1), "process.user.uid"),
    (lambda d: d["process"].update(rlimits=[{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]),
     "process.rlimits[0].type"),
    (lambda d: d["process"].update(oomScoreAdj=5000), "process.oomScoreAdj"),
    (lambda d: d["linux"].update(namespaces=[{"type": "netx"}]), "linux.namespaces[0].type"),
    (lambda d: d["linux"].update(namespaces=[{"type": "pid"}, {"type": "pid"}]), "linux.namespaces[1].type"),
    (lambda d: d.update(mounts=[{"destination": "proc"}]), "mounts[0].destination"),
    (lambda d: d.update(hooks={"prestart": [{"path": "hook"}]}), "hooks.prestart[0].path"),
    (lambda d: d["linux"].update(devices=[{"type": "x", "path": "/dev/x"}]), "linux.devices[0].type"),
    (lambda d: d["linux"].update(rootfsPropagation="sideways"), "linux.rootfsPropagation"),
    (lambda d: d["linux"].update(sysctl={"net.ipv4.ip_forward": 1}), "linux.sysctl.net.ipv4.ip_forward"),
])
def test_broken_config_names_the_field(mutate, field):
    doc = minimal()
    mutate(doc)
    with pytest.raises(SpecError) as e:
        parse_config(doc)
    assert str(e.value).startswith(field), str(e.value)


def test_load_config_makes_root_absolute(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(minimal()))
    c = load_config(str(tmp_path))
    assert c.root_path == str(tmp_path / "rootfs")


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(SpecError, match="config.json: no such file"):
        load_config(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_config(str(tmp_path))


def test_process_capabilities_and_rlimits():
    p = parse_process({"args": ["x"], "cwd": "/", "capabilities": {"bounding": ["CAP_KILL"]},
                       "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}],
                       "consoleSize": {"height": 24, "width": 80}, "terminal": True})
    assert p.capabilities is not None and p.capabilities.bounding == ["CAP_KILL"]
    assert p.capabilities.effective == []
    assert [(r.type, r.soft, r.hard) for r in p.rlimits] == [("RLIMIT_NOFILE", 10, 20)]
    assert (p.console_height, p.console_width, p.terminal) == (24, 80, True)
