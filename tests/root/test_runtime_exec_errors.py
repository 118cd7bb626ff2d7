"""``create`` fails, with runc 1.1's message, when args[0] cannot be executed: the docker CLI
maps "executable file not found"/"no such file" to exit 127 and "permission denied" to 126.
Each case runs under runc and skiff-runc and the messages are compared."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from runtime_util import Runtime, make_bundle, write_config

CASES = [
    (["/etc/passwd"], None, 'exec: "/etc/passwd": permission denied'),       # no execute bit
    (["/etc"], None, 'exec: "/etc": permission denied'),                     # a directory
    (["nosuch"], None, 'exec: "nosuch": executable file not found in $PATH'),
    (["/nope"], None, 'exec: "/nope": stat /nope: no such file or directory'),
    (["/bin/rootonly"], 65534, "exec /bin/rootonly: permission denied"),    # 0700 root's, run as nobody
    (["rootonly"], 65534, "exec /bin/rootonly: permission denied"),
]


@pytest.mark.root
@pytest.mark.parametrize("args,uid,message", CASES, ids=[" ".join(c[0]) + f"-{c[1]}" for c in CASES])
def test_create_refuses_what_cannot_be_executed_like_runc(state_dirs, args, uid, message):
    bundle = str(state_dirs.bundle)
    cfg = make_bundle(bundle, args)
    cfg["linux"].pop("cgroupsPath", None)
    if uid is not None:
        cfg["process"]["user"] = {"uid": uid, "gid": uid}
    shutil.copy("/bin/busybox", os.path.join(bundle, "rootfs/bin/rootonly"))
    os.chmod(os.path.join(bundle, "rootfs/bin/rootonly"), 0o700)
    write_config(bundle, cfg)
    seen = {}
    for name, binary in (("runc", "/usr/sbin/runc"), ("skiff-runc", None)):
        rt = Runtime(str(state_dirs.root / name)) if binary is None else Runtime(str(state_dirs.root / name), binary)
        try:
            r = rt("create", "--bundle", bundle, "c1", check=False)
            assert r.returncode == 1, f"{name}: {r.stderr}"
            assert rt("state", "c1", check=False).returncode != 0, f"{name} left the container"
            seen[name] = r.stderr.replace('\\"', '"')      # runc's logfmt escapes quotes
        finally:
            rt("delete", "--force", "c1", check=False)
    assert message in seen["runc"], seen["runc"]
    assert message in seen["skiff-runc"], seen["skiff-runc"]
    assert re.search(r"^skiff-runc: container c1: ", seen["skiff-runc"], re.M)
