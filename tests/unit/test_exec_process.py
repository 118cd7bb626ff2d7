"""skiff.runtime.verbs.exec.build_process: the process ``exec`` runs, from its flags."""

from __future__ import annotations

from typing import Any

from skiff.runtime.flags import parse
from skiff.runtime.verbs import exec as exec_verb


def _process(args: list[str], base: dict):
    opts, pos = parse(args, exec_verb.FLAGS, stop_at_first_positional=True)
    return exec_verb.build_process(opts, pos[1:], base)


BASE: dict[str, Any] = {"args": ["sleep", "1"], "cwd": "/", "env": ["PATH=/bin", "A=1"], "user": {"uid": 0, "gid": 0},
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}}


def test_cap_never_goes_into_the_inheritable_set():
    # CVE-2022-29162: runc exec --cap made inheritable capabilities; runc >= 1.1.2 does not
    p = _process(["--cap", "CAP_NET_RAW", "c1", "sh"], BASE)
    c = p.capabilities
    assert c.bounding == ["CAP_KILL", "CAP_NET_RAW"]
    assert c.effective == ["CAP_KILL", "CAP_NET_RAW"] and c.permitted == ["CAP_KILL", "CAP_NET_RAW"]
    assert not c.inheritable and not c.ambient


def test_cap_is_ambient_too_when_the_process_has_an_inheritable_set():
    base = dict(BASE, capabilities=dict(BASE["capabilities"], inheritable=["CAP_KILL"], ambient=["CAP_KILL"]))
    c = _process(["--cap", "CAP_CHOWN", "c1", "sh"], base).capabilities
    assert c.inheritable == ["CAP_KILL"]
    assert c.ambient == ["CAP_KILL", "CAP_CHOWN"]


def test_flags_apply_to_the_containers_process():
    p = _process(["--env", "A=2", "-e", "B=3", "--cwd", "/tmp", "--user", "1000:100", "-g", "7",
                  "--no-new-privs", "-t", "c1", "sh", "-c", "true"], BASE)
    assert p.args == ["sh", "-c", "true"]
    assert p.env == ["PATH=/bin", "A=2", "B=3"]
    assert p.cwd == "/tmp" and p.terminal and p.no_new_privileges
    assert (p.user.uid, p.user.gid, p.user.additional_gids) == (1000, 100, [7])
