#!/usr/bin/env python3
"""Memory of the manager process: skiff-containerd against a private containerd 1.6 (runc),
idle and with N running containers.

    .venv/bin/python bench/containerd_rss.py [-n 50] [--settle 2] [--json FILE]

For each daemon (started privately: its own root, state and socket under one temporary
directory, as bench/containerd_tasks.py does): import the built-in busybox archive, read the
manager's memory, start N containers with ``ctr run -d busybox sleep 100000``, read it again,
then kill and delete every task and container. Memory is the manager process alone (not its
shims): VmRSS and VmHWM from /proc/PID/status, PSS from /proc/PID/smaps_rollup, and its
thread count. Each reading is taken ``--settle`` seconds after the last operation.

Clean-up: tasks are SIGKILLed and deleted, containers removed, daemons stopped by PID (after
their containers are gone, so no shim remains), and the directory removed (a mount left under
it is reported and the directory kept). Exit status 0 when both daemons were measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "root"))

from ctr_util import RealContainerd, SkiffContainerd, table  # noqa: E402

IMAGE = "docker.io/library/busybox:latest"
BUSYBOX_TAR = REPO / "build" / "images" / "busybox.tar"
KIB = 1024


def memory(pid: int) -> dict:
    out: dict = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * KIB
            elif key == "Threads":
                out[key] = int(value)
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1]) * KIB
    return out


def clean(d, ids: list[str]) -> None:
    """SIGKILL and delete every task, remove every container (errors are reported)."""
    for cid in ids:
        d.ctr("tasks", "kill", "-a", "-s", "KILL", cid, check=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = table(d.ctr("tasks", "ls").stdout)
        if all(r[2] == "STOPPED" for r in rows if r[0] in ids):
            break
        time.sleep(0.2)
    for cid in ids:
        p = d.ctr("tasks", "rm", cid, check=False)
        if p.returncode != 0 and "not found" not in p.stderr:
            print(f"clean-up: ctr tasks rm {cid}: {p.stderr.strip()}", file=sys.stderr)
        p = d.ctr("containers", "rm", cid, check=False)
        if p.returncode != 0 and "not found" not in p.stderr:
            print(f"clean-up: ctr containers rm {cid}: {p.stderr.strip()}", file=sys.stderr)


def measure(d, pid: int, n: int, settle: float) -> dict:
    d.ctr("images", "import", str(BUSYBOX_TAR))
    time.sleep(settle)
    result = {"idle": memory(pid)}
    ids: list[str] = []
    try:
        for i in range(n):
            cid = f"rss-{i}"
            d.ctr("run", "-d", IMAGE, cid, "sleep", "100000")
            ids.append(cid)
        time.sleep(settle)
        result["loaded"] = memory(pid)
    finally:
        clean(d, ids)
    time.sleep(settle)
    result["after"] = memory(pid)
    return result


def mib(v: int) -> str:
    return f"{v / (1 << 20):.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--containers", type=int, default=50)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--json", help="write the raw numbers here")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="skr-", dir="/tmp"))
    results: dict = {}
    ok = True
    try:
        for name, cls in (("containerd 1.6 + runc", RealContainerd), ("skiff-containerd", SkiffContainerd)):
            sub = base / ("real" if cls is RealContainerd else "skiff")
            sub.mkdir()
            d = cls(sub)
            d.start()
            try:
                assert d.proc is not None
                results[name] = measure(d, d.proc.pid, args.containers, args.settle)
            except Exception as e:  # report, still measure the other one
                print(f"{name}: {e}", file=sys.stderr)
                ok = False
            finally:
                code = d.stop()
                if code != 0:
                    print(f"{name}: exited {code} at stop; log:\n{d.log()}", file=sys.stderr)
    finally:
        with open("/proc/self/mountinfo") as f:
            left = [ln.split()[4] for ln in f if ln.split()[4].startswith(f"{base}/")]
        if left:
            print(f"mounts left under {base}: {left}; not removing it", file=sys.stderr)
        else:
            shutil.rmtree(base)
    n = args.containers
    print(f"manager process memory, MiB (idle = busybox imported, 0 containers; {n} = {n} x ctr run -d sleep)")
    print(f"{'daemon':<24}{'RSS idle':>10}{'PSS idle':>10}{f'RSS {n}':>10}{f'PSS {n}':>10}"
          f"{f'HWM {n}':>10}{'RSS after':>11}{'threads':>9}")
    for name, r in results.items():
        i, ld, a = r["idle"], r.get("loaded", {}), r["after"]
        print(f"{name:<24}{mib(i['VmRSS']):>10}{mib(i['Pss']):>10}{mib(ld.get('VmRSS', 0)):>10}"
              f"{mib(ld.get('Pss', 0)):>10}{mib(ld.get('VmHWM', 0)):>10}{mib(a['VmRSS']):>11}"
              f"{i['Threads']:>4}/{ld.get('Threads', 0):<4}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if ok and len(results) == 2 else 1


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/containerd_rss.py: must run as root")
    sys.exit(main())
