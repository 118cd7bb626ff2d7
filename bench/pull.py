#!/usr/bin/env python3
"""Pull of a generated image from a local registry: skopeo vs skiff vs docker.

    .venv/bin/python bench/pull.py [-n 30] [-w 3] [--rss-runs 3] [--layers 10] [--layer-mb 20] [--no-docker]

Starts Debian's docker-registry on a free 127.0.0.1 port (storage in a temporary directory),
generates an image of ``--layers`` gzip layers of ``--layer-mb`` MB of incompressible data each
(about 200 MB by default), pushes it with skiff's push, checks once that skiff pulls it back to
the same manifest digest, then times, alternating:

1. ``skopeo copy docker://... dir:DIR`` (download and verify every blob into a directory: the
   reference, first row);
2. skiff's pull (this script re-run with ``--one-pull REF DIR``: a fresh content store and
   metadata database per run; download with 3 concurrent layers, digests verified, the image
   recorded; the Python start-up and imports are included in its time);
3. skiff's pull with unpacking (``--one-pull-unpack``: the same, then each layer applied into
   an overlay snapshotter under DIR, as ``docker pull`` extracts into overlay2);
4. ``docker pull`` of a private Debian dockerd 20.10 (``docker rmi`` after each run; 127.0.0.0/8
   is an insecure registry for Docker by default). ``docker pull`` returns when the layers are
   downloaded, verified and extracted into overlay2: compare it with row 3.

Everything runs in one network namespace, so that the three pull from the same registry over
the same loopback: as root, with dockerd installed and without ``--no-docker``, the script starts
a private dockerd as the root tests do (tests/root/dockerd_util.py: its own data root, exec
root, socket, pid file and CLI config, in a namespace made with ``ip netns add`` and entered with
``nsenter --net``, no bridge, no iptables), brings that namespace's loopback up and moves itself
into it (setns) before it starts docker-registry on 127.0.0.1 there; skopeo and skiff, its
children, are in it too. Otherwise the registry runs in the current namespace and docker is left
out. At the end the registry is stopped by its PID, dockerd is torn down by the helper (stopped
by its PID, its mounts, cgroups and namespace removed) and the temporary directory removed.

Every run writes into its own directory under the temporary directory and the cleanup removes
it; every run starts after a ``sync`` (not timed), so no run pays for writing back another's
dirty pages. skiff's content store makes each blob durable (fsync) before it counts as
committed, as containerd's does; ``skopeo copy`` to ``dir:`` does not fsync. At the end the registry is stopped by its PID and the temporary directory removed. Exit
status 0 when every measured command succeeded.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "root"))


def one_pull(ref: str, root: str, unpack: bool = False) -> int:
    from skiff.images.content import ContentStore
    from skiff.images.metadata import MetaDB
    from skiff.images.pull import pull
    from skiff.images.registry.auth import AuthConfig

    unpacker = None
    if unpack:
        from skiff.images.snapshots.overlay import OverlaySnapshotter
        from skiff.images.unpack import unpack as unpack_image

        snapshotter = OverlaySnapshotter(os.path.join(root, "snapshots"))

        def unpacker(desc, content):
            return unpack_image(desc, content, snapshotter, snapshotter_name="overlayfs")
    with MetaDB(os.path.join(root, "meta.db")) as meta:
        record = pull(ref, ContentStore(os.path.join(root, "content"), meta), meta, auth=AuthConfig(),
                      unpack=unpacker)
    print(record.target.digest)
    return 0


class _Netns:
    """The calling process moved into a network namespace (setns) and back."""

    def __init__(self, path: str) -> None:
        import ctypes

        self._libc = ctypes.CDLL(None, use_errno=True)
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._setns(fd, path)
        finally:
            os.close(fd)

    def _setns(self, fd: int, what: str) -> None:
        import ctypes

        if self._libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {what}: {os.strerror(err)}")

    def leave(self) -> None:
        if self._home >= 0:
            self._setns(self._home, "the original network namespace")
            os.close(self._home)
            self._home = -1


def make_layer(size: int, seed: int) -> bytes:
    data = os.urandom(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo(f"data/layer{seed}.bin")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def build_and_push(ref: str, work: Path, layers: int, layer_mb: int) -> str:
    import hashlib

    from skiff.images import manifest as mf
    from skiff.images.content import ContentStore, Descriptor
    from skiff.images.metadata import ImageRecord, MetaDB
    from skiff.images.push import push
    from skiff.images.registry.auth import AuthConfig

    with MetaDB(work / "meta.db") as meta:
        store = ContentStore(work / "content", meta)

        def put(data: bytes) -> str:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            with store.writer(f"bench-{digest}", digest, len(data)) as w:
                w.write(data)
                w.commit(len(data), digest)
            return digest

        descs, diff_ids = [], []
        for i in range(layers):
            raw = make_layer(layer_mb * 1000 * 1000, i)
            diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
            gz = gzip.compress(raw, compresslevel=1, mtime=0)
            descs.append({"mediaType": mf.OCI_LAYER_GZIP, "digest": put(gz), "size": len(gz)})
        config = mf.json_bytes({"architecture": "amd64", "os": "linux", "config": {},
                                "rootfs": {"type": "layers", "diff_ids": diff_ids}})
        manifest = mf.json_bytes({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                                  "config": {"mediaType": mf.OCI_CONFIG, "digest": put(config),
                                             "size": len(config)},
                                  "layers": descs})
        target = Descriptor(mf.OCI_MANIFEST, put(manifest), len(manifest))
        with meta.transaction() as tx:
            tx.create_image("default", ImageRecord(ref, target))
        push(ref, store, meta, auth=AuthConfig())
        return target.digest


def docker_missing() -> str:
    """Why a private dockerd cannot be run here ("" when it can)."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("dockerd", "docker", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=30)
    ap.add_argument("-w", "--warmup", type=int, default=3)
    ap.add_argument("--rss-runs", type=int, default=3)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--layer-mb", type=int, default=20)
    ap.add_argument("--no-docker", action="store_true", help="leave docker pull out")
    ap.add_argument("--one-pull", nargs=2, metavar=("REF", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--one-pull-unpack", nargs=2, metavar=("REF", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_pull:
        return one_pull(*args.one_pull)
    if args.one_pull_unpack:
        return one_pull(*args.one_pull_unpack, unpack=True)

    from compare import Command, compare, format_table
    from registry_util import Registry

    tmp = Path(tempfile.mkdtemp(prefix="skiff-bench-pull-"))
    registry = None
    dockerd = None
    netns = None
    failed = False
    try:
        why = "--no-docker" if args.no_docker else docker_missing()
        if not why:
            from dockerd_util import Dockerd

            dockerd = Dockerd(tmp / "dockerd-log")
            dockerd.start()
            subprocess.run(["nsenter", f"--net={dockerd.netns_path}", "--", "ip", "link", "set", "lo", "up"],
                           check=True)
            netns = _Netns(dockerd.netns_path)
            print(f"network namespace {dockerd.name}: dockerd {dockerd.pid}, registry, skopeo and skiff")
        registry = Registry.start(tmp / "registry")
        ref = f"{registry.host}/bench/big:latest"
        digest = build_and_push(ref, tmp / "source", args.layers, args.layer_mb)
        check = subprocess.run([sys.executable, __file__, "--one-pull", ref, str(tmp / "check")],
                               capture_output=True, text=True)
        if check.returncode != 0 or check.stdout.strip() != digest:
            raise SystemExit(f"skiff pull check failed: {check.stderr.strip() or check.stdout.strip()}")
        shutil.rmtree(tmp / "check")
        total_mb = args.layers * args.layer_mb
        print(f"image {ref} ({digest}): {args.layers} gzip layers of {args.layer_mb} MB of random data "
              f"(~{total_mb} MB)")
        for tool in (["skopeo", "--version"], ["docker-registry", "--version"]):
            print("  " + subprocess.run(tool, capture_output=True, text=True).stdout.strip())
        runs = tmp / "runs"
        runs.mkdir()
        q = shlex.quote
        commands = [
            Command(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                     f"dir:{runs}/skopeo-{{i}}"], name="skopeo copy to dir:", setup="sync",
                    cleanup=f"rm -rf {q(str(runs))}/skopeo-{{i}}"),
            Command([sys.executable, __file__, "--one-pull", ref, f"{runs}/skiff-{{i}}"], name="skiff pull",
                    setup="sync", cleanup=f"rm -rf {q(str(runs))}/skiff-{{i}}"),
            Command([sys.executable, __file__, "--one-pull-unpack", ref, f"{runs}/skiffu-{{i}}"],
                    name="skiff pull + unpack", setup="sync",
                    cleanup=f"rm -rf {q(str(runs))}/skiffu-{{i}}"),
        ]
        if dockerd is not None:
            docker = ["docker", "--host", f"unix://{dockerd.sock}", "--config", str(dockerd.cli_config)]
            d = shlex.join(docker)
            print("  " + dockerd.docker("version", "--format", "docker {{.Server.Version}}").stdout.strip())
            commands.append(Command([*docker, "pull", "--quiet", ref], name="docker pull",
                                    setup=f"{d} rmi -f {q(ref)} >/dev/null 2>&1 || true; sync",
                                    cleanup=f"{d} rmi -f {q(ref)} >/dev/null"))
        else:
            print(f"  docker: left out ({why})")
        results = compare(commands, runs=args.runs, warmup=args.warmup, rss_runs=args.rss_runs)
        print()
        print(format_table(results, f"pull of ~{total_mb} MB in {args.layers} layers from 127.0.0.1 "
                                    f"({args.runs} runs after {args.warmup} warm-up, alternating; "
                                    "ratios to skopeo)"))
        failed = any(r.error for r in results)
    finally:
        try:
            if registry is not None:
                registry.stop()
        finally:
            if netns is not None:
                netns.leave()
            if dockerd is not None:
                dockerd.close()
            shutil.rmtree(tmp, ignore_errors=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
