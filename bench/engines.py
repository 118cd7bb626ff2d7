"""skiffd against a private real dockerd: the set-up, the clean-up and the bookkeeping that
``bench/skiffd.py``, ``bench/network.py``, ``bench/build.py`` and ``bench/images.py`` share.

- ``Bench(prog, prefix)``: refuses to run as anyone but root, makes the temporary directory
  (``/tmp/PREFIX...``), points the docker CLI at a config directory in it (``DOCKER_CONFIG``; no
  ``DOCKER_HOST``). Used as ``with bench:``, an exception in the body is printed as
  ``bench/PROG: Type: message`` and makes the exit status 1; at the end of the block everything
  registered with ``on_cleanup`` is undone, last registered first (the engines' containers, then
  skiffd, dockerd, ...; a failure is printed and, but for the engines' own clean-up, makes the
  exit status 1), and the directory is removed unless a mount remains under it.
- ``start_dockerd`` starts a private dockerd 20.10 as ``tests/root/dockerd_util.Dockerd`` does
  (own roots, socket, pid file, cgroup parent, in a throwaway network namespace) and loads
  ``build/images/busybox.tar`` into it; ``start_skiffd`` starts skiffd as
  ``tests/root/skiffd_util.Skiffd`` does (own roots and socket, its own skiff-containerd, the
  built-in busybox: the same image). Both are stopped by PID at the end.
- ``engines()``: one ``Engine`` per daemon, dockerd first (the baseline of the ratios), each
  driving the same real docker CLI (``/usr/local/bin/docker -H unix://SOCKET``).
- ``compare``: ``compare.compare`` of the commands (alternating, ``rss_runs=0``) that records
  failures in the exit status and, under a key, the raw numbers for ``--json``; ``table`` prints a
  table and keeps it for ``--json``; ``summary`` prints the last line of ratios; ``finish``
  writes ``--json`` and returns the exit status.

Standard library and the test harness helpers only.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (HERE, REPO / "tests" / "root", REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from dockerd_util import Dockerd  # noqa: E402
from skiffd_util import DOCKER, Skiffd  # noqa: E402

import compare  # noqa: E402

BUSYBOX_TAR = REPO / "build" / "images" / "busybox.tar"


def load_average() -> str:
    return f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)"


class Engine:
    """One daemon under test: a label, its socket, how to find its processes (callables: the PID
    now) and a byte string found in the command line of each of its shims."""

    def __init__(self, label: str, sock: str, daemon_pid: Callable[[], int],
                 containerd_pid: Callable[[], int], shim_needle: bytes = b"", timeout: float = 600) -> None:
        self.label = label
        self.sock = sock
        self.daemon_pid = daemon_pid
        self.containerd_pid = containerd_pid
        self.shim_needle = shim_needle
        self.timeout = timeout          # for ``run``

    def pids(self) -> list[int]:
        """[daemon PID, containerd PID]."""
        return [self.daemon_pid(), self.containerd_pid()]

    def argv(self, *args: str) -> list[str]:
        """The docker CLI's argv for this daemon."""
        return [DOCKER, "-H", f"unix://{self.sock}", *args]

    def sh(self, *args: str) -> str:
        """The same as a shell command line (without arguments: the prefix to add them to)."""
        return shlex.join(self.argv(*args))

    def run(self, *args: str, check: bool = True, timeout: float | None = None) -> str:
        """``docker ARGS`` now, not timed; its stdout. With ``check``, a failure raises."""
        p = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout or self.timeout,
                           stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise RuntimeError(f"{self.label}: docker {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    def remove_all(self) -> None:
        """Remove every container of this daemon (``docker rm -f``)."""
        ids = self.run("ps", "-aq").split()
        if ids:
            self.run("rm", "-f", *ids)

    def cpu(self) -> float:
        """user+sys seconds used so far by the daemon and its containerd."""
        tck = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tck
            except (OSError, IndexError, ValueError):
                pass
        return total


def medians(results: list[dict]) -> list[float] | None:
    """The median wall times (seconds) of ``compare.to_json`` results, or None when any failed."""
    if any(r["error"] or not r["wall_s"] for r in results):
        return None
    return [statistics.median(r["wall_s"]) for r in results]


class Bench:
    """One benchmark run: its temporary directory, its daemons, its tables, raw numbers and exit
    status, and its clean-up (see the module's docstring)."""

    def __init__(self, prog: str, prefix: str) -> None:
        if os.geteuid() != 0:
            raise SystemExit(f"bench/{prog}: must run as root")
        self.prog = prog
        self.base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        os.environ["DOCKER_CONFIG"] = str(self.base / "cli")
        os.environ.pop("DOCKER_HOST", None)
        (self.base / "cli").mkdir()
        self.ok = True
        self.out: dict = {}
        self.tables: list[str] = []
        self.dockerd: Dockerd | None = None
        self.skiffd: Skiffd | None = None
        # (what, undo, whether a failure makes the exit status 1), undone last first
        self._cleanups: list[tuple[str, Callable[[], object], bool]] = []

    def on_cleanup(self, what: str, undo: Callable[[], object], *, fatal: bool = True) -> None:
        """Call ``undo`` at the end of the ``with`` block, before what was registered earlier."""
        self._cleanups.append((what, undo, fatal))

    def start_dockerd(self, extra_args: list[str] | None = None, load_busybox: bool = True) -> Dockerd:
        """A private dockerd (``extra_args`` after the harness's own), busybox loaded unless not
        ``load_busybox``."""
        dockerd = Dockerd(self.base / "logs", base_dir=str(self.base), extra_args=extra_args or [])
        self.dockerd = dockerd
        self.on_cleanup("dockerd", dockerd.close)
        dockerd.start()
        if load_busybox:
            dockerd.load_image(str(BUSYBOX_TAR))
        return dockerd

    def start_skiffd(self, *args: str) -> Skiffd:
        """A private skiffd with ``args``, and its skiff-containerd."""
        skiffd = Skiffd(str(self.base / "s"), str(self.base / "sd"), *args)
        self.skiffd = skiffd
        self.on_cleanup("skiffd", skiffd.stop)
        return skiffd

    def engines(self, cleanup: Callable[[Engine], object] | None = Engine.remove_all,
                timeout: float = 600) -> list[Engine]:
        """[dockerd, skiffd] as engines; ``cleanup(engine)``, unless None, runs for each at the
        end (a failure there is printed only). ``timeout``: the engines' ``run`` timeout."""
        dk, sk = self.dockerd, self.skiffd
        assert dk is not None and sk is not None and sk.proc is not None
        sk_pid = sk.proc.pid
        engines = [
            Engine("dockerd", str(dk.sock), lambda: dk.pid, dk._containerd_pid,
                   f"-address\0{dk.exec_root}/containerd/containerd.sock\0".encode(), timeout),
            Engine("skiffd", sk.sock, lambda: sk_pid, lambda: sk.containerd_pid() or 0,
                   f"--socket\0{sk.run_dir}/containerd/zygote.sock".encode(), timeout),
        ]
        for e in reversed(engines if cleanup else []):     # undone in the engines' order
            self.on_cleanup(e.label, functools.partial(cleanup, e), fatal=False)
        return engines

    def table(self, text: str) -> None:
        """Print ``text`` now and keep it for ``--json``."""
        self.tables.append(text)
        print(text, flush=True)

    def compare(self, cmds: list[compare.Command], runs: int, warmup: int,
                key: str | None = None) -> list[compare.Result]:
        """Time ``cmds`` alternating (no RSS runs); a failed command makes the exit status 1; with
        ``key``, the raw numbers go to ``out[key]``."""
        res = compare.compare(cmds, runs=runs, warmup=warmup, rss_runs=0)
        self.ok &= not any(r.error for r in res)
        if key is not None:
            self.out[key] = compare.to_json(res)
        return res

    def summary(self, title: str, parts: list[str]) -> None:
        """The last line: ``ratios skiffd/dockerd (TITLE): PARTS; load average at the end``."""
        self.table(f"ratios skiffd/dockerd ({title}): " + "; ".join(parts)
                   + f"; load average at the end {os.getloadavg()[0]:.2f}")

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        handled = isinstance(exc, Exception)
        if handled:
            self.ok = False
            print(f"bench/{self.prog}: {type(exc).__name__}: {exc}", file=sys.stderr)
        self.close()
        return handled

    def close(self) -> None:
        while self._cleanups:
            what, undo, fatal = self._cleanups.pop()
            try:
                undo()
            except Exception as e:
                if fatal:
                    self.ok = False
                print(f"clean-up: {what}: {e}", file=sys.stderr)
        with open("/proc/self/mountinfo") as f:
            left = [ln.split()[4] for ln in f if ln.split()[4].startswith(f"{self.base}/")]
        if left:
            print(f"mounts left under {self.base}: {left}; not removing it", file=sys.stderr)
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    def finish(self, json_path: str | None) -> int:
        """Write the raw numbers and tables to ``json_path`` if given; the exit status."""
        if json_path:
            with open(json_path, "w") as f:
                json.dump({"results": self.out, "tables": self.tables, "time": time.time()}, f, indent=1)
        return 0 if self.ok else 1
