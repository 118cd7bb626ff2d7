#!/usr/bin/env python3
"""Image transfers, skiffd against a private real dockerd 20.10, through the same docker CLI
(``/usr/local/bin/docker -H unix://SOCKET ...``) in the same run:

1. ``docker load -i big.tar``: a generated docker-archive of ``--layers`` layers of
   ``--layer-mb`` MB of random data (200 MB by default; the image is removed after each run);
2. ``docker save -o OUT big`` of that image (loaded once, not timed; the file removed after
   each run);
3. ``docker pull`` of the same image (same config, hence same image ID; gzip layers, level 1)
   from a local Debian docker-registry (pushed there once by skiff's library; the image is
   removed from the daemon after each run);
4. ``docker push`` of the pulled image to a second local registry, whose storage is emptied
   before each run (so every layer is uploaded; dockerd compresses each layer again, as it
   keeps no compressed blobs; skiffd pushes the blobs it pulled);
5. ``docker images`` with ``--many`` images (200 by default: distinct configs over one small
   shared layer, loaded from one archive, not timed) plus what the other steps left; then the
   same request without the CLI (``curl --unix-socket ... /v1.41/images/json``): the daemon's
   share.

    .venv/bin/python bench/images.py [-n 5] [-w 1] [--images-runs 20] [--layers 4] [--layer-mb 50]
                                     [--many 200] [--only load,save,pull,push,images] [--skiffd-args ARGS]
                                     [--json FILE]

Everything runs in one network namespace, as in ``bench/pull.py``: the private dockerd is
started as ``tests/root/dockerd_util.Dockerd`` does (its own roots, socket, pid file and cgroup
parent, in a namespace made with ``ip netns add``); this program brings that namespace's
loopback up and moves itself into it (setns, while single-threaded) before it starts the
registries (``tests/registry_util.Registry``, 127.0.0.1 there) and skiffd
(``tests/root/skiffd_util.Skiffd``: its own data and exec roots; its skiff-containerd), so both
daemons reach the registries on the same loopback. 127.0.0.0/8 is an insecure (plain HTTP)
registry for both by default. Every run starts after a ``sync`` (not timed).

Clean-up: the registries are stopped by PID, skiffd and its skiff-containerd by PID, dockerd
torn down by the helper (stopped by PID, its mounts, cgroups and namespace removed), and the
temporary directory removed unless a mount remains under it. Targets (issue 7): ratio <= 1.0.
Nothing is asserted; exit status 0 when every measured command succeeded.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
from engines import Bench, load_average, medians
from pull import _Netns, make_layer

CREATED = "2026-11-28T00:00:00Z"
STEPS = ("load", "save", "pull", "push", "images")
REPORTED = (*STEPS, "images_api")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_bytes(diff_ids: list[str], label: str = "") -> bytes:
    cfg: dict = {"architecture": "amd64", "os": "linux", "created": CREATED,
                 "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
                 "rootfs": {"type": "layers", "diff_ids": diff_ids},
                 "history": [{"created": CREATED, "created_by": f"bench layer {i}"} for i in range(len(diff_ids))]}
    if label:
        cfg["config"]["Labels"] = {"bench": label}
    return json.dumps(cfg, separators=(",", ":"), sort_keys=True).encode()


def add_bytes(t: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    t.addfile(info, io.BytesIO(data))


def write_archive(path: Path, images: list[tuple[str, bytes]], layers: list[bytes]) -> None:
    """A docker-archive as ``docker save`` writes it: ``<hex>.json`` configs, one directory per
    layer with ``layer.tar``, ``manifest.json`` (one entry per image; every image has all
    ``layers``)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        layer_paths = []
        for raw in layers:
            d = hashlib.sha256(raw).hexdigest()
            add_bytes(t, f"{d}/layer.tar", raw)
            layer_paths.append(f"{d}/layer.tar")
        entries = []
        for tag, cfg in images:
            name = hashlib.sha256(cfg).hexdigest() + ".json"
            add_bytes(t, name, cfg)
            entries.append({"Config": name, "RepoTags": [tag], "Layers": layer_paths})
        add_bytes(t, "manifest.json", json.dumps(entries).encode())


def push_to_registry(ref: str, work: Path, layers: list[bytes], cfg: bytes) -> str:
    """The image (gzip layers) into the registry with skiff's library; its manifest digest."""
    from skiff.images import manifest as mf
    from skiff.images.content import ContentStore, Descriptor
    from skiff.images.metadata import ImageRecord, MetaDB
    from skiff.images.push import push
    from skiff.images.registry.auth import AuthConfig

    with MetaDB(work / "meta.db") as meta:
        store = ContentStore(work / "content", meta)

        def put(data: bytes) -> str:
            digest = sha(data)
            with store.writer(f"bench-{digest}", digest, len(data)) as w:
                w.write(data)
                w.commit(len(data), digest)
            return digest

        descs = []
        for raw in layers:
            gz = gzip.compress(raw, compresslevel=1, mtime=0)
            descs.append({"mediaType": mf.OCI_LAYER_GZIP, "digest": put(gz), "size": len(gz)})
        manifest = mf.json_bytes({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST,
                                  "config": {"mediaType": mf.OCI_CONFIG, "digest": put(cfg), "size": len(cfg)},
                                  "layers": descs})
        target = Descriptor(mf.OCI_MANIFEST, put(manifest), len(manifest))
        with meta.transaction() as tx:
            tx.create_image("default", ImageRecord(ref, target))
        push(ref, store, meta, auth=AuthConfig())
    shutil.rmtree(work)
    return target.digest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=5)
    ap.add_argument("-w", "--warmup", type=int, default=1)
    ap.add_argument("--images-runs", type=int, default=20)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--layer-mb", type=int, default=50)
    ap.add_argument("--many", type=int, default=200)
    ap.add_argument("--only", default=",".join(STEPS), help="comma-separated subset of " + ",".join(STEPS))
    ap.add_argument("--skiffd-args", default="", help="extra skiffd arguments (shell words)")
    ap.add_argument("--json", help="write the raw numbers here")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    for s in only:
        if s not in STEPS:
            raise SystemExit(f"--only: unknown step {s!r} (known: {', '.join(STEPS)})")
    from registry_util import Registry

    bench = Bench("images.py", "skbi-")
    with bench:
        base = bench.base
        # the image: raw layers, one config; a docker-archive of it and one of --many small images
        layers = [make_layer(args.layer_mb * 1000 * 1000, i) for i in range(args.layers)]
        diff_ids = [sha(raw) for raw in layers]
        cfg = config_bytes(diff_ids)
        image_id = sha(cfg)
        big_tar = base / "big.tar"
        write_archive(big_tar, [("bench/big:1", cfg)], layers)
        small_layer = make_layer(4096, 999)
        many_tar = base / "many.tar"
        write_archive(many_tar, [(f"bench/many:{i}", config_bytes([sha(small_layer)], str(i)))
                                 for i in range(args.many)], [small_layer])
        total_mb = args.layers * args.layer_mb

        dockerd = bench.start_dockerd(load_busybox=False)
        subprocess.run(["nsenter", f"--net={dockerd.netns_path}", "--", "ip", "link", "set", "lo", "up"], check=True)
        netns = _Netns(dockerd.netns_path)
        bench.on_cleanup("netns", netns.leave)
        src = Registry.start(base / "reg-src")
        bench.on_cleanup("registry", src.stop)
        dst = Registry.start(base / "reg-dst")
        bench.on_cleanup("registry", dst.stop)
        bench.start_skiffd(*shlex.split(args.skiffd_args))
        pull_ref = f"{src.host}/bench/big:1"
        push_ref = f"{dst.host}/bench/big:1"
        digest = push_to_registry(pull_ref, base / "push-work", layers, cfg)
        # ~400 MB held here so far: the commands started next would report it as their peak RSS
        # (a child inherits its parent's high-water mark until it execs); free it and reset ours
        del layers
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        targets = bench.engines(cleanup=None)
        bench.table(f"image: {args.layers} layers x {args.layer_mb} MB random data (~{total_mb} MB), ID "
                    f"{image_id[:19]}, registry manifest {digest[:19]}; {load_average()}; "
                    f"{dockerd.docker('version', '--format', 'dockerd {{.Server.Version}}').stdout.strip()}")
        q = shlex.quote

        def group(step: str, title: str, make, runs: int, warmup: int) -> None:
            cmds = [make(t) for t in targets]
            cpu0 = [t.cpu() for t in targets]
            res = bench.compare(cmds, runs, warmup)
            cpu = [t.cpu() - c for t, c in zip(targets, cpu0, strict=True)]
            bench.out[step] = {"results": compare.to_json(res), "daemon_cpu_s": cpu}
            n = runs + warmup
            bench.table(compare.format_table(res, f"{title} ({runs} runs after {warmup} warm-up, alternating; "
                                                  "ratio to dockerd)")
                        + "\n  daemon+containerd CPU per run (setup and clean-up included): "
                        + ", ".join(f"{t.label} {c / n:.2f} s" for t, c in zip(targets, cpu, strict=True)))

        if "load" in only:
            group("load", f"docker load of a {total_mb} MB docker-archive",
                  lambda t: compare.Command(t.argv("load", "-q", "-i", str(big_tar)), name=f"{t.label}: docker load",
                                            setup="sync", cleanup=t.sh("rmi", "bench/big:1") + " >/dev/null"),
                  args.runs, args.warmup)
        if "save" in only:
            for t in targets:
                t.run("load", "-q", "-i", str(big_tar))
            group("save", f"docker save of the {total_mb} MB image",
                  lambda t: compare.Command(t.argv("save", "-o", f"{base}/out-{t.label}-{{i}}.tar", "bench/big:1"),
                                            name=f"{t.label}: docker save", setup="sync",
                                            cleanup=f"rm -f {q(str(base))}/out-{t.label}-{{i}}.tar"),
                  args.runs, args.warmup)
            for t in targets:
                t.run("rmi", "bench/big:1")
        if "pull" in only or "push" in only:
            for t in targets:
                t.run("rmi", "-f", "bench/big:1", check=False)
        if "pull" in only:
            group("pull", f"docker pull of the {total_mb} MB image (gzip layers) from 127.0.0.1",
                  lambda t: compare.Command(t.argv("pull", "-q", pull_ref), name=f"{t.label}: docker pull",
                                            setup="sync", cleanup=t.sh("rmi", pull_ref) + " >/dev/null"),
                  args.runs, args.warmup)
        if "push" in only:
            for t in targets:
                t.run("pull", "-q", pull_ref)
                t.run("tag", pull_ref, push_ref)
            wipe = f"rm -rf {q(str(dst.storage))}/docker; sync"
            group("push", f"docker push of the {total_mb} MB image to an empty 127.0.0.1 registry",
                  lambda t: compare.Command(t.argv("push", "-q", push_ref), name=f"{t.label}: docker push",
                                            setup=wipe),
                  args.runs, args.warmup)
        if "images" in only:
            for t in targets:
                t.run("load", "-q", "-i", str(many_tar))
            counts = [len(t.run("images", "-q").split()) for t in targets]
            group("images", f"docker images with {args.many} generated images (listed: "
                            + ", ".join(f"{t.label} {c}" for t, c in zip(targets, counts, strict=True)) + ")",
                  lambda t: compare.Command(t.argv("images"), name=f"{t.label}: docker images"),
                  args.images_runs, 3)
            if shutil.which("curl"):
                # the daemon's part alone: the same request without the CLI
                group("images_api", f"GET /v1.41/images/json with {args.many} images (curl on the socket, no CLI)",
                      lambda t: compare.Command(["curl", "-sf", "-o", "/dev/null", "--unix-socket", t.sock,
                                                 "http://d/v1.41/images/json"], name=f"{t.label}: GET /images/json"),
                      args.images_runs, 3)
        summary = []
        for step in REPORTED:
            if step not in bench.out:
                continue
            m = medians(bench.out[step]["results"])
            if m is None:
                summary.append(f"{step} FAILED")
                continue
            a, b = m
            summary.append(f"{step} {b / a:.2f} ({b * 1000:.0f} / {a * 1000:.0f} ms)")
        bench.summary("target <= 1.0", summary)
    return bench.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
