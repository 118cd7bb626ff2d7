"""OOM events of a container's memory cgroup, for any runtime.

The cgroup is found from the container's init: ``/proc/PID/cgroup`` names its memory cgroup (a
v1 ``memory`` hierarchy, else the v2 one), ``/proc/self/mountinfo`` where that hierarchy is
mounted. This works for skiff-runc, runc and crun alike (their state files differ).

- v1: an eventfd registered on ``memory.oom_control`` through ``cgroup.event_control``; it
  becomes readable on each OOM of the cgroup and when the cgroup is removed (then
  ``memory.oom_control`` is gone and the watch ends). Each OOM notification is one event, as
  containerd's v1 monitor reports them.
- v2: ``memory.events`` polled for ``POLLPRI`` (kernfs wakes pollers when the file changes);
  an event is reported when ``oom_kill`` grows (``oom`` alone, a failed charge that killed
  nothing, is not a task OOM).
"""

from __future__ import annotations

import os

from skiff.mountinfo import unescape

POLLPRI = 0x002
POLLIN = 0x001


def parse_mountinfo_cgroups(text: str) -> tuple[dict[str, tuple[str, str]], tuple[str, str] | None]:
    """(v1 controller -> (mount root, mount point), v2 (mount root, mount point) or None)."""
    v1: dict[str, tuple[str, str]] = {}
    v2: tuple[str, str] | None = None
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rfields = right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        root, point = unescape(fields[3]), unescape(fields[4])
        if rfields[0] == "cgroup2" and v2 is None:
            v2 = (root, point)
        elif rfields[0] == "cgroup":
            for opt in rfields[2].split(","):
                v1.setdefault(opt, (root, point))
    return v1, v2


def _below(mount: tuple[str, str], path: str) -> str:
    root, point = mount
    if root != "/" and (path == root or path.startswith(root.rstrip("/") + "/")):
        path = path[len(root.rstrip("/")):]
    return point.rstrip("/") + "/" + path.lstrip("/") if path.strip("/") else point


def memory_cgroup(pid: int, proc: str = "/proc") -> tuple[str, str]:
    """("v1" or "v2", directory) of the memory cgroup of ``pid``; OSError when there is none."""
    with open(f"{proc}/{pid}/cgroup") as f:
        own = f.read()
    with open(f"{proc}/self/mountinfo") as f:
        v1, v2 = parse_mountinfo_cgroups(f.read())
    unified = None
    for line in own.splitlines():
        num, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if num == "0" and not controllers:
            unified = path
        elif "memory" in controllers.split(",") and "memory" in v1:
            return "v1", _below(v1["memory"], path)
    if unified is not None and v2 is not None:
        d = _below(v2, unified)
        if os.path.exists(d + "/memory.events"):
            return "v2", d
    raise OSError(f"process {pid}: no memory cgroup (per {proc}/{pid}/cgroup and mountinfo)")


def read_keyed(data: bytes) -> dict[str, int]:
    out = {}
    for line in data.decode(errors="replace").splitlines():
        k, _, v = line.partition(" ")
        if v.strip().lstrip("-").isdigit():
            out[k] = int(v)
    return out


class OomWatch:
    """One container's OOM source: ``fd`` to poll for ``events`` (a poll mask)."""

    __slots__ = ("kind", "dir", "fd", "events", "count")

    def __init__(self, kind: str, d: str, fd: int, events: int, count: int = 0) -> None:
        self.kind = kind
        self.dir = d
        self.fd = fd
        self.events = events
        self.count = count

    def fired(self) -> int | None:
        """After ``fd`` polled ready: the number of new OOM kills/notifications (0 for none),
        or None when the cgroup is gone (close the watch)."""
        if self.kind == "v1":
            try:
                n = int.from_bytes(os.read(self.fd, 8), "little")
            except BlockingIOError:
                return 0
            return n if os.path.exists(self.dir + "/memory.oom_control") else None
        try:
            data = os.pread(self.fd, 4096, 0)
        except OSError:
            return None
        if not data and not os.path.exists(self.dir + "/memory.events"):
            return None
        count = read_keyed(data).get("oom_kill", 0)
        new, self.count = max(0, count - self.count), count
        return new

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def watch(pid: int, proc: str = "/proc") -> OomWatch:
    """Start watching the memory cgroup of ``pid``; OSError saying what failed."""
    kind, d = memory_cgroup(pid, proc)
    if kind == "v1":
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            cfd = os.open(d + "/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            try:
                ctl = os.open(d + "/cgroup.event_control", os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(ctl, f"{efd} {cfd}".encode())
                finally:
                    os.close(ctl)
            finally:
                os.close(cfd)
        except OSError as e:
            os.close(efd)
            raise OSError(e.errno, f"register an OOM eventfd on {d}/memory.oom_control: "
                                   f"{e.strerror}") from None
        return OomWatch("v1", d, efd, POLLIN)
    fd = os.open(d + "/memory.events", os.O_RDONLY | os.O_CLOEXEC)
    w = OomWatch("v2", d, fd, POLLPRI)
    w.count = read_keyed(os.pread(fd, 4096, 0)).get("oom_kill", 0)
    return w
