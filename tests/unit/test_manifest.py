"""Media types, manifests, indexes, configs, platforms and platform selection."""

from __future__ import annotations

import json

import pytest

from skiff.images import manifest as mf
from skiff.images.content import Descriptor
from skiff.images.errors import InvalidArgument, NotFound

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
D4 = "sha256:" + "4" * 64


def _manifest_doc(media_type: str | None = mf.OCI_MANIFEST) -> dict:
    doc: dict = {"schemaVersion": 2}
    if media_type:
        doc["mediaType"] = media_type
    doc["config"] = {"mediaType": mf.OCI_CONFIG, "digest": D1, "size": 10}
    doc["layers"] = [{"mediaType": mf.OCI_LAYER_GZIP, "digest": D2, "size": 20},
                     {"mediaType": mf.OCI_LAYER, "digest": D3, "size": 30}]
    return doc


def _index_doc(entries: list[tuple[str, dict | None]], media_type: str = mf.OCI_INDEX) -> dict:
    manifests = []
    for digest, platform in entries:
        d: dict = {"mediaType": mf.OCI_MANIFEST, "digest": digest, "size": 100}
        if platform is not None:
            d["platform"] = platform
        manifests.append(d)
    return {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}


def _b(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


# --- media types and documents --------------------------------------------------------------

@pytest.mark.parametrize(("doc", "expected"), [
    (_manifest_doc(), mf.OCI_MANIFEST),
    (_manifest_doc(None), mf.OCI_MANIFEST),
    (_manifest_doc(mf.DOCKER_MANIFEST), mf.DOCKER_MANIFEST),
    (_index_doc([]), mf.OCI_INDEX),
    ({"schemaVersion": 2, "manifests": []}, mf.OCI_INDEX),
    (_index_doc([], mf.DOCKER_MANIFEST_LIST), mf.DOCKER_MANIFEST_LIST),
    ({"schemaVersion": 1, "name": "x", "fsLayers": [], "signatures": []}, mf.DOCKER_SCHEMA1_SIGNED),
])
def test_detect_media_type(doc, expected):
    assert mf.detect_media_type(_b(doc)) == expected


def test_detect_media_type_refuses_what_is_no_manifest():
    with pytest.raises(InvalidArgument, match="neither a manifest nor an index"):
        mf.detect_media_type(b'{"schemaVersion": 2}')
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        mf.detect_media_type(b"{nope")
    with pytest.raises(InvalidArgument, match="expected a JSON object"):
        mf.detect_media_type(b"[1]")


def test_parse_manifest_reads_descriptors_and_round_trips():
    data = _b(_manifest_doc())
    m = mf.parse_manifest(data)
    assert m.media_type == mf.OCI_MANIFEST
    assert m.config.digest == D1 and [d.digest for d in m.layers] == [D2, D3]
    assert m.to_bytes() == data
    assert mf.children(Descriptor(mf.OCI_MANIFEST, D4, len(data)), data) == [m.config, *m.layers]


def test_parse_manifest_names_the_bad_field():
    doc = _manifest_doc()
    doc["layers"][1]["digest"] = "sha256:nothex"
    with pytest.raises(InvalidArgument, match=r"^manifest\.layers\[1\]\.digest"):
        mf.parse_manifest(_b(doc))
    doc = _manifest_doc()
    doc["schemaVersion"] = 3
    with pytest.raises(InvalidArgument, match=r"manifest\.schemaVersion: expected 2, got 3"):
        mf.parse_manifest(_b(doc))
    doc = _manifest_doc()
    doc["layers"] = {}
    with pytest.raises(InvalidArgument, match=r"manifest\.layers: expected an array"):
        mf.parse_manifest(_b(doc))


def test_parse_manifest_refuses_an_index_and_a_contradicting_descriptor():
    with pytest.raises(InvalidArgument, match="is not one of"):
        mf.parse_manifest(_b(_index_doc([])))
    with pytest.raises(InvalidArgument, match="its descriptor says"):
        mf.parse_manifest(_b(_manifest_doc()), mf.DOCKER_MANIFEST)
    # without a mediaType field the descriptor's type is taken
    m = mf.parse_manifest(_b(_manifest_doc(None)), mf.DOCKER_MANIFEST)
    assert m.media_type == mf.DOCKER_MANIFEST


def test_schema1_is_refused_with_dockers_explanation():
    doc = {"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": [], "history": []}
    with pytest.raises(InvalidArgument, match="schema 1 is not supported"):
        mf.parse_manifest(_b(doc))


def test_parse_index_and_children():
    doc = _index_doc([(D1, {"architecture": "amd64", "os": "linux"}), (D2, None)])
    idx = mf.parse_index(_b(doc))
    assert [d.digest for d in idx.manifests] == [D1, D2]
    assert idx.manifests[0].platform == {"architecture": "amd64", "os": "linux"}
    assert idx.to_bytes() == _b(doc)
    with pytest.raises(InvalidArgument, match=r"index\.manifests: expected an array"):
        mf.parse_index(b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":3}')


def test_parse_config_checks_the_fields_consumers_use():
    cfg = {"architecture": "arm64", "os": "linux", "variant": "v8", "config": {"Cmd": ["sh"]},
           "rootfs": {"type": "layers", "diff_ids": [D1]}, "history": [{"created_by": "x"}]}
    c = mf.parse_config(_b(cfg))
    assert c.diff_ids == [D1] and c.config == {"Cmd": ["sh"]}
    assert str(c.platform.normalized()) == "linux/arm64"
    for broken, message in [
        ({**cfg, "rootfs": {"type": "zfs", "diff_ids": []}}, r"rootfs\.type: expected 'layers'"),
        ({**cfg, "rootfs": {"type": "layers", "diff_ids": ["x"]}}, r"rootfs\.diff_ids\[0\]"),
        ({k: v for k, v in cfg.items() if k != "os"}, r"image config\.os: missing"),
        ({**cfg, "config": []}, r"image config\.config: expected an object"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            mf.parse_config(_b(broken))


@pytest.mark.parametrize(("media_type", "kind"), [
    (mf.OCI_MANIFEST, "manifest"), (mf.DOCKER_MANIFEST, "manifest"), (mf.OCI_INDEX, "index"),
    (mf.DOCKER_MANIFEST_LIST, "index"), (mf.DOCKER_LAYER_GZIP, "layer"), (mf.OCI_LAYER_ZSTD, "layer"),
    (mf.OCI_CONFIG, "config"), (mf.DOCKER_CONFIG, "config"), ("application/x-other", "unknown"),
])
def test_ref_key_is_containerds(media_type, kind):
    assert mf.ref_key(Descriptor(media_type, D1, 1)) == f"{kind}-{D1}"


def test_layer_compression_and_detection():
    assert mf.layer_compression(mf.DOCKER_LAYER_GZIP) == "gzip"
    assert mf.layer_compression(mf.OCI_LAYER) == ""
    assert mf.layer_compression(mf.OCI_LAYER_ZSTD) == "zstd"
    with pytest.raises(InvalidArgument, match="not a layer media type"):
        mf.layer_compression(mf.OCI_CONFIG)
    assert mf.detect_compression(b"\x1f\x8b\x08\x00") == "gzip"
    assert mf.detect_compression(b"\x28\xb5\x2f\xfd\x00") == "zstd"
    assert mf.detect_compression(b"BZh91AY") == "bzip2"
    assert mf.detect_compression(b"\xfd7zXZ\x00") == "xz"
    assert mf.detect_compression(b"bin/\x00\x00") == ""


def test_gc_labels_are_containerds():
    data = _b(_manifest_doc())
    labels = mf.gc_labels(Descriptor(mf.OCI_MANIFEST, D4, len(data)), data)
    assert labels == {"containerd.io/gc.ref.content.config": D1, "containerd.io/gc.ref.content.l.0": D2,
                      "containerd.io/gc.ref.content.l.1": D3}
    idata = _b(_index_doc([(D1, None), (D2, None), (D3, None)]))
    desc = Descriptor(mf.OCI_INDEX, D4, len(idata))
    assert mf.gc_labels(desc, idata) == {"containerd.io/gc.ref.content.m.0": D1,
                                         "containerd.io/gc.ref.content.m.1": D2,
                                         "containerd.io/gc.ref.content.m.2": D3}
    assert mf.gc_labels(desc, idata, only={D2}) == {"containerd.io/gc.ref.content.m.1": D2}


# --- platforms ------------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "normalised"), [
    (("linux", "x86_64", ""), "linux/amd64"),
    (("linux", "x86-64", ""), "linux/amd64"),
    (("linux", "amd64", "v1"), "linux/amd64"),
    (("linux", "amd64", "v3"), "linux/amd64/v3"),
    (("linux", "aarch64", ""), "linux/arm64"),
    (("linux", "arm64", "v8"), "linux/arm64"),
    (("linux", "arm64", "8"), "linux/arm64"),
    (("linux", "armhf", ""), "linux/arm/v7"),
    (("linux", "armel", ""), "linux/arm/v6"),
    (("linux", "arm", ""), "linux/arm/v7"),
    (("linux", "arm", "6"), "linux/arm/v6"),
    (("linux", "i386", ""), "linux/386"),
    (("Linux", "AMD64", ""), "linux/amd64"),
    (("macos", "arm64", ""), "darwin/arm64"),
])
def test_platform_normalisation(given, normalised):
    assert str(mf.Platform(*given).normalized()) == normalised


@pytest.mark.parametrize(("spec", "expected"), [
    ("linux/arm64", "linux/arm64"),
    ("linux/arm/v6", "linux/arm/v6"),
    ("linux/aarch64", "linux/arm64"),
    ("arm64", "linux/arm64"),
    ("windows/amd64", "windows/amd64"),
])
def test_parse_platform(spec, expected):
    assert str(mf.parse_platform(spec)) == expected


def test_parse_platform_refuses_malformed_specs():
    for bad in ["", "linux//amd64", "a/b/c/d", "linux/am d64"]:
        with pytest.raises(InvalidArgument, match="platform"):
            mf.parse_platform(bad)
    assert mf.parse_platform("linux").os == "linux"


def test_default_platform_is_the_hosts():
    p = mf.default_platform()
    assert p.os == "linux" and p.architecture in ("amd64", "arm64", "386", "arm", "ppc64le", "s390x", "riscv64")


@pytest.mark.parametrize(("wanted", "candidate", "rank"), [
    ("linux/amd64", "linux/amd64", 0),
    ("linux/amd64", "linux/386", 1),
    ("linux/amd64", "linux/arm64", None),
    ("linux/amd64", "windows/amd64", None),
    ("linux/amd64/v3", "linux/amd64/v2", 1),
    ("linux/amd64/v3", "linux/amd64", 2),
    ("linux/amd64", "linux/amd64/v3", None),
    ("linux/arm64", "linux/arm64/v8", 0),
    ("linux/arm64", "linux/arm/v8", 1),
    ("linux/arm64", "linux/arm/v7", 2),
    ("linux/arm64", "linux/arm/v5", 4),
    ("linux/arm/v7", "linux/arm/v6", 1),
    ("linux/arm/v6", "linux/arm/v7", None),
])
def test_platform_matcher_ranks_like_containerd_only(wanted, candidate, rank):
    matcher = mf.PlatformMatcher(wanted)
    assert matcher.rank(mf.parse_platform(candidate)) == rank
    assert matcher.match(mf.parse_platform(candidate)) is (rank is not None)


def test_select_manifests_orders_best_first_and_skips_attestations():
    doc = _index_doc([
        (D1, {"architecture": "arm", "os": "linux", "variant": "v7"}),
        (D2, {"architecture": "unknown", "os": "unknown"}),  # buildx attestation manifest
        (D3, {"architecture": "arm64", "os": "linux"}),
        (D4, None),
    ])
    idx = mf.parse_index(_b(doc))
    chosen = mf.select_manifests(idx, mf.PlatformMatcher("linux/arm64"))
    assert [d.digest for d in chosen] == [D3, D1]
    assert mf.select_manifests(idx, mf.PlatformMatcher("linux/s390x")) == []
    err = mf.no_match_error(mf.PlatformMatcher("linux/s390x"))
    assert isinstance(err, NotFound)
    assert str(err) == "no matching manifest for linux/s390x in the manifest list entries"


def test_platform_json_round_trip():
    p = mf.Platform.from_json({"architecture": "arm", "os": "linux", "variant": "v7", "os.version": "1"})
    assert p.to_json() == {"architecture": "arm", "os": "linux", "os.version": "1", "variant": "v7"}
    with pytest.raises(InvalidArgument):
        mf.Platform.from_json({"os": "linux"})
