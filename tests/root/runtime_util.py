"""Helpers for the root tests of skiff-runc: busybox bundles and running the runtime's CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from skiff.oci.defaults import default_config

RUNTIME = os.path.join(os.path.dirname(sys.executable), "skiff-runc")


def make_rootfs(path: str) -> str:
    """A busybox rootfs: /bin/busybox, its applets as symlinks, passwd and group."""
    os.makedirs(os.path.join(path, "bin"))
    shutil.copy2("/bin/busybox", os.path.join(path, "bin/busybox"))
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", os.path.join(path, "bin", a))
    for d in ("etc", "tmp", "proc", "sys", "dev", "root", "home", "var"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    with open(os.path.join(path, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")
    with open(os.path.join(path, "etc/group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    return path


def make_bundle(path: str, args: list[str], rootfs: str | None = None, **changes: object) -> dict:
    """A bundle at ``path`` running ``args``; ``changes`` are applied to the config's top level.
    Returns the config (write it again with ``write_config`` after editing)."""
    os.makedirs(path, exist_ok=True)
    if rootfs is None:
        make_rootfs(os.path.join(path, "rootfs"))
    config = default_config(args=args, terminal=False)
    if rootfs is not None:
        config["root"]["path"] = rootfs
    config.update(changes)
    write_config(path, config)
    return config


def write_config(bundle: str, config: dict) -> None:
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)


class Runtime:
    """``skiff-runc --root <root> ...`` with a list of containers to delete at the end."""

    def __init__(self, root: str, binary: str = RUNTIME) -> None:
        self.root = root
        self.binary = binary
        self.ids: list[str] = []

    def __call__(self, *args: str, check: bool = True, input: str | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the runtime; stdout and stderr go through files, not pipes, because a created or
        detached container inherits them and would hold a pipe open long after we return."""
        import tempfile

        cmd = [self.binary, "--root", self.root, *args]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run(cmd, stdout=out, stderr=err, input=input.encode() if input else None,
                               stdin=None if input else subprocess.DEVNULL, timeout=timeout)
            out.seek(0)
            err.seek(0)
            res = subprocess.CompletedProcess(cmd, p.returncode, out.read().decode(), err.read().decode())
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr}")
        return res

    def track(self, cid: str) -> str:
        self.ids.append(cid)
        return cid

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid).stdout)

    def cleanup(self) -> None:
        for cid in self.ids:
            self("delete", "--force", cid, check=False)
