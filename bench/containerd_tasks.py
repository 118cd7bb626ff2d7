#!/usr/bin/env python3
"""Task life cycle through the containerd API: skiff-containerd (skiff-shim + skiff-runc)
against a private containerd 1.6 (containerd-shim-runc-v2 + runc), both driven by the same
command:

    ctr -a SOCKET run --rm docker.io/library/busybox:latest bench-{i} true

(create the container, Create + Wait + Start the task, wait for its exit, Delete the task,
delete the container: what ``docker run --rm`` costs below dockerd).

    .venv/bin/python bench/containerd_tasks.py [-n 20] [-w 3] [--json FILE]

Both daemons get their own root, state and socket under one temporary directory, import the
built-in busybox archive, and are stopped by pid at the end (the directory is then removed;
a mount left under it is an error). Prints bench/compare.py's table (medians, min-max, the
ratio to the first row: real containerd is the baseline). Nothing is asserted; exit status 0
when both ran every round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "root"))

from ctr_util import CTR, RealContainerd, SkiffContainerd  # noqa: E402

import compare  # noqa: E402

IMAGE = "docker.io/library/busybox:latest"
BUSYBOX_TAR = REPO / "build" / "images" / "busybox.tar"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=20)
    ap.add_argument("-w", "--warmup", type=int, default=3)
    ap.add_argument("--json", help="write the raw numbers here")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="skb-", dir="/tmp"))
    daemons: list = []
    try:
        (base / "real").mkdir()
        real = RealContainerd(base / "real").start()
        daemons.append(real)
        (base / "skiff").mkdir()
        skiff = SkiffContainerd(base / "skiff").start()
        daemons.append(skiff)
        for d in daemons:
            d.ctr("images", "import", str(BUSYBOX_TAR))
        cmds = [compare.Command([CTR, "-a", d.address, "run", "--rm", IMAGE, "bench-{i}", "true"], name=name)
                for d, name in ((real, "containerd 1.6 + runc"), (skiff, "skiff-containerd + skiff-runc"))]
        results = compare.compare(cmds, runs=args.runs, warmup=args.warmup, rss_runs=0)
        print(compare.format_table(results, "ctr run --rm busybox true (task create+start+wait+delete)"))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(compare.to_json(results), f, indent=1)
        return 0 if all(not r.error for r in results) else 1
    finally:
        for d in reversed(daemons):
            d.stop()
        with open("/proc/self/mountinfo") as f:
            left = [ln.split()[4] for ln in f if f" {base}/" in ln or ln.split()[4].startswith(f"{base}/")]
        if left:
            print(f"mounts left under {base}: {left}; not removing it", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=False)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/containerd_tasks.py: must run as root")
    sys.exit(main())
