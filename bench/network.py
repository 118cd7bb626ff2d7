#!/usr/bin/env python3
"""Networking cost: skiffd against a private real dockerd 20.10 (Debian docker.io, containerd 1.6,
runc) with its bridge, driven by the same real docker CLI in the same run (issue 8):

1. ``docker run --rm busybox true`` on each daemon's default bridge network, and the same with
   ``--network none`` (the difference is the network's share); ``-n`` timed runs after ``-w``
   warm-up, alternating daemons;
2. with ``--attach`` containers running on the default bridge (``sleep``), the time to connect
   all of them to one user network (``docker network connect``, one CLI call each, in a row) and
   then to disconnect them all, ``--attach-runs`` rounds (the containers stay; the network is
   made once per daemon).

    .venv/bin/python bench/network.py [-n 20] [-w 3] [--attach 50] [--attach-runs 3]
                                      [--only run|attach] [--skiffd-arg ARG ...] [--json FILE]

Run as root with the project's virtualenv Python. Target (issue 8): ratio <= 0.5 for
``run --rm busybox true`` on the bridge. Nothing is asserted; the tables are printed, exit status
0 when every measured command succeeded.

Set-up: dockerd as ``tests/root/dockerd_util.Dockerd`` starts it (private roots and socket, in a
throwaway network namespace), but with its default bridge (``docker0`` inside that namespace)
and its iptables rules (also inside that namespace): ``--bridge=`` and ``--iptables=true`` after
the harness's ``--bridge=none --iptables=false`` (the last value of a flag wins);
``--userland-proxy=false`` stays. skiffd as ``tests/root/skiffd_util.Skiffd`` does; its bridge
``skiffN``, its nftables table and its netns live on the host (they are removed when it stops
with no container left). Clean-up as in ``bench/skiffd.py``: containers and the user networks
removed through each daemon, the daemons stopped by PID, the temporary directory removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "root"))
sys.path.insert(0, str(REPO / "tests"))

from dockerd_util import Dockerd  # noqa: E402
from skiffd_util import Skiffd  # noqa: E402

import compare  # noqa: E402
from skiffd import Target  # noqa: E402

BUSYBOX_TAR = REPO / "build" / "images" / "busybox.tar"
NET = "benchnet"


def _median_ms(r: dict) -> float:
    return statistics.median(r["wall_s"]) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=20)
    ap.add_argument("-w", "--warmup", type=int, default=3)
    ap.add_argument("--attach", type=int, default=50, help="containers connected and disconnected")
    ap.add_argument("--attach-runs", type=int, default=3)
    ap.add_argument("--only", choices=("all", "run", "attach"), default="all")
    ap.add_argument("--skiffd-arg", action="append", default=[],
                    help="extra skiffd argument (repeatable)")
    ap.add_argument("--json", help="write the raw numbers here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/network.py: must run as root")
    base = Path(tempfile.mkdtemp(prefix="sknb-", dir="/tmp"))
    os.environ["DOCKER_CONFIG"] = str(base / "cli")
    os.environ.pop("DOCKER_HOST", None)
    (base / "cli").mkdir()
    out: dict = {}
    ok = True
    dockerd: Dockerd | None = None
    skiffd: Skiffd | None = None
    targets: list[Target] = []
    tables: list[str] = []
    try:
        dockerd = Dockerd(base / "logs", base_dir=str(base), extra_args=["--bridge=", "--iptables=true"])
        dockerd.start()
        dockerd.load_image(str(BUSYBOX_TAR))
        skiffd = Skiffd(str(base / "s"), str(base / "sd"), *args.skiffd_arg)
        dk, sk = dockerd, skiffd
        assert sk.proc is not None
        sk_pid = sk.proc.pid
        targets = [
            Target("dockerd", str(dk.sock), lambda: dk.pid, dk._containerd_pid, b"", "dockerd",
                   "containerd", "containerd-shim-runc-v2"),
            Target("skiffd", sk.sock, lambda: sk_pid, lambda: sk.containerd_pid() or 0, b"",
                   "skiffd", "skiff-containerd", "skiff-shim"),
        ]
        for t in targets:        # lazy start-up work (bridge creation...) is not timed
            t.run("run", "--rm", "busybox", "true")
            t.run("run", "--rm", "--network", "none", "busybox", "true")
        print(f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)", flush=True)

        if args.only in ("all", "run"):
            cmds = []
            for net in ("bridge", "none"):
                for t in targets:
                    extra = ["--network", "none"] if net == "none" else []
                    cmds.append(compare.Command(t.docker("run", "--rm", *extra, "busybox", "true"),
                                                name=f"{t.label}: docker run --rm {'--network none ' if extra else ''}"
                                                     "busybox true"))
            res = compare.compare(cmds, runs=args.runs, warmup=args.warmup, rss_runs=0)
            ok &= not any(r.error for r in res)
            out["run"] = compare.to_json(res)
            for k, net in ((0, "default bridge"), (2, "--network none")):
                tables.append(compare.format_table(
                    res[k:k + 2], f"docker run --rm busybox true, {net} ({args.runs} runs after "
                                  f"{args.warmup} warm-up, alternating; ratio to dockerd)"))
                print(tables[-1], flush=True)

        if args.only in ("all", "attach"):
            n = args.attach
            for t in targets:
                t.run("network", "create", NET)
                for i in range(n):
                    t.run("run", "-d", "--name", f"nb-{i}", "busybox", "sleep", "100000")
            cmds = []
            for t in targets:
                sh = t.sh_docker()
                cmds.append(compare.Command(
                    f"for i in $(seq 0 {n - 1}); do {sh} network connect {NET} nb-$i || exit 1; done",
                    name=f"{t.label}: {n} x network connect"))
                cmds.append(compare.Command(
                    f"for i in $(seq 0 {n - 1}); do {sh} network disconnect {NET} nb-$i || exit 1; done",
                    name=f"{t.label}: {n} x network disconnect"))
            # rounds: dockerd connect, dockerd disconnect, skiffd connect, skiffd disconnect, ...
            res = compare.compare(cmds, runs=args.attach_runs, warmup=0, rss_runs=0)
            ok &= not any(r.error for r in res)
            out["attach"] = compare.to_json(res)
            for k, what in ((0, "connect"), (1, "disconnect")):
                tables.append(compare.format_table(
                    [res[k], res[k + 2]], f"{n} running containers, {n} x docker network {what} in a "
                                          f"row ({args.attach_runs} rounds; ratio to dockerd)"))
                print(tables[-1], flush=True)
            for t in targets:
                t.remove_all()
                t.run("network", "rm", NET)

        summary = []
        if "run" in out and not any(r["error"] for r in out["run"]):
            d, s, dn, sn = (_median_ms(r) for r in out["run"])
            summary.append(f"run on the bridge {s / d:.2f} (skiffd {s:.0f} ms, dockerd {d:.0f} ms; "
                           f"network share: skiffd {s - sn:.0f} ms, dockerd {d - dn:.0f} ms)")
        if "attach" in out and not any(r["error"] for r in out["attach"]):
            dc, dd, sc, sd = (_median_ms(r) for r in out["attach"])
            summary.append(f"connect {sc / dc:.2f} ({sc:.0f} / {dc:.0f} ms), disconnect {sd / dd:.2f} "
                           f"({sd:.0f} / {dd:.0f} ms)")
        tables.append("ratios skiffd/dockerd (target <= 0.5 for run): " + "; ".join(summary)
                      + f"; load average at the end {os.getloadavg()[0]:.2f}")
        print(tables[-1], flush=True)
    except Exception as e:
        ok = False
        print(f"bench/network.py: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        for t in targets:
            try:
                t.remove_all()
                if NET in t.run("network", "ls", "--format", "{{.Name}}").split():
                    t.run("network", "rm", NET)
            except Exception as e:
                print(f"clean-up: {t.label}: {e}", file=sys.stderr)
        if skiffd is not None:
            try:
                skiffd.stop()
            except Exception as e:
                ok = False
                print(f"clean-up: skiffd: {e}", file=sys.stderr)
        if dockerd is not None:
            try:
                dockerd.close()
            except Exception as e:
                ok = False
                print(f"clean-up: dockerd: {e}", file=sys.stderr)
        with open("/proc/self/mountinfo") as f:
            left = [ln.split()[4] for ln in f if ln.split()[4].startswith(f"{base}/")]
        if left:
            print(f"mounts left under {base}: {left}; not removing it", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": out, "tables": tables}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
