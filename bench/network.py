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
with no container left). Set-up and clean-up are ``bench/engines.py``'s: containers and the user
networks removed through each daemon, the daemons stopped by PID, the temporary directory removed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
from engines import Bench, load_average

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
    bench = Bench("network.py", "sknb-")
    with bench:
        bench.start_dockerd(extra_args=["--bridge=", "--iptables=true"])
        bench.start_skiffd(*args.skiffd_arg)

        def cleanup(t) -> None:
            t.remove_all()
            if NET in t.run("network", "ls", "--format", "{{.Name}}").split():
                t.run("network", "rm", NET)

        targets = bench.engines(cleanup, timeout=300)
        for t in targets:        # lazy start-up work (bridge creation...) is not timed
            t.run("run", "--rm", "busybox", "true")
            t.run("run", "--rm", "--network", "none", "busybox", "true")
        print(load_average(), flush=True)

        if args.only in ("all", "run"):
            cmds = []
            for net in ("bridge", "none"):
                for t in targets:
                    extra = ["--network", "none"] if net == "none" else []
                    cmds.append(compare.Command(t.argv("run", "--rm", *extra, "busybox", "true"),
                                                name=f"{t.label}: docker run --rm {'--network none ' if extra else ''}"
                                                     "busybox true"))
            res = bench.compare(cmds, args.runs, args.warmup, key="run")
            for k, net in ((0, "default bridge"), (2, "--network none")):
                bench.table(compare.format_table(
                    res[k:k + 2], f"docker run --rm busybox true, {net} ({args.runs} runs after "
                                  f"{args.warmup} warm-up, alternating; ratio to dockerd)"))

        if args.only in ("all", "attach"):
            n = args.attach
            for t in targets:
                t.run("network", "create", NET)
                for i in range(n):
                    t.run("run", "-d", "--name", f"nb-{i}", "busybox", "sleep", "100000")
            cmds = []
            for t in targets:
                sh = t.sh()
                cmds.append(compare.Command(
                    f"for i in $(seq 0 {n - 1}); do {sh} network connect {NET} nb-$i || exit 1; done",
                    name=f"{t.label}: {n} x network connect"))
                cmds.append(compare.Command(
                    f"for i in $(seq 0 {n - 1}); do {sh} network disconnect {NET} nb-$i || exit 1; done",
                    name=f"{t.label}: {n} x network disconnect"))
            # rounds: dockerd connect, dockerd disconnect, skiffd connect, skiffd disconnect, ...
            res = bench.compare(cmds, args.attach_runs, 0, key="attach")
            for k, what in ((0, "connect"), (1, "disconnect")):
                bench.table(compare.format_table(
                    [res[k], res[k + 2]], f"{n} running containers, {n} x docker network {what} in a "
                                          f"row ({args.attach_runs} rounds; ratio to dockerd)"))
            for t in targets:
                t.remove_all()
                t.run("network", "rm", NET)

        summary = []
        out = bench.out
        if "run" in out and not any(r["error"] for r in out["run"]):
            d, s, dn, sn = (_median_ms(r) for r in out["run"])
            summary.append(f"run on the bridge {s / d:.2f} (skiffd {s:.0f} ms, dockerd {d:.0f} ms; "
                           f"network share: skiffd {s - sn:.0f} ms, dockerd {d - dn:.0f} ms)")
        if "attach" in out and not any(r["error"] for r in out["attach"]):
            dc, dd, sc, sd = (_median_ms(r) for r in out["attach"])
            summary.append(f"connect {sc / dc:.2f} ({sc:.0f} / {dc:.0f} ms), disconnect {sd / dd:.2f} "
                           f"({sd:.0f} / {dd:.0f} ms)")
        bench.summary("target <= 0.5 for run", summary)
    return bench.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
