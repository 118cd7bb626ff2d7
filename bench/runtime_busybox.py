#!/usr/bin/env python3
"""OCI runtimes side by side on the busybox bundle: runc, crun and skiff-runc running `true`.

    python3 bench/runtime_busybox.py [-n 30] [-w 3] [--rss-runs 3] [--skiff-runc PATH]

Builds a bundle in a temporary directory from the reference image (the layer of
/work/shared/images/busybox.tar extracted into rootfs/, config.json from `runc spec` with
terminal false and args ["true"]), then prints two tables (see bench/compare.py for columns):

1. `RUNTIME run` of a fresh container id per run (create, start, wait, delete in one call);
2. a create + start + delete -f cycle, three runtime calls per run through /bin/sh.

crun 1.8 refuses this machine's hybrid cgroup layout, so it runs through
/work/shared/conformance/runtime-tools/crun-v1.sh (a private mount namespace without the cgroup2
mount); the wrapper's own cost is shown as an extra row of table 1. skiff-runc is the third
column when its console script exists; if it fails, its row shows the error.

Each runtime gets its own --root under the temporary directory. Everything created is removed at
the end: leftover containers are deleted with `delete -f`, then the directory is removed (unless
a mount remains under it, which is reported). Exit status: 0 if every measured command
succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import Command, compare, format_table

REPO = Path(__file__).resolve().parents[1]
IMAGE = Path(os.environ.get("SKIFF_BUSYBOX_TAR", REPO.parent / "shared" / "images" / "busybox.tar"))
CRUN_V1 = REPO.parent / "shared" / "conformance" / "runtime-tools" / "crun-v1.sh"
WRAPPER_ONLY = ("unshare -m --propagation private sh -c "
                "'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec true'")


def build_bundle(bundle: Path) -> None:
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    with tarfile.open(IMAGE) as outer:
        mf = outer.extractfile("manifest.json")
        if mf is None:
            raise SystemExit(f"{IMAGE}: no manifest.json")
        for layer in json.load(mf)[0]["Layers"]:
            fobj = outer.extractfile(layer)
            if fobj is None:
                raise SystemExit(f"{IMAGE}: layer {layer} is not a file")
            with tarfile.open(fileobj=fobj) as lt:
                for m in lt.getmembers():
                    if m.name.startswith("/") or ".." in Path(m.name).parts:
                        raise SystemExit(f"{IMAGE}: unsafe path {m.name!r} in layer {layer}")
                lt.extractall(rootfs)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    cfg_path = bundle / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["true"]
    cfg_path.write_text(json.dumps(cfg, indent=1))


def version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv + ["--version"], capture_output=True, text=True, timeout=30)
    except OSError as e:
        return f"cannot run: {e.strerror}"
    out = (r.stdout or r.stderr).strip().splitlines()
    return out[0] if out else f"exit {r.returncode}"


def cleanup(runtimes: list[tuple[str, list[str], Path]], tmp: Path) -> list[str]:
    """Delete leftover containers, then the temporary directory; return problems found."""
    problems = []
    for name, prefix, root in runtimes:
        if not root.is_dir():
            continue
        r = subprocess.run(prefix + ["list", "-q"], capture_output=True, text=True)
        ids = set(r.stdout.split()) if r.returncode == 0 else set()
        # runc, crun and skiff-runc keep one directory per container under --root
        ids |= {p.name for p in root.iterdir() if p.is_dir()}
        for cid in sorted(ids):
            d = subprocess.run(prefix + ["delete", "-f", cid], capture_output=True, text=True)
            if d.returncode != 0:
                problems.append(f"{name} delete -f {cid}: {d.stderr.strip()}")
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if line.split()[4].startswith(f"{tmp}/")]
    if mounts:
        problems.append(f"not removing {tmp}: mounts remain under it: {', '.join(mounts)}")
    else:
        shutil.rmtree(tmp)
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=30)
    ap.add_argument("-w", "--warmup", type=int, default=3)
    ap.add_argument("--rss-runs", type=int, default=3)
    ap.add_argument("--skiff-runc", default=str(REPO / ".venv" / "bin" / "skiff-runc"))
    ap.add_argument("--no-skiff", action="store_true", help="leave skiff-runc out")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("runtime_busybox.py: needs root (the runtimes create namespaces and cgroups)")

    tmp = Path(tempfile.mkdtemp(prefix="skiff-bench-"))
    bundle = tmp / "bundle"
    runtimes: list[tuple[str, list[str], Path]] = [
        ("runc", ["runc"], tmp / "runc-state"),
        ("crun", [str(CRUN_V1)], tmp / "crun-state"),
    ]
    if not args.no_skiff and os.access(args.skiff_runc, os.X_OK):
        runtimes.append(("skiff-runc", [args.skiff_runc], tmp / "skiff-state"))
    runtimes = [(n, p + ["--root", str(root)], root) for n, p, root in runtimes]
    failed = False
    try:
        build_bundle(bundle)
        print(f"bundle: {bundle} (busybox from {IMAGE}, args [\"true\"])")
        for name, prefix, _ in runtimes:
            print(f"  {name}: {version(prefix[:1] if name != 'crun' else ['crun'])}")
        kw = dict(runs=args.runs, warmup=args.warmup, rss_runs=args.rss_runs)

        run_cmds = [Command(p + ["run", "--bundle", str(bundle), f"bench-run-{n}-{{i}}"], name=f"{n} run")
                    for n, p, _ in runtimes]
        run_cmds.append(Command(WRAPPER_ONLY, name="(crun-v1.sh wrapper alone)"))
        results = compare(run_cmds, **kw)
        print()
        print(format_table(results, f"table 1: `run` of `true` ({args.runs} runs after {args.warmup} "
                                    "warm-up, alternating; ratios to runc)"))
        failed |= any(r.error for r in results)

        cycle_cmds = []
        for n, prefix, _ in runtimes:
            rt = shlex.join(prefix)
            cid = f"bench-cycle-{n}-{{i}}"
            cycle_cmds.append(Command(
                f"{rt} create --bundle {shlex.quote(str(bundle))} {cid} && {rt} start {cid} && "
                f"{rt} delete -f {cid}",
                name=f"{n} create+start+delete"))
        results = compare(cycle_cmds, **kw)
        print()
        print(format_table(results, f"table 2: create + start + delete -f through /bin/sh ({args.runs} "
                                    f"runs after {args.warmup} warm-up, alternating; ratios to runc)"))
        failed |= any(r.error for r in results)
    finally:
        problems = cleanup(runtimes, tmp)
        for problem in problems:
            print(f"cleanup: {problem}", file=sys.stderr)
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
