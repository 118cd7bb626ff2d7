"""containerd 1.6's API as Python modules, generated from Debian's ``.proto`` files.

The API definitions are not in this repository: they come from Debian's packages
(``golang-github-containerd-containerd-dev`` for containerd's, ``golang-github-containerd-cgroups-dev``
for the cgroup metrics of ``Tasks.Metrics``, ``golang-github-gogo-protobuf-dev`` for
``gogoproto/gogo.proto``, ``golang-github-gogo-googleapis-dev`` for ``google/rpc/status.proto``) and are compiled with grpcio-tools at install time
(``python -m skiff.containerd.protos build``, run by ``scripts/setup.sh``) into a directory
outside the source tree: ``$SKIFF_CONTAINERD_API_DIR``, by default
``<sys.prefix>/share/skiff/containerd-api`` (the venv).

The files are staged into a temporary tree before compiling, with one change: their
``import`` lines. Go import paths (``github.com/containerd/containerd/...``) are not Python
package names, so every non-well-known import is re-rooted under the package
``skiff_containerd_api`` (``skiff_containerd_api/containerd/api/types/mount.proto``). Package names, messages, fields and services are
untouched, so the wire format and the gRPC method names are containerd's. The
``google/protobuf/*`` well-known types are protobuf's own (``google.protobuf.*_pb2``).

The output carries a stamp (a hash of the sources, of this generator's version and of
grpcio-tools' and protobuf's versions): ``build`` is a no-op when the stamp matches, and
``load`` builds first when it does not (or fails with what is missing).

    api = load()
    api.containers.ListContainersRequest()          # messages of a service module
    api.containers_grpc.ContainersServicer          # its gRPC stubs and servicer base
    api.module("containerd/api/events/image.proto") # any generated module by proto path
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType
from typing import Any

PACKAGE = "skiff_containerd_api"
GENERATOR_VERSION = "2"  # bump when the staging or the output layout changes
STAMP = "STAMP"

GOCODE = "/usr/share/gocode/src/github.com"
CONTAINERD_SRC = f"{GOCODE}/containerd/containerd"
CGROUPS_SRC = f"{GOCODE}/containerd/cgroups"
GOGO_SRC = f"{GOCODE}/gogo/protobuf"
GOOGLEAPIS_SRC = f"{GOCODE}/gogo/googleapis"

DEBIAN_PACKAGES = ("golang-github-containerd-containerd-dev", "golang-github-containerd-cgroups-dev",
                   "golang-github-gogo-protobuf-dev", "golang-github-gogo-googleapis-dev")

# (source root, path under it, path in the staged tree under PACKAGE/)
_EXTRA = (
    (CONTAINERD_SRC, "protobuf/plugin/fieldpath.proto", "containerd/protobuf/plugin/fieldpath.proto"),
    (CONTAINERD_SRC, "runtime/v2/runc/options/oci.proto", "containerd/runtime/v2/runc/options/oci.proto"),
    (CONTAINERD_SRC, "runtime/linux/runctypes/runc.proto", "containerd/runtime/linux/runctypes/runc.proto"),
    (CONTAINERD_SRC, "runtime/v2/task/shim.proto", "containerd/runtime/v2/task/shim.proto"),
    (CGROUPS_SRC, "stats/v1/metrics.proto", "cgroups/stats/v1/metrics.proto"),
    (CGROUPS_SRC, "v2/stats/metrics.proto", "cgroups/v2/stats/metrics.proto"),
    (GOGO_SRC, "gogoproto/gogo.proto", "gogoproto/gogo.proto"),
    (GOOGLEAPIS_SRC, "google/rpc/status.proto", "google/rpc/status.proto"),
)

# Go import path prefix -> staged path prefix (under PACKAGE/)
_IMPORT_MAP = (
    ("github.com/containerd/containerd/", "containerd/"),
    ("github.com/gogo/protobuf/gogoproto/", "gogoproto/"),
    ("gogoproto/", "gogoproto/"),
    ("google/rpc/", "google/rpc/"),
)
_IMPORT_RE = re.compile(r'^(\s*import\s+(?:weak\s+|public\s+)?)"([^"]+)"\s*;', re.M)

# attribute name -> proto path under PACKAGE/ (the modules most callers need by name)
SERVICES = {
    "version": "containerd/api/services/version/v1/version.proto",
    "namespaces": "containerd/api/services/namespaces/v1/namespace.proto",
    "containers": "containerd/api/services/containers/v1/containers.proto",
    "images": "containerd/api/services/images/v1/images.proto",
    "content": "containerd/api/services/content/v1/content.proto",
    "snapshots": "containerd/api/services/snapshots/v1/snapshots.proto",
    "tasks": "containerd/api/services/tasks/v1/tasks.proto",
    "events": "containerd/api/services/events/v1/events.proto",
    "leases": "containerd/api/services/leases/v1/leases.proto",
    "introspection": "containerd/api/services/introspection/v1/introspection.proto",
    "diff": "containerd/api/services/diff/v1/diff.proto",
}
TYPES = {
    "descriptor": "containerd/api/types/descriptor.proto",
    "mount": "containerd/api/types/mount.proto",
    "platform": "containerd/api/types/platform.proto",
    "metrics": "containerd/api/types/metrics.proto",
    "task": "containerd/api/types/task/task.proto",
    "ev_container": "containerd/api/events/container.proto",
    "ev_content": "containerd/api/events/content.proto",
    "ev_image": "containerd/api/events/image.proto",
    "ev_namespace": "containerd/api/events/namespace.proto",
    "ev_snapshot": "containerd/api/events/snapshot.proto",
    "ev_task": "containerd/api/events/task.proto",
    "runc_options": "containerd/runtime/v2/runc/options/oci.proto",
    "status": "google/rpc/status.proto",
    "cgroups_v1": "cgroups/stats/v1/metrics.proto",  # io.containerd.cgroups.v1.Metrics
    "cgroups_v2": "cgroups/v2/stats/metrics.proto",  # io.containerd.cgroups.v2.Metrics
}


class ProtoError(Exception):
    """The API modules cannot be generated or loaded (says what is missing)."""


def default_dir() -> str:
    return os.environ.get("SKIFF_CONTAINERD_API_DIR") or os.path.join(
        sys.prefix, "share", "skiff", "containerd-api")


@functools.cache
def _external_status() -> bool:
    """Whether googleapis-common-protos provides ``google.rpc.status_pb2``: then that module is
    used (two definitions of ``google.rpc.Status`` cannot share protobuf's default pool)."""
    try:
        return importlib.util.find_spec("google.rpc.status_pb2") is not None
    except (ImportError, ValueError):
        return False


def source_files() -> list[tuple[str, str]]:
    """(staged path under PACKAGE/, absolute source path) of every file to compile."""
    api = os.path.join(CONTAINERD_SRC, "api")
    if not os.path.isdir(api):
        raise ProtoError(f"containerd API definitions: {api} is missing (apt-get install "
                         f"{' '.join(DEBIAN_PACKAGES)})")
    out: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(api):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".proto"):
                path = os.path.join(dirpath, name)
                out.append(("containerd/" + os.path.relpath(path, CONTAINERD_SRC), path))
    for root, rel, staged in _EXTRA:
        if staged.startswith("google/rpc/") and _external_status():
            continue
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            raise ProtoError(f"API definition {path} is missing (apt-get install {' '.join(DEBIAN_PACKAGES)})")
        out.append((staged, path))
    return out


def _tool_versions() -> str:
    # The packages' own version attributes, not importlib.metadata: that module (with email,
    # zipfile, csv) would cost the daemon ~2 MiB of RSS for this one string.
    parts = []
    try:
        from grpc_tools.grpc_version import VERSION as tools_version
    except ImportError:
        tools_version = "none"
    parts.append(f"grpcio-tools={tools_version}")
    try:
        from google.protobuf import __version__ as protobuf_version
    except ImportError:
        protobuf_version = "none"
    parts.append(f"protobuf={protobuf_version}")
    parts.append(f"external-status={_external_status()}")
    return " ".join(parts)


def fingerprint(files: list[tuple[str, str]] | None = None) -> str:
    files = source_files() if files is None else files
    h = hashlib.sha256()
    h.update(f"generator {GENERATOR_VERSION}\n{_tool_versions()}\n".encode())
    for staged, path in files:
        with open(path, "rb") as f:
            data = f.read()
        h.update(f"{staged} {len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()


def rewrite_imports(text: str, where: str) -> str:
    """The ``.proto`` text with its imports re-rooted under PACKAGE (see the module doc)."""
    external_status = _external_status()

    def repl(m: re.Match[str]) -> str:
        head, path = m.group(1), m.group(2)
        if path.startswith("google/protobuf/") or (path.startswith("google/rpc/") and external_status):
            return f'{head}"{path}";'
        for prefix, staged in _IMPORT_MAP:
            if path.startswith(prefix):
                return f'{head}"{PACKAGE}/{staged}{path[len(prefix):]}";'
        raise ProtoError(f"{where}: import {path!r}: no rule maps it into {PACKAGE}")
    return _IMPORT_RE.sub(repl, text)


def _read_stamp(pkg_dir: str) -> str | None:
    try:
        with open(os.path.join(pkg_dir, STAMP)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def is_current(out_dir: str | None = None) -> bool:
    pkg_dir = os.path.join(out_dir or default_dir(), PACKAGE)
    stamp = _read_stamp(pkg_dir)
    return stamp is not None and stamp == fingerprint()


def _compile(staging: str, out: str, protos: list[str]) -> None:
    import subprocess
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or not spec.submodule_search_locations:
        raise ProtoError("generating the containerd API modules needs grpcio-tools (pip install grpcio-tools)")
    well_known = os.path.join(list(spec.submodule_search_locations)[0], "_proto")
    args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{staging}", f"-I{well_known}",
            f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    # gogo's options are imported by every file, used by some: protoc's "unused import" warnings
    # say nothing about our build.
    messages = [line for line in proc.stdout.splitlines()
                if not (line.endswith(".proto is unused.") and "warning: Import" in line)]
    if proc.returncode != 0:
        raise ProtoError(f"grpc_tools.protoc exited {proc.returncode} compiling {len(protos)} files from "
                         f"{staging}: " + "; ".join(messages))
    for line in messages:
        print(f"grpc_tools.protoc: {line}", file=sys.stderr)


def build(out_dir: str | None = None, *, force: bool = False) -> str:
    """Generate the modules into ``out_dir`` unless they are current; returns the directory
    that holds the ``skiff_containerd_api`` package."""
    base = os.path.abspath(out_dir or default_dir())
    pkg_dir = os.path.join(base, PACKAGE)
    files = source_files()
    want = fingerprint(files)
    if not force and _read_stamp(pkg_dir) == want:
        return base
    os.makedirs(base, exist_ok=True)
    lock_fd = os.open(os.path.join(base, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if not force and _read_stamp(pkg_dir) == want:
            return base  # another process built it meanwhile
        work = tempfile.mkdtemp(prefix=".build-", dir=base)
        try:
            staging = os.path.join(work, "src")
            out = os.path.join(work, "out")
            os.makedirs(out)
            protos = []
            for staged, path in files:
                rel = f"{PACKAGE}/{staged}"
                dst = os.path.join(staging, rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                with open(dst, "w", encoding="utf-8") as f:
                    f.write(rewrite_imports(text, path))
                protos.append(rel)
            _compile(staging, out, protos)
            new_pkg = os.path.join(out, PACKAGE)
            for dirpath, _dirs, filenames in os.walk(new_pkg):
                if "__init__.py" not in filenames:
                    with open(os.path.join(dirpath, "__init__.py"), "w") as f:
                        f.write("")
            with open(os.path.join(new_pkg, STAMP), "w") as f:
                f.write(want + "\n")
            old = None
            if os.path.lexists(pkg_dir):
                old = os.path.join(work, "old")
                os.rename(pkg_dir, old)
            os.rename(new_pkg, pkg_dir)
        finally:
            shutil.rmtree(work)
    finally:
        os.close(lock_fd)
    return base


class API:
    """The generated modules; service modules by short name (``api.containers``, with the
    gRPC module as ``api.containers_grpc``), shared types likewise (``api.descriptor``).

    A module is imported when its attribute is first used: a client (skiffd) then holds the
    descriptors and classes of the services it calls only (each service module costs 50-250 KiB);
    ``load_all`` imports every one (the server, whose services and event filters need them all)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def __getattr__(self, name: str) -> Any:
        grpc = name.endswith("_grpc")
        key = name[:-len("_grpc")] if grpc else name
        path = SERVICES.get(key) if grpc else SERVICES.get(key) or TYPES.get(key)
        if path is None:
            raise AttributeError(f"containerd API: no module {name!r}")
        mod = self.module(path, grpc=grpc)
        setattr(self, name, mod)
        return mod

    def load_all(self) -> None:
        """Import every module now."""
        for name in SERVICES:
            getattr(self, name)
            getattr(self, name + "_grpc")
        for name in TYPES:
            getattr(self, name)

    @staticmethod
    def module_name(proto_path: str, grpc: bool = False) -> str:
        if proto_path.startswith("google/rpc/") and _external_status():
            return "google.rpc." + os.path.basename(proto_path)[:-6] + ("_pb2_grpc" if grpc else "_pb2")
        stem = proto_path[:-len(".proto")].replace("/", ".")
        return f"{PACKAGE}.{stem}{'_pb2_grpc' if grpc else '_pb2'}"

    def module(self, proto_path: str, grpc: bool = False) -> ModuleType:
        return importlib.import_module(self.module_name(proto_path, grpc))

    def event_modules(self) -> Iterator[ModuleType]:
        for name in ("ev_container", "ev_content", "ev_image", "ev_namespace", "ev_snapshot", "ev_task"):
            yield getattr(self, name)


_loaded: API | None = None


def _register_package(base: str) -> None:
    pkg_dir = os.path.join(base, PACKAGE)
    existing = sys.modules.get(PACKAGE)
    if existing is not None:
        if list(getattr(existing, "__path__", [])) != [pkg_dir]:
            raise ProtoError(f"{PACKAGE} is already loaded from {list(existing.__path__)}, not {pkg_dir}")
        return
    spec = importlib.util.spec_from_file_location(PACKAGE, os.path.join(pkg_dir, "__init__.py"),
                                                  submodule_search_locations=[pkg_dir])
    if spec is None or spec.loader is None:
        raise ProtoError(f"{pkg_dir}: cannot be loaded as the package {PACKAGE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACKAGE]
        raise


def load(out_dir: str | None = None) -> API:
    """The generated modules (built first if missing or stale)."""
    global _loaded
    if _loaded is not None:
        return _loaded
    base = os.path.abspath(out_dir or default_dir())
    pkg_dir = os.path.join(base, PACKAGE)
    if not is_current(base):
        try:
            build(base)
        except PermissionError as e:
            raise ProtoError(f"containerd API modules in {pkg_dir} are missing or stale and cannot be "
                             f"generated here: {e} (run `python -m skiff.containerd.protos build` as "
                             "their owner)") from e
    _register_package(base)
    _loaded = API(base)
    return _loaded


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m skiff.containerd.protos build [--force] [--out DIR] | check [--out DIR]"
    if not args or args[0] not in ("build", "check"):
        print(usage, file=sys.stderr)
        return 2
    verb, rest = args[0], args[1:]
    out_dir = None
    force = False
    while rest:
        a = rest.pop(0)
        if a == "--force" and verb == "build":
            force = True
        elif a == "--out" and rest:
            out_dir = rest.pop(0)
        else:
            print(f"skiff.containerd.protos: unexpected argument {a!r}\n{usage}", file=sys.stderr)
            return 2
    try:
        if verb == "check":
            ok = is_current(out_dir)
            print(f"{os.path.join(out_dir or default_dir(), PACKAGE)}: {'current' if ok else 'missing or stale'}")
            return 0 if ok else 1
        base = build(out_dir, force=force)
    except ProtoError as e:
        print(f"skiff.containerd.protos: {e}", file=sys.stderr)
        return 1
    print(f"containerd API modules: {os.path.join(base, PACKAGE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
