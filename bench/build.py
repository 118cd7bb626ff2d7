#!/usr/bin/env python3
"""`docker build` (classic builder) by skiffd against a private real dockerd 20.10, driven by the
same real docker CLI with ``DOCKER_BUILDKIT=0`` (``/usr/local/bin/docker -H unix://SOCKET build``)
in the same run (issue 10):

- one Dockerfile of 10 steps (FROM busybox, ENV, RUN x3, COPY of a generated 50 MB context,
  WORKDIR, LABEL, EXPOSE, CMD), the same context directory for both daemons;
- cold: before each timed run (untimed) the image is removed with its parents (``rmi -f``, which
  takes the classic builder's cache images with it), dangling images pruned and the build cache
  pruned (``builder prune -af``); busybox stays;
- cached: the same build again right after the cold one: every step after FROM from the cache.

    .venv/bin/python bench/build.py [-n 5] [-w 1] [--mb 50] [--json FILE]

The four commands alternate in each round (dockerd cold, skiffd cold, dockerd cached, skiffd
cached), after ``-w`` warm-up rounds; the tables give medians and ratios to dockerd. Targets:
ratio <= 1.0 cold and <= 0.5 cached. Nothing is asserted; exit status 0 when every measured
command succeeded.

Set-up and clean-up are ``bench/engines.py``'s: dockerd runs as ``tests/root/dockerd_util.Dockerd``
starts it (own roots, socket, cgroup parent, network namespace; ``build/images/busybox.tar``
loaded into it), skiffd as ``tests/root/skiffd_util.Skiffd`` does (it loads the same built-in
busybox); both are stopped by PID at the end and the temporary directory removed unless a mount
remains under it.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
from engines import Bench, Engine, load_average

TAG = "bench-build:1"
MIB = 1 << 20

DOCKERFILE = """\
FROM busybox
ENV BENCH=build PATH_EXTRA=/opt/bench
RUN echo one > /one
RUN mkdir -p /opt/bench && echo two > /opt/bench/two
RUN for i in 1 2 3 4 5 6 7 8; do echo $i >> /opt/bench/n; done
COPY data/ /data/
WORKDIR /data
LABEL bench=build
EXPOSE 8080
CMD ["ls", "/data"]
"""


def make_context(d: Path, mb: int) -> int:
    """The context: the Dockerfile, ``mb`` MB of incompressible data: 4/5 in 1 MiB files, 1/5 in
    16 KiB files (two directories), so that COPY has both big and many small files. Returns the
    byte count of data."""
    rng = random.Random(10)
    d.mkdir()
    (d / "Dockerfile").write_text(DOCKERFILE)
    big = d / "data" / "big"
    small = d / "data" / "small"
    big.mkdir(parents=True)
    small.mkdir()
    total = 0
    n_big = mb * 4 // 5
    for i in range(n_big):
        (big / f"f{i:03}").write_bytes(rng.randbytes(MIB))
        total += MIB
    i = 0
    while total < mb * MIB:
        (small / f"s{i:04}").write_bytes(rng.randbytes(16 * 1024))
        total += 16 * 1024
        i += 1
    return total


def reset(t: Engine) -> str:
    """Untimed, before a cold build: no image, no cache images, no build cache."""
    d = t.sh()
    return (f"{d} rmi -f {TAG} >/dev/null 2>&1; {d} image prune -f >/dev/null 2>&1; "
            f"{d} builder prune -af >/dev/null 2>&1; {d} image inspect busybox >/dev/null")


def cleanup(t: Engine) -> None:
    t.remove_all()
    t.run("rmi", "-f", TAG, check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=5)
    ap.add_argument("-w", "--warmup", type=int, default=1)
    ap.add_argument("--mb", type=int, default=50, help="context size in MB (default 50)")
    ap.add_argument("--json", help="write the raw numbers here")
    args = ap.parse_args()
    bench = Bench("build.py", "skbb-")
    os.environ["DOCKER_BUILDKIT"] = "0"         # the classic builder on both daemons
    with bench:
        ctx = bench.base / "ctx"
        size = make_context(ctx, args.mb)
        bench.start_dockerd()
        bench.start_skiffd()
        targets = bench.engines(cleanup)
        for t in targets:                      # both answer and run a container before timing
            t.run("run", "--rm", "--network", "none", "busybox", "true")
        bench.table(f"context: {size / MIB:.0f} MiB of random data in {len(list(ctx.rglob('*')))} entries; "
                    f"Dockerfile of {len(DOCKERFILE.splitlines())} steps; {load_average()}")
        build = ["build", "-t", TAG, str(ctx)]
        cmds = [compare.Command(t.argv(*build), name=f"{t.label}: cold build", setup=reset(t)) for t in targets]
        cmds += [compare.Command(t.argv(*build), name=f"{t.label}: cached build") for t in targets]
        res = bench.compare(cmds, args.runs, args.warmup, key="build")
        for k, what in ((0, "cold (image, cache images and build cache removed first)"),
                        (2, "cached (right after the cold build)")):
            bench.table(compare.format_table(
                res[k:k + 2], f"docker build, {what}: {args.runs} runs after {args.warmup} warm-up, "
                              "alternating with the other rows; ratio to dockerd"))
        # the cached build really came from the cache on both daemons
        for t in targets:
            for what in ("cold", "cached"):
                if what == "cold":
                    subprocess.run(["sh", "-c", reset(t)], capture_output=True, timeout=600)
                p = subprocess.run(t.argv(*build), capture_output=True, text=True, timeout=600)
                steps = len(re.findall(r"^Step \d+/", p.stdout, re.M))
                cached = len(re.findall(r"^ ---> Using cache$", p.stdout, re.M))
                bench.table(f"{t.label}: one more {what} build: exit {p.returncode}, {cached} 'Using cache' for "
                            f"{steps} steps" + (f"; {p.stderr.strip().splitlines()[-1]}" if p.returncode else ""))
        summary = []
        for k, title in ((0, "cold"), (2, "cached")):
            a, b = res[k], res[k + 1]
            if a.error or b.error or not a.wall or not b.wall:
                summary.append(f"{title}: FAILED (see above)")
                continue
            ma, mb_ = statistics.median(a.wall), statistics.median(b.wall)
            summary.append(f"{title} {mb_ / ma:.2f} (skiffd {mb_:.2f} s, dockerd {ma:.2f} s)")
        bench.summary("targets: cold <= 1.0, cached <= 0.5", summary)
    return bench.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
