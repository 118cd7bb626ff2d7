"""Registry client, auth, pull and push against real registries on 127.0.0.1: Debian's
docker-registry (open, htpasswd basic auth, bearer tokens from the tests' token server), with
skopeo as the independent reader and writer, and a faulty proxy for interrupted and tampered
downloads."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from registry_util import FaultProxy, Registry, TokenServer
from skiff.images import archive, builtin
from skiff.images import manifest as mf
from skiff.images.content import ContentStore, Descriptor
from skiff.images.errors import NotFound
from skiff.images.metadata import ImageRecord, MetaDB
from skiff.images.pull import LayerVerificationFailed, pull
from skiff.images.push import PushError, push
from skiff.images.registry import auth as ra
from skiff.images.registry import client as rc

SHARED_TAR = Path("/work/shared/images/busybox.tar")
USERS = {"alice": "s3cret"}


# --- fixtures -------------------------------------------------------------------------------

class Store:
    def __init__(self, root: Path) -> None:
        self.meta = MetaDB(root / "meta.db")
        self.content = ContentStore(root / "content", self.meta)

    def images(self) -> dict[str, str]:
        with self.meta.view() as tx:
            return {i.name: i.target.digest for i in tx.list_images("default")}

    def put_blob(self, data: bytes, labels: dict | None = None) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self.content.writer(f"test-{digest}", digest, len(data)) as w:
            w.write(data)
            w.commit(len(data), digest, labels)
        return digest

    def close(self) -> None:
        self.meta.close()


@pytest.fixture(autouse=True)
def _no_host_docker_config(tmp_path, monkeypatch):
    (tmp_path / "dockercfg").mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dockercfg"))


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture
def store2(tmp_path):
    s = Store(tmp_path / "store2")
    yield s
    s.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> builtin.BuiltImage:
    return builtin.build(str(tmp_path_factory.mktemp("builtin")), "/bin/busybox")


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory):
    reg = Registry.start(tmp_path_factory.mktemp("reg") / "open")
    yield reg
    reg.stop()
    assert reg.proc.returncode is not None and not reg.base.exists()


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    reg = Registry.start(tmp_path_factory.mktemp("reg") / "basic", "htpasswd", users=USERS)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def token_setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("reg")
    ts = TokenServer(base / "token-server", USERS, refresh_tokens={"refresh-abc": "alice"}).start()
    try:
        reg = Registry.start(base / "token", "token", token_server=ts)
    except BaseException:
        ts.stop()
        raise
    yield reg, ts
    reg.stop()
    ts.stop()


def _load_builtin(store: Store, built: builtin.BuiltImage, name: str) -> Descriptor:
    with open(built.archive_path, "rb") as f:
        (img,) = archive.load(f, store.content, store.meta)
    with store.meta.transaction() as tx:
        tx.create_image("default", ImageRecord(name, img.target))
    return img.target


def _skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _put_image(store: Store, name: str, layers: list[bytes], arch: str = "amd64") -> Descriptor:
    """A small OCI image of uncompressed ``layers``, recorded under ``name``."""
    digests = [store.put_blob(layer) for layer in layers]
    config = {"architecture": arch, "os": "linux", "config": {"Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": digests}}
    cfg = mf.json_bytes(config)
    cfg_digest = store.put_blob(cfg)
    manifest = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                "config": {"mediaType": mf.OCI_CONFIG, "digest": cfg_digest, "size": len(cfg)},
                "layers": [{"mediaType": mf.OCI_LAYER, "digest": d, "size": len(b)}
                           for d, b in zip(digests, layers, strict=True)]}
    data = mf.json_bytes(manifest)
    desc = Descriptor(mf.OCI_MANIFEST, store.put_blob(data), len(data), platform={"architecture": arch, "os": "linux"})
    with store.meta.transaction() as tx:
        tx.create_image("default", ImageRecord(name, desc))
    return desc


def _blobs_of(store: Store, target: Descriptor) -> dict[str, bytes]:
    out = {target.digest: store.content.read_all(target.digest)}
    for child in mf.children(target, out[target.digest]):
        if store.content.exists(child.digest):
            out.update(_blobs_of(store, child) if mf.is_manifest(child.media_type) or mf.is_index(child.media_type)
                       else {child.digest: store.content.read_all(child.digest)})
    return out


# --- auth and errors without a registry -----------------------------------------------------

def test_parse_challenges():
    cs = ra.parse_challenges([
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push"',
        'Basic realm="x, y \\"quoted\\"", Bearer realm=http://t/token,error=insufficient_scope',
    ])
    assert [(c.scheme, c.params) for c in cs] == [
        ("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                    "scope": "repository:a/b:pull,push"}),
        ("basic", {"realm": 'x, y "quoted"'}),
        ("bearer", {"realm": "http://t/token", "error": "insufficient_scope"}),
    ]


def test_auth_config_from_header_and_auth_field():
    doc = {"username": "bob", "password": "pw", "serveraddress": "127.0.0.1:5000"}
    header = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    cfg = ra.AuthConfig.from_header(header)
    assert (cfg.username, cfg.password, cfg.server_address) == ("bob", "pw", "127.0.0.1:5000")
    assert "pw" not in repr(cfg)
    cfg = ra.AuthConfig.from_json({"auth": base64.b64encode(b"u:p:with:colons").decode()})
    assert (cfg.username, cfg.password) == ("u", "p:with:colons")
    with pytest.raises(ra.InvalidArgument, match="X-Registry-Auth header: not base64-encoded JSON"):
        ra.AuthConfig.from_header("!!!")
    with pytest.raises(ra.InvalidArgument, match="no ':' between user and password"):
        ra.AuthConfig.from_json({"auth": base64.b64encode(b"nocolon").decode()})


def test_docker_config_auths_and_credential_helpers(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hubuser:hubpw").decode()},
        "http://127.0.0.1:5000": {"auth": base64.b64encode(b"alice:s3cret").decode()},
        "reg.example.com": {"username": "u", "password": "p"},
        "empty.example.com": {},
    }, "credHelpers": {"gcr.io": "gcloud"}}))
    cfg = ra.DockerConfig(str(path))
    assert cfg.credentials("docker.io").username == "hubuser"
    assert cfg.credentials("registry-1.docker.io").password == "hubpw"
    assert cfg.credentials("127.0.0.1:5000").password == "s3cret"
    assert cfg.credentials("reg.example.com").username == "u"
    assert cfg.credentials("empty.example.com") is None
    assert cfg.credentials("other.example.com") is None
    with pytest.raises(ra.CredentialHelperNotSupported, match="docker-credential-gcloud for gcr.io"):
        cfg.credentials("gcr.io")
    path.write_text(json.dumps({"auths": {"127.0.0.1:5000": {}}, "credsStore": "desktop"}))
    cfg = ra.DockerConfig(str(path))
    with pytest.raises(ra.CredentialHelperNotSupported, match="credsStore names the credential helper "
                                                               "docker-credential-desktop"):
        cfg.credentials("127.0.0.1:5000")
    path.write_text("{not json")
    with pytest.raises(ra.AuthError, match="not valid JSON"):
        ra.DockerConfig(str(path)).credentials("x")
    assert ra.DockerConfig(str(tmp_path / "missing.json")).credentials("x") is None


@pytest.mark.parametrize(("netloc", "insecure", "expected"), [
    ("localhost:5000", (), True),
    ("127.0.0.1:5000", (), True),
    ("127.9.8.7", (), True),
    ("[::1]:5000", (), True),
    ("10.0.0.1:5000", (), False),
    ("registry.example.com", (), False),
    ("registry.example.com", ("registry.example.com",), True),
    ("registry.example.com:5000", ("registry.example.com:5000",), True),
    ("registry.example.com:5000", ("registry.example.com:6000",), False),
    ("10.1.2.3:5000", ("10.0.0.0/8",), True),
    ("192.168.1.1", ("10.0.0.0/8",), False),
])
def test_insecure_registries_as_docker_decides(netloc, insecure, expected):
    assert rc.is_insecure_registry(netloc, insecure) is expected


def test_registry_errors_are_worded_as_docker_words_them():
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown",
                                   "detail": {"Tag": "nope"}}]}).encode()
    e = rc.error_from_response("GET", "http://h/v2/x/manifests/nope", 404, "Not Found", body)
    assert isinstance(e, rc.RegistryNotFound) and isinstance(e, NotFound)
    assert str(e) == 'Get "http://h/v2/x/manifests/nope": manifest unknown: manifest unknown'
    e = rc.error_from_response("HEAD", "http://h/v2/", 401, "Unauthorized", b"")
    assert isinstance(e, rc.RegistryUnauthorized)
    assert str(e) == 'Head "http://h/v2/": unauthorized: authentication required'
    e = rc.error_from_response("GET", "http://h/x", 401, "Unauthorized", b"",
                               ra.parse_challenges(['Bearer realm="r",error="insufficient_scope"']))
    assert isinstance(e, rc.RegistryDenied)
    assert str(e).endswith(": denied: requested access to the resource is denied")
    e = rc.error_from_response("GET", "http://t/token", 401, "Unauthorized",
                               b'{"details":"incorrect username or password"}')
    assert str(e).endswith(": unauthorized: incorrect username or password")
    e = rc.error_from_response("GET", "http://h/x", 503, "Service Unavailable", b"")
    assert isinstance(e, rc.RegistryUnavailable)
    assert str(e).endswith(": received unexpected HTTP status: 503 Service Unavailable")


def test_manifest_digest_is_verified_against_the_reference_and_the_header():
    data = b'{"schemaVersion":2}'
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    assert rc._verify_manifest_digest(data, good, good, "u") == good
    assert rc._verify_manifest_digest(data, "latest", "", "u") == good
    with pytest.raises(rc.ManifestDigestMismatch, match="manifest verification failed for digest sha256:000"):
        rc._verify_manifest_digest(data, "latest", "sha256:" + "0" * 64, "u")
    with pytest.raises(rc.ManifestDigestMismatch, match="the requested digest"):
        rc._verify_manifest_digest(data, "sha256:" + "1" * 64, "", "u")


# --- open registry: round trips and interoperability with skopeo ----------------------------

def test_push_then_pull_back_gives_the_same_digests_and_skopeo_reads_it(open_registry, store, store2, built,
                                                                        tmp_path):
    host = open_registry.host
    name = f"{host}/skiff/busybox:v1"
    target = _load_builtin(store, built, f"docker.io/library/{host.replace(':', '-')}:x")
    with store.meta.transaction() as tx:
        tx.create_image("default", ImageRecord(f"{host}/skiff/busybox:v1", target))
    events: list[dict] = []
    pushed = push(name, store.content, store.meta, progress_cb=events.append)
    assert pushed.digest == built.digest
    statuses = [e.get("status") for e in events]
    assert statuses[0] == f"The push refers to repository [{host}/skiff/busybox]"
    assert "Pushed" in statuses
    assert statuses[-2] == f"v1: digest: {built.digest} size: {pushed.size}"
    assert events[-1]["aux"] == {"Tag": "v1", "Digest": built.digest, "Size": pushed.size}
    # skopeo reads what we pushed
    inspected = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{name}"))
    assert inspected["Digest"] == built.digest
    assert inspected["Layers"] == [built.diff_id]
    # and we pull it back into another store, byte for byte
    pulled: list[dict] = []
    record = pull(name, store2.content, store2.meta, progress_cb=pulled.append)
    assert record.name == name and record.target.digest == built.digest
    assert _blobs_of(store2, record.target) == _blobs_of(store, target)
    short = built.diff_id.split(":")[1][:12]
    layer_statuses = [e["status"] for e in pulled if e.get("id") == short]
    assert layer_statuses[0] == "Pulling fs layer"
    assert layer_statuses[-3:] == ["Verifying Checksum", "Download complete", "Pull complete"]
    downloading = [e for e in pulled if e.get("status") == "Downloading"]
    assert downloading[-1]["progressDetail"] == {"current": 2129920, "total": 2129920} or \
        downloading[-1]["progressDetail"]["current"] == downloading[-1]["progressDetail"]["total"]
    assert pulled[0] == {"status": "Pulling from skiff/busybox", "id": "v1"}
    assert pulled[-2] == {"status": f"Digest: {built.digest}"}
    assert pulled[-1] == {"status": f"Status: Downloaded newer image for {name}"}
    again: list[dict] = []
    pull(name, store2.content, store2.meta, progress_cb=again.append)
    assert again[-1] == {"status": f"Status: Image is up to date for {name}"}
    assert {"status": "Already exists", "progressDetail": {}, "id": short} in again
    # by digest too
    by_digest = pull(f"{host}/skiff/busybox@{built.digest}", store2.content, store2.meta)
    assert by_digest.name == f"{host}/skiff/busybox@{built.digest}"


def test_pull_what_skopeo_pushed(open_registry, store, tmp_path):
    name = f"{open_registry.host}/library/busybox:skopeo"
    _skopeo("copy", "--dest-tls-verify=false", f"docker-archive:{SHARED_TAR}", f"docker://{name}")
    inspected = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{name}"))
    record = pull(name, store.content, store.meta)
    assert record.target.digest == inspected["Digest"]
    manifest = mf.parse_manifest(store.content.read_all(record.target.digest))
    assert [d.digest for d in manifest.layers] == inspected["Layers"]
    _skopeo("copy", "--src-tls-verify=false", f"docker://{name}", f"dir:{tmp_path / 'ref'}")
    for d in [manifest.config, *manifest.layers]:
        assert store.content.read_all(d.digest) == (tmp_path / "ref" / d.digest.split(":")[1]).read_bytes()
    labels = store.content.info(record.target.digest).labels
    assert labels[f"containerd.io/distribution.source.{open_registry.host}"] == "library/busybox"
    assert labels["containerd.io/gc.ref.content.config"] == manifest.config.digest


def test_multi_layer_push_with_chunks_cross_repo_mount_and_concurrency(open_registry, store, store2):
    host = open_registry.host
    layers = [_layer({f"f{i}/data": bytes([i]) * (300_000 + i)}) for i in range(6)]
    desc = _put_image(store, f"{host}/multi/one:latest", layers)
    events: list[dict] = []
    push(f"{host}/multi/one:latest", store.content, store.meta, progress_cb=events.append,
         chunk_size=128 * 1024, max_concurrent_uploads=2)
    waiting = [e for e in events if e.get("status") == "Waiting"]
    assert len(waiting) == 5  # config first, then 6 layers two at a time: the config is never shown
    assert sum(1 for e in events if e.get("status") == "Pushed") == 6
    # a second repository of the same registry: the layers are mounted, not uploaded again
    with store.meta.transaction() as tx:
        tx.create_image("default", ImageRecord(f"{host}/multi/two:latest", desc))
    events = []
    push(f"{host}/multi/two:latest", store.content, store.meta, progress_cb=events.append, chunk_size=None)
    assert sorted(e["status"] for e in events if e.get("id") and e["status"] != "Waiting") == sorted(
        ["Preparing"] * 6 + ["Mounted from multi/one"] * 6)
    record = pull(f"{host}/multi/two", store2.content, store2.meta, max_concurrent_downloads=2)
    assert _blobs_of(store2, record.target) == _blobs_of(store, desc)
    assert json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{host}/multi/two"))["Layers"] == [
        "sha256:" + hashlib.sha256(b).hexdigest() for b in layers]


def test_index_push_and_platform_selection_on_pull(open_registry, store, store2):
    host = open_registry.host
    amd = _put_image(store, f"{host}/plat/amd:x", [_layer({"arch": b"amd64\n"})], "amd64")
    arm = _put_image(store, f"{host}/plat/arm:x", [_layer({"arch": b"arm64\n"})], "arm64")
    index = {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [arm.to_json(), amd.to_json()]}
    data = mf.json_bytes(index)
    idx = Descriptor(mf.OCI_INDEX, store.put_blob(data), len(data))
    with store.meta.transaction() as tx:
        tx.create_image("default", ImageRecord(f"{host}/plat/multi:latest", idx))
    push(f"{host}/plat/multi:latest", store.content, store.meta)
    raw = json.loads(_skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{host}/plat/multi:latest"))
    assert [m["digest"] for m in raw["manifests"]] == [arm.digest, amd.digest]
    record = pull(f"{host}/plat/multi", store2.content, store2.meta)  # linux/amd64 by default
    assert record.target.digest == idx.digest
    assert store2.content.exists(amd.digest) and not store2.content.exists(arm.digest)
    gc_m = "containerd.io/gc.ref.content.m."
    assert {k: v for k, v in store2.content.info(idx.digest).labels.items() if k.startswith(gc_m)} == {
        gc_m + "1": amd.digest}
    # the index is only partly in store2: pushing it all fails, pushing its amd64 manifest works
    with pytest.raises(PushError, match=f"content {arm.digest} .* is missing from the content store"):
        push(f"{host}/plat/partial:1", store2.content, store2.meta, source=f"{host}/plat/multi:latest")
    pushed = push(f"{host}/plat/partial:1", store2.content, store2.meta, source=f"{host}/plat/multi:latest",
                  platform="linux/amd64")
    assert pushed.digest == amd.digest
    pull(f"{host}/plat/multi", store2.content, store2.meta, platform="linux/arm64")
    assert store2.content.exists(arm.digest)
    # both platforms now referenced from the index, for the garbage collector
    assert {k: v for k, v in store2.content.info(idx.digest).labels.items() if k.startswith(gc_m)} == {
        gc_m + "0": arm.digest, gc_m + "1": amd.digest}
    with pytest.raises(NotFound, match="^no matching manifest for linux/s390x in the manifest list entries$"):
        pull(f"{host}/plat/multi", store2.content, store2.meta, platform="linux/s390x")
    push(f"{host}/plat/amd:x", store.content, store.meta)
    with pytest.raises(NotFound, match="was found but does not match the specified platform: wanted "
                                       "linux/arm64, actual: linux/amd64"):
        pull(f"{host}/plat/amd:x", store2.content, store2.meta, platform="linux/arm64")


def test_pull_errors_are_dockers_and_record_nothing(open_registry, store):
    host = open_registry.host
    with pytest.raises(NotFound) as info:
        pull(f"{host}/nothere/at-all:nope", store.content, store.meta)
    assert str(info.value) == f"manifest for {host}/nothere/at-all:nope not found: manifest unknown: manifest unknown"
    with pytest.raises(NotFound, match="^An image does not exist locally with the tag: nothing/here$"):
        push("nothing/here", store.content, store.meta)
    assert store.images() == {}


# --- interrupted and tampered downloads -----------------------------------------------------

@pytest.fixture
def proxied(open_registry, store, built):
    """The builtin image pushed to the open registry, and a fault proxy in front of it."""
    target = _load_builtin(store, built, f"{open_registry.host}/fault/busybox:latest")
    push(f"{open_registry.host}/fault/busybox:latest", store.content, store.meta)
    proxy = FaultProxy(open_registry.port).start()
    yield proxy, built, target
    proxy.stop()


def test_a_download_cut_midway_resumes_with_a_range_request(proxied, store2):
    proxy, built, _ = proxied
    proxy.cut[built.diff_id] = [300_000, 1]
    events: list[dict] = []
    record = pull(f"{proxy.host}/fault/busybox:latest", store2.content, store2.meta, progress_cb=events.append,
                  retry_delay=0.01)
    assert record.target.digest == built.digest
    gets = [r for r in proxy.requests if r["method"] == "GET" and built.diff_id in r["path"]]
    assert len(gets) == 2
    assert gets[0]["range"] is None
    start = int(gets[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 300_000
    assert any(e.get("status", "").startswith("Retrying in") for e in events)
    assert store2.content.read_all(built.diff_id) == Path(built.layout_dir, "blobs", "sha256",
                                                           built.diff_id.split(":")[1]).read_bytes()


def test_an_interrupted_pull_is_resumed_by_the_next_pull(proxied, store2):
    proxy, built, _ = proxied
    proxy.cut[built.diff_id] = [500_000, 1]
    with pytest.raises(rc.RegistryUnavailable):
        pull(f"{proxy.host}/fault/busybox:latest", store2.content, store2.meta, retries=0)
    assert store2.images() == {}
    (status,) = store2.content.list_statuses()
    assert status.ref == f"layer-{built.diff_id}" and 0 < status.offset <= 500_000
    record = pull(f"{proxy.host}/fault/busybox:latest", store2.content, store2.meta)
    assert record.target.digest == built.digest
    last = [r for r in proxy.requests if r["method"] == "GET" and built.diff_id in r["path"]][-1]
    assert last["range"] == f"bytes={status.offset}-"
    assert store2.content.list_statuses() == []


def test_a_tampered_layer_fails_verification_and_leaves_nothing(proxied, store2):
    proxy, built, _ = proxied
    proxy.corrupt.add(built.diff_id)
    with pytest.raises(LayerVerificationFailed) as info:
        pull(f"{proxy.host}/fault/busybox:latest", store2.content, store2.meta)
    assert str(info.value).startswith(f"filesystem layer verification failed for digest {built.diff_id}")
    assert store2.images() == {}
    assert not store2.content.exists(built.diff_id)
    assert store2.content.list_statuses() == []


# --- authentication -------------------------------------------------------------------------

def test_basic_auth_push_pull_and_failures(basic_registry, store, store2, built, tmp_path):
    host = basic_registry.host
    name = f"{host}/private/busybox:1"
    _load_builtin(store, built, name)
    creds = ra.AuthConfig("alice", "s3cret")
    push(name, store.content, store.meta, auth=creds)
    inspected = json.loads(_skopeo("inspect", "--tls-verify=false", "--creds", "alice:s3cret", f"docker://{name}"))
    assert inspected["Digest"] == built.digest
    with pytest.raises(rc.RegistryUnauthorized) as info:
        pull(name, store2.content, store2.meta, auth=ra.AuthConfig("alice", "wrong"))
    assert str(info.value).endswith(": unauthorized: authentication required")
    with pytest.raises(rc.RegistryUnauthorized, match=": no basic auth credentials$"):
        pull(name, store2.content, store2.meta)
    assert store2.images() == {}
    # credentials from the Docker CLI's config file (DOCKER_CONFIG points at tmp_path/dockercfg)
    (tmp_path / "dockercfg" / "config.json").write_text(json.dumps(
        {"auths": {host: {"auth": base64.b64encode(b"alice:s3cret").decode()}}}))
    record = pull(name, store2.content, store2.meta)
    assert record.target.digest == built.digest


def test_bearer_token_flow(token_setup, store, store2, built):
    reg, ts = token_setup
    name = f"{reg.host}/tok/busybox:1"
    _load_builtin(store, built, name)
    push(name, store.content, store.meta, auth=ra.AuthConfig("alice", "s3cret"))
    assert any(r["scopes"] == ["repository:tok/busybox:pull,push"] and r["authorization"] == "Basic"
               for r in ts.requests)
    inspected = json.loads(_skopeo("inspect", "--tls-verify=false", "--creds", "alice:s3cret", f"docker://{name}"))
    assert inspected["Digest"] == built.digest
    before = len(ts.requests)
    record = pull(name, store2.content, store2.meta, auth=ra.AuthConfig("alice", "s3cret"))
    assert record.target.digest == built.digest
    assert [r["scopes"] for r in ts.requests[before:]] == [["repository:tok/busybox:pull"]]  # one token, cached
    with pytest.raises(NotFound) as info:  # anonymous: the token grants nothing
        pull(name, store2.content, store2.meta, auth=ra.AuthConfig())
    assert str(info.value) == ("pull access denied for " + f"{reg.host}/tok/busybox" +
                               ", repository does not exist or may require 'docker login': "
                               "denied: requested access to the resource is denied")
    with pytest.raises(rc.RegistryUnauthorized, match=": unauthorized: incorrect username or password$"):
        pull(name, store2.content, store2.meta, auth=ra.AuthConfig("alice", "nope"))


# --- transport security and unpacking -------------------------------------------------------

@pytest.mark.parametrize(("domain", "insecure", "tried"), [
    ("registry.example.com", (), ["https://registry.example.com/v2/"]),
    ("docker.io", (), ["https://registry-1.docker.io/v2/"]),
    ("registry.example.com:5000", ("registry.example.com:5000",),
     ["https://registry.example.com:5000/v2/", "http://registry.example.com:5000/v2/"]),
    ("localhost:5000", (), ["https://localhost:5000/v2/", "http://localhost:5000/v2/"]),
])
def test_plain_http_only_for_insecure_registries(monkeypatch, domain, insecure, tried):
    seen: list[str] = []

    def refuse(self, method, url, headers, body):
        seen.append(url)
        raise rc.RegistryUnavailable(f'Get "{url}": connect: connection refused', url=url)

    monkeypatch.setattr(rc.RegistryClient, "_send_once", refuse)
    client = rc.RegistryClient(domain, insecure_registries=insecure)
    with pytest.raises(rc.RegistryUnavailable, match="connection refused"):
        client.ensure_ready()
    assert seen == tried


def test_unpack_runs_after_all_content_and_before_the_record(open_registry, store, store2, built):
    from skiff.images.snapshots import new_snapshotter
    from skiff.images.snapshots.fsutil import describe_tree
    from skiff.images.unpack import chain_id, unpack

    name = f"{open_registry.host}/unpack/busybox:latest"
    _load_builtin(store, built, name)
    push(name, store.content, store.meta)
    seen = []

    def failing(desc, content):
        seen.append((desc.digest, store2.images(), content.exists(built.diff_id)))
        raise RuntimeError("unpack failed on purpose")

    with pytest.raises(RuntimeError, match="on purpose"):
        pull(name, store2.content, store2.meta, unpack=failing)
    assert seen == [(built.digest, {}, True)]
    assert store2.images() == {}  # a failed unpack leaves no image record
    snapshotter = new_snapshotter("native", str(store2.meta.path) + ".native")
    record = pull(name, store2.content, store2.meta,
                  unpack=lambda d, c: unpack(d, c, snapshotter, snapshotter_name="native"))
    assert record.target.digest == built.digest
    top = chain_id([built.diff_id])
    assert store2.content.info(built.image_id).labels["containerd.io/gc.ref.snapshot.native"] == top
    fs_dir, _ = snapshotter.dirs(top)
    tree = describe_tree(fs_dir, mtimes=False)
    assert "bin/busybox" in tree and "etc/passwd" in tree and "bin/sh" in tree
    assert Path(fs_dir, "bin", "busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    assert os.readlink(Path(fs_dir, "bin", "sh")) == "busybox"
    snapshotter.close()


def test_two_pulls_of_one_image_at_once_share_the_downloads(open_registry, store, store2, built):
    import threading

    name = f"{open_registry.host}/twice/busybox:latest"
    _load_builtin(store, built, name)
    push(name, store.content, store.meta)
    results: list[object] = []

    def run() -> None:
        try:
            results.append(pull(name, store2.content, store2.meta).target.digest)
        except Exception as e:  # reported through the assertion below
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [built.digest, built.digest]
    assert store2.images() == {name: built.digest}
    assert store2.content.list_statuses() == []


def test_identity_token_and_registry_token(token_setup, store, store2, built):
    reg, ts = token_setup
    name = f"{reg.host}/tok/ident:1"
    _load_builtin(store, built, name)
    push(name, store.content, store.meta, auth=ra.AuthConfig("alice", "s3cret"))
    # an identity token (what `docker login` keeps for OAuth2 registries) is exchanged by POST
    before = len(ts.requests)
    record = pull(name, store2.content, store2.meta, auth=ra.AuthConfig(identity_token="refresh-abc"))
    assert record.target.digest == built.digest
    assert [(r["method"], r["scopes"]) for r in ts.requests[before:]] == [("POST", ["repository:tok/ident:pull"])]
    with pytest.raises(rc.RegistryUnauthorized, match="unauthorized: invalid refresh token$"):
        pull(name, store2.content, store2.meta, auth=ra.AuthConfig(identity_token="stolen"))
    # a ready registry token is sent as it is: the token server is not asked
    token = ts.sign(ts.claims("alice", [{"type": "repository", "name": "tok/ident", "actions": ["pull"]}]))
    before = len(ts.requests)
    pull(name, store2.content, store2.meta, auth=ra.AuthConfig(registry_token=token))
    assert len(ts.requests) == before


def test_layer_ready_reports_each_layer_once_it_is_in_the_store(open_registry, store, store2):
    """``layer_ready(index, layer, diff_id)``: every manifest position, with its diff ID, once
    the blob is committed (a caller unpacks in order while the rest download); a layer the
    store has already is reported at once, before any download."""
    host = open_registry.host
    layers = [_layer({"a": b"1" * 5000}), _layer({"b": b"2" * 7000}), _layer({"a": b"1" * 5000})]
    name = f"{host}/skiff/ready:1"
    _put_image(store, name, layers)
    push(name, store.content, store.meta)
    store2.put_blob(layers[1])           # the middle one is there already
    seen: list[tuple[int, str, str, bool]] = []

    def ready(i: int, layer: Descriptor, diff_id: str) -> None:
        seen.append((i, layer.digest, diff_id, store2.content.exists(layer.digest)))
    pull(name, store2.content, store2.meta, layer_ready=ready)
    digests = ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers]
    assert sorted(seen) == [(i, d, d, True) for i, d in enumerate(digests)]
    assert seen[0][0] == 1               # reported before the downloads start
