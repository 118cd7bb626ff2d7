"""The built-in busybox image: reproducible bytes, OCI and docker-archive structure, bundles."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import posixpath
import re
import shutil
import stat
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from skiff.images import builtin
from skiff.images import layers as layers_mod
from skiff.images import ocilayout as oci

BUSYBOX = "/bin/busybox"
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "shared" / "specs" / "oci-image" / "schema"
EXPECTED_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine())

pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static at /bin/busybox")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_member(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    assert f is not None, f"{name} is not a file in the archive"
    return f.read()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[builtin.BuiltImage, builtin.BuiltImage]:
    a = builtin.build(str(tmp_path_factory.mktemp("build-a")))
    b = builtin.build(str(tmp_path_factory.mktemp("build-b") / "nested" / "out"))
    return a, b


@pytest.fixture(scope="module")
def built(two_builds: tuple[builtin.BuiltImage, builtin.BuiltImage]) -> builtin.BuiltImage:
    return two_builds[0]


def _blob(built: builtin.BuiltImage, digest: str) -> bytes:
    return (Path(built.layout_dir) / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def _manifest(built: builtin.BuiltImage) -> dict:
    return json.loads(_blob(built, built.digest))


def _config(built: builtin.BuiltImage) -> dict:
    return json.loads(_blob(built, built.image_id))


def _layer(built: builtin.BuiltImage) -> bytes:
    return _blob(built, _manifest(built)["layers"][0]["digest"])


# --- reproducibility ------------------------------------------------------------------------

def test_two_builds_give_identical_bytes_and_digests(two_builds):
    a, b = two_builds
    assert a.changed and b.changed
    assert (a.digest, a.image_id, a.diff_id) == (b.digest, b.image_id, b.diff_id)
    layout_a, layout_b = _files(Path(a.layout_dir)), _files(Path(b.layout_dir))
    assert layout_a == layout_b
    assert sorted(layout_a) == sorted(
        ["oci-layout", "index.json"] + [f"blobs/sha256/{d.split(':')[1]}" for d in (a.digest, a.image_id, a.diff_id)])
    assert Path(a.archive_path).read_bytes() == Path(b.archive_path).read_bytes()
    for digest in (a.digest, a.image_id, a.diff_id):
        assert _sha256(_blob(a, digest)) == digest


def test_assembling_twice_in_one_process_gives_the_same_image():
    first, _ = builtin.assemble_busybox(BUSYBOX)
    second, _ = builtin.assemble_busybox(BUSYBOX)
    assert [b.data for b in first.blobs] == [b.data for b in second.blobs]


def test_rebuild_into_the_same_directory_writes_nothing(built, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(Path(built.layout_dir).parent, out)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*")}
    again = builtin.build(str(out))
    assert not again.changed
    assert again.digest == built.digest
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*")} == before
    assert builtin.main(["build", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "already up to date" in printed
    assert f"manifest digest: {built.digest}" in printed
    assert f"image id: {built.image_id}" in printed


def test_rebuild_repairs_a_tampered_blob_an_extra_file_and_the_archive(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(Path(built.layout_dir).parent, out)
    layout = out / builtin.LAYOUT_DIRNAME
    layer = layout / "blobs" / "sha256" / built.diff_id.split(":")[1]
    layer.write_bytes(layer.read_bytes()[:-1] + b"x")
    (layout / "blobs" / "sha256" / "stray").write_bytes(b"stray")
    (out / builtin.ARCHIVE_NAME).write_bytes(b"not an archive")
    again = builtin.build(str(out))
    assert again.changed
    assert _files(layout) == _files(Path(built.layout_dir))
    (layout / "blobs" / "sha512").mkdir()  # an extra empty directory is a difference too
    assert builtin.build(str(out)).changed
    assert not (layout / "blobs" / "sha512").exists()
    assert (out / builtin.ARCHIVE_NAME).read_bytes() == Path(built.archive_path).read_bytes()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


# --- the layer ------------------------------------------------------------------------------

def _depth_first_sorted(names: list[str]) -> bool:
    keys = [tuple(n.rstrip("/").split("/")) for n in names]
    return keys == sorted(keys)


def _assert_reproducible_tar(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert _depth_first_sorted(names), names
    assert len(set(names)) == len(names)
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0), m.name
        assert m.pax_headers == {}, m.name
        header = data[m.offset:m.offset + 512]
        assert header[257:265] == b"ustar\x0000", f"{m.name}: not a POSIX ustar header"
        assert header[156:157] in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE), m.name
    assert len(data) % tarfile.RECORDSIZE == 0
    return members


def test_layer_tar_is_sorted_ustar_with_fixed_metadata(built):
    members = _assert_reproducible_tar(_layer(built))
    assert members[0].name == "bin" and members[0].isdir()


def test_rootfs_holds_busybox_applet_links_and_system_files(built):
    with tarfile.open(fileobj=io.BytesIO(_layer(built))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        busybox = _read_member(tar, "bin/busybox")
        passwd = _read_member(tar, "etc/passwd").decode()
        group = _read_member(tar, "etc/group").decode()
    assert busybox == Path(BUSYBOX).read_bytes()
    assert stat.S_IMODE(members["bin/busybox"].mode) == 0o755
    regular = sorted(n for n, m in members.items() if m.isreg())
    assert regular == ["bin/busybox", "etc/group", "etc/passwd"]
    listed = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    applets = [a for a in listed if posixpath.dirname(a) in builtin.APPLET_DIRS and a != "bin/busybox"]
    assert len(applets) > 200
    for applet in applets:
        m = members[applet]
        assert m.issym(), applet
        assert not m.linkname.startswith("/"), applet
        assert posixpath.normpath(posixpath.join(posixpath.dirname(applet), m.linkname)) == "bin/busybox"
    symlinks = {n for n, m in members.items() if m.issym()}
    assert symlinks == set(applets)
    assert "linuxrc" not in members
    assert members["bin/sh"].linkname == "busybox"
    assert members["usr/bin/env"].linkname == "../../bin/busybox"
    modes = {n: stat.S_IMODE(m.mode) for n, m in members.items() if m.isdir()}
    assert modes["tmp"] == 0o1777
    assert modes["root"] == 0o700
    for mount_point in ("dev", "proc", "sys"):
        assert modes[mount_point] == 0o755
        assert not [n for n in members if n.startswith(mount_point + "/")]
    assert passwd.splitlines()[0] == "root:x:0:0:root:/root:/bin/sh"
    assert "nobody:x:65534:65534:" in passwd
    assert "tty:x:5:" in group.splitlines()


# --- config, manifest, index: content and the OCI schemas -----------------------------------

def test_image_config_content(built):
    config = _config(built)
    assert config["architecture"] == (EXPECTED_ARCH or config["architecture"])
    assert config["os"] == "linux"
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert config["config"] == {"Env": [builtin.PATH_ENV], "Cmd": ["sh"]}
    assert config["rootfs"] == {"type": "layers", "diff_ids": [_sha256(_layer(built))]}
    assert len(config["history"]) == 1
    assert config["history"][0]["comment"].startswith("BusyBox v")
    manifest = _manifest(built)
    assert manifest["mediaType"] == oci.MEDIA_TYPE_MANIFEST
    assert manifest["config"] == {"mediaType": oci.MEDIA_TYPE_CONFIG, "digest": built.image_id,
                                  "size": len(_blob(built, built.image_id))}
    assert manifest["layers"] == [{"mediaType": oci.MEDIA_TYPE_LAYER, "digest": built.diff_id,
                                   "size": len(_layer(built))}]


def test_index_names_the_image(built):
    index = json.loads((Path(built.layout_dir) / "index.json").read_bytes())
    [entry] = index["manifests"]
    assert entry["digest"] == built.digest
    assert entry["size"] == len(_blob(built, built.digest))
    assert entry["annotations"] == {"io.containerd.image.name": "docker.io/library/busybox:latest",
                                    "org.opencontainers.image.ref.name": "latest"}
    assert entry["platform"] == {"architecture": _config(built)["architecture"], "os": "linux"}
    assert json.loads((Path(built.layout_dir) / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}


def _validator(schema_file: str):
    jsonschema = pytest.importorskip("jsonschema")
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    def retrieve(uri: str) -> Resource:
        # The schemas refer to each other by file name relative to their ids.
        contents = json.loads((SCHEMA_DIR / uri.rsplit("/", 1)[-1]).read_text())
        return Resource.from_contents(contents, default_specification=DRAFT4)

    schema = json.loads((SCHEMA_DIR / schema_file).read_text())
    return jsonschema.Draft4Validator(schema, registry=Registry(retrieve=retrieve))  # type: ignore[call-arg]


def test_layout_validates_against_the_oci_image_schemas(built):
    layout = Path(built.layout_dir)
    documents = {
        "image-layout-schema.json": json.loads((layout / "oci-layout").read_bytes()),
        "image-index-schema.json": json.loads((layout / "index.json").read_bytes()),
        "image-manifest-schema.json": _manifest(built),
        "config-schema.json": _config(built),
    }
    for schema_file, doc in documents.items():
        errors = [e.message for e in _validator(schema_file).iter_errors(doc)]
        assert errors == [], schema_file
    # and the validators do reject what the spec forbids
    # (through the cross-file references: the descriptor's digest and size rules live in defs*.json)
    broken = dict(_manifest(built), config={"mediaType": oci.MEDIA_TYPE_CONFIG, "digest": "no digest", "size": 1})
    assert list(_validator("image-manifest-schema.json").iter_errors(broken))
    broken = dict(_manifest(built), config={"mediaType": oci.MEDIA_TYPE_CONFIG, "digest": built.image_id,
                                            "size": "458"})
    assert list(_validator("image-manifest-schema.json").iter_errors(broken))
    assert list(_validator("config-schema.json").iter_errors({"architecture": 1, "os": "linux"}))


# --- the docker archive ---------------------------------------------------------------------

def test_docker_archive_is_a_legacy_archive_and_the_same_oci_layout(built):
    data = Path(built.archive_path).read_bytes()
    _assert_reproducible_tar(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = {m.name: _read_member(tar, m.name) for m in tar.getmembers() if m.isreg()}
    assert set(files) == set(_files(Path(built.layout_dir))) | {"manifest.json", "repositories"}
    for name, content in _files(Path(built.layout_dir)).items():
        assert files[name] == content, name
    [item] = json.loads(files["manifest.json"])
    assert item["RepoTags"] == ["busybox:latest"]
    assert item["Config"] == "blobs/sha256/" + built.image_id.split(":")[1]
    for path in [item["Config"], *item["Layers"]]:
        assert path in files
        assert _sha256(files[path]) == "sha256:" + path.rsplit("/", 1)[1]
    config = json.loads(files[item["Config"]])
    assert [_sha256(files[p]) for p in item["Layers"]] == config["rootfs"]["diff_ids"]
    assert item["LayerSources"] == {built.diff_id: {"mediaType": oci.MEDIA_TYPE_LAYER,
                                                    "size": len(files[item["Layers"][0]]),
                                                    "digest": built.diff_id}}
    assert json.loads(files["repositories"]) == {"busybox": {"latest": built.diff_id.split(":")[1]}}
    assert files["manifest.json"].endswith(b"\n") and files["repositories"].endswith(b"\n")


def test_reference_archive_shape_is_matched_where_it_matters(built):
    """The reference (an older ``docker save``) and ours agree on what docker load reads."""
    reference = Path(__file__).resolve().parents[3] / "shared" / "images" / "busybox.tar"
    if not reference.exists():
        pytest.skip(f"reference archive {reference} not present")
    with tarfile.open(reference) as tar:
        [ref_item] = json.loads(_read_member(tar, "manifest.json"))
        ref_config = json.loads(_read_member(tar, ref_item["Config"]))
    config = _config(built)
    assert ref_item["RepoTags"] == ["busybox:latest"]
    assert (config["architecture"], config["os"], config["config"]["Cmd"]) == (
        ref_config["architecture"], ref_config["os"], ref_config["config"]["Cmd"])


# --- the input binary -----------------------------------------------------------------------

def test_elf_architecture_of_busybox_and_refusals(tmp_path):
    data = Path(BUSYBOX).read_bytes()
    arch = builtin.elf_architecture(data, BUSYBOX)
    assert arch == (EXPECTED_ARCH or arch)
    dynamic = Path(shutil.which("ls") or "/bin/ls").resolve()
    with pytest.raises(builtin.BuildError, match="dynamically linked"):
        builtin.elf_architecture(dynamic.read_bytes(), str(dynamic))
    with pytest.raises(builtin.BuildError, match="not an ELF"):
        builtin.elf_architecture(b"#!/bin/sh\n", "script")
    with pytest.raises(builtin.BuildError, match="truncated"):
        builtin.elf_architecture(data[:40], "short")
    # Synthetic headers without program headers (so static): the architecture table itself.
    arm64 = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 2, 183, 1, 0, 64, 0, 0,
                                                                     64, 56, 0, 0, 0, 0)
    assert builtin.elf_architecture(arm64, "arm64") == "arm64"
    arm32 = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9) + struct.pack("<HHIIIIIHHHHHH", 2, 40, 1, 0, 52, 0, 0,
                                                                     52, 32, 0, 0, 0, 0)
    with pytest.raises(builtin.BuildError, match=r"ELF machine 40 \(32-bit\) has no OCI architecture"):
        builtin.elf_architecture(arm32, "arm32")


def test_build_refuses_a_missing_or_dynamic_busybox(tmp_path):
    with pytest.raises(builtin.BuildError, match=r"read .*/nope: No such file"):
        builtin.build(str(tmp_path / "out"), busybox=str(tmp_path / "nope"))
    with pytest.raises(builtin.BuildError, match="dynamically linked"):
        builtin.build(str(tmp_path / "out"), busybox=str(Path("/bin/ls").resolve()))
    assert not (tmp_path / "out").exists()


def test_reproducible_tar_refuses_orphans_duplicates_and_unclean_names():
    with pytest.raises(ValueError, match="its directory 'a' is not a member"):
        oci.reproducible_tar([oci.file_member("a/b", b"")])
    with pytest.raises(ValueError, match="listed twice"):
        oci.reproducible_tar([oci.dir_member("a"), oci.dir_member("a/")])
    with pytest.raises(ValueError, match="not a clean relative path"):
        oci.reproducible_tar([oci.file_member("/etc/x", b"")])
    with pytest.raises(ValueError, match="not a clean relative path"):
        oci.reproducible_tar([oci.dir_member("a"), oci.file_member("a/../b", b"")])


# --- bundles --------------------------------------------------------------------------------

def test_make_bundle_from_the_built_image(built, tmp_path):
    bundle = builtin.make_bundle(built.layout_dir, str(tmp_path / "bundle"), ["echo", "hello"])
    rootfs = Path(bundle) / "rootfs"
    assert (rootfs / "bin" / "busybox").read_bytes() == Path(BUSYBOX).read_bytes()
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    assert os.readlink(rootfs / "usr" / "bin" / "env") == "../../bin/busybox"
    assert stat.S_IMODE((rootfs / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((rootfs / "root").stat().st_mode) == 0o700
    assert (rootfs / "bin" / "busybox").stat().st_mtime == 0
    config = json.loads((Path(bundle) / "config.json").read_text())
    assert config["process"]["args"] == ["echo", "hello"]
    assert config["process"]["terminal"] is False
    assert config["process"]["cwd"] == "/"
    assert builtin.PATH_ENV in config["process"]["env"]
    assert [e for e in config["process"]["env"] if e.startswith("PATH=")] == [builtin.PATH_ENV]
    assert config["root"]["path"] == "rootfs"


def test_make_bundle_defaults_to_the_image_cmd_and_refuses_a_used_rootfs(built, tmp_path):
    bundle = builtin.make_bundle(built.layout_dir, str(tmp_path / "b"), None)
    assert json.loads((Path(bundle) / "config.json").read_text())["process"]["args"] == ["sh"]
    with pytest.raises(builtin.BundleError, match="not empty"):
        builtin.make_bundle(built.layout_dir, bundle, None)


def test_bundle_command_line(built, tmp_path, capsys):
    out = tmp_path / "cli"
    assert builtin.main(["bundle", "--image", built.layout_dir, "--out", str(out), "--", "ls", "-l", "/"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert json.loads((out / "config.json").read_text())["process"]["args"] == ["ls", "-l", "/"]
    assert builtin.main(["bundle", "--image", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 1
    assert "oci-layout" in capsys.readouterr().err


# --- layer application: whiteouts, refusals, verification (synthetic layouts) ---------------

def _tar(*entries: tuple) -> bytes:
    """Entries: (name, "dir"|"file"|"sym"|"link"|"chr", payload, mode)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, payload, *rest in entries:
            info = tarfile.TarInfo(name)
            info.mode = rest[0] if rest else 0o755
            info.mtime = 1_000_000
            data = None
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                info.size = len(data)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "blk":
                info.type, info.devmajor, info.devminor = tarfile.BLKTYPE, 7, 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _layout(root: Path, layers: list[bytes], *, gzipped: bool = False, config: dict | None = None,
            diff_ids: list[str] | None = None) -> str:
    blobs = [oci.Blob(oci.MEDIA_TYPE_LAYER_GZIP, gzip.compress(d, mtime=0)) if gzipped
             else oci.Blob(oci.MEDIA_TYPE_LAYER, d) for d in layers]
    image_config = {
        "architecture": "amd64", "os": "linux", "config": config or {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids or [_sha256(d) for d in layers]},
    }
    image = oci.assemble(image_config, blobs)
    oci.write_tree(str(root), oci.layout_files(image, "example.test/t:latest"))
    return str(root)


def test_whiteouts_hide_lower_content_only(tmp_path):
    lower = _tar(("a", "dir", None), ("a/keep", "file", "k"), ("a/gone", "file", "g"),
                 ("a/gonedir", "dir", None), ("a/gonedir/x", "file", "x"),
                 ("b", "dir", None), ("b/old", "file", "o"), ("b/sub", "dir", None), ("b/sub/deep", "file", "d"))
    upper = _tar(("a/.wh.gone", "file", ""), ("a/.wh.gonedir", "file", ""),
                 ("b/new", "file", "n"), ("b/sub", "dir", None), ("b/sub/fresh", "file", "f"),
                 ("b/.wh..wh..opq", "file", ""), ("a/.wh.never-existed", "file", ""))
    bundle = Path(builtin.make_bundle(_layout(tmp_path / "layout", [lower, upper]), str(tmp_path / "bundle"), None))
    rootfs = bundle / "rootfs"
    assert (rootfs / "a" / "keep").read_text() == "k"
    assert not (rootfs / "a" / "gone").exists()
    assert not (rootfs / "a" / "gonedir").exists()
    assert sorted(p.name for p in (rootfs / "b").iterdir()) == ["new", "sub"]  # opaque: lower "old" hidden
    assert sorted(p.name for p in (rootfs / "b" / "sub").iterdir()) == ["fresh"]  # lower "deep" hidden
    assert not list(rootfs.rglob(".wh.*"))


def test_links_are_resolved_inside_the_rootfs_and_never_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("host file")
    lower = _tar(("abs", "sym", "/"), ("up", "sym", "../../../../.."), ("f", "sym", str(victim)),
                 ("etc", "dir", None))
    upper = _tar(("abs/via-abs", "file", "1"), ("up/via-up", "file", "2"), ("f", "file", "replaced"),
                 ("etc/hard", "link", "via-abs"))
    bundle = Path(builtin.make_bundle(_layout(tmp_path / "layout", [lower, upper]), str(tmp_path / "bundle"), None))
    rootfs = bundle / "rootfs"
    assert (rootfs / "via-abs").read_text() == "1"
    assert (rootfs / "via-up").read_text() == "2"
    assert (rootfs / "f").read_text() == "replaced" and not (rootfs / "f").is_symlink()
    assert victim.read_text() == "host file"
    assert os.path.samefile(rootfs / "etc" / "hard", rootfs / "via-abs")
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]


@pytest.mark.parametrize(("layer", "message"), [
    (_tar(("../evil", "file", "x")), "member '../evil': path '../evil' leaves the root"),
    (_tar(("a/../../evil", "file", "x")), "leaves the root"),
    (_tar(("null", "chr", None)), "member 'null': device nodes are refused"),
    (_tar(("ok", "file", "x"), ("blk", "blk", None)), "member 'blk': device nodes are refused"),
    (_tar(("h", "link", "../outside")), "hard link target: path '../outside' leaves the root"),
    (_tar(("h", "link", "missing")), "hard link target 'missing' does not exist"),
    (_tar(("a/.wh...", "file", "")), "malformed whiteout"),
])
def test_escaping_or_special_members_are_refused(tmp_path, layer, message):
    layout = _layout(tmp_path / "layout", [layer])
    with pytest.raises(builtin.BundleError, match=re.escape(f"{layout}: layer 0: ") + ".*" + re.escape(message)):
        builtin.make_bundle(layout, str(tmp_path / "bundle" / "b"), None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "layout"]
    assert not (tmp_path / "evil").exists() and not (tmp_path / "bundle" / "evil").exists()


def test_absolute_member_names_land_inside_the_rootfs(tmp_path):
    """A leading / is dropped (as Docker and GNU tar do), so the member stays in the rootfs."""
    layer = _tar(("/abs", "file", "x"), ("/etc", "dir", None), ("//etc/conf", "file", "c"))
    bundle = Path(builtin.make_bundle(_layout(tmp_path / "layout", [layer]), str(tmp_path / "bundle"), None))
    assert (bundle / "rootfs" / "abs").read_text() == "x"
    assert (bundle / "rootfs" / "etc" / "conf").read_text() == "c"


def test_make_bundle_applies_with_the_layer_extractor_and_its_strict_policy(tmp_path, monkeypatch):
    """make_bundle has no extractor of its own: every layer goes through
    skiff.images.layers.apply_layer with devices refused and setuid/setgid dropped."""
    from skiff.images import layers

    calls = []
    real = layers.apply_layer

    def spy(stream, root, **kw):
        calls.append((root, kw))
        return real(stream, root, **kw)

    monkeypatch.setattr(layers, "apply_layer", spy)
    layout = _layout(tmp_path / "layout", [_tar(("a", "file", "1")), _tar(("b", "file", "2"))])
    bundle = Path(builtin.make_bundle(layout, str(tmp_path / "bundle"), None))
    assert [root for root, _ in calls] == [str(bundle / "rootfs")] * 2
    for _, kw in calls:
        assert kw["allow_devices"] is False and kw["keep_setid"] is False and kw["whiteout"] == "delete"


def test_zstd_layers(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    layer = _tar(("z", "file", "zstd content"))
    blob = oci.Blob(layers_mod.MEDIA_TYPES_ZSTD[0], zstandard.ZstdCompressor().compress(layer))
    image_config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                    "rootfs": {"type": "layers", "diff_ids": [_sha256(layer)]}}
    oci.write_tree(str(tmp_path / "layout"), oci.layout_files(oci.assemble(image_config, [blob]), "example.test/z:latest"))
    bundle = Path(builtin.make_bundle(str(tmp_path / "layout"), str(tmp_path / "bundle"), None))
    assert (bundle / "rootfs" / "z").read_text() == "zstd content"


def test_modes_owner_bits_and_gzip_layers(tmp_path):
    layer = _tar(("t", "dir", None, 0o1777), ("su", "file", "x", 0o4755), ("ro", "file", "r", 0o444),
                 ("sg", "file", "g", 0o3775), ("sgdir", "dir", None, 0o2755))
    bundle = Path(builtin.make_bundle(_layout(tmp_path / "layout", [layer], gzipped=True),
                                      str(tmp_path / "bundle"), None))
    rootfs = bundle / "rootfs"
    assert stat.S_IMODE((rootfs / "t").stat().st_mode) == 0o1777
    assert stat.S_IMODE((rootfs / "su").stat().st_mode) == 0o755  # setuid dropped
    assert stat.S_IMODE((rootfs / "sg").stat().st_mode) == 0o1775  # setgid dropped, sticky kept
    assert stat.S_IMODE((rootfs / "sgdir").stat().st_mode) == 0o755
    assert stat.S_IMODE((rootfs / "ro").stat().st_mode) == 0o444
    assert (rootfs / "t").stat().st_mtime == 1_000_000


def test_digest_and_diff_id_mismatches_are_refused(tmp_path):
    layer = _tar(("x", "file", "x"))
    layout = _layout(tmp_path / "l1", [layer], diff_ids=[_sha256(b"something else")])
    with pytest.raises(builtin.BundleError, match="does not match diff_id"):
        builtin.make_bundle(layout, str(tmp_path / "b1"), None)
    tampered = Path(_layout(tmp_path / "l2", [layer]))
    blob = tampered / "blobs" / "sha256" / _sha256(layer).split(":")[1]
    blob.write_bytes(blob.read_bytes().replace(b"x", b"y", 1))
    with pytest.raises(builtin.BundleError, match="does not match its descriptor"):
        builtin.make_bundle(str(tampered), str(tmp_path / "b2"), None)


def test_image_settings_reach_the_bundle_config(tmp_path):
    layer = _tar(("etc", "dir", None),
                 ("etc/passwd", "file", "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"),
                 ("etc/group", "file", "root:x:0:\napp:x:1001:\nextra:x:2000:app,other\nstaff:x:50:\n"))
    config = {"Env": ["PATH=/opt/bin:/bin", "FOO=bar"], "Entrypoint": ["/entry"], "Cmd": ["--default"],
              "WorkingDir": "work/dir", "User": "app"}
    bundle = Path(builtin.make_bundle(_layout(tmp_path / "layout", [layer], config=config),
                                      str(tmp_path / "bundle"), None))
    process = json.loads((bundle / "config.json").read_text())["process"]
    assert process["args"] == ["/entry", "--default"]
    assert "PATH=/opt/bin:/bin" in process["env"] and "FOO=bar" in process["env"]
    assert len([e for e in process["env"] if e.startswith("PATH=")]) == 1
    assert process["cwd"] == "/work/dir"
    assert process["user"] == {"uid": 1000, "gid": 1001, "additionalGids": [2000]}
    rootfs = str(bundle / "rootfs")
    assert builtin.resolve_user(rootfs, "app:staff") == {"uid": 1000, "gid": 50}
    assert builtin.resolve_user(rootfs, "4242") == {"uid": 4242, "gid": 0}
    assert builtin.resolve_user(rootfs, "1000:7") == {"uid": 1000, "gid": 7}
    with pytest.raises(builtin.BundleError, match="no user 'ghost'"):
        builtin.resolve_user(rootfs, "ghost")
    with pytest.raises(builtin.BundleError, match="no group 'ghosts'"):
        builtin.resolve_user(rootfs, "app:ghosts")


def test_an_image_without_command_needs_args(tmp_path):
    layout = _layout(tmp_path / "layout", [_tar(("x", "file", "x"))], config={"Env": ["A=b"]})
    with pytest.raises(builtin.BundleError, match="no command"):
        builtin.make_bundle(layout, str(tmp_path / "b1"), None)
    bundle = builtin.make_bundle(layout, str(tmp_path / "b2"), ["/x"])
    assert json.loads((Path(bundle) / "config.json").read_text())["process"]["args"] == ["/x"]
