"""Writing OCI image layouts and docker-archive tars, reproducibly.

Everything here is a pure function of its inputs: the same image gives the same bytes on every
machine, so the digests can be compared across machines and builds.

JSON. Blobs, index.json and the docker-archive files are compact JSON (no spaces) with object
keys in the order Go's ``encoding/json`` writes the image-spec structs (``schemaVersion``,
``mediaType``, ``config``, ``layers``; a descriptor's ``mediaType``, ``digest``, ``size``, ...),
which is the order Docker and containerd write. Callers build their dicts in that order; the
serialisation never reorders keys, so a digest only depends on the document. Map-valued fields
(annotations, ``LayerSources``) are sorted, as Go sorts map keys. ``manifest.json`` and
``repositories`` end in a newline, as Docker's ``json.Encoder`` writes them.

Tar. ``reproducible_tar`` writes POSIX ustar (no pax or GNU extension headers, so there is no
room for atime/ctime or any host-dependent field): every member has uid/gid 0, empty
uname/gname, mtime 0 and the mode the caller chose; members are sorted by path component by
component (the order of a depth-first walk with sorted directory listings, as ``tar
--sort=name`` gives), so a directory always precedes its content; every member's directory
must itself be a member. A path that does not fit in
ustar's name fields is refused rather than silently switched to an extension format.

Docker archive. ``docker_archive_files`` gives the tree that ``docker save`` of Docker 25 and
later writes: an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/...``) that is
also a legacy archive (``manifest.json`` naming the config and layer blobs by path, with
``LayerSources``; ``repositories`` mapping each repository and tag to the top layer's diff ID).
Docker 20.10's ``docker load`` reads the legacy part and ignores the rest.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import posixpath
import shutil
import tarfile

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"  # containerd's key for the full image name

OCI_LAYOUT_VERSION = "1.0.0"


def json_bytes(obj: object) -> bytes:
    """Serialise ``obj`` compactly, keeping the key order the caller built."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Blob:
    """Content of the content-addressed store: bytes, their media type and digest."""

    __slots__ = ("data", "digest", "media_type")

    def __init__(self, media_type: str, data: bytes) -> None:
        self.media_type = media_type
        self.data = data
        self.digest = sha256_digest(data)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def path(self) -> str:
        """Where the blob lives in a layout: ``blobs/sha256/<hex>``."""
        algorithm, encoded = self.digest.split(":", 1)
        return f"blobs/{algorithm}/{encoded}"

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


# --- reproducible tar -----------------------------------------------------------------------

def dir_member(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    return info, None


def file_member(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.REGTYPE
    info.mode = mode
    info.size = len(data)
    return info, data


def symlink_member(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.mode = 0o777
    info.linkname = target
    return info, None


def _sort_key(name: str) -> tuple[bytes, ...]:
    return tuple(part.encode("utf-8") for part in name.split("/"))


def reproducible_tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A ustar archive of ``members`` with fixed metadata, sorted by path (see module doc)."""
    by_name: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    for info, data in members:
        name = info.name.rstrip("/")
        if not name or name.startswith("/") or posixpath.normpath(name) != name:
            raise ValueError(f"tar member {info.name!r}: not a clean relative path")
        if name in by_name:
            raise ValueError(f"tar member {name!r}: listed twice")
        by_name[name] = (info, data)
    for name in by_name:
        parent = posixpath.dirname(name)
        if parent and not (parent in by_name and by_name[parent][0].isdir()):
            raise ValueError(f"tar member {name!r}: its directory {parent!r} is not a member")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(by_name, key=_sort_key):
            info, data = by_name[name]
            info.name = name
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isreg():
                if data is None or len(data) != info.size:
                    raise ValueError(f"tar member {name!r}: content does not match its size")
                tar.addfile(info, io.BytesIO(data))
            else:
                if data is not None:
                    raise ValueError(f"tar member {name!r}: only regular files carry content")
                tar.addfile(info)
    return out.getvalue()


# --- images, layouts and archives -----------------------------------------------------------

class Image:
    """An image assembled in memory: config, layers and the manifest that ties them."""

    __slots__ = ("config", "layers", "manifest")

    def __init__(self, config: Blob, layers: list[Blob], manifest: Blob) -> None:
        self.config = config
        self.layers = layers
        self.manifest = manifest

    @property
    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers, self.manifest]

    def diff_ids(self) -> list[str]:
        diff_ids = json.loads(self.config.data)["rootfs"]["diff_ids"]
        if len(diff_ids) != len(self.layers):
            raise ValueError(f"image config lists {len(diff_ids)} diff_ids for {len(self.layers)} layers")
        return diff_ids


def assemble(config: dict, layers: list[Blob]) -> Image:
    """Serialise ``config`` and write the OCI manifest for it and ``layers``."""
    config_blob = Blob(MEDIA_TYPE_CONFIG, json_bytes(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    return Image(config_blob, list(layers), Blob(MEDIA_TYPE_MANIFEST, json_bytes(manifest)))


def split_reference(name: str) -> tuple[str, str]:
    """``docker.io/library/busybox:latest`` -> (``docker.io/library/busybox``, ``latest``)."""
    repo, sep, tag = name.rpartition(":")
    if not sep or not repo or "/" in tag or not tag:
        raise ValueError(f"image name {name!r}: expected REPOSITORY:TAG")
    return repo, tag


def familiar_repository(repo: str) -> str:
    """The short form Docker shows: ``docker.io/library/busybox`` -> ``busybox``."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if repo.startswith(prefix):
            return repo[len(prefix):]
    return repo


def layout_files(image: Image, name: str, platform: dict | None = None) -> dict[str, bytes]:
    """The files of an OCI image layout holding ``image`` tagged ``name`` (REPOSITORY:TAG)."""
    _, tag = split_reference(name)
    descriptor = image.manifest.descriptor()
    descriptor["annotations"] = {ANNOTATION_IMAGE_NAME: name, ANNOTATION_REF_NAME: tag}
    if platform is not None:
        descriptor["platform"] = platform
    index = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": [descriptor]}
    files = {
        "oci-layout": json_bytes({"imageLayoutVersion": OCI_LAYOUT_VERSION}),
        "index.json": json_bytes(index),
    }
    for blob in image.blobs:
        files[blob.path] = blob.data
    return files


def docker_archive_files(image: Image, name: str, platform: dict | None = None) -> dict[str, bytes]:
    """The files of a ``docker save`` archive (Docker 25+ layout, see module doc)."""
    repo, tag = split_reference(name)
    short = familiar_repository(repo)
    diff_ids = image.diff_ids()
    layer_sources = {
        diff_id: {"mediaType": layer.media_type, "size": layer.size, "digest": layer.digest}
        for diff_id, layer in sorted(zip(diff_ids, image.layers, strict=True), key=lambda pair: pair[0])
    }
    item = {
        "Config": image.config.path,
        "RepoTags": [f"{short}:{tag}"],
        "Layers": [layer.path for layer in image.layers],
        "LayerSources": layer_sources,
    }
    files = layout_files(image, name, platform)
    files["manifest.json"] = json_bytes([item]) + b"\n"
    files["repositories"] = json_bytes({short: {tag: diff_ids[-1].split(":", 1)[1]}}) + b"\n"
    return files


def tree_tar(files: dict[str, bytes]) -> bytes:
    """A reproducible tar of a file tree given as {relative path: content}; 0755 dirs, 0644 files."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    dirs: set[str] = set()
    for path, data in files.items():
        members.append(file_member(path, data))
        parent = posixpath.dirname(path)
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    members.extend(dir_member(d) for d in dirs)
    return reproducible_tar(members)


# --- writing to disk ------------------------------------------------------------------------

def write_file(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` through a temporary sibling and rename it into place (mode exact, no umask)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise OSError(e.errno, f"write {path}: {e.strerror}") from e


def _remove_quietly(path: str) -> None:
    # Only for cleaning up our own temporary file after another error is already raised.
    if os.path.lexists(path):
        os.unlink(path)


def file_matches(path: str, data: bytes) -> bool:
    """Whether ``path`` is a regular file (not a symlink) holding exactly ``data``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink is not our file
            return False
        raise
    with os.fdopen(fd, "rb") as f:
        if os.fstat(f.fileno()).st_size != len(data):
            return False
        return hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()


def tree_matches(root: str, files: dict[str, bytes]) -> bool:
    """Whether directory ``root`` holds exactly ``files`` (no more, no less, same bytes)."""
    if not os.path.isdir(root) or os.path.islink(root):
        return False
    found: set[str] = set()
    found_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in filenames + dirnames:
            path = name if rel == "." else f"{rel}/{name}"
            is_dir = name in dirnames and not os.path.islink(os.path.join(dirpath, name))
            (found_dirs if is_dir else found).add(path)
    expected_dirs = {posixpath.dirname(p) for p in files} - {""}
    for d in list(expected_dirs):
        while d := posixpath.dirname(d):
            expected_dirs.add(d)
    if found != set(files) or found_dirs != expected_dirs:
        return False
    return all(file_matches(os.path.join(root, p), data) for p, data in files.items())


def write_tree(root: str, files: dict[str, bytes]) -> None:
    """Replace directory ``root`` by a tree holding exactly ``files`` (0755 dirs, 0644 files).

    The tree is written next to ``root`` and renamed into place, so a reader sees either the
    old tree or the new one, apart from the instant between the two renames.
    """
    parent = os.path.dirname(os.path.abspath(root))
    base = os.path.basename(os.path.abspath(root))
    tmp = os.path.join(parent, f".{base}.new.{os.getpid()}")
    old = os.path.join(parent, f".{base}.old.{os.getpid()}")
    for stale in (tmp, old):
        if os.path.lexists(stale):
            shutil.rmtree(stale)
    os.mkdir(tmp, 0o755)
    os.chmod(tmp, 0o755)
    try:
        for path, data in sorted(files.items()):
            target = os.path.join(tmp, path)
            _makedirs(tmp, os.path.dirname(path))
            write_file(target, data)
    except BaseException:
        shutil.rmtree(tmp)
        raise
    if os.path.lexists(root):
        os.rename(root, old)
        os.rename(tmp, root)
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old)
        else:
            os.unlink(old)
    else:
        os.rename(tmp, root)


def _makedirs(base: str, rel: str) -> None:
    path = base
    for part in rel.split("/") if rel else []:
        path = os.path.join(path, part)
        if not os.path.isdir(path):
            os.mkdir(path, 0o755)
            os.chmod(path, 0o755)
