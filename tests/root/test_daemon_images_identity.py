"""Issue 7's identity proof, save/load half: an image moved between a real dockerd (Debian's
docker.io 20.10, private, see ``dockerd_util``) and skiffd by ``docker save`` / ``docker load``
keeps its image ID and layer diff IDs both ways. The image has two layers: busybox and a
layer made by ``docker commit`` in dockerd (a file added, one deleted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dockerd_util import Dockerd
from skiffd_util import Skiffd

REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO / "build" / "images"
BUSYBOX_TAR = IMAGE_DIR / "busybox.tar"

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_save_load_between_dockerd_and_skiffd_keeps_identity(state_dirs, tmp_path):
    if not BUSYBOX_TAR.exists():
        subprocess.run([sys.executable, "-m", "skiff.images.builtin", "build", "--out", str(IMAGE_DIR)],
                       check=True, cwd=REPO, capture_output=True, text=True)
    dk = Dockerd(tmp_path / "dockerd-log")
    sk = None
    try:
        (tmp_path / "dockerd-log").mkdir(exist_ok=True)
        dk.start()
        dk.load_image(str(BUSYBOX_TAR))
        dk.docker("run", "--name", "mk", "busybox", "sh", "-c", "echo made > /made && rm /etc/group")
        dk.docker("commit", "-m", "from dockerd", "mk", "ident:1")
        want = dk.inspect("ident:1")
        assert len(want["RootFS"]["Layers"]) == 2
        from_docker = tmp_path / "from-docker.tar"
        dk.docker("save", "-o", str(from_docker), "ident:1")

        sk = Skiffd(str(state_dirs.run), str(state_dirs.data))
        r = sk.docker("load", "-i", str(from_docker))
        assert r.returncode == 0 and "Loaded image: ident:1" in r.stdout, r.stderr
        got = json.loads(sk.docker("image", "inspect", "ident:1").stdout)[0]
        assert got["Id"] == want["Id"]
        assert got["RootFS"]["Layers"] == want["RootFS"]["Layers"]
        assert got["Comment"] == want["Comment"], (got["Comment"], want["Comment"])
        out = sk.docker("run", "--rm", "ident:1", "sh", "-c", "cat /made; test -e /etc/group || echo gone")
        assert out.stdout.split() == ["made", "gone"], out.stderr

        # and back: skiffd's save loads into dockerd as the same image
        from_skiff = tmp_path / "from-skiff.tar"
        r = sk.docker("save", "-o", str(from_skiff), "ident:1")
        assert r.returncode == 0, r.stderr
        dk.docker("rm", "mk")
        dk.docker("rmi", "ident:1")
        assert "Loaded image: ident:1" in dk.docker("load", "-i", str(from_skiff)).stdout
        back = dk.inspect("ident:1")
        assert back["Id"] == want["Id"]
        assert back["RootFS"]["Layers"] == want["RootFS"]["Layers"]
    finally:
        if sk is not None:
            sk.stop()
        dk.close()
