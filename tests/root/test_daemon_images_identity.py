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
        dk.docker("run", "--name", "mk", "--network", "none", "busybox", "sh", "-c", "echo made > /made && rm /etc/group")
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
        out = sk.docker("run", "--rm", "--network", "none", "ident:1", "sh", "-c", "cat /made; test -e /etc/group || echo gone")
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


# --- through a registry -----------------------------------------------------------------------

def _manifest(registry, repo: str, ref: str) -> tuple[str, dict]:
    """(digest, manifest) of ``repo:ref`` as the registry serves it."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=30)
    try:
        conn.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ", ".join((
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json"))})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body)
        return resp.getheader("Docker-Content-Digest") or "", json.loads(body)
    finally:
        conn.close()


def _pushed_digest(out: str, tag: str) -> str:
    """The digest of ``docker push``'s last line (``TAG: digest: sha256:... size: N``)."""
    line = [ln for ln in out.splitlines() if ln.startswith(f"{tag}: digest: ")][-1]
    return line.split("digest: ")[1].split()[0]


def _dockerd_layer_digests(dk: Dockerd, diff_ids: list[str]) -> list[set[str]]:
    """The compressed blob digests dockerd recorded for each layer (its v2 distribution
    metadata, written when it pulls or pushes a layer)."""
    out = []
    base = dk.data_root / "image" / "overlay2" / "distribution" / "v2metadata-by-diffid" / "sha256"
    for d in diff_ids:
        path = base / d.removeprefix("sha256:")
        out.append({m["Digest"] for m in json.loads(path.read_text())} if path.exists() else set())
    return out


def test_registry_push_pull_between_dockerd_and_skiffd_keeps_identity(state_dirs, tmp_path):
    """A push from skiffd and a pull by dockerd (and the reverse) give the same manifest digest,
    image ID (config digest), layer digests and RepoDigests. The registry runs on the host's
    loopback; dockerd, in its own network namespace, reaches it at the same address through a
    forwarder (``netns_forward``), so the image names are the same for both engines."""
    from netns_forward import PortForward

    from registry_util import Registry
    if not BUSYBOX_TAR.exists():
        subprocess.run([sys.executable, "-m", "skiff.images.builtin", "build", "--out", str(IMAGE_DIR)],
                       check=True, cwd=REPO, capture_output=True, text=True)
    reg = Registry.start(tmp_path / "reg")
    dk = Dockerd(tmp_path / "dockerd-log", extra_args=[f"--insecure-registry={reg.host}"])
    fwd = sk = None
    try:
        dk.start()
        fwd = PortForward(dk.netns_path, reg.port)
        sk = Skiffd(str(state_dirs.run), str(state_dirs.data))

        def sk_ok(*args: str) -> str:
            r = sk.docker(*args, timeout=180)
            assert r.returncode == 0, f"skiffd: docker {' '.join(args)}: {r.stderr}"
            return r.stdout

        def sk_inspect(ref: str) -> dict:
            return json.loads(sk_ok("image", "inspect", ref))[0]

        # skiffd -> registry -> dockerd: a two-layer image made by skiffd's commit
        sk_ok("run", "--name", "mk", "--network", "none", "busybox", "sh", "-c", "echo from-skiffd > /made && rm /etc/group")
        ref = f"{reg.host}/ident/fromskiff:1"
        sk_ok("commit", "-m", "by skiffd", "mk", ref)
        mine = sk_inspect(ref)
        assert len(mine["RootFS"]["Layers"]) == 2
        pushed = _pushed_digest(sk_ok("push", ref), "1")
        digest, manifest = _manifest(reg, "ident/fromskiff", "1")
        assert digest == pushed
        assert manifest["config"]["digest"] == mine["Id"]
        out = dk.docker("pull", ref, timeout=180).stdout
        assert f"Digest: {pushed}" in out, out
        theirs = dk.inspect(ref)
        assert theirs["Id"] == mine["Id"]
        assert theirs["RootFS"]["Layers"] == mine["RootFS"]["Layers"]
        assert theirs["RepoDigests"] == [f"{reg.host}/ident/fromskiff@{pushed}"]
        assert f"{reg.host}/ident/fromskiff@{pushed}" in sk_inspect(ref)["RepoDigests"]
        blobs = [x["digest"] for x in manifest["layers"]]
        recorded = _dockerd_layer_digests(dk, theirs["RootFS"]["Layers"])
        assert all(b in r for b, r in zip(blobs, recorded, strict=True)), (blobs, recorded)
        run = dk.docker("run", "--rm", "--network", "none", ref, "sh", "-c",
                        "cat /made; test -e /etc/group || echo gone").stdout
        assert run.split() == ["from-skiffd", "gone"]

        # dockerd -> registry -> skiffd: an image made by dockerd's commit on its busybox
        dk.load_image(str(BUSYBOX_TAR))
        dk.docker("run", "--name", "mk2", "--network", "none", "busybox", "sh", "-c", "echo from-dockerd > /made")
        ref2 = f"{reg.host}/ident/fromdocker:2"
        dk.docker("commit", "-m", "by dockerd", "mk2", ref2)
        want = dk.inspect(ref2)
        pushed2 = _pushed_digest(dk.docker("push", ref2, timeout=180).stdout, "2")
        digest2, manifest2 = _manifest(reg, "ident/fromdocker", "2")
        assert digest2 == pushed2
        assert manifest2["config"]["digest"] == want["Id"]
        out = sk_ok("pull", ref2)
        assert f"Digest: {pushed2}" in out, out
        got = sk_inspect(ref2)
        assert got["Id"] == want["Id"]
        assert got["RootFS"]["Layers"] == want["RootFS"]["Layers"]
        assert f"{reg.host}/ident/fromdocker@{pushed2}" in got["RepoDigests"]
        assert dk.inspect(ref2)["RepoDigests"] == [f"{reg.host}/ident/fromdocker@{pushed2}"]
        assert sk_ok("run", "--rm", "--network", "none", ref2, "cat", "/made").strip() == "from-dockerd"
        # skiffd kept the manifest and blobs as pulled: pushed again elsewhere, the same digest
        ref3 = f"{reg.host}/ident/again:3"
        sk_ok("tag", ref2, ref3)
        assert _pushed_digest(sk_ok("push", ref3), "3") == pushed2
        digest3, manifest3 = _manifest(reg, "ident/again", "3")
        assert digest3 == pushed2 and manifest3 == manifest2
    finally:
        try:
            if sk is not None:
                sk.stop()
        finally:
            try:
                if fwd is not None:
                    fwd.stop()
            finally:
                try:
                    dk.close()
                finally:
                    reg.stop()
