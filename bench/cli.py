#!/usr/bin/env python3
"""`skiff` (issue 9's CLI) against the docker CLI 28.2.2 (/usr/local/bin/docker) on the same
skiffd, in the same run: ``ps``, ``inspect NAME``, ``images``, ``run --rm busybox true``.

    .venv/bin/python bench/cli.py [-n 30] [-w 3] [--containers 10] [--json FILE]

Three clients per command: the docker CLI; ``skiff`` through the lean launcher (``python -IS``,
no site, ``os._exit`` at the end: what ``python -m skiff.launchers`` writes, here written to the
temporary directory from ``skiff.launchers.TEMPLATE``); and ``.venv/bin/skiff`` as pip installs it
(with ``site``). Ratios are skiff / docker medians (target <= 1.0); nothing is asserted.

Set-up: a skiffd as ``tests/root/skiffd_util.Skiffd`` starts it (own data root, exec root and
socket, its own skiff-containerd) with the built-in busybox image loaded and ``--containers``
``sleep`` containers running (so ``ps`` has rows). Clean-up: the containers are removed and
skiffd and its skiff-containerd are stopped by PID; the temporary directory is removed.
``--host unix://SOCK`` uses a daemon already running instead (the
``bench*`` containers it starts are removed at the end). Run as root with the project's
virtualenv Python.
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

from skiffd_util import DOCKER, Skiffd  # noqa: E402

import compare  # noqa: E402

VENV_SKIFF = os.path.join(os.path.dirname(sys.executable), "skiff")


def lean_launcher(directory: str) -> str:
    import skiff
    from skiff.launchers import TEMPLATE

    path = os.path.join(directory, "skiff")
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(skiff.__file__)))
    with open(path, "w") as f:
        f.write(TEMPLATE.format(python=os.path.realpath(sys.executable), pkg_parent=pkg_parent,
                                module="skiff.cli.main"))
    os.chmod(path, 0o755)
    return path


def docker(*args: str) -> int:
    import subprocess

    return subprocess.run([DOCKER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=120).returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=30, help="timed runs per command")
    ap.add_argument("-w", type=int, default=3, help="warm-up runs")
    ap.add_argument("--containers", type=int, default=10, help="running containers during ps")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--host", help="use this running daemon (unix://...) instead of starting a skiffd")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="skcli-", dir="/tmp")
    d = None
    started: list[str] = []
    out: dict = {}
    ok = True
    try:
        if a.host:
            os.environ["DOCKER_HOST"] = a.host
            os.environ["DOCKER_CONFIG"] = tmp
        else:
            os.mkdir(os.path.join(tmp, "run"), 0o700)
            d = Skiffd(os.path.join(tmp, "run"), os.path.join(tmp, "data"))
            os.environ["DOCKER_HOST"] = d.env["DOCKER_HOST"]
            os.environ["DOCKER_CONFIG"] = d.env["DOCKER_CONFIG"]
        if docker("image", "inspect", "busybox:latest") != 0:
            assert docker("load", "-i", str(REPO / "build" / "images" / "busybox.tar")) == 0
        for i in range(a.containers):
            assert docker("run", "-d", "--name", f"bench{i}", "busybox", "sleep", "100000") == 0
            started.append(f"bench{i}")
        lean = lean_launcher(tmp)
        clients = [("docker", DOCKER), ("skiff", lean), ("skiff(site)", VENV_SKIFF)]
        cases = [("ps", ["ps"]), ("inspect", ["inspect", "bench0"]), ("images", ["images"]),
                 ("run --rm", ["run", "--rm", "busybox", "true"])]
        for title, args in cases:
            cmds = [compare.Command([exe, *args], name=f"{name} {title}") for name, exe in clients]
            res = compare.compare(cmds, runs=a.n, warmup=a.w, rss_runs=0)
            print(compare.format_table(res, title=f"{title} (ratio: to the docker CLI)"))
            base = statistics.median(res[0].wall) if res[0].wall else float("nan")
            for r in res:
                if r.error:
                    ok = False
                    print(f"  {r.command.label()}: {r.error}")
            ratios = {r.command.name: statistics.median(r.wall) / base for r in res if r.wall}
            print("  ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
            out[title] = compare.to_json(res)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=2)
    finally:
        if d is not None:
            d.stop()
        elif started:
            docker("rm", "-f", *started)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
