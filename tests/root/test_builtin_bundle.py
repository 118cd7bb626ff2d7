"""The built-in busybox image against real tools: runc runs a bundle made from it, skopeo reads
the OCI layout and the docker archive, umoci unpacks the layout. (``docker load`` needs a
running daemon, so it is not part of the suite.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from skiff.images import builtin

pytestmark = pytest.mark.root

BUSYBOX = "/bin/busybox"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (the setup installs it)", pytrace=False)
    return path


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}"
    return proc


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> builtin.BuiltImage:
    return builtin.build(str(tmp_path_factory.mktemp("builtin-image")), BUSYBOX)


def test_runc_runs_a_bundle_made_from_the_image(built, state_dirs):
    runc = _tool("runc")
    bundle = builtin.make_bundle(built.layout_dir, str(state_dirs.bundle),
                                 ["echo", "hello from isolation"])
    container_id = f"skiff-builtin-{os.getpid()}"
    argv = [runc, "--root", str(state_dirs.root), "run", "--bundle", bundle, container_id]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)
    finally:
        if (state_dirs.root / container_id).exists():
            subprocess.run([runc, "--root", str(state_dirs.root), "delete", "-f", container_id],
                           capture_output=True, timeout=60, check=True)
    assert proc.returncode == 0, f"runc run exited {proc.returncode}: {proc.stderr.strip()}"
    assert proc.stdout == "hello from isolation\n"


def test_runc_runs_the_image_cmd_with_its_users_and_mount_points(built, state_dirs):
    runc = _tool("runc")
    script = "id; ls -ld /tmp; echo $PATH; test -x /usr/bin/env && echo env-ok"
    bundle = builtin.make_bundle(built.layout_dir, str(state_dirs.bundle), ["sh", "-c", script])
    container_id = f"skiff-builtin-sh-{os.getpid()}"
    argv = [runc, "--root", str(state_dirs.root), "run", "--bundle", bundle, container_id]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)
    finally:
        if (state_dirs.root / container_id).exists():
            subprocess.run([runc, "--root", str(state_dirs.root), "delete", "-f", container_id],
                           capture_output=True, timeout=60, check=True)
    assert proc.returncode == 0, f"runc run exited {proc.returncode}: {proc.stderr.strip()}"
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("uid=0(root) gid=0(root)")  # names from the image's /etc files
    assert lines[1].startswith("drwxrwxrwt")
    assert lines[2] == builtin.PATH_ENV.split("=", 1)[1]
    assert lines[3:] == ["env-ok"]


def test_skopeo_inspects_the_oci_layout(built):
    skopeo = _tool("skopeo")
    for ref in (f"oci:{built.layout_dir}", f"oci:{built.layout_dir}:latest"):
        info = json.loads(_run([skopeo, "inspect", ref]).stdout)
        assert info["Digest"] == built.digest
        assert info["Layers"] == [built.diff_id]
        assert info["Os"] == "linux"
    raw = json.loads(_run([skopeo, "inspect", "--config", "--raw", f"oci:{built.layout_dir}:latest"]).stdout)
    assert raw["config"]["Cmd"] == ["sh"]


def test_skopeo_copies_the_docker_archive_to_an_oci_layout(built, tmp_path):
    skopeo = _tool("skopeo")
    dest = tmp_path / "copied"
    _run([skopeo, "--insecure-policy", "copy", "--quiet", f"docker-archive:{built.archive_path}",
          f"oci:{dest}:latest"])
    index = json.loads((dest / "index.json").read_text())
    [entry] = index["manifests"]
    manifest = json.loads((dest / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_text())
    # skopeo rewrites the manifest (and may compress the layer) but keeps the config byte for byte
    assert manifest["config"]["digest"] == built.image_id
    config = (dest / "blobs" / "sha256" / built.image_id.split(":")[1]).read_bytes()
    assert config == (Path(built.layout_dir) / "blobs" / "sha256" / built.image_id.split(":")[1]).read_bytes()


def test_umoci_unpacks_the_layout(built, tmp_path):
    umoci = _tool("umoci")
    bundle = tmp_path / "umoci-bundle"
    _run([umoci, "unpack", "--image", f"{built.layout_dir}:latest", str(bundle)])
    rootfs = bundle / "rootfs"
    assert (rootfs / "bin" / "busybox").read_bytes() == Path(BUSYBOX).read_bytes()
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    assert os.readlink(rootfs / "usr" / "sbin" / "chroot") == "../../bin/busybox"
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["sh"]
    assert builtin.PATH_ENV in config["process"]["env"]
