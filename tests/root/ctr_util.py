"""Daemons for the containerd root tests: skiff-containerd and a private real containerd 1.6,
each with its own root, state and socket under one short directory, and Debian's ``ctr``
against either.

``SkiffContainerd.start`` waits for the daemon's ``--ready-fd`` notification (no polling);
the real containerd has no such notification, so its socket is polled until it answers
``ctr version``. Both are stopped by PID with SIGTERM and waited for; a daemon that does not
stop within the timeout is killed and the test fails.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

CTR = "/usr/bin/ctr"
STOP_TIMEOUT = 60.0
START_TIMEOUT = 120.0


class DaemonError(Exception):
    pass


def ctr(address: str, *args: str, namespace: str | None = None, check: bool = True,
        timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``ctr -a ADDRESS [-n NS] ARGS``; with ``check`` a failure raises with its output."""
    cmd = [CTR, "-a", address]
    if namespace:
        cmd += ["-n", namespace]
    cmd += list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise DaemonError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def table(text: str) -> list[list[str]]:
    """The rows of a ``ctr ... ls`` table (header dropped), split on whitespace."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return [ln.split() for ln in lines[1:]]


class _Daemon:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.address = str(base / "c.sock")
        self.proc: subprocess.Popen | None = None
        self.log_path = base / "daemon.log"
        self._log = None

    def ctr(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return ctr(self.address, *args, **kw)

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    def stop(self) -> int:
        """SIGTERM by PID, wait; returns the exit status."""
        proc = self.proc
        if proc is None:
            return 0
        self.proc = None
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise DaemonError(f"pid {proc.pid} did not stop within {STOP_TIMEOUT}s of SIGTERM; killed. "
                                  f"Log:\n{self.log()}") from None
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None


class SkiffContainerd(_Daemon):
    """skiff-containerd with root ``base/root``, state ``base/state``, socket ``base/c.sock``."""

    def __init__(self, base: Path, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(base)
        self.root = base / "root"
        self.state = base / "state"
        self.extra_args = extra_args

    @property
    def binary(self) -> str:
        return os.path.join(os.path.dirname(sys.executable), "skiff-containerd")

    def start(self) -> SkiffContainerd:
        r, w = os.pipe()
        self._log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [self.binary, "--root", str(self.root), "--state", str(self.state), "--address", self.address,
                 "--ready-fd", str(w), *self.extra_args],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, pass_fds=(w,))
        finally:
            os.close(w)
        try:
            with os.fdopen(r, "rb") as f:
                ready, _, _ = select.select([f], [], [], START_TIMEOUT)
                line = f.readline() if ready else b""
        except BaseException:
            self.stop()
            raise
        if line != b"ready\n":
            code = self.stop()
            raise DaemonError(f"skiff-containerd did not become ready (exit {code}); log:\n{self.log()}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


CONTAINERD_CONFIG = """version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{base}/c.sock"
[ttrpc]
  address = "{base}/c.sock.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"""


class RealContainerd(_Daemon):
    """Debian's containerd 1.6 with everything it keeps under ``base`` (no CRI plugin)."""

    def start(self) -> RealContainerd:
        cfg = self.base / "config.toml"
        cfg.write_text(CONTAINERD_CONFIG.format(base=self.base))
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["containerd", "--config", str(cfg)], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                code = self.stop()
                raise DaemonError(f"containerd exited {code} at start; log:\n{self.log()}")
            if os.path.exists(self.address) and ctr(self.address, "version", check=False).returncode == 0:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise DaemonError(f"containerd did not answer on {self.address} within {START_TIMEOUT}s")
            time.sleep(0.05)


class Events:
    """``ctr events [filters]`` running in the background, its lines collected by a thread.

    ``wait_subscribed`` makes sure the subscription is in place before the test acts: it creates
    (and removes) probe namespaces until the creation of one shows up on the stream, so the
    filters must let ``/namespaces/create`` through. ``lines`` leaves the probes out.
    """

    def __init__(self, address: str, *filters: str) -> None:
        self.address = address
        self.proc = subprocess.Popen([CTR, "-a", address, "events", *filters], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = START_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in ln for ln in self._lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def wait_subscribed(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        i = 0
        while time.monotonic() < deadline:
            name = f"events-probe-{i}"
            ctr(self.address, "namespaces", "create", name)
            ctr(self.address, "namespaces", "remove", name)
            if self.wait_for(f'"name":"{name}"', timeout=2):
                return
            i += 1
        raise DaemonError(f"ctr events on {self.address} never saw a probe namespace being created")

    def lines(self) -> list[str]:
        with self._cond:
            return [ln for ln in self._lines if "events-probe-" not in ln]

    def stop(self) -> list[str]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)
        return self.lines()
