"""Image formats: media types, manifests, indexes, image configs and platform matching.

Both families are understood: OCI (image-spec 1.1: index, manifest, config, layers) and
Docker's registry v2 schema 2 (manifest list, manifest, container config, layers), which differ
in media types only. Docker schema 1 (signed JSON manifests) was dropped by Docker 25 and is
refused with Docker's explanation.

Parsing (``parse_manifest``, ``parse_index``, ``parse_config``) checks the fields a consumer
relies on and names a bad field by its JSON path under ``where``; unknown fields are kept in
``raw``. ``detect_media_type`` reads the ``mediaType`` field, or infers it from the document's
shape when absent (OCI allows that).

Platforms are containerd's: ``os/architecture[/variant]``, normalised (``x86_64`` -> ``amd64``,
``aarch64`` -> ``arm64``, ``armhf`` -> ``arm/v7``, ``arm64/v8`` -> ``arm64``, bare ``arm`` ->
``arm/v7``). ``PlatformMatcher`` is containerd's ``platforms.Only``: a platform matches itself
and the ones its machine also runs, best first (``arm64`` -> ``arm/v8``, ``arm/v7`` .. ``arm/v5``;
``arm/v7`` -> ``arm/v6``, ``arm/v5``; ``amd64/v3`` -> ``amd64/v2``, ``amd64``; ``amd64`` -> ``386``).
The default platform is ``linux/amd64`` on this machine (the host's, normalised).

Garbage-collection labels: containerd keeps the graph of content in labels on the parent
blobs (``containerd.io/gc.ref.content.config``, ``...l.<i>`` for layers, ``...m.<i>`` for the
manifests of an index); ``gc_labels`` computes them.
"""

from __future__ import annotations

import json
import platform as _host_platform

from skiff.images import ocilayout
from skiff.images.content import Descriptor
from skiff.images.errors import InvalidArgument, NotFound
from skiff.images.ocilayout import json_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

# --- media types ----------------------------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"  # uncompressed (containerd's name)
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

ANNOTATION_REF_NAME = ocilayout.ANNOTATION_REF_NAME  # "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = ocilayout.ANNOTATION_IMAGE_NAME  # containerd's "io.containerd.image.name"

INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
SCHEMA1_TYPES = (DOCKER_SCHEMA1_MANIFEST, DOCKER_SCHEMA1_SIGNED)

# compression of each layer media type: "" (none), "gzip" or "zstd"
LAYER_TYPES = {
    OCI_LAYER: "", OCI_LAYER_GZIP: "gzip", OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST: "", OCI_LAYER_NONDIST_GZIP: "gzip", OCI_LAYER_NONDIST_ZSTD: "zstd",
    DOCKER_LAYER: "", DOCKER_LAYER_GZIP: "gzip", DOCKER_LAYER_ZSTD: "zstd", DOCKER_FOREIGN_LAYER: "gzip",
}
NON_DISTRIBUTABLE_TYPES = (OCI_LAYER_NONDIST, OCI_LAYER_NONDIST_GZIP, OCI_LAYER_NONDIST_ZSTD,
                           DOCKER_FOREIGN_LAYER)

# What a client accepts when it fetches a manifest by tag or digest (content negotiation):
# every manifest and index type this library reads, best first.
MANIFEST_ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

LABEL_GC_CONFIG = "containerd.io/gc.ref.content.config"
LABEL_GC_LAYER = "containerd.io/gc.ref.content.l."
LABEL_GC_MANIFEST = "containerd.io/gc.ref.content.m."
LABEL_DISTRIBUTION_SOURCE = "containerd.io/distribution.source."
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"  # the diff ID of a compressed layer

MAX_MANIFEST_SIZE = 4 << 20  # the limit containerd and Docker put on a manifest or index
MAX_CONFIG_SIZE = 64 << 20

SCHEMA1_REFUSED = (
    "Docker Image manifest version 2, schema 1 is not supported (Docker removed it in 25.0): "
    "ask the image's author to push it again in the OCI format or Docker Image manifest v2, "
    "schema 2 (https://docs.docker.com/go/deprecated-image-specs/)")


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFEST_TYPES


def is_layer(media_type: str) -> bool:
    return media_type in LAYER_TYPES


def layer_compression(media_type: str) -> str:
    """"", "gzip" or "zstd" for a layer media type; InvalidArgument for anything else."""
    try:
        return LAYER_TYPES[media_type]
    except KeyError:
        raise InvalidArgument(f"media type {media_type}: not a layer media type") from None


def detect_compression(head: bytes) -> str:
    """The compression of a stream from its first bytes: "gzip", "zstd", "bzip2", "xz" or ""."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return ""


def ref_key(desc: Descriptor) -> str:
    """The ingest ref containerd uses for fetching a descriptor (``layer-sha256:...``)."""
    mt = desc.media_type
    if mt in MANIFEST_TYPES:
        kind = "manifest"
    elif mt in INDEX_TYPES:
        kind = "index"
    elif mt in LAYER_TYPES:
        kind = "layer"
    elif mt in CONFIG_TYPES:
        kind = "config"
    else:
        kind = "unknown"
    return f"{kind}-{desc.digest}"


# --- platforms ------------------------------------------------------------------------------

_ARCH_ALIASES = {
    "x86_64": ("amd64", None), "x86-64": ("amd64", None), "amd64": ("amd64", None),
    "i386": ("386", ""), "i486": ("386", ""), "i586": ("386", ""), "i686": ("386", ""), "386": ("386", None),
    "aarch64": ("arm64", None), "arm64": ("arm64", None),
    "armhf": ("arm", "v7"), "armel": ("arm", "v6"), "arm": ("arm", None),
}


class Platform:
    """``os/architecture[/variant]`` plus the optional ``os.version`` and ``os.features``."""

    __slots__ = ("architecture", "os", "os_features", "os_version", "variant")

    def __init__(self, os: str, architecture: str, variant: str = "", os_version: str = "",
                 os_features: list[str] | None = None) -> None:
        self.os = os
        self.architecture = architecture
        self.variant = variant
        self.os_version = os_version
        self.os_features = list(os_features or [])

    def __str__(self) -> str:
        out = f"{self.os}/{self.architecture}"
        return f"{out}/{self.variant}" if self.variant else out

    def __repr__(self) -> str:
        return f"Platform({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Platform) and (self.os, self.architecture, self.variant, self.os_version) == (
            other.os, other.architecture, other.variant, other.os_version)

    def __hash__(self) -> int:
        return hash((self.os, self.architecture, self.variant, self.os_version))

    def normalized(self) -> Platform:
        os_ = self.os.lower()
        if os_ == "macos":
            os_ = "darwin"
        arch = self.architecture.lower()
        variant = self.variant.lower()
        alias = _ARCH_ALIASES.get(arch)
        if alias is not None:
            arch, forced = alias
            if forced is not None:
                variant = forced
        if arch == "amd64" and variant == "v1":
            variant = ""
        elif arch == "arm64" and variant in ("8", "v8"):
            variant = ""
        elif arch == "arm":
            if not variant:
                variant = "v7"
            elif variant in ("5", "6", "7", "8"):
                variant = "v" + variant
        return Platform(os_, arch, variant, self.os_version, self.os_features)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, obj: object, where: str = "platform") -> Platform:
        if not isinstance(obj, dict):
            raise InvalidArgument(f"{where}: expected an object")
        os_, arch = obj.get("os"), obj.get("architecture")
        if not isinstance(os_, str) or not isinstance(arch, str):
            raise InvalidArgument(f"{where}: os and architecture must be strings")
        variant = obj.get("variant") or ""
        version = obj.get("os.version") or ""
        features = obj.get("os.features") or []
        if not isinstance(variant, str) or not isinstance(version, str) or not isinstance(features, list):
            raise InvalidArgument(f"{where}: variant/os.version/os.features have the wrong type")
        return cls(os_, arch, variant, version, [str(f) for f in features])


def parse_platform(spec: str) -> Platform:
    """``linux``, ``linux/arm64``, ``linux/arm/v7``, ``arm64`` (OS defaults to linux), normalised."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgument("platform '': expected os[/arch[/variant]]")
    parts = spec.strip().split("/")
    if len(parts) > 3 or any(not p for p in parts):
        raise InvalidArgument(f"platform {spec!r}: expected os[/arch[/variant]]")
    for p in parts:
        if not all(c.isalnum() or c in "._-" for c in p):
            raise InvalidArgument(f"platform {spec!r}: {p!r} has characters outside [A-Za-z0-9_.-]")
    if len(parts) == 1:
        known_os = ("linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris", "illumos",
                    "aix", "android", "ios", "plan9", "js", "wasip1", "macos")
        if parts[0].lower() in known_os:
            return Platform(parts[0], default_platform().architecture, default_platform().variant).normalized()
        return Platform("linux", parts[0]).normalized()
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "").normalized()


def default_platform() -> Platform:
    """The host's platform (``linux/amd64`` here)."""
    return Platform("linux", _host_platform.machine() or "amd64").normalized()


def format_platform(p: Platform | None) -> str:
    return "unknown" if p is None else str(p)


class PlatformMatcher:
    """containerd's ``platforms.Only``: see the module doc. ``rank`` orders matches, best first."""

    def __init__(self, platform: Platform | str | None = None) -> None:
        if platform is None:
            base = default_platform()
        elif isinstance(platform, str):
            base = parse_platform(platform)
        else:
            base = platform.normalized()
        self.platform = base
        self._vector = self._build_vector(base)

    @staticmethod
    def _build_vector(p: Platform) -> list[tuple[str, str, str]]:
        vec = [(p.os, p.architecture, p.variant)]
        if p.architecture == "amd64":
            level = int(p.variant[1:]) if p.variant[1:].isdigit() else 1
            for v in range(level - 1, 0, -1):
                vec.append((p.os, "amd64", "" if v == 1 else f"v{v}"))
            vec.append((p.os, "386", ""))
        elif p.architecture == "arm64":
            vec.append((p.os, "arm", "v8"))
            for v in (7, 6, 5):
                vec.append((p.os, "arm", f"v{v}"))
        elif p.architecture == "arm":
            level = int(p.variant[1:]) if p.variant[1:].isdigit() else 7
            for v in range(level - 1, 4, -1):
                vec.append((p.os, "arm", f"v{v}"))
        return vec

    def rank(self, p: Platform | dict | None) -> int | None:
        """Index in the preference order (0 best), or None when ``p`` does not match."""
        if p is None:
            return None
        if isinstance(p, dict):
            try:
                p = Platform.from_json(p)
            except InvalidArgument:
                return None
        n = p.normalized()
        key = (n.os, n.architecture, n.variant)
        try:
            return self._vector.index(key)
        except ValueError:
            return None

    def match(self, p: Platform | dict | None) -> bool:
        return self.rank(p) is not None

    def __str__(self) -> str:
        return str(self.platform)


# --- documents ------------------------------------------------------------------------------

def _load_json(data: bytes, where: str) -> dict:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{where}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{where}: expected a JSON object, got {type(doc).__name__}")
    return doc


def detect_media_type(data: bytes, where: str = "manifest") -> str:
    """The media type a manifest-like document declares, or the one its shape implies."""
    doc = _load_json(data, where)
    return _doc_media_type(doc, where)


def _doc_media_type(doc: dict, where: str) -> str:
    mt = doc.get("mediaType")
    if mt is not None and not isinstance(mt, str):
        raise InvalidArgument(f"{where}.mediaType: expected a string")
    if mt:
        return mt
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in doc else DOCKER_SCHEMA1_MANIFEST
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc or "layers" in doc:
        return OCI_MANIFEST
    raise InvalidArgument(f"{where}: has no mediaType and is neither a manifest nor an index")


def _check_schema_version(doc: dict, where: str) -> None:
    sv = doc.get("schemaVersion")
    if sv == 1:
        raise InvalidArgument(f"{where}: {SCHEMA1_REFUSED}")
    if sv != 2 or isinstance(sv, bool):
        raise InvalidArgument(f"{where}.schemaVersion: expected 2, got {sv!r}")


def _check_declared(doc: dict, media_type: str | None, allowed: tuple[str, ...], where: str) -> str:
    declared = _doc_media_type(doc, where)
    if declared in SCHEMA1_TYPES:
        raise InvalidArgument(f"{where}: {SCHEMA1_REFUSED}")
    if declared not in allowed:
        raise InvalidArgument(f"{where}: media type {declared} is not one of {', '.join(allowed)}")
    if media_type and media_type != declared and doc.get("mediaType"):
        raise InvalidArgument(f"{where}: the document says mediaType {declared}, its descriptor says "
                              f"{media_type}")
    return media_type if media_type in allowed else declared


class Manifest:
    """An image manifest (OCI or Docker schema 2)."""

    __slots__ = ("annotations", "artifact_type", "config", "layers", "media_type", "raw", "subject")

    def __init__(self, media_type: str, config: Descriptor, layers: list[Descriptor],
                 annotations: dict[str, str] | None = None, subject: Descriptor | None = None,
                 artifact_type: str = "", raw: dict | None = None) -> None:
        self.media_type = media_type
        self.config = config
        self.layers = layers
        self.annotations = dict(annotations or {})
        self.subject = subject
        self.artifact_type = artifact_type
        self.raw = raw if raw is not None else {}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["config"] = self.config.to_json()
        out["layers"] = [d.to_json() for d in self.layers]
        if self.subject is not None:
            out["subject"] = self.subject.to_json()
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    def to_bytes(self) -> bytes:
        return json_bytes(self.to_json())


class Index:
    """An image index (OCI) or manifest list (Docker)."""

    __slots__ = ("annotations", "manifests", "media_type", "raw")

    def __init__(self, media_type: str, manifests: list[Descriptor],
                 annotations: dict[str, str] | None = None, raw: dict | None = None) -> None:
        self.media_type = media_type
        self.manifests = manifests
        self.annotations = dict(annotations or {})
        self.raw = raw if raw is not None else {}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type,
                               "manifests": [d.to_json() for d in self.manifests]}
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    def to_bytes(self) -> bytes:
        return json_bytes(self.to_json())


def _annotations(doc: dict, where: str) -> dict[str, str]:
    ann = doc.get("annotations")
    if ann is None:
        return {}
    if not isinstance(ann, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ann.items()):
        raise InvalidArgument(f"{where}.annotations: expected an object of strings")
    return ann


def parse_manifest(data: bytes, media_type: str | None = None, where: str = "manifest") -> Manifest:
    doc = _load_json(data, where)
    mt = _check_declared(doc, media_type, MANIFEST_TYPES, where)
    _check_schema_version(doc, where)
    config = Descriptor.from_json(doc.get("config"), f"{where}.config")
    layers_raw = doc.get("layers")
    if not isinstance(layers_raw, list):
        raise InvalidArgument(f"{where}.layers: expected an array")
    layers = [Descriptor.from_json(d, f"{where}.layers[{i}]") for i, d in enumerate(layers_raw)]
    subject = None
    if doc.get("subject") is not None:
        subject = Descriptor.from_json(doc["subject"], f"{where}.subject")
    artifact_type = doc.get("artifactType") or ""
    if not isinstance(artifact_type, str):
        raise InvalidArgument(f"{where}.artifactType: expected a string")
    return Manifest(mt, config, layers, _annotations(doc, where), subject, artifact_type, doc)


def parse_index(data: bytes, media_type: str | None = None, where: str = "index") -> Index:
    doc = _load_json(data, where)
    mt = _check_declared(doc, media_type, INDEX_TYPES, where)
    _check_schema_version(doc, where)
    raw = doc.get("manifests")
    if not isinstance(raw, list):
        raise InvalidArgument(f"{where}.manifests: expected an array")
    manifests = [Descriptor.from_json(d, f"{where}.manifests[{i}]") for i, d in enumerate(raw)]
    return Index(mt, manifests, _annotations(doc, where), doc)


def children(desc: Descriptor, data: bytes) -> list[Descriptor]:
    """The descriptors a manifest or index points at (config first, then layers)."""
    if is_index(desc.media_type):
        return list(parse_index(data, desc.media_type, f"index {desc.digest}").manifests)
    if is_manifest(desc.media_type):
        m = parse_manifest(data, desc.media_type, f"manifest {desc.digest}")
        return [m.config, *m.layers]
    return []


def gc_labels(desc: Descriptor, data: bytes, only: set[str] | None = None) -> dict[str, str]:
    """containerd's GC reference labels for a manifest or index blob (see module doc);
    ``only`` restricts an index's labels to the children the store holds. An index child's
    label is numbered by its position in the index, so labels set by pulls of different
    platforms add up instead of overwriting each other."""
    labels: dict[str, str] = {}
    if is_index(desc.media_type):
        for i, child in enumerate(parse_index(data, desc.media_type, f"index {desc.digest}").manifests):
            if only is None or child.digest in only:
                labels[f"{LABEL_GC_MANIFEST}{i}"] = child.digest
    elif is_manifest(desc.media_type):
        m = parse_manifest(data, desc.media_type, f"manifest {desc.digest}")
        labels[LABEL_GC_CONFIG] = m.config.digest
        for i, layer in enumerate(m.layers):
            labels[f"{LABEL_GC_LAYER}{i}"] = layer.digest
    return labels


# --- image config ---------------------------------------------------------------------------

class ImageConfig:
    """An image configuration (OCI ``application/vnd.oci.image.config.v1+json`` or Docker's).

    ``raw`` is the document as read (written back unchanged); the attributes are checked views.
    """

    __slots__ = ("architecture", "config", "created", "diff_ids", "history", "os", "os_version", "raw", "variant")

    def __init__(self, raw: dict, where: str = "image config") -> None:
        self.raw = raw
        arch, os_ = raw.get("architecture"), raw.get("os")
        if not isinstance(arch, str) or not arch:
            raise InvalidArgument(f"{where}.architecture: missing or not a string")
        if not isinstance(os_, str) or not os_:
            raise InvalidArgument(f"{where}.os: missing or not a string")
        self.architecture = arch
        self.os = os_
        variant = raw.get("variant") or ""
        os_version = raw.get("os.version") or ""
        if not isinstance(variant, str) or not isinstance(os_version, str):
            raise InvalidArgument(f"{where}.variant / os.version: expected strings")
        self.variant = variant
        self.os_version = os_version
        created = raw.get("created") or ""
        if not isinstance(created, str):
            raise InvalidArgument(f"{where}.created: expected an RFC 3339 string")
        self.created = created
        cfg = raw.get("config")
        if cfg is None:
            cfg = {}
        if not isinstance(cfg, dict):
            raise InvalidArgument(f"{where}.config: expected an object")
        self.config: dict[str, Any] = cfg
        rootfs = raw.get("rootfs")
        if not isinstance(rootfs, dict):
            raise InvalidArgument(f"{where}.rootfs: missing or not an object")
        if rootfs.get("type") != "layers":
            raise InvalidArgument(f"{where}.rootfs.type: expected 'layers', got {rootfs.get('type')!r}")
        diff_ids = rootfs.get("diff_ids")
        if diff_ids is None:
            diff_ids = []
        if not isinstance(diff_ids, list):
            raise InvalidArgument(f"{where}.rootfs.diff_ids: expected an array")
        from skiff.images.content import validate_digest
        self.diff_ids = [validate_digest(d, f"{where}.rootfs.diff_ids[{i}]") for i, d in enumerate(diff_ids)]
        history = raw.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise InvalidArgument(f"{where}.history: expected an array of objects")
        self.history: list[dict] = history

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant, self.os_version)


def parse_config(data: bytes, where: str = "image config") -> ImageConfig:
    return ImageConfig(_load_json(data, where), where)


# --- selecting from an index ----------------------------------------------------------------

def select_manifests(index: Index, matcher: PlatformMatcher) -> list[Descriptor]:
    """The image manifests of ``index`` that match, best first (index order among equals)."""
    ranked = []
    for pos, d in enumerate(index.manifests):
        if not is_manifest(d.media_type) and not is_index(d.media_type):
            continue
        r = matcher.rank(d.platform)
        if r is not None:
            ranked.append((r, pos, d))
    ranked.sort(key=lambda t: (t[0], t[1]))
    return [d for _, _, d in ranked]


def no_match_error(matcher: PlatformMatcher, where: str = "") -> NotFound:
    """Docker's error when an index has nothing for the platform."""
    suffix = f" ({where})" if where else ""
    return NotFound(f"no matching manifest for {matcher.platform} in the manifest list entries{suffix}")


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The chain ID of each prefix of ``diff_ids`` (image-spec, "ChainID"):
    ChainID(1) = DiffID(1), ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n))."""
    import hashlib

    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out
