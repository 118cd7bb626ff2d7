"""A real skiffd for root tests: its own data root, exec root, socket and pid file under the
test's state directories; it spawns its own skiff-containerd (which outlives it by design).

``stop`` removes the containers left (``docker rm -f``), stops skiffd by PID, then stops the
skiff-containerd it spawned by the PID in ``<exec-root>/containerd/containerd.pid`` (it ends its
shim zygote) and waits until that process is gone. Last it removes the cgroup parents (skiffd's
``--cgroup-parent``, ``/skiff`` by default) that appeared while it ran and are empty: runc and
crun, like dockerd's ``/docker``, never remove a parent cgroup they created.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time

DOCKER = "/usr/local/bin/docker"
SKIFFD = os.path.join(os.path.dirname(sys.executable), "skiffd")
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_PARENT = "/skiff"       # skiffd's default
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


class Skiffd:
    def __init__(self, run_dir: str, data_dir: str, *extra_args: str,
                 cgroup_parent: str | None = None) -> None:
        """``cgroup_parent``: give skiffd ``--cgroup-parent`` (a name of the test's own keeps
        its containers' cgroups apart from other daemons'); None: skiffd's default ``/skiff``."""
        self.run_dir = run_dir
        self.data_dir = data_dir
        self.sock = os.path.join(run_dir, "skiff.sock")
        self.pidfile = os.path.join(run_dir, "skiffd.pid")
        self.log = os.path.join(data_dir, "skiffd.log")
        self.cgroup_parent = cgroup_parent or CGROUP_PARENT
        self.extra_args = (*extra_args, "--cgroup-parent", cgroup_parent) if cgroup_parent else extra_args
        os.makedirs(data_dir, exist_ok=True)
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}", "DOCKER_CONFIG": data_dir}
        self.proc: subprocess.Popen | None = None
        self.cgroup_parents_before = self._cgroup_parents()
        self.start()

    def start(self) -> None:
        with open(self.log, "a") as logf:
            self.proc = subprocess.Popen(
                [SKIFFD, "-H", f"unix://{self.sock}", "--data-root", self.data_dir, "--exec-root",
                 self.run_dir, "--config-file", "/dev/null", *self.extra_args],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop_daemon()
                self.stop_containerd()
                raise AssertionError(f"skiffd did not start: {self.read_log()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        """The socket accepts connections (a socket file left by a killed skiffd does not)."""
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(self.sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def read_log(self) -> str:
        with open(self.log) as f:
            return f.read()

    def docker(self, *args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, input=input)

    def stop_daemon(self) -> int:
        proc = self.proc
        if proc is None:
            return 0
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"skiffd (pid {proc.pid}) did not stop within {STOP_TIMEOUT}s") from None

    def containerd_pid(self) -> int | None:
        try:
            with open(os.path.join(self.run_dir, "containerd", "containerd.pid")) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def stop_containerd(self) -> None:
        pid = self.containerd_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while os.path.exists(f"/proc/{pid}"):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
            except FileNotFoundError:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"skiff-containerd (pid {pid}) did not stop within {STOP_TIMEOUT}s")
            time.sleep(0.05)

    def remove_all_containers(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        r = self.docker("ps", "-aq")
        ids = r.stdout.split()
        if ids:
            rm = self.docker("rm", "-f", *ids, timeout=120)
            assert rm.returncode == 0, f"cleanup: docker rm -f: {rm.stderr}"

    def _cgroup_parents(self) -> set[str]:
        """The ``<hierarchy><cgroup parent>`` directories that exist now."""
        out = set()
        for h in os.listdir(CGROUP_ROOT):
            top = os.path.join(CGROUP_ROOT, h)
            d = top + self.cgroup_parent
            if not os.path.islink(top) and os.path.isdir(d):
                out.add(d)
        return out

    def remove_cgroup_parents(self) -> None:
        """rmdir (never recursive) each ``<hierarchy><cgroup parent>`` that appeared since the
        start and is empty; one holding a child cgroup (another daemon's container) stays."""
        for d in sorted(self._cgroup_parents() - self.cgroup_parents_before):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EBUSY):
                    raise AssertionError(f"cleanup: rmdir {d}: {e.strerror}") from None

    def stop(self) -> None:
        try:
            self.remove_all_containers()
        finally:
            try:
                self.stop_daemon()
            finally:
                try:
                    self.stop_containerd()
                finally:
                    self.remove_cgroup_parents()
