"""A private Docker daemon for root tests: real dockerd (and the containerd it starts) with its own
roots, socket, cgroup parent and network namespace, torn down without leaving anything behind.

What is private, and where (all under one short directory ``base``, e.g. ``/tmp/skdk-XXXXXXXX``,
because unix socket paths must fit in 108 bytes):

- ``base/data`` is dockerd's ``--data-root`` (images, overlay2 layers, containers, and the
  containerd it starts keeps its root under ``data/containerd``);
- ``base/exec`` is dockerd's ``--exec-root`` (containerd's socket and state, runtime state
  under ``exec/runtime-runc/moby``, libnetwork's sandbox namespaces under ``exec/netns``);
- ``base/docker.sock`` is the API socket, ``base/docker.pid`` the pid file, ``base/daemon.json``
  the config file (so the host's ``/etc/docker/daemon.json`` and ``/etc/docker/key.json`` are
  not read or written), ``base/cli`` the docker CLI's config directory (not ``~/.docker``);
- the daemon runs in a network namespace of its own, ``skiff-dk-<token>``, made with
  ``ip netns add`` and entered with ``nsenter --net`` (``ip netns exec`` would remount /sys and
  hide the cgroup v1 hierarchies from dockerd); ``--bridge=none --iptables=false --ip-masq=false``
  leave the host's links and firewall alone, and any bridge a test creates lives in that namespace;
- containers go to the cgroup parent ``/skiff-dk-<token>`` (``--cgroup-parent``) in every
  hierarchy, never to the host's ``/docker``.

One thing is not private: containerd 1.6 puts each shim's socket in ``/run/containerd/s/``
(a fixed path); a shim removes its socket when it exits.

Teardown (``close``): remove every container, stop dockerd by PID (SIGTERM, wait; it stops its
containerd; a containerd still alive afterwards is stopped by its PID too), unmount what is left
under ``base`` (dockerd leaves e.g. ``exec/netns/default`` behind), remove the cgroups created
under the private parent, delete the network namespace (and unmount ``/run/netns`` if creating
the namespace made it a mount point), then remove ``base``. Every step runs even when an earlier
one failed; the errors are raised together at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness import leakcheck

CGROUP_ROOT = "/sys/fs/cgroup"
NETNS_DIR = "/run/netns"
SHIM_SOCKET_DIR = "/run/containerd/s"  # containerd 1.6's fixed directory for shim sockets


class DockerdError(Exception):
    """The private daemon could not be started, or not be torn down cleanly."""


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return leakcheck.mount_points(f.read())


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return leakcheck.parse_stat(f.read()).state != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _cgroup_dirs_under(rel: str) -> set[str]:
    """Every cgroup directory at or below ``/<rel>`` in every hierarchy, as absolute paths."""
    out: set[str] = set()
    try:
        hierarchies = sorted(os.listdir(CGROUP_ROOT))
    except FileNotFoundError:
        return out
    for h in hierarchies:
        top = os.path.join(CGROUP_ROOT, h, rel)
        if not os.path.isdir(top):
            continue
        for dirpath, _dirnames, _files in os.walk(top):
            out.add(dirpath)
    return out


def pty_run(argv: list[str], env: dict[str, str], timeout: float = 60,
            rows: int = 24, cols: int = 80) -> tuple[int, str]:
    """Run ``argv`` with a new pseudo-terminal as its stdin, stdout and stderr (as an interactive
    ``docker run -it`` expects); return its exit status and everything it wrote (``\\r\\n`` turned
    into ``\\n``)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    try:
        p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                             start_new_session=True, close_fds=True)
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                p.kill()
                p.wait()
                raise TimeoutError(f"{' '.join(argv)} did not finish in {timeout} s; output so far: "
                                   f"{b''.join(chunks).decode(errors='replace')!r}")
            ready, _, _ = select.select([master], [], [], min(left, 0.2))
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave end is closed
                    data = b""
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None:
                # the process is gone; drain what is left without blocking
                while select.select([master], [], [], 0.1)[0]:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    chunks.append(data)
                break
        rc = p.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
    return rc, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


class Dockerd:
    """A private dockerd; ``start()`` it, use ``docker(...)``, ``close()`` it (also as a context
    manager). ``runtimes`` maps extra runtime names to executables; they go to the config
    file's ``runtimes`` (what ``--add-runtime NAME=PATH`` does, but kept across a SIGHUP reload).
    ``log_dir`` receives ``dockerd.log`` (give it a directory that outlives the daemon)."""

    def __init__(self, log_dir: Path, runtimes: dict[str, str] | None = None,
                 extra_args: list[str] | None = None, base_dir: str = "/tmp") -> None:
        self.token = secrets.token_hex(4)
        self.name = f"skiff-dk-{self.token}"
        self.base = Path(tempfile.mkdtemp(prefix="skdk-", dir=base_dir))
        self.data_root = self.base / "data"
        self.exec_root = self.base / "exec"
        self.sock = self.base / "docker.sock"
        self.pidfile = self.base / "docker.pid"
        self.config_file = self.base / "daemon.json"
        self.cli_config = self.base / "cli"
        self.log_path = Path(log_dir) / "dockerd.log"
        self.runtimes = dict(runtimes or {})
        self.extra_args = list(extra_args or [])
        self.cgroup_parent = f"/{self.name}"
        self.netns_path = f"{NETNS_DIR}/{self.name}"
        self.proc: subprocess.Popen | None = None
        self.pid = 0
        self._netns_made = False
        self._netns_dir_was_mount = False
        self._cgroups_before: set[str] = set()
        self._docker_bin = shutil.which("docker") or ""
        self._dockerd_bin = shutil.which("dockerd") or ""

    # -- environment

    @property
    def env(self) -> dict[str, str]:
        """Environment for the docker CLI: this daemon's socket, a private CLI config."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=f"unix://{self.sock}", DOCKER_CONFIG=str(self.cli_config),
                   DOCKER_CLI_HINTS="false")
        return env

    def __enter__(self) -> Dockerd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- start

    def start(self, timeout: float = 90) -> None:
        for what, path in (("docker", self._docker_bin), ("dockerd", self._dockerd_bin),
                           ("nsenter", shutil.which("nsenter")), ("ip", shutil.which("ip"))):
            if not path:
                raise DockerdError(f"{what} is not installed (not found in PATH)")
        self.data_root.mkdir(mode=0o711)
        self.exec_root.mkdir(mode=0o700)
        self.cli_config.mkdir(mode=0o700)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            # dockerd 20.10 otherwise reads or creates /etc/docker/key.json
            "deprecated-key-path": str(self.base / "key.json"),
            "runtimes": {name: {"path": path} for name, path in self.runtimes.items()},
        }
        self.config_file.write_text(json.dumps(config, indent=1))
        self._cgroups_before = _cgroup_dirs_under(self.cgroup_parent.lstrip("/"))
        self._netns_dir_was_mount = NETNS_DIR in _mount_points()
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, text=True)
        self._netns_made = True
        argv = [
            "nsenter", f"--net={self.netns_path}", "--",
            self._dockerd_bin,
            f"--config-file={self.config_file}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--host=unix://{self.sock}",
            f"--pidfile={self.pidfile}",
            f"--cgroup-parent={self.cgroup_parent}",
            "--exec-opt=native.cgroupdriver=cgroupfs",
            "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
            "--userland-proxy=false",
            "--storage-driver=overlay2",
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        with open(self.log_path, "ab") as log:
            # nsenter execs dockerd: the child's PID is dockerd's. A session of its own keeps a
            # Ctrl-C of pytest from reaching it before the teardown stops it properly.
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env, start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                raise DockerdError(f"dockerd exited with status {self.proc.returncode} while starting; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise DockerdError(f"dockerd did not answer on {self.sock} within {timeout} s; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.1)

    def ping(self) -> bool:
        """GET /_ping on the daemon's socket; True when it answers OK."""
        if not self.sock.exists():
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(str(self.sock))
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        except OSError:
            return False
        finally:
            s.close()
        return data.startswith(b"HTTP/1.1 200") and data.endswith(b"OK")

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of dockerd's log, without gRPC's connection chatter."""
        try:
            text = self.log_path.read_text(errors="replace")
            return "\n".join([x for x in text.splitlines() if "module=grpc" not in x][-lines:])
        except OSError as e:
            return f"(cannot read {self.log_path}: {e.strerror})"

    # -- using it

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon."""
        p = subprocess.run([self._docker_bin, *args], env=self.env, capture_output=True, text=True,
                           input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise DockerdError(f"docker {' '.join(args)} exited {p.returncode}:\n"
                               f"stdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def docker_pty(self, *args: str, timeout: float = 60) -> tuple[int, str]:
        """Run the docker CLI on a pseudo-terminal (for ``-it``)."""
        return pty_run([self._docker_bin, *args], self.env, timeout=timeout)

    def inspect(self, ref: str) -> dict:
        return json.loads(self.docker("inspect", ref).stdout)[0]

    def load_image(self, tar: str) -> str:
        return self.docker("load", "-i", tar, timeout=300).stdout

    def container_ids(self) -> list[str]:
        return self.docker("ps", "-aq", "--no-trunc").stdout.split()

    def remove_all_containers(self) -> None:
        ids = self.container_ids()
        if ids:
            self.docker("rm", "-f", "-v", *ids, timeout=180)

    # -- teardown

    def close(self) -> None:
        """Tear everything down (see the module's docstring); raise ``DockerdError`` listing every
        step that failed."""
        errors: list[str] = []

        def step(what: str, fn) -> None:
            try:
                fn()
            except Exception as e:  # keep going: every later step still has to run
                errors.append(f"{what}: {e}")

        if self.proc is not None and self.proc.poll() is None and self.ping():
            step("remove the containers", self.remove_all_containers)
        step("stop dockerd", self._stop)
        step("end what outlived dockerd", self._kill_leftovers)
        step("unmount what is left under " + str(self.base), self._unmount_leftovers)
        step("remove the cgroups under " + self.cgroup_parent, self._remove_cgroups)
        step("delete network namespace " + self.name, self._delete_netns)
        if not any(p == str(self.base) or p.startswith(f"{self.base}/") for p in _mount_points()):
            step("remove " + str(self.base), lambda: shutil.rmtree(self.base))
        else:
            errors.append(f"kept {self.base}: mounts remain under it")
        if errors:
            raise DockerdError(f"tearing down the private dockerd ({self.base}, log {self.log_path}):\n  "
                               + "\n  ".join(errors) + f"\nlast lines of the log:\n{self.log_tail()}")

    def _containerd_pid(self) -> int:
        try:
            return int((self.exec_root / "containerd" / "containerd.pid").read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _stop(self, timeout: float = 60) -> None:
        if self.proc is None:
            return
        containerd = self._containerd_pid()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise DockerdError(f"dockerd (pid {self.pid}) did not exit within {timeout} s of "
                                   "SIGTERM; killed it") from None
        if containerd and _alive(containerd):
            # dockerd stops the containerd it started; this one outlived it
            os.kill(containerd, signal.SIGTERM)
            if not _wait_gone(containerd, 30):
                os.kill(containerd, signal.SIGKILL)
                _wait_gone(containerd, 10)
                raise DockerdError(f"containerd (pid {containerd}) outlived dockerd and ignored SIGTERM")

    def _leftover_processes(self) -> dict[int, str]:
        """Processes still around once dockerd and containerd are gone: the shims of our
        containerd (found by its socket address, which holds our unique exec root, on their
        command line) and any process in a cgroup under our cgroup parent."""
        found: dict[int, str] = {}
        address = f"-address\0{self.exec_root}/containerd/containerd.sock\0"
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().decode(errors="replace")
            except OSError:
                continue
            if address in cmdline and _alive(int(entry)):
                found[int(entry)] = cmdline.replace("\0", " ").strip()
        for d in _cgroup_dirs_under(self.cgroup_parent.lstrip("/")):
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            for pid in pids:
                if pid not in found and _alive(pid):
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            found[pid] = f.read().decode(errors="replace").replace("\0", " ").strip()
                    except OSError:
                        continue
        return found

    def _kill_leftovers(self) -> None:
        """SIGKILL what outlived the daemon (a bug somewhere: reported, but not left running).
        Frozen cgroups are thawed first so that the kill can take effect."""
        left = self._leftover_processes()
        if not left:
            return
        for d in _cgroup_dirs_under(self.cgroup_parent.lstrip("/")):
            state = os.path.join(d, "freezer.state")
            if os.path.exists(state):
                with open(state, "w") as f:
                    f.write("THAWED")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stuck = [pid for pid in left if not _wait_gone(pid, 10)]
        for cmd in left.values():
            self._remove_shim_socket(cmd)
        lines = [f"pid {pid}: {cmd}" + (" (still alive after SIGKILL)" if pid in stuck else "")
                 for pid, cmd in sorted(left.items())]
        raise DockerdError("killed processes that outlived dockerd:\n    " + "\n    ".join(lines))

    def _remove_shim_socket(self, cmdline: str) -> None:
        """A killed shim cannot remove its socket: containerd 1.6 names it
        ``/run/containerd/s/<sha256 of "<containerd address>/<namespace>/<id>">``."""
        args = cmdline.split()
        try:
            ns, cid = args[args.index("-namespace") + 1], args[args.index("-id") + 1]
        except (ValueError, IndexError):
            return  # not a shim
        import hashlib

        name = hashlib.sha256(f"{self.exec_root}/containerd/containerd.sock/{ns}/{cid}".encode()).hexdigest()
        try:
            os.unlink(f"{SHIM_SOCKET_DIR}/{name}")
        except FileNotFoundError:
            pass

    def _unmount_leftovers(self) -> None:
        prefix = f"{self.base}/"
        points = [p for p in _mount_points() if p == str(self.base) or p.startswith(prefix)]
        # deepest first; a path mounted several times appears several times
        for p in sorted(points, key=lambda x: x.count("/"), reverse=True):
            r = subprocess.run(["umount", p], capture_output=True, text=True)
            if r.returncode != 0:
                r = subprocess.run(["umount", "--lazy", p], capture_output=True, text=True)
                if r.returncode != 0:
                    raise DockerdError(f"umount {p}: {r.stderr.strip()}")

    def _remove_cgroups(self, timeout: float = 10) -> None:
        mine = _cgroup_dirs_under(self.cgroup_parent.lstrip("/")) - self._cgroups_before
        deadline = time.monotonic() + timeout
        # children before parents
        for d in sorted(mine, key=lambda x: x.count("/"), reverse=True):
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    # EBUSY while the last processes of a container are still exiting
                    if time.monotonic() > deadline:
                        procs = ""
                        try:
                            procs = open(os.path.join(d, "cgroup.procs")).read().split()
                        except OSError:
                            pass
                        raise DockerdError(f"rmdir {d}: {e.strerror} (processes: {' '.join(procs) or 'none'})") from None
                    time.sleep(0.05)

    def _delete_netns(self) -> None:
        if not self._netns_made:
            return
        r = subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, text=True)
        if r.returncode != 0 and os.path.exists(self.netns_path):
            raise DockerdError(f"ip netns delete {self.name}: {r.stderr.strip()}")
        self._netns_made = False
        # `ip netns add` makes /run/netns a mount point the first time; undo that if it was us
        if (not self._netns_dir_was_mount and NETNS_DIR in _mount_points()
                and not os.listdir(NETNS_DIR)):
            subprocess.run(["umount", NETNS_DIR], check=True, capture_output=True, text=True)


def busybox_dockerd(log_dir: Path, busybox_tar: str) -> Iterator[Dockerd]:
    """For a fixture (``yield from``): a started private dockerd with ``busybox_tar`` loaded and
    one container run (dockerd makes its cgroup parent with the first container: before the
    tests' leak checks); closed at the end, and also when getting it ready fails."""
    d = Dockerd(log_dir)
    try:
        d.start()
        d.load_image(busybox_tar)
        d.docker("run", "--rm", "busybox", "true")
    except BaseException:
        d.close()
        raise
    yield d
    d.close()
