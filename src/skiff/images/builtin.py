"""The built-in ``busybox:latest`` image, built offline and reproducibly from busybox-static.

No network is needed to run a first container: ``build`` turns Debian's statically linked
busybox into an image, written twice into an output directory:

- ``busybox-oci/``: an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/``),
  the index entry annotated ``org.opencontainers.image.ref.name=latest`` and
  ``io.containerd.image.name=docker.io/library/busybox:latest``;
- ``busybox.tar``: the archive ``docker save`` writes since Docker 25, which is the same OCI
  layout plus the legacy ``manifest.json`` and ``repositories`` that older ``docker load``
  (20.10 here) reads; the blobs are byte for byte those of the layout.

Same input binary, same bytes: the digests depend on nothing but the busybox file. The choices
that make this so, and why:

- The root filesystem is one layer: ``bin/busybox`` (0755), one link per applet at the path
  ``busybox --list-full`` gives (``bin/``, ``sbin/``, ``usr/bin/``, ``usr/sbin/``: all on the
  image's PATH, and scripts that start ``#!/usr/bin/env`` work; an applet outside those
  directories, ``linuxrc``, is an initrd entry point and is left out), ``etc/passwd``
  (root, daemon, nobody), ``etc/group`` (root, daemon, tty, nogroup: ``tty`` is gid 5, the
  group the default config's devpts mount uses), ``tmp`` (1777), ``root`` (0700), ``home``,
  ``var``, and ``dev``, ``proc``, ``sys`` as empty mount points.
- The applet links are relative symbolic links (``bin/sh -> busybox``, ``usr/bin/env ->
  ../../bin/busybox``), not hard links as in the Docker Hub image: a hard link must follow
  its target in the tar stream, so with members in sorted order the file data would have to
  sit under the first name (``bin/arch``) with ``bin/busybox`` a link to it; with symlinks
  ``bin/busybox`` is the one regular file and the order stays strictly sorted. Relative
  targets stay inside the rootfs when the layer is unpacked on the host (the reference
  archive's absolute ``/bin/busybox`` targets point at the host's binary there). busybox
  picks the applet from ``argv[0]`` either way.
- The layer tar is ustar with sorted members and fixed metadata (see ``ocilayout``).
- The layer is stored uncompressed (``application/vnd.oci.image.layer.v1.tar``), so its blob
  digest is its diff ID, as in ``docker save``. gzip output depends on the zlib build doing
  the compressing; an uncompressed layer has no such dependency. It costs about 1 MB of local
  disk.
- ``created`` (config and history) is the Unix epoch, ``1970-01-01T00:00:00Z``, as
  reproducible image builders (ko, Bazel's rules_oci, Nix's dockerTools) write it: any date
  taken from the build machine would differ between machines. The history entry's comment
  names the BusyBox version (the first line of ``busybox --help``), which is a property of the
  binary.
- The architecture comes from the binary's ELF header (``x86_64`` -> ``amd64``, ``aarch64``
  -> ``arm64``, ...), not from the machine, so the config describes what the image holds.
  The binary must be static (no ELF interpreter): the image holds no libraries.
- JSON is compact with keys in the image-spec's Go struct order (see ``ocilayout``); the
  config's ``config`` holds ``Env`` (the standard PATH) and ``Cmd`` (``["sh"]``).

``build`` is idempotent: when the output directory already holds exactly these bytes it
writes nothing (``BuiltImage.changed`` is false).

``make_bundle`` unpacks an OCI layout's image into an OCI runtime bundle (``rootfs/`` and a
``config.json`` from ``skiff.oci.defaults.default_config`` with the image's Env, Entrypoint/
Cmd, WorkingDir and User applied). It is for development and tests. Every blob's digest and
size are checked, and each layer's diff ID. Layers (uncompressed, gzip or zstd) are applied in
order by the image store's extractor (``skiff.images.layers.apply_layer``, whiteout mode
``delete``), so the rules for hostile archives are that module's: nothing lands outside
``rootfs`` (names are made relative, ``..`` that climbs out is refused, symbolic links are
followed inside the rootfs, nothing is written through a link, hard links must name an entry
inside). Because the rootfs is a plain directory on the host rather than a container's
mount, the stricter policy is asked for: device nodes are refused and setuid/setgid bits
dropped, as Python's "data" extraction filter does (3.11.2 here predates that filter);
ownership (when running as root), the sticky bit (``/tmp``), permissions and mtimes are kept.

Command line::

    python -m skiff.images.builtin build --out DIR [--busybox /bin/busybox]
    python -m skiff.images.builtin bundle --image DIR/busybox-oci --out BUNDLE [--] [ARGS...]
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
import struct
import subprocess
import sys
from dataclasses import dataclass

from skiff.images import ocilayout as oci

IMAGE_NAME = "docker.io/library/busybox:latest"
LAYOUT_DIRNAME = "busybox-oci"
ARCHIVE_NAME = "busybox.tar"
CREATED = "1970-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_PATH = "bin/busybox"
APPLET_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin")

ROOTFS_DIRS = {
    "bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o755, "root": 0o700,
    "sbin": 0o755, "sys": 0o755, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755,
    "usr/sbin": 0o755, "var": 0o755,
}
PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\n"
    b"daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    b"nobody:x:65534:65534:nobody:/home:/bin/false\n"
)
GROUP = b"root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n"

# (e_machine, EI_CLASS, EI_DATA) -> OCI architecture; EI_CLASS 1/2 = 32/64-bit, EI_DATA 1/2 = LE/BE.
# 32-bit ARM is absent on purpose: its OCI variant (v5/v6/v7) is not in the ELF header.
_ELF_ARCH = {
    (62, 2, 1): "amd64",
    (183, 2, 1): "arm64",
    (3, 1, 1): "386",
    (21, 2, 1): "ppc64le",
    (22, 2, 2): "s390x",
    (243, 2, 1): "riscv64",
}
_PT_INTERP = 3


class BuildError(Exception):
    """The image cannot be built from the given busybox."""


class BundleError(Exception):
    """An OCI layout cannot be turned into a runtime bundle."""


@dataclass(frozen=True)
class BuiltImage:
    digest: str  # the manifest digest, sha256:...
    image_id: str  # the config digest, what `docker images` shows as the image ID
    diff_id: str  # the layer's digest (uncompressed, so also its blob digest)
    layout_dir: str
    archive_path: str
    changed: bool  # whether build() wrote anything


# --- building -------------------------------------------------------------------------------

def elf_architecture(data: bytes, where: str) -> str:
    """The OCI architecture of a static ELF executable; refuse anything else."""
    if data[:4] != b"\x7fELF":
        raise BuildError(f"{where}: not an ELF executable")
    elf_class, encoding = data[4], data[5]
    if elf_class not in (1, 2) or encoding not in (1, 2):
        raise BuildError(f"{where}: unknown ELF class {elf_class} or data encoding {encoding}")
    order = "<" if encoding == 1 else ">"
    try:
        (machine,) = struct.unpack_from(order + "H", data, 18)
        if elf_class == 2:
            (phoff,) = struct.unpack_from(order + "Q", data, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", data, 54)
        else:
            (phoff,) = struct.unpack_from(order + "I", data, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", data, 42)
        for i in range(phnum):
            (p_type,) = struct.unpack_from(order + "I", data, phoff + i * phentsize)
            if p_type == _PT_INTERP:
                raise BuildError(f"{where}: dynamically linked (it names an ELF interpreter); "
                                 "the image holds no libraries: use a static busybox (busybox-static)")
    except struct.error as e:
        raise BuildError(f"{where}: truncated ELF header or program headers ({e})") from e
    arch = _ELF_ARCH.get((machine, elf_class, encoding))
    if arch is None:
        bits = 32 * elf_class
        raise BuildError(f"{where}: ELF machine {machine} ({bits}-bit) has no OCI architecture here")
    return arch


def _run_busybox(busybox: str, arg: str) -> str:
    try:
        proc = subprocess.run([busybox, arg], capture_output=True, timeout=60, check=False,
                              env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    except OSError as e:
        raise BuildError(f"run {busybox} {arg}: {e.strerror}") from e
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"run {busybox} {arg}: no answer within {e.timeout} s") from e
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise BuildError(f"{busybox} {arg}: exited with status {proc.returncode}: {err}")
    return proc.stdout.decode("utf-8", errors="strict")


def list_applets(busybox: str) -> list[str]:
    """The applet link paths (relative, sorted) from ``busybox --list-full``, PATH dirs only."""
    applets = set()
    for line in _run_busybox(busybox, "--list-full").splitlines():
        if not line:
            continue
        if line.startswith("/") or posixpath.normpath(line) != line or any(c.isspace() for c in line):
            raise BuildError(f"{busybox} --list-full: unexpected entry {line!r}")
        if posixpath.dirname(line) not in APPLET_DIRS or line == BUSYBOX_PATH:
            continue
        applets.add(line)
    if "bin/sh" not in applets:
        raise BuildError(f"{busybox} --list-full: no bin/sh applet (the image's command is sh)")
    return sorted(applets)


def busybox_version(busybox: str) -> str:
    """``BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)``: the banner of ``busybox --help``."""
    first = _run_busybox(busybox, "--help").split("\n", 1)[0].strip()
    if not first.startswith("BusyBox v"):
        raise BuildError(f"{busybox} --help: expected a 'BusyBox v...' banner, got {first[:80]!r}")
    return first.removesuffix(" multi-call binary.")


def rootfs_layer(busybox_data: bytes, applets: list[str]) -> bytes:
    """The uncompressed layer tar of the busybox root filesystem."""
    members = [oci.dir_member(name, mode) for name, mode in ROOTFS_DIRS.items()]
    members.append(oci.file_member(BUSYBOX_PATH, busybox_data, 0o755))
    for applet in applets:
        members.append(oci.symlink_member(applet, posixpath.relpath(BUSYBOX_PATH, posixpath.dirname(applet))))
    members.append(oci.file_member("etc/passwd", PASSWD))
    members.append(oci.file_member("etc/group", GROUP))
    return oci.reproducible_tar(members)


def image_config(architecture: str, diff_id: str, version: str) -> dict:
    return {
        "created": CREATED,
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{
            "created": CREATED,
            "created_by": "skiff.images.builtin: busybox-static root filesystem",
            "comment": version,
        }],
    }


def assemble_busybox(busybox: str = "/bin/busybox") -> tuple[oci.Image, dict]:
    """The image (in memory) and its platform, from the busybox binary at ``busybox``."""
    try:
        with open(busybox, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BuildError(f"read {busybox}: {e.strerror}") from e
    architecture = elf_architecture(data, busybox)
    layer = oci.Blob(oci.MEDIA_TYPE_LAYER, rootfs_layer(data, list_applets(busybox)))
    config = image_config(architecture, layer.digest, busybox_version(busybox))
    return oci.assemble(config, [layer]), {"architecture": architecture, "os": "linux"}


def build(out_dir: str, busybox: str = "/bin/busybox") -> BuiltImage:
    """Write ``out_dir/busybox-oci/`` and ``out_dir/busybox.tar`` unless they already match."""
    image, platform = assemble_busybox(busybox)
    layout = oci.layout_files(image, IMAGE_NAME, platform)
    archive = oci.tree_tar(oci.docker_archive_files(image, IMAGE_NAME, platform))
    os.makedirs(out_dir, exist_ok=True)
    layout_dir = os.path.join(out_dir, LAYOUT_DIRNAME)
    archive_path = os.path.join(out_dir, ARCHIVE_NAME)
    changed = False
    if not oci.tree_matches(layout_dir, layout):
        oci.write_tree(layout_dir, layout)
        changed = True
    if not oci.file_matches(archive_path, archive):
        oci.write_file(archive_path, archive)
        changed = True
    return BuiltImage(digest=image.manifest.digest, image_id=image.config.digest,
                      diff_id=image.layers[0].digest, layout_dir=layout_dir,
                      archive_path=archive_path, changed=changed)


# --- reading a layout -----------------------------------------------------------------------

_MANIFEST_TYPES = (oci.MEDIA_TYPE_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json")
_HEX = frozenset("0123456789abcdef")


def _blob_path(layout_dir: str, descriptor: object, where: str) -> str:
    """The verified path of the blob ``descriptor`` names (digest and size checked)."""
    if not isinstance(descriptor, dict):
        raise BundleError(f"{where}: expected a descriptor object")
    digest, size = descriptor.get("digest"), descriptor.get("size")
    algorithm, _, encoded = digest.partition(":") if isinstance(digest, str) else ("", "", "")
    if algorithm != "sha256" or len(encoded) != 64 or not set(encoded) <= _HEX:
        raise BundleError(f"{where}: unsupported or malformed digest {digest!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BundleError(f"{where}: malformed size {size!r}")
    path = os.path.join(layout_dir, "blobs", algorithm, encoded)
    h = hashlib.sha256()
    total = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                total += len(chunk)
    except OSError as e:
        raise BundleError(f"{where}: read blob {path}: {e.strerror}") from e
    if total != size or h.hexdigest() != encoded:
        raise BundleError(f"{where}: blob {path} does not match its descriptor "
                          f"(size {total}, sha256:{h.hexdigest()})")
    return path


def _json_blob(layout_dir: str, descriptor: object, where: str) -> dict:
    path = _blob_path(layout_dir, descriptor, where)
    return _load_json(path, where)


def _load_json(path: str, where: str) -> dict:
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except OSError as e:
        raise BundleError(f"{where}: read {path}: {e.strerror}") from e
    except ValueError as e:
        raise BundleError(f"{where}: {path} is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise BundleError(f"{where}: {path}: expected a JSON object")
    return doc


def read_layout_image(layout_dir: str) -> tuple[dict, dict]:
    """(manifest, config) of the image in an OCI layout: its only one, else the one tagged latest."""
    layout = _load_json(os.path.join(layout_dir, "oci-layout"), layout_dir)
    if layout.get("imageLayoutVersion") != oci.OCI_LAYOUT_VERSION:
        raise BundleError(f"{layout_dir}/oci-layout: unsupported imageLayoutVersion "
                          f"{layout.get('imageLayoutVersion')!r}")
    index = _load_json(os.path.join(layout_dir, "index.json"), layout_dir)
    manifests = index.get("manifests")
    if not isinstance(manifests, list) or not manifests:
        raise BundleError(f"{layout_dir}/index.json: no manifests")
    if len(manifests) > 1:
        manifests = [m for m in manifests if isinstance(m, dict)
                     and (m.get("annotations") or {}).get(oci.ANNOTATION_REF_NAME) == "latest"]
        if len(manifests) != 1:
            raise BundleError(f"{layout_dir}/index.json: several manifests and not exactly one tagged latest")
    descriptor = manifests[0]
    if not isinstance(descriptor, dict) or descriptor.get("mediaType") not in _MANIFEST_TYPES:
        media_type = descriptor.get("mediaType") if isinstance(descriptor, dict) else None
        raise BundleError(f"{layout_dir}/index.json: manifest media type {media_type!r} is not an image manifest")
    manifest = _json_blob(layout_dir, descriptor, f"{layout_dir}: manifest")
    config = _json_blob(layout_dir, manifest.get("config"), f"{layout_dir}: image config")
    return manifest, config


# --- reading files of an unpacked rootfs ---------------------------------------------------

def _resolve(rootfs: str, rel: str, where: str, follow_last: bool = False) -> str:
    """Host path of ``rel`` in ``rootfs``, following symlinks in its directories (and in its
    last component if ``follow_last``) the way the container sees them: an absolute target
    starts again at the rootfs, and ``..`` stops at the rootfs."""
    pending = [p for p in rel.split("/") if p and p != "."]
    last = pending.pop() if pending and not follow_last else None
    done: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(rootfs, *done, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            done.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:
                raise BundleError(f"{where}: {rel}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            pending[:0] = [p for p in target.split("/") if p and p != "."]
            continue
        done.append(part)
    if last is not None:
        if last == "..":
            raise BundleError(f"{where}: {rel}: leaves the root filesystem")
        done.append(last)
    return os.path.join(rootfs, *done)


# --- bundles --------------------------------------------------------------------------------

def _str_list(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BundleError(f"{where}: expected a list of strings")
    return value


def _merge_env(base: list[str], image_env: list[str]) -> list[str]:
    env = {e.split("=", 1)[0]: e for e in base}
    for e in image_env:
        env[e.split("=", 1)[0]] = e
    return list(env.values())


def _db(rootfs: str, rel: str, where: str) -> list[list[str]]:
    path = _resolve(rootfs, rel, where, follow_last=True)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []
    except OSError as e:
        raise BundleError(f"{where}: read {rel}: {e.strerror}") from e


def resolve_user(rootfs: str, user: str) -> dict:
    """process.user for an image's ``User`` (``name|uid[:group|gid]``), as Docker resolves it
    against the image's own /etc/passwd and /etc/group."""
    where = f"image user {user!r}"
    name, _, group = user.partition(":")
    passwd = [e for e in _db(rootfs, "etc/passwd", where) if len(e) >= 4]
    groups = [e for e in _db(rootfs, "etc/group", where) if len(e) >= 3]
    if name.isdigit():
        entry = next((e for e in passwd if e[2] == name), None)
        uid = int(name)
    else:
        entry = next((e for e in passwd if e[0] == name), None)
        if entry is None:
            raise BundleError(f"{where}: no user {name!r} in the image's /etc/passwd")
        uid = int(entry[2])
    gid = int(entry[3]) if entry else 0
    if group.isdigit():
        gid = int(group)
    elif group:
        gentry = next((g for g in groups if g[0] == group), None)
        if gentry is None:
            raise BundleError(f"{where}: no group {group!r} in the image's /etc/group")
        gid = int(gentry[2])
    spec: dict = {"uid": uid, "gid": gid}
    if entry is not None and not group:
        extra = sorted({int(g[2]) for g in groups
                        if len(g) >= 4 and entry[0] in g[3].split(",") and int(g[2]) != gid})
        if extra:
            spec["additionalGids"] = extra
    return spec


def bundle_config(image_config: dict, rootfs: str, args: list[str] | None) -> dict:
    """config.json for a container of the image: runtime defaults plus the image's settings."""
    from skiff.oci.defaults import default_config

    cfg = image_config.get("config") or {}
    if not isinstance(cfg, dict):
        raise BundleError("image config: config: expected an object")
    entrypoint = _str_list(cfg.get("Entrypoint"), "image config: Entrypoint")
    cmd = _str_list(cfg.get("Cmd"), "image config: Cmd")
    process_args = entrypoint + (list(args) if args else cmd)
    if not process_args:
        raise BundleError("no command: no arguments given and the image has no Entrypoint or Cmd")
    spec = default_config(args=process_args, terminal=False)
    process = spec["process"]
    process["env"] = _merge_env(process["env"], _str_list(cfg.get("Env"), "image config: Env"))
    workdir = cfg.get("WorkingDir") or "/"
    if not isinstance(workdir, str):
        raise BundleError("image config: WorkingDir: expected a string")
    process["cwd"] = posixpath.normpath(posixpath.join("/", workdir))
    user = cfg.get("User")
    if user:
        if not isinstance(user, str):
            raise BundleError("image config: User: expected a string")
        process["user"] = resolve_user(rootfs, user)
    return spec


def make_bundle(layout_dir: str, bundle_dir: str, args: list[str] | None) -> str:
    """Unpack the image of ``layout_dir`` into ``bundle_dir``; return the bundle's path."""
    manifest, config = read_layout_image(layout_dir)
    layers = manifest.get("layers")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids")
    if not isinstance(layers, list) or not isinstance(diff_ids, list) or len(layers) != len(diff_ids):
        raise BundleError(f"{layout_dir}: manifest layers and config rootfs.diff_ids do not pair up")
    bundle = os.path.abspath(bundle_dir)
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(rootfs, mode=0o755, exist_ok=True)
    if os.listdir(rootfs):
        raise BundleError(f"{rootfs}: not empty; refusing to unpack over it")
    from skiff.images.errors import ImageError
    from skiff.images.layers import LAYER_MEDIA_TYPES, apply_layer

    for i, (descriptor, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
        where = f"{layout_dir}: layer {i}"
        if descriptor.get("mediaType") not in LAYER_MEDIA_TYPES:
            raise BundleError(f"{where}: unsupported layer media type {descriptor.get('mediaType')!r}")
        path = _blob_path(layout_dir, descriptor, where)
        try:
            with open(path, "rb") as blob:
                # the image store's extractor, with the host-side policy: no device nodes,
                # no setuid/setgid bits (the bundle's rootfs is a plain directory on the host)
                applied = apply_layer(blob, rootfs, whiteout="delete", where=where,
                                      allow_devices=False, keep_setid=False)
        except ImageError as e:
            raise BundleError(str(e)) from e
        except OSError as e:
            raise BundleError(f"{where}: read {path}: {e.strerror or e}") from e
        if applied.diff_id != diff_id:
            raise BundleError(f"{where}: content digest {applied.diff_id} does not match diff_id {diff_id}")
    spec = bundle_config(config, rootfs, args)
    oci.write_file(os.path.join(bundle, "config.json"), json.dumps(spec, indent=2).encode() + b"\n")
    return bundle


# --- command line ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m skiff.images.builtin",
        description="Build the built-in busybox image, or unpack an OCI layout into a runtime bundle.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="write DIR/busybox-oci/ and DIR/busybox.tar")
    p_build.add_argument("--out", required=True, metavar="DIR")
    p_build.add_argument("--busybox", default="/bin/busybox", help="a static busybox (default /bin/busybox)")
    p_bundle = sub.add_parser("bundle", help="unpack an OCI layout into a runtime bundle")
    p_bundle.add_argument("--image", required=True, metavar="LAYOUT_DIR")
    p_bundle.add_argument("--out", required=True, metavar="BUNDLE")
    p_bundle.add_argument("args", nargs=argparse.REMAINDER, help="the process (default: the image's Cmd)")
    ns = parser.parse_args(argv)
    try:
        if ns.command == "build":
            built = build(ns.out, ns.busybox)
            state = "built" if built.changed else "already up to date (nothing written)"
            print(f"busybox:latest {state} in {ns.out}")
            print(f"manifest digest: {built.digest}")
            print(f"image id: {built.image_id}")
            print(f"layout: {built.layout_dir}")
            print(f"archive: {built.archive_path}")
        else:
            args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
            print(make_bundle(ns.image, ns.out, args or None))
    except (BuildError, BundleError, OSError) as e:
        print(f"skiff.images.builtin {ns.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
