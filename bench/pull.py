#!/usr/bin/env python3
"""Pull of a generated image from a local registry: skopeo vs skiff (vs docker when it runs).

    .venv/bin/python bench/pull.py [-n 30] [-w 3] [--rss-runs 3] [--layers 10] [--layer-mb 20]

Starts Debian's docker-registry on a free 127.0.0.1 port (storage in a temporary directory),
generates an image of ``--layers`` gzip layers of ``--layer-mb`` MB of incompressible data each
(about 200 MB by default), pushes it with skiff's push, checks once that skiff pulls it back to
the same manifest digest, then times, alternating:

1. ``skopeo copy docker://... dir:DIR`` (download and verify every blob into a directory: the
   reference, first row);
2. skiff's pull (this script re-run with ``--one-pull REF DIR``: a fresh content store and
   metadata database per run; download with 3 concurrent layers, digests verified, the image
   recorded; the Python start-up and imports are included in its time);
3. ``docker pull`` when a Docker daemon answers (``docker rmi`` after each run); 127.0.0.1 is an
   insecure registry for Docker by default.

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


def one_pull(ref: str, root: str) -> int:
    from skiff.images.content import ContentStore
    from skiff.images.metadata import MetaDB
    from skiff.images.pull import pull
    from skiff.images.registry.auth import AuthConfig

    with MetaDB(os.path.join(root, "meta.db")) as meta:
        record = pull(ref, ContentStore(os.path.join(root, "content"), meta), meta, auth=AuthConfig())
    print(record.target.digest)
    return 0


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


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                           text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=30)
    ap.add_argument("-w", "--warmup", type=int, default=3)
    ap.add_argument("--rss-runs", type=int, default=3)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--layer-mb", type=int, default=20)
    ap.add_argument("--one-pull", nargs=2, metavar=("REF", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_pull:
        return one_pull(*args.one_pull)

    from compare import Command, compare, format_table
    from registry_util import Registry

    tmp = Path(tempfile.mkdtemp(prefix="skiff-bench-pull-"))
    registry = None
    failed = False
    try:
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
        ]
        if docker_available():
            commands.append(Command(["docker", "pull", "--quiet", ref], name="docker pull",
                                    setup=f"docker rmi -f {q(ref)} >/dev/null 2>&1 || true; sync",
                                    cleanup=f"docker rmi -f {q(ref)} >/dev/null"))
        else:
            print("  docker: no daemon answers `docker info`; docker pull left out")
        results = compare(commands, runs=args.runs, warmup=args.warmup, rss_runs=args.rss_runs)
        print()
        print(format_table(results, f"pull of ~{total_mb} MB in {args.layers} layers from 127.0.0.1 "
                                    f"({args.runs} runs after {args.warmup} warm-up, alternating; "
                                    "ratios to skopeo)"))
        failed = any(r.error for r in results)
    finally:
        if registry is not None:
            registry.stop()
        shutil.rmtree(tmp, ignore_errors=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
