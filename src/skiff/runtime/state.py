"""Container state on disk: ``<root>/<id>/state.json`` and the exec FIFO beside it.

The status is never stored; it is derived each time from the facts (the ``state`` verb must be
truthful even after the init died behind our back):

- ``creating``: the state file exists but ``create`` has not finished (no init pid yet);
- ``stopped``: the init is gone, a zombie, or its PID now belongs to another process (the start
  time recorded at create no longer matches ``/proc/PID/stat``);
- ``created``: the init is alive and the exec FIFO still exists (``start`` removes it);
- ``paused``: alive and the cgroup freezer says frozen;
- ``running``: alive otherwise.
"""

from __future__ import annotations

import os

from skiff import fastjson as json

STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"


def validate_id(cid: str) -> None:
    """Container IDs become directory names: refuse anything that is not a plain name."""
    from skiff.runtime.cli import RuntimeFailure

    if not cid:
        raise RuntimeFailure("container id cannot be empty")
    # a leading dot is refused too: the state root keeps its own entries there (.seccomp)
    if cid.startswith(".") or len(cid) > 1024 or not all(c.isalnum() or c in "_+-." for c in cid):
        raise RuntimeFailure(f"invalid container id format: {cid}")


def proc_start_time(pid: int, proc: str = "/proc") -> tuple[int, str] | None:
    """(start time in clock ticks, state letter) of a process, or None if there is none."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name is in parentheses and may contain spaces and ')': split after the last ')'
    rest = data[data.rindex(b")") + 2:].split()
    return int(rest[19]), rest[0].decode()


class ContainerState:
    """What ``create`` records, plus the derived status."""

    __slots__ = ("id", "dir", "pid", "pid_start", "bundle", "rootfs", "created", "owner",
                 "annotations", "config", "cgroup", "no_pivot", "namespaces", "rootfs_mount")

    def __init__(self, cid: str, cdir: str) -> None:
        self.id = cid
        self.dir = cdir
        self.pid = 0
        self.pid_start = 0
        self.bundle = ""
        self.rootfs = ""
        self.created = ""
        self.owner = ""
        self.annotations: dict[str, str] = {}
        self.config: dict = {}          # the config.json document, with root.path made absolute
        self.cgroup: dict = {}          # Manager.state()
        self.no_pivot = False
        self.namespaces: dict[str, str] = {}  # ns type -> /proc/PID/ns path (for exec)
        # without a mount namespace: the ID of the rootfs bind made in the runtime's mount
        # namespace (the container's mounts hang below it; delete detaches it); 0 otherwise
        self.rootfs_mount = 0

    @property
    def fifo(self) -> str:
        return os.path.join(self.dir, EXEC_FIFO)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__ if k != "dir"}

    def save(self) -> None:
        """Write atomically (temp file + rename), so a reader never sees half a state."""
        tmp = os.path.join(self.dir, STATE_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(self.to_json()).encode())
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.dir, STATE_FILE))

    def alive(self) -> bool:
        if not self.pid:
            return False
        st = proc_start_time(self.pid)
        return st is not None and st[0] == self.pid_start and st[1] not in ("Z", "X")

    def status(self) -> str:
        if not self.pid:
            return "creating"
        if not self.alive():
            return "stopped"
        if os.path.exists(self.fifo):
            return "created"
        if self.cgroup:
            from skiff.runtime.cgroups import load_manager

            try:
                if load_manager(self.cgroup).frozen():
                    return "paused"
            except OSError:
                pass  # a cgroup being torn down reads as not frozen; liveness was checked above
        return "running"

    def oci_state(self, status: str | None = None) -> dict:
        """The runtime spec's state object (what ``state`` prints and hooks read on stdin)."""
        status = status or self.status()
        return {
            "ociVersion": self.config.get("ociVersion", "1.2.0"),
            "id": self.id,
            "status": status,
            "pid": self.pid if status != "stopped" else 0,
            "bundle": self.bundle,
            "annotations": self.annotations,
        }


def container_dir(root: str, cid: str) -> str:
    validate_id(cid)
    return os.path.join(root, cid)


def load(root: str, cid: str) -> ContainerState:
    from skiff.runtime.cli import RuntimeFailure

    cdir = container_dir(root, cid)
    try:
        with open(os.path.join(cdir, STATE_FILE), "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        if os.path.isdir(cdir):
            st = ContainerState(cid, cdir)  # create is still running (or died before saving)
            return st
        raise RuntimeFailure(f"container does not exist: {cid}") from None
    except ValueError as e:
        raise RuntimeFailure(f"container {cid}: state file {cdir}/{STATE_FILE} is corrupt: {e}") from None
    st = ContainerState(cid, cdir)
    for k, v in doc.items():
        if k in ContainerState.__slots__ and k != "dir":
            setattr(st, k, v)
    return st


def list_ids(root: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root)
                      if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))
    except FileNotFoundError:
        return []
