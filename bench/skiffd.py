#!/usr/bin/env python3
"""skiffd against a private real dockerd 20.10 (Debian docker.io, containerd 1.6, runc), driven
by the same real docker CLI (``/usr/local/bin/docker -H unix://SOCKET ...``) in the same run:

1. ``docker run --rm --network none busybox true`` (``-n`` timed runs after ``-w`` warm-up,
   alternating daemons);
2. batch: 50 x ``docker run -d --network none busybox sleep 60`` (create + start) in a row, timed
   as a whole (``--batch-runs`` rounds, alternating; the containers are removed between rounds,
   not timed);
3. with 50 running containers (``sleep 100000``): ``docker ps`` and ``docker inspect NAME``;
4. memory of the daemons, idle (image loaded, no container) and with the 50 containers: VmRSS
   and PSS (/proc/PID/smaps_rollup) of the daemon (dockerd / skiffd), its containerd (containerd /
   skiff-containerd) and, separately, the shims (containerd-shim-runc-v2 / skiff-shim, the
   skiff-shim zygote included), and "unique": the distinct physical pages the daemon and its
   containerd hold together (/proc/PID/pagemap; a page both map counted once), also with the
   shims. RSS sums count the pages skiffd and skiff-containerd share (libpython, grpcio) twice;
   PSS shrinks when other copies of the same programs run on the machine (another dockerd halves
   dockerd's); unique depends on neither. All three ratios are printed (docs/memory.md). Each
   reading is taken after ``--settle`` seconds without requests: skiff-containerd ends request
   threads idle for 10 s (skiff.containerd.pool) and both skiff daemons hand freed heap back
   every 10 s (skiff.memtrim).

    .venv/bin/python bench/skiffd.py [-n 30] [-w 3] [--batch 50] [--batch-runs 3] [--settle 25]
                                     [--only run|batch|ps|memory] [--json FILE]

Run with the project's virtualenv Python (``skiffd`` is found next to it). Targets (issue 6):
ratio <= 0.5 for run, batch and memory. Nothing is asserted; the tables are printed, exit status
0 when every measured command succeeded.

Set-up: dockerd runs as ``tests/root/dockerd_util.Dockerd`` starts it (its own --data-root,
--exec-root, socket, pid file and cgroup parent, inside a throwaway network namespace made with
``ip netns add`` and entered with ``nsenter --net``; ``build/images/busybox.tar`` is loaded into
it); skiffd as ``tests/root/skiffd_util.Skiffd`` does (its own data root, exec root and socket;
it spawns its own skiff-containerd and loads the built-in busybox image, the same image).
Clean-up: every container is removed through each daemon, dockerd is stopped by PID (its
containerd and leftovers too, mounts under its directory unmounted, its cgroups and netns
removed), skiffd and its skiff-containerd are stopped by PID (the shim zygote ends with
skiff-containerd), and the temporary directory is removed unless a mount remains under it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
from engines import Bench, Engine, load_average, medians

KIB = 1024
MIB = 1 << 20


# -- processes and memory

def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _start_ticks(pid: int) -> int:
    text = _read(f"/proc/{pid}/stat").decode(errors="replace")
    try:
        return int(text.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return 0


def processes_with(needle: bytes) -> list[int]:
    """Live processes whose NUL-separated command line contains ``needle``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and needle in _read(f"/proc/{entry}/cmdline"):
            stat = _read(f"/proc/{entry}/stat").decode(errors="replace")
            if stat and stat.rsplit(")", 1)[1].split()[0] != "Z":
                out.append(int(entry))
    return out


def memory(pids: list[int]) -> dict:
    """Summed VmRSS and PSS (bytes) of ``pids``, with their count and thread count."""
    rss = pss = threads = n = 0
    for pid in pids:
        status = _read(f"/proc/{pid}/status").decode(errors="replace")
        rollup = _read(f"/proc/{pid}/smaps_rollup").decode(errors="replace")
        if not status:
            continue
        n += 1
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key == "VmRSS":
                rss += int(value.split()[0]) * KIB
            elif key == "Threads":
                threads += int(value)
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1]) * KIB
    return {"rss": rss, "pss": pss, "procs": n, "threads": threads}


def footprint(pids: list[int]) -> int:
    """Bytes of physical memory that ``pids`` hold resident together: the distinct page frames of
    all their mappings (/proc/PID/pagemap, root only), a page that several of them map counted
    once. Unlike PSS it does not depend on what else runs on the machine (another dockerd or
    Python sharing the same files halves PSS); unlike the RSS sum it does not count the pages
    the two processes share twice."""
    import struct

    frames: set[int] = set()
    for pid in pids:
        try:
            maps = _read(f"/proc/{pid}/maps").decode(errors="replace").splitlines()
            fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        except OSError:
            continue
        try:
            for line in maps:
                if line.rstrip().endswith("[vsyscall]"):
                    continue
                lo, hi = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
                first, n = lo >> 12, (hi - lo) >> 12
                done = 0
                while done < n:
                    k = min(n - done, 1 << 16)
                    try:
                        buf = os.pread(fd, k * 8, (first + done) * 8)
                    except OSError:
                        break
                    for (entry,) in struct.iter_unpack("<Q", buf):
                        if entry >> 63:                       # present
                            frames.add(entry & ((1 << 55) - 1))  # the page frame number
                    done += k
        finally:
            os.close(fd)
    return len(frames) * os.sysconf("SC_PAGE_SIZE")


def reading(t: Engine) -> dict:
    """Memory of ``t``'s daemon, its containerd and its shims (see ``memory``, ``footprint``)."""
    shims = processes_with(t.shim_needle)
    pair = [t.daemon_pid(), t.containerd_pid()]
    return {"daemon": memory([t.daemon_pid()]), "containerd": memory([t.containerd_pid()]),
            "shims": memory(shims), "unique": footprint(pair), "unique_shims": footprint(pair + shims)}


def mib(v: int) -> str:
    return f"{v / MIB:.1f}"


def memory_table(readings: dict[str, dict[str, dict]], n: int) -> str:
    """One row per daemon and state: PSS and RSS of daemon, containerd, their sum, the shims."""
    head = (f"{'daemon':<10}{'state':>8}  {'daemon PSS/RSS':>15}  {'containerd PSS/RSS':>18}  "
            f"{'sum PSS/RSS':>13}  {'unique':>7}  {'shims PSS/RSS (procs)':>22}  {'+shims':>7}  {'threads':>7}")
    lines = ["memory, MiB (PSS from smaps_rollup / VmRSS); sum = daemon + its containerd; unique = the "
             "pages they hold, shared ones counted once (pagemap); +shims = the same with the shims",
             head, "-" * len(head)]
    for label, states in readings.items():
        for state, r in states.items():
            d, c, s = r["daemon"], r["containerd"], r["shims"]
            lines.append(
                f"{label:<10}{state:>8}  {mib(d['pss']) + '/' + mib(d['rss']):>15}  "
                f"{mib(c['pss']) + '/' + mib(c['rss']):>18}  "
                f"{mib(d['pss'] + c['pss']) + '/' + mib(d['rss'] + c['rss']):>13}  "
                f"{mib(r['unique']):>7}  "
                f"{mib(s['pss']) + '/' + mib(s['rss']) + ' (' + str(s['procs']) + ')':>22}  "
                f"{mib(r['unique_shims']):>7}  {d['threads'] + c['threads']:>7}")
    labels = list(readings)
    if len(labels) == 2:
        a, b = (readings[x] for x in labels)
        for state in a:
            if state not in b:
                continue
            def tot(r: dict, key: str, shims: bool) -> int:
                return r["daemon"][key] + r["containerd"][key] + (r["shims"][key] if shims else 0)
            parts = []
            for key in ("unique", "unique_shims"):
                base = a[state][key]
                ratio = b[state][key] / base if base else 0.0
                parts.append(f"unique {'with' if key == 'unique_shims' else 'w/o'} shims {ratio:.2f}")
            for key in ("pss", "rss"):
                for shims in (False, True):
                    base = tot(a[state], key, shims)
                    ratio = tot(b[state], key, shims) / base if base else 0.0
                    parts.append(f"{key.upper()} {'with' if shims else 'w/o'} shims {ratio:.2f}")
            lines.append(f"ratio {labels[1]}/{labels[0]} {state:>5}: " + ", ".join(parts))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=30)
    ap.add_argument("-w", "--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=50, help="containers per batch and for ps/inspect")
    ap.add_argument("--batch-runs", type=int, default=3)
    ap.add_argument("--settle", type=float, default=25.0,
                    help="seconds of idleness before a memory reading (skiff-containerd ends request "
                         "threads idle for 10 s; both daemons give freed heap back every 10 s)")
    ap.add_argument("--only", choices=("all", "run", "batch", "ps", "memory"), default="all")
    ap.add_argument("--json", help="write the raw numbers here")
    args = ap.parse_args()
    bench = Bench("skiffd.py", "skbd-")
    with bench:
        t0 = time.monotonic()
        bench.start_dockerd()
        docker_t = time.monotonic() - t0
        t0 = time.monotonic()
        bench.start_skiffd()
        skiffd_t = time.monotonic() - t0
        bench.table(f"start-up (to API answering, image loaded): dockerd {docker_t:.2f} s, skiffd {skiffd_t:.2f} s; "
                    f"{load_average()}")
        targets = bench.engines(timeout=300)
        # both daemons answer; a first container each so that lazy start-up work is not timed
        for t in targets:
            t.run("run", "--rm", "--network", "none", "busybox", "true")
        readings: dict[str, dict[str, dict]] = {t.label: {} for t in targets}
        time.sleep(args.settle)
        for t in targets:
            readings[t.label]["idle"] = reading(t)

        if args.only in ("all", "run"):
            cmds = [compare.Command(t.argv("run", "--rm", "--network", "none", "busybox", "true"),
                                    name=f"{t.label}: docker run --rm --network none busybox true")
                    for t in targets]
            res = bench.compare(cmds, args.runs, args.warmup, key="run")
            bench.table(compare.format_table(
                res, f"table 1: docker run --rm --network none busybox true ({args.runs} runs after "
                     f"{args.warmup} warm-up, alternating; ratio to dockerd)"))

        n = args.batch
        if args.only in ("all", "batch"):
            cmds = []
            for t in targets:
                loop = (f"for i in $(seq {n}); do {t.sh()} run -d --network none busybox sleep 60 "
                        f">/dev/null || exit 1; done")
                clean = f"ids=$({t.sh()} ps -aq); [ -z \"$ids\" ] || {t.sh()} rm -f $ids >/dev/null"
                cmds.append(compare.Command(loop, name=f"{t.label}: {n} x docker run -d sleep 60",
                                            cleanup=clean))
            res = bench.compare(cmds, args.batch_runs, 0, key="batch")
            bench.table(compare.format_table(
                res, f"table 2: {n} x create+start (docker run -d) in a row ({args.batch_runs} rounds, "
                     "alternating, removed between rounds; ratio to dockerd)"))

        if args.only in ("all", "ps", "memory"):
            for t in targets:
                for i in range(n):
                    t.run("run", "-d", "--network", "none", "--name", f"bench-{i}", "busybox", "sleep", "100000")
            time.sleep(args.settle)
            for t in targets:
                readings[t.label][f"{n} ctrs"] = reading(t)
            if args.only != "memory":
                cmds = [compare.Command(t.argv("ps"), name=f"{t.label}: docker ps ({n} running)") for t in targets]
                name = f"bench-{n // 2}"
                cmds += [compare.Command(t.argv("inspect", name), name=f"{t.label}: docker inspect {name}")
                         for t in targets]
                res = bench.compare(cmds, args.runs, args.warmup, key="ps_inspect")
                # ratios to the same command on dockerd
                for k in (0, 2):
                    pair = res[k:k + 2]
                    bench.table(compare.format_table(
                        pair, f"table 3{'ab'[k // 2]}: with {n} running containers ({args.runs} runs after "
                              f"{args.warmup} warm-up, alternating; ratio to dockerd)"))
            for t in targets:
                t.remove_all()
            time.sleep(args.settle)
            for t in targets:
                readings[t.label]["after"] = reading(t)
        out = bench.out
        out["memory"] = readings
        bench.table(memory_table(readings, n))
        summary = []
        for key, title in (("run", "run"), ("batch", "batch")):
            if key not in out:
                continue
            m = medians(out[key])
            if m is None:
                summary.append(f"{title}: FAILED (see above)")
                continue
            a, b = m
            summary.append(f"{title} {b / a:.2f} (skiffd {b * 1000:.0f} ms, dockerd {a * 1000:.0f} ms)")
        if "idle" in readings.get("dockerd", {}):
            a = readings["dockerd"]
            b = readings["skiffd"]
            for state in ("idle", f"{n} ctrs"):
                if state not in a or state not in b:
                    continue
                ua, ub = a[state]["unique"], b[state]["unique"]
                ra = a[state]["daemon"]["rss"] + a[state]["containerd"]["rss"]
                rb = b[state]["daemon"]["rss"] + b[state]["containerd"]["rss"]
                pa = a[state]["daemon"]["pss"] + a[state]["containerd"]["pss"]
                pb = b[state]["daemon"]["pss"] + b[state]["containerd"]["pss"]
                summary.append(f"memory {state}: unique {ub / ua:.2f} ({mib(ub)} / {mib(ua)} MiB), "
                               f"RSS {rb / ra:.2f} ({mib(rb)} / {mib(ra)}), PSS {pb / pa:.2f}")
        bench.summary("targets <= 0.5", summary)
    return bench.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
