"""skiffd's registry verbs with the real docker CLI against a real skiffd and Debian's
docker-registry on 127.0.0.1: push and pull (digests kept, progress, errors in Docker's words,
``Image is up to date``, ``push --all-tags``), registry mirrors for docker.io names, and
``docker login`` with the basic (htpasswd) and bearer-token flows, then push/pull with the
stored credentials (sent as ``X-Registry-Auth``)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from skiffd_util import Skiffd

from registry_util import FaultProxy, Registry, TokenServer

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def skiffd(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    yield d
    d.stop()


@pytest.fixture
def registry(tmp_path):
    reg = Registry.start(tmp_path / "reg")
    yield reg
    reg.stop()


def ok(d: Skiffd, *args: str, input: str | None = None) -> str:
    r = d.docker(*args, input=input)
    assert r.returncode == 0, f"docker {' '.join(args)}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def inspect(d: Skiffd, ref: str) -> dict:
    return json.loads(ok(d, "image", "inspect", ref))[0]


def test_push_pull_roundtrip_keeps_identity(skiffd, registry):
    bb = inspect(skiffd, "busybox:latest")
    ref = f"{registry.host}/t/bb:1"
    ok(skiffd, "tag", "busybox:latest", ref)
    out = ok(skiffd, "push", ref)
    assert f"The push refers to repository [{registry.host}/t/bb]" in out
    digest = out.strip().splitlines()[-1].split("digest: ")[1].split()[0]
    assert digest.startswith("sha256:")
    # the registry holds exactly the manifest we pushed
    assert (registry.storage / "docker/registry/v2/repositories/t/bb/_manifests/tags/1/current/link"
            ).read_text() == digest
    ok(skiffd, "rmi", ref)
    out = ok(skiffd, "pull", ref)
    assert "Pulling from t/bb" in out and f"Digest: {digest}" in out
    # the layer is in containerd's content store (busybox's): not downloaded again
    assert "Already exists" in out, out
    # the image is still there under busybox: nothing new to download, same ID
    assert f"Status: Image is up to date for {ref}" in out or f"Downloaded newer image for {ref}" in out
    pulled = inspect(skiffd, ref)
    assert pulled["Id"] == bb["Id"]
    assert pulled["RootFS"]["Layers"] == bb["RootFS"]["Layers"]
    assert f"{registry.host}/t/bb@{digest}" in pulled["RepoDigests"]
    again = ok(skiffd, "pull", ref)
    assert f"Status: Image is up to date for {ref}" in again
    assert ok(skiffd, "run", "--rm", "--network", "none", ref, "echo", "pulled").strip() == "pulled"
    # a pull of what the registry does not have: Docker's message, exit 1
    r = skiffd.docker("pull", f"{registry.host}/t/nothere:1")
    assert r.returncode == 1
    assert f"manifest for {registry.host}/t/nothere:1 not found: manifest unknown" in r.stderr
    # pull by digest
    ok(skiffd, "rmi", ref)
    out = ok(skiffd, "pull", f"{registry.host}/t/bb@{digest}")
    assert inspect(skiffd, f"{registry.host}/t/bb@{digest}")["Id"] == bb["Id"]


def test_push_all_tags_and_missing_image(skiffd, registry):
    repo = f"{registry.host}/t/multi"
    ok(skiffd, "tag", "busybox:latest", f"{repo}:a")
    ok(skiffd, "tag", "busybox:latest", f"{repo}:b")
    out = ok(skiffd, "push", "--all-tags", repo)
    assert "a: digest: sha256:" in out and "b: digest: sha256:" in out
    tags = registry.storage / "docker/registry/v2/repositories/t/multi/_manifests/tags"
    assert sorted(os.listdir(tags)) == ["a", "b"]
    r = skiffd.docker("push", f"{registry.host}/t/none:1")
    assert r.returncode == 1
    assert "An image does not exist locally with the tag: " in r.stderr


def test_registry_mirror_serves_docker_io_names(state_dirs, registry):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data), "--registry-mirror", registry.url)
    try:
        bb = inspect(d, "busybox:latest")
        # fill the mirror with library/busybox, then pull "busybox" with no copy left locally
        ok(d, "tag", "busybox:latest", f"{registry.host}/library/busybox:latest")
        ok(d, "push", f"{registry.host}/library/busybox:latest")
        ok(d, "rmi", f"{registry.host}/library/busybox:latest")
        ok(d, "rmi", "busybox:latest")
        assert d.docker("image", "inspect", "busybox:latest").returncode == 1
        out = ok(d, "pull", "busybox")
        assert "Pulling from library/busybox" in out
        assert "Downloaded newer image for busybox:latest" in out
        assert inspect(d, "busybox:latest")["Id"] == bb["Id"]
        info = json.loads(ok(d, "info", "--format", "{{json .RegistryConfig}}"))
        assert registry.url in json.dumps(info)
    finally:
        d.stop()


def _login(d: Skiffd, host: str, user: str, password: str) -> subprocess.CompletedProcess:
    return d.docker("login", "-u", user, "--password-stdin", host, input=password)


def test_login_basic_then_push_and_pull_with_credentials(skiffd, tmp_path):
    reg = Registry.start(tmp_path / "reg", "htpasswd", users={"alice": "s3cret"})
    try:
        ref = f"{reg.host}/alice/bb:1"
        ok(skiffd, "tag", "busybox:latest", ref)
        r = skiffd.docker("push", ref)
        assert r.returncode == 1 and "no basic auth credentials" in (r.stdout + r.stderr)
        bad = _login(skiffd, reg.host, "alice", "wrong")
        assert bad.returncode == 1
        assert "401 Unauthorized" in bad.stderr
        good = _login(skiffd, reg.host, "alice", "s3cret")
        assert good.returncode == 0, good.stderr
        assert "Login Succeeded" in good.stdout
        ok(skiffd, "push", ref)
        ok(skiffd, "rmi", ref)
        ok(skiffd, "pull", ref)
        ok(skiffd, "logout", reg.host)
        ok(skiffd, "rmi", ref)
        r = skiffd.docker("pull", ref)
        assert r.returncode == 1
    finally:
        reg.stop()


def test_login_token_flow(skiffd, tmp_path):
    ts = TokenServer(tmp_path / "token", {"bob": "pw"}).start()
    try:
        reg = Registry.start(tmp_path / "reg", "token", token_server=ts)
        try:
            assert _login(skiffd, reg.host, "bob", "nope").returncode == 1
            good = _login(skiffd, reg.host, "bob", "pw")
            assert good.returncode == 0, good.stderr
            assert any(req["authorization"] == "Basic" for req in ts.requests)
            ref = f"{reg.host}/bob/bb:1"
            ok(skiffd, "tag", "busybox:latest", ref)
            ok(skiffd, "push", ref)
            ok(skiffd, "rmi", ref)
            ok(skiffd, "pull", ref)
        finally:
            reg.stop()
    finally:
        ts.stop()


def _layer_digest(registry: Registry, repo: str, tag: str) -> str:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=30)
    try:
        conn.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ", ".join((
            "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"))})
        resp = conn.getresponse()
        doc = json.loads(resp.read())
    finally:
        conn.close()
    return doc["layers"][0]["digest"]


def _fresh_image(d: Skiffd, ref: str) -> None:
    """A one-layer image of its own (not busybox's layer, which containerd has): imported."""
    import io
    import tarfile
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo("data.bin")
        data = os.urandom(3 << 20)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    r = subprocess.run([*_docker(d), "import", "-", ref], input=raw.getvalue(), capture_output=True)
    assert r.returncode == 0, r.stderr


def _docker(d: Skiffd) -> list[str]:
    from skiffd_util import DOCKER
    return [DOCKER, "-H", f"unix://{d.sock}"]


def test_pull_resumes_a_cut_download_and_refuses_corrupt_blobs(skiffd, registry):
    """A blob download cut mid-way is resumed where containerd's ingest stopped (a Range
    request); a blob whose bytes do not match its digest fails the pull in Docker's words,
    names no image, and leaves nothing that stops the next pull."""
    ref = f"{registry.host}/t/fresh:1"
    _fresh_image(skiffd, ref)
    want = inspect(skiffd, ref)["Id"]
    ok(skiffd, "push", ref)
    ok(skiffd, "rmi", ref)
    layer = _layer_digest(registry, "t/fresh", "1")
    proxy = FaultProxy(registry.port).start()
    try:
        via = f"{proxy.host}/t/fresh:1"
        cut_at = (1 << 20) + 4321
        proxy.cut[layer] = [cut_at, 1]
        out = ok(skiffd, "pull", via)
        assert "Retrying in" in out, out
        gets = [r for r in proxy.requests if r["method"] == "GET" and r["path"].endswith(layer)]
        assert len(gets) == 2, proxy.requests
        assert gets[0]["range"] is None
        assert gets[1]["range"] == f"bytes={cut_at}-", gets
        assert inspect(skiffd, via)["Id"] == want
        ok(skiffd, "rmi", via)

        proxy.corrupt.add(layer)
        r = skiffd.docker("pull", via)
        assert r.returncode == 1
        assert f"filesystem layer verification failed for digest {layer}" in r.stderr, r.stderr
        assert skiffd.docker("image", "inspect", via).returncode == 1
        proxy.corrupt.clear()
        ok(skiffd, "pull", via)
        assert inspect(skiffd, via)["Id"] == want
    finally:
        proxy.stop()
