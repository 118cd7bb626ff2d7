"""docker-archive and OCI archive load/save (against skopeo as the reference), hostile archives,
rootfs import with changes, and container filesystem export."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from skiff.images import archive, builtin
from skiff.images import manifest as mf
from skiff.images.content import ContentStore
from skiff.images.metadata import MetaDB
from tar_util import tar_of

SHARED_TAR = Path("/work/shared/images/busybox.tar")
SCHEMA_DIR = Path("/work/shared/specs/oci-image/schema")
BUSYBOX = "/bin/busybox"


class Store:
    def __init__(self, root: Path) -> None:
        self.meta = MetaDB(root / "meta.db")
        self.content = ContentStore(root / "content", self.meta)

    def images(self) -> dict[str, str]:
        with self.meta.view() as tx:
            return {i.name: i.target.digest for i in tx.list_images("default")}

    def close(self) -> None:
        self.meta.close()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> builtin.BuiltImage:
    if not os.path.exists(BUSYBOX):
        pytest.fail("busybox-static is not installed at /bin/busybox (scripts/setup.sh installs it)")
    return builtin.build(str(tmp_path_factory.mktemp("builtin")), BUSYBOX)


def _skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _oci_dir_image(layout: Path) -> tuple[dict, dict]:
    """(manifest, config) of the only image of an OCI layout directory written by skopeo."""
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]
    manifest = json.loads((layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_text())
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    return {**manifest, "_digest": entry["digest"]}, config


def _load(store: Store, path: Path | str, **kw) -> list[archive.LoadedImage]:
    with open(path, "rb") as f:
        return archive.load(f, store.content, store.meta, **kw)


# --- load and save --------------------------------------------------------------------------

def test_load_builtin_archive_records_the_image_with_its_oci_manifest(store, built):
    messages: list[dict] = []
    (img,) = _load(store, built.archive_path, progress_cb=messages.append)
    assert img.names == ["docker.io/library/busybox:latest"]
    assert img.target.digest == built.digest and img.target.media_type == mf.OCI_MANIFEST
    assert img.config_digest == built.image_id
    assert store.images() == {"docker.io/library/busybox:latest": built.digest}
    assert messages == [{"stream": "Loaded image: busybox:latest\n"}]
    labels = store.content.info(built.digest).labels
    assert labels == {"containerd.io/gc.ref.content.config": built.image_id,
                      "containerd.io/gc.ref.content.l.0": built.diff_id}
    # nothing is left half-written: no ingests, no lease
    assert store.content.list_statuses() == []
    with store.meta.view() as tx:
        assert tx.list_leases("default") == []


def test_save_of_the_builtin_image_is_byte_for_byte_the_built_archive(store, built):
    _load(store, built.archive_path)
    out = io.BytesIO()
    archive.save(["busybox"], store.content, store.meta, out)
    assert out.getvalue() == Path(built.archive_path).read_bytes()


def _dir_image(path: Path) -> tuple[bytes, dict]:
    """(manifest bytes, config) of an image skopeo copied to a ``dir:`` destination."""
    manifest = (path / "manifest.json").read_bytes()
    config = json.loads((path / json.loads(manifest)["config"]["digest"].split(":")[1]).read_bytes())
    return manifest, config


def test_load_legacy_docker_archive_matches_skopeos_reading(store, tmp_path):
    (img,) = _load(store, SHARED_TAR)
    assert img.names == ["docker.io/library/busybox:latest"]
    assert img.target.media_type == mf.DOCKER_MANIFEST
    ours = store.content.read_all(img.target.digest)
    _skopeo("copy", f"docker-archive:{SHARED_TAR}", f"dir:{tmp_path / 'ref'}")
    theirs, _ = _dir_image(tmp_path / "ref")
    # skopeo keeps the schema 2 manifest and the config bytes (the image ID); the one difference:
    # it labels the uncompressed layer.tar "tar.gzip", where containerd's importer (and we) say
    # what it is, "application/vnd.docker.image.rootfs.diff.tar"
    assert ours == theirs.replace(b"rootfs.diff.tar.gzip", b"rootfs.diff.tar")
    manifest = mf.parse_manifest(ours)
    assert manifest.config.digest == img.config_digest == "sha256:" + hashlib.sha256(
        (tmp_path / "ref" / img.config_digest.split(":")[1]).read_bytes()).hexdigest()
    for layer in manifest.layers:
        assert store.content.read_all(layer.digest) == (tmp_path / "ref" / layer.digest.split(":")[1]).read_bytes()
    # and the OCI conversion of both agrees
    _skopeo("copy", f"docker-archive:{SHARED_TAR}", f"oci:{tmp_path / 'refoci'}:latest")
    ref_manifest, ref_config = _oci_dir_image(tmp_path / "refoci")
    assert ref_config["rootfs"]["diff_ids"] == [d.digest for d in manifest.layers]


def test_saved_archive_is_read_by_skopeo_with_the_same_digests(store, tmp_path, built):
    _load(store, SHARED_TAR)
    saved = tmp_path / "saved.tar"
    with open(saved, "wb") as f:
        archive.save(["busybox:latest"], store.content, store.meta, f)
    inspected = json.loads(_skopeo("inspect", f"docker-archive:{saved}"))
    assert inspected["Layers"] == ["sha256:3709ce5d9f36ccd6904ebd71b49d43d0364d230e87ce29fc3f5d079233bc2c68"]
    _skopeo("copy", f"docker-archive:{saved}", f"dir:{tmp_path / 'fromours'}")
    _skopeo("copy", f"docker-archive:{SHARED_TAR}", f"dir:{tmp_path / 'fromref'}")
    ours, ours_cfg = _dir_image(tmp_path / "fromours")
    ref, ref_cfg = _dir_image(tmp_path / "fromref")
    assert json.loads(ours)["config"] == json.loads(ref)["config"]
    assert [d["digest"] for d in json.loads(ours)["layers"]] == [d["digest"] for d in json.loads(ref)["layers"]]
    assert ours_cfg == ref_cfg
    # and a fresh store loads it back to the same image
    other = Store(tmp_path / "other")
    (img,) = _load(other, saved)
    assert other.images() == store.images()
    other.close()


def test_round_trip_save_then_load_keeps_every_digest(store, tmp_path, built):
    _load(store, built.archive_path)
    _load(store, SHARED_TAR)  # replaces busybox:latest with the legacy image
    out = io.BytesIO()
    archive.save(["busybox:latest"], store.content, store.meta, out)
    other = Store(tmp_path / "other")
    (img,) = archive.load(io.BytesIO(out.getvalue()), other.content, other.meta)
    assert other.images() == store.images()
    assert img.target.digest == store.images()["docker.io/library/busybox:latest"]
    # a gzip-compressed archive loads too (docker load accepts it)
    third = Store(tmp_path / "third")
    archive.load(io.BytesIO(gzip.compress(out.getvalue())), third.content, third.meta)
    assert third.images() == store.images()


def test_oci_archive_from_skopeo_loads_and_ours_reads_back_in_skopeo(store, tmp_path, built):
    oci_tar = tmp_path / "bb-oci.tar"
    _skopeo("copy", f"docker-archive:{built.archive_path}", f"oci-archive:{oci_tar}:latest")
    (img,) = _load(store, oci_tar)
    # skopeo's index names only the tag: the image is recorded as dangling, by digest
    assert img.names == []
    assert store.images() == {archive.DANGLING_PREFIX + img.target.digest: img.target.digest}
    assert img.config_digest == built.image_id
    # our OCI archive (format="oci") of a named image
    _load(store, built.archive_path)
    ours = tmp_path / "ours-oci.tar"
    with open(ours, "wb") as f:
        archive.save(["busybox"], store.content, store.meta, f, format="oci")
    with tarfile.open(ours) as t:
        names = t.getnames()
    assert "manifest.json" not in names and "index.json" in names and "oci-layout" in names
    inspected = json.loads(_skopeo("inspect", f"oci-archive:{ours}"))
    assert inspected["Digest"] == built.digest
    assert inspected["Layers"] == [built.diff_id]


def test_save_two_names_of_one_image(store, built):
    (img,) = _load(store, built.archive_path)
    with store.meta.transaction() as tx:
        from skiff.images.metadata import ImageRecord
        tx.create_image("default", ImageRecord("127.0.0.1:5000/mine/bb:v1", img.target))
    out = io.BytesIO()
    archive.save(["busybox", "127.0.0.1:5000/mine/bb:v1"], store.content, store.meta, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        index = json.loads(t.extractfile("index.json").read())
        legacy = json.loads(t.extractfile("manifest.json").read())
        repos = json.loads(t.extractfile("repositories").read())
    assert [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]] == [
        "docker.io/library/busybox:latest", "127.0.0.1:5000/mine/bb:v1"]
    assert legacy[0]["RepoTags"] == ["busybox:latest", "127.0.0.1:5000/mine/bb:v1"]
    assert repos == {"busybox": {"latest": built.diff_id.split(":")[1]},
                     "127.0.0.1:5000/mine/bb": {"v1": built.diff_id.split(":")[1]}}


def test_save_of_an_unknown_image_fails(store):
    with pytest.raises(archive.NotFound, match="save: image nothere: no such image"):
        archive.save(["nothere"], store.content, store.meta, io.BytesIO())


# --- hostile and broken archives ------------------------------------------------------------

def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _legacy_archive(layer: bytes, diff_id: str | None = None, *, layer_name: str = "l1/layer.tar",
                    extra: list | None = None) -> bytes:
    config = {"architecture": "amd64", "os": "linux", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [diff_id or "sha256:" + hashlib.sha256(layer).hexdigest()]}}
    cfg = json.dumps(config).encode()
    items = [{"Config": "cfg.json", "RepoTags": ["evil:latest"], "Layers": [layer_name]}]
    members = [_file("cfg.json", cfg), _file("l1/layer.tar", layer),
               _file("manifest.json", json.dumps(items).encode())]
    return tar_of(members + (extra or []))


def _small_layer() -> bytes:
    return tar_of([_file("hello.txt", b"hello\n")])


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info, None


def test_a_well_formed_legacy_archive_with_a_linked_layer_loads(store):
    layer = _small_layer()
    diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [diff, diff]}}).encode()
    items = [{"Config": "cfg.json", "RepoTags": ["twice:1"], "Layers": ["l1/layer.tar", "l2/layer.tar"]}]
    data = tar_of([_file("cfg.json", config), _file("l1/layer.tar", layer), _symlink("l2/layer.tar", "../l1/layer.tar"),
                   _file("manifest.json", json.dumps(items).encode())])
    (img,) = archive.load(io.BytesIO(data), store.content, store.meta)
    m = mf.parse_manifest(store.content.read_all(img.target.digest))
    assert [d.digest for d in m.layers] == [diff, diff]
    assert store.images() == {"docker.io/library/twice:1": img.target.digest}


@pytest.mark.parametrize(("data", "message"), [
    (lambda: _legacy_archive(_small_layer(), extra=[_file("/etc/x", b"x")]), "absolute path refused"),
    (lambda: _legacy_archive(_small_layer(), extra=[_file("../x", b"x")]), "leaves the archive"),
    (lambda: _legacy_archive(_small_layer(), extra=[_file("a/../../x", b"x")]), "leaves the archive"),
    (lambda: _legacy_archive(_small_layer(), extra=[_symlink("l9/layer.tar", "../../etc/passwd")]),
     "leaves the archive"),
    (lambda: _legacy_archive(_small_layer(), extra=[_symlink("l9/layer.tar", "/etc/passwd")]),
     "absolute target refused"),
    (lambda: _legacy_archive(_small_layer(), extra=[_device("dev/null")]), "character device not expected"),
    (lambda: _legacy_archive(_small_layer(), extra=[_file("cfg.json", b"{}")]), "appears twice"),
    (lambda: _legacy_archive(_small_layer(), "sha256:" + "0" * 64), "the config says sha256:000"),
    (lambda: _legacy_archive(_small_layer(), layer_name="l2/layer.tar"), "'l2/layer.tar' is missing"),
    (lambda: tar_of([_file("blobs/sha256/" + "a" * 64, b"not what the name says")]), "not the one its name says"),
    (lambda: tar_of([_file("hello", b"x")]), "neither manifest.json nor index.json"),
    (lambda: b"this is not a tar archive at all" * 40, "not a tar archive"),
    (lambda: gzip.compress(_legacy_archive(_small_layer()))[:-30], "truncated"),
])
def test_hostile_or_broken_archives_are_refused_and_record_nothing(store, data, message):
    with pytest.raises(archive.ArchiveError, match=message):
        archive.load(io.BytesIO(data()), store.content, store.meta)
    assert store.images() == {}
    with store.meta.view() as tx:
        assert tx.list_leases("default") == []


def test_oci_archive_naming_a_missing_layer_is_refused(store, built):
    with tarfile.open(built.archive_path) as t:
        members = [(m, t.extractfile(m).read() if m.isreg() else None) for m in t.getmembers()]
    kept = [(m, d) for m, d in members if m.name != "blobs/sha256/" + built.diff_id.split(":")[1]
            and m.name not in ("manifest.json", "repositories")]
    data = tar_of(kept)
    with pytest.raises(archive.ArchiveError, match=f"layers\\[0\\] blob {built.diff_id} is missing"):
        archive.load(io.BytesIO(data), store.content, store.meta)
    assert store.images() == {}


# --- compressed streams ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz", "none"])
def test_decompression_is_bounded_by_what_is_read(kind):
    import bz2
    import lzma
    raw = b"\x00" * (64 << 20)  # 64 MiB of zeros: compresses to almost nothing
    packed = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress, "none": bytes}[kind](raw)
    d = archive._Decompressed(io.BytesIO(packed), "test")
    assert d.kind == ("" if kind == "none" else kind)
    first = d.read(4096)
    assert first == b"\x00" * 4096
    total = len(first)
    while chunk := d.read(1 << 20):
        assert len(chunk) <= 1 << 20
        total += len(chunk)
    assert total == len(raw)


def test_gzip_members_padding_and_garbage():
    two = gzip.compress(b"hello ") + gzip.compress(b"world")
    assert archive._Decompressed(io.BytesIO(two), "t").read() == b"hello world"
    padded = gzip.compress(b"data") + b"\x00" * 3000
    assert archive._Decompressed(io.BytesIO(padded), "t").read() == b"data"
    with pytest.raises(archive.ArchiveError, match="t: gzip data is corrupt"):
        archive._Decompressed(io.BytesIO(gzip.compress(b"data") + b"garbage!"), "t").read()
    with pytest.raises(archive.ArchiveError, match="t: gzip stream is truncated"):
        archive._Decompressed(io.BytesIO(gzip.compress(b"data" * 1000)[:-10]), "t").read()
    import lzma
    with pytest.raises(archive.ArchiveError, match="t: data after the end of the xz stream"):
        archive._Decompressed(io.BytesIO(lzma.compress(b"x") + b"junk"), "t").read()
    digest, size = archive.uncompressed_digest(io.BytesIO(two), "t")
    assert (digest, size) == ("sha256:" + hashlib.sha256(b"hello world").hexdigest(), 11)


# --- import ---------------------------------------------------------------------------------

def _rootfs_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        d = tarfile.TarInfo("etc")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        t.addfile(d)
        data = b"root:x:0:0:root:/root:/bin/sh\n"
        f = tarfile.TarInfo("etc/passwd")
        f.size = len(data)
        t.addfile(f, io.BytesIO(data))
    return out.getvalue()


def _schema_errors(schema_file: str, doc: dict) -> list[str]:
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    def retrieve(uri: str) -> Resource:
        return Resource.from_contents(json.loads((SCHEMA_DIR / uri.rsplit("/", 1)[-1]).read_text()),
                                      default_specification=DRAFT4)

    schema = json.loads((SCHEMA_DIR / schema_file).read_text())
    validator = jsonschema.Draft4Validator(schema, registry=Registry(retrieve=retrieve))  # type: ignore[call-arg]
    return [e.message for e in validator.iter_errors(doc)]


def test_import_rootfs_with_changes(store):
    import datetime
    raw = _rootfs_tar()
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    img = archive.import_rootfs(io.BytesIO(gzip.compress(raw)), store.content, store.meta, ref="imported:v1",
                                changes=['CMD ["sh", "-c", "echo hi"]', "ENV A=1 B=2", "WORKDIR /srv",
                                         "EXPOSE 80 53/udp", "USER nobody", "LABEL k=v",
                                         "VOLUME /data", "STOPSIGNAL SIGTERM", "ENTRYPOINT [\"/bin/sh\"]"],
                                message="", created=when)
    assert store.images() == {"docker.io/library/imported:v1": img.target.digest}
    mdata = store.content.read_all(img.target.digest)
    manifest = json.loads(mdata)
    config = json.loads(store.content.read_all(manifest["config"]["digest"]))
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()  # stored uncompressed: digest == diff ID
    assert manifest["layers"] == [{"mediaType": mf.OCI_LAYER, "digest": diff_id, "size": len(raw)}]
    assert store.content.read_all(diff_id) == raw
    assert config["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}
    assert config["created"] == "2024-01-02T03:04:05Z"
    assert config["history"] == [{"created": "2024-01-02T03:04:05Z", "comment": "Imported from -"}]
    assert config["config"] == {
        "User": "nobody", "ExposedPorts": {"53/udp": {}, "80/tcp": {}}, "Env": ["A=1", "B=2"],
        "Entrypoint": ["/bin/sh"], "Cmd": ["sh", "-c", "echo hi"], "Volumes": {"/data": {}},
        "WorkingDir": "/srv", "Labels": {"k": "v"}, "StopSignal": "SIGTERM"}
    assert _schema_errors("image-manifest-schema.json", manifest) == []
    assert _schema_errors("config-schema.json", config) == []


def test_import_refuses_bad_input_and_records_nothing(store):
    with pytest.raises(archive.ArchiveError, match="^run is not a valid change command$"):
        archive.import_rootfs(io.BytesIO(_rootfs_tar()), store.content, store.meta, changes=["RUN rm -rf /"])
    with pytest.raises(archive.ArchiveError, match="not a tar archive"):
        archive.import_rootfs(io.BytesIO(b"garbage" * 100), store.content, store.meta, ref="x")
    with pytest.raises(archive.ArchiveError, match="empty input"):
        archive.import_rootfs(io.BytesIO(b""), store.content, store.meta, ref="x")
    with pytest.raises(archive.ArchiveError, match="gzip stream is truncated"):
        archive.import_rootfs(io.BytesIO(gzip.compress(_rootfs_tar())[:-20]), store.content, store.meta, ref="x")
    assert store.images() == {}
    assert store.content.list_statuses() == []


def test_import_without_a_name_is_dangling_and_the_message_is_kept(store):
    img = archive.import_rootfs(io.BytesIO(_rootfs_tar()), store.content, store.meta, message="my rootfs",
                                platform="linux/arm64")
    assert list(store.images()) == [archive.DANGLING_PREFIX + img.target.digest]
    cfg = json.loads(store.content.read_all(img.config_digest))
    assert cfg["architecture"] == "arm64" and cfg["comment"] == "my rootfs"
    assert cfg["history"][0]["comment"] == "my rootfs"


@pytest.mark.parametrize(("changes", "expected"), [
    (["CMD echo hello"], {"Cmd": ["/bin/sh", "-c", "echo hello"]}),
    (['CMD ["a", "b"]'], {"Cmd": ["a", "b"]}),
    (["CMD [not json"], {"Cmd": ["/bin/sh", "-c", "[not json"]}),
    (['ENTRYPOINT ["x"]'], {"Entrypoint": ["x"]}),
    (['CMD ["c"]', 'ENTRYPOINT ["x"]'], {"Entrypoint": ["x"], "Cmd": ["c"]}),
    (["ENV PATH /usr/bin:/bin"], {"Env": ["PATH=/usr/bin:/bin"]}),
    (['ENV A="a b" C=\'$X\' D=x\\ y'], {"Env": ["A=a b", "C=$X", "D=x y"]}),
    (["ENV A=1", "ENV B=$A-${A}-${NOPE:-dflt}-${A:+set}"], {"Env": ["A=1", "B=1-1-dflt-set"]}),
    (["ENV A=1", "ENV A=2"], {"Env": ["A=2"]}),
    (['LABEL "com.x.y"="v 1" other=2'], {"Labels": {"com.x.y": "v 1", "other": "2"}}),
    (["EXPOSE 8000-8002/udp 9000"], {"ExposedPorts": {"8000/udp": {}, "8001/udp": {}, "8002/udp": {},
                                                     "9000/tcp": {}}}),
    (['VOLUME ["/a", "/b"]'], {"Volumes": {"/a": {}, "/b": {}}}),
    (["VOLUME /a /b"], {"Volumes": {"/a": {}, "/b": {}}}),
    (["WORKDIR /a", "WORKDIR b", "WORKDIR ../c"], {"WorkingDir": "/a/c"}),
    (["ENV D=/data", "WORKDIR $D/x"], {"Env": ["D=/data"], "WorkingDir": "/data/x"}),
    (["USER 1000:1000"], {"User": "1000:1000"}),
    (["STOPSIGNAL 9"], {"StopSignal": "9"}),
    (["STOPSIGNAL SIGRTMIN+3"], {"StopSignal": "SIGRTMIN+3"}),
    (["HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://localhost/"],
     {"Healthcheck": {"Test": ["CMD-SHELL", "curl -f http://localhost/"], "Interval": 30 * 10**9, "Retries": 3}}),
    (['HEALTHCHECK --timeout=1m30s CMD ["true"]'], {"Healthcheck": {"Test": ["CMD", "true"], "Timeout": 90 * 10**9}}),
    (["HEALTHCHECK NONE"], {"Healthcheck": {"Test": ["NONE"]}}),
    (["ONBUILD RUN make"], {"OnBuild": ["RUN make"]}),
    (["cmd \\", " echo continued"], {"Cmd": ["/bin/sh", "-c", "echo continued"]}),
    (["ENV A=1 \\\n  B=2"], {"Env": ["A=1", "B=2"]}),
])
def test_apply_changes(changes, expected):
    assert archive.apply_changes({}, changes) == expected


def test_entrypoint_resets_an_inherited_cmd():
    assert archive.apply_changes({"Cmd": ["sh"]}, ['ENTRYPOINT ["x"]']) == {"Entrypoint": ["x"]}


@pytest.mark.parametrize(("change", "message"), [
    ("RUN x", "^run is not a valid change command$"),
    ("FROM busybox", "^from is not a valid change command$"),
    ("COPY a b", "^copy is not a valid change command$"),
    ("ENV", "ENV requires at least one argument"),
    ("ENV A", "ENV must have two arguments"),
    ("ENV A=1 B", "can't find = in 'B'"),
    ("EXPOSE abc", "invalid containerPort: abc"),
    ("EXPOSE 80/xyz", "invalid proto: xyz"),
    ("EXPOSE 70000", "invalid containerPort: 70000"),
    ("STOPSIGNAL NOPE", "Invalid signal: NOPE"),
    ("WORKDIR", "WORKDIR requires exactly one argument"),
    ("USER a b", "USER requires exactly one argument"),
    ("HEALTHCHECK RUN x", 'Unknown type "RUN" in HEALTHCHECK'),
    ("HEALTHCHECK --interval=abc CMD x", "invalid duration 'abc'"),
    ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD"),
    ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
    ('ENV A="unterminated', "matching double-quote"),
    ("ENV A=${B", "missing '}'"),
    ("ENV A=${B:?must be set}", "B: must be set"),
])
def test_apply_changes_errors(change, message):
    with pytest.raises(archive.ArchiveError, match=message):
        archive.apply_changes({}, [change])


# --- export ---------------------------------------------------------------------------------

def test_export_rootfs_keeps_types_links_and_xattrs_and_follows_no_symlink(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("box\n")
    os.link(root / "etc" / "hostname", root / "etc" / "hostname.bak")
    os.symlink("/etc", root / "hostetc")  # points at the host if followed: must stay a link
    os.symlink("hostname", root / "etc" / "alias")
    os.mkfifo(root / "fifo")
    (root / "empty").mkdir()
    os.chmod(root / "empty", 0o1777)
    os.setxattr(root / "etc" / "hostname", "user.skiff", b"\x00\xffbinary")
    import socket
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    try:
        out = io.BytesIO()
        archive.export_rootfs(str(root), out)
    finally:
        sock.close()
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        members = {m.name: m for m in t.getmembers()}
        assert t.extractfile("etc/hostname").read() == b"box\n"
    assert sorted(members) == ["empty", "etc", "etc/alias", "etc/hostname", "etc/hostname.bak", "fifo", "hostetc"]
    assert members["hostetc"].issym() and members["hostetc"].linkname == "/etc"
    assert members["etc/alias"].issym() and members["etc/alias"].linkname == "hostname"
    assert members["etc/hostname.bak"].islnk() and members["etc/hostname.bak"].linkname == "etc/hostname"
    assert members["fifo"].isfifo()
    assert members["empty"].isdir() and members["empty"].mode == 0o1777
    xattr = members["etc/hostname"].pax_headers["SCHILY.xattr.user.skiff"]
    assert xattr.encode("utf-8", "surrogateescape") == b"\x00\xffbinary"
    assert members["etc/hostname"].uid == os.getuid()
