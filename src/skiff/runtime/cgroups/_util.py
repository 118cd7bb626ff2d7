"""Small helpers of the cgroup manager: file access that names the file, and host discovery.

Every read and write of a cgroup file goes through ``read``/``write`` here, so an error always
says which file, what was written and why (``write '10' to /sys/fs/cgroup/pids/x/pids.max:
Invalid argument``).
"""

from __future__ import annotations

import errno as _errno
import os
import time

from skiff.mountinfo import unescape

# v1 controllers the manager knows by name (a v1 mount's super options name its controllers)
V1_CONTROLLERS = ("cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "net_cls",
                  "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc")


class CgroupError(OSError):
    """A cgroup operation failed; the message names the file or controller and why.

    It is an ``OSError`` so that callers which treat a vanished cgroup like any other I/O
    error keep working; ``errno`` is set when a system call failed, else ``None``.
    """

    def __init__(self, msg: str, err: int | None = None) -> None:
        super().__init__(msg)
        self.errno = err

    def __str__(self) -> str:
        return str(self.args[0])


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def read(path: str) -> str:
    """The file's content with the trailing newline removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError(f"read {path}: {_why(e)}", e.errno) from None
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
    except OSError as e:
        raise CgroupError(f"read {path}: {_why(e)}", e.errno) from None
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace").rstrip("\n")


def read_opt(path: str) -> str | None:
    """Like ``read``, but ``None`` when the file does not exist."""
    try:
        return read(path)
    except CgroupError as e:
        if e.errno == _errno.ENOENT:
            return None
        raise


def write(path: str, value: str) -> None:
    """Write ``value`` in one ``write(2)`` (cgroup files take one value per write)."""
    data = value.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)  # O_TRUNC: as runc; cgroupfs ignores it
    except OSError as e:
        if e.errno == _errno.ENOENT:
            raise CgroupError(f"write {value!r} to {path}: no such file (the kernel or this "
                              "hierarchy does not provide it)", e.errno) from None
        raise CgroupError(f"write {value!r} to {path}: {_why(e)}", e.errno) from None
    try:
        os.write(fd, data)
    except OSError as e:
        raise CgroupError(f"write {value!r} to {path}: {_why(e)}", e.errno) from None
    finally:
        os.close(fd)


def parse_uint(text: str, path: str) -> int:
    """A cgroup number; ``max`` reads as 2**64-1 as runc reports it."""
    t = text.strip()
    if t == "max":
        return (1 << 64) - 1
    try:
        v = int(t)
    except ValueError:
        raise CgroupError(f"{path}: expected a number, got {t!r}") from None
    return v if v >= 0 else 0


def read_uint(path: str) -> int:
    return parse_uint(read(path), path)


def read_uint_opt(path: str) -> int:
    """A number, 0 when the file does not exist (a counter the kernel does not keep)."""
    t = read_opt(path)
    return 0 if t is None else parse_uint(t, path)


def read_keyed(path: str) -> dict[str, int]:
    """A flat keyed file (``key value`` per line) such as memory.stat or cpu.stat."""
    out: dict[str, int] = {}
    for line in read(path).splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            out[parts[0]] = int(parts[1])
        except ValueError:
            raise CgroupError(f"{path}: bad line {line!r}") from None
    return out


def read_keyed_opt(path: str) -> dict[str, int]:
    return read_keyed(path) if os.path.exists(path) else {}


def read_pids(path: str) -> list[int]:
    """The pids in a cgroup.procs file."""
    return [int(x) for x in read(path).split()]


def mkdirs(path: str, stop: str, attempts: int = 5) -> list[str]:
    """``mkdir -p path`` below the existing directory ``stop``; return the directories made.

    A parent may vanish between its mkdir and its child's: another container's runtime removes
    a shared parent (``/skiff``) it made once that parent is empty. The walk then starts over."""
    made: list[str] = []
    for attempt in range(attempts):
        todo: list[str] = []
        p = path
        while p != stop and len(p) > len(stop) and not os.path.isdir(p):
            todo.append(p)
            p = os.path.dirname(p)
        try:
            for d in reversed(todo):
                try:
                    os.mkdir(d, 0o755)
                except FileExistsError:
                    continue
                if d not in made:
                    made.append(d)
            return made
        except FileNotFoundError as e:
            if attempt == attempts - 1:
                raise CgroupError(f"mkdir {e.filename}: {_why(e)} (a parent cgroup kept being "
                                  "removed while it was created)", e.errno) from None
        except OSError as e:
            raise CgroupError(f"mkdir {e.filename}: {_why(e)}", e.errno) from None
    return made


def rmdir_tree(path: str, timeout: float = 2.0) -> None:
    """Remove a cgroup directory and its child cgroups, deepest first.

    cgroupfs directories are removed with ``rmdir`` even though they hold (virtual) files.
    ``EBUSY`` (tasks still exiting) is retried until ``timeout``; a missing directory is fine.
    """
    if not os.path.isdir(path):
        return
    dirs = [path]
    i = 0
    while i < len(dirs):
        try:
            with os.scandir(dirs[i]) as it:
                dirs.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise CgroupError(f"list {dirs[i]}: {_why(e)}", e.errno) from None
        i += 1
    deadline = time.monotonic() + timeout
    for d in reversed(dirs):
        delay = 0.001
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno == _errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    continue
                raise CgroupError(f"rmdir {d}: {_why(e)}", e.errno) from None


def clean_path(p: str) -> str:
    """Normalise a cgroupsPath as runc does: no ``..`` may climb above the start."""
    if p.startswith("/"):
        return os.path.normpath("/" + p.lstrip("/"))
    rel = os.path.normpath("/" + p).lstrip("/")
    return rel


def join(base: str, sub: str) -> str:
    """``base`` + ``sub`` where ``sub`` is a cgroup path (absolute or not) inside ``base``."""
    sub = sub.strip("/")
    return base if not sub else base.rstrip("/") + "/" + sub


# --- host discovery --------------------------------------------------------------------------

class Mount:
    """One cgroup mount from mountinfo: its mount point, the cgroup it shows, and controllers."""

    __slots__ = ("mountpoint", "root", "fstype", "controllers")

    def __init__(self, mountpoint: str, root: str, fstype: str, controllers: list[str]) -> None:
        self.mountpoint = mountpoint
        self.root = root
        self.fstype = fstype
        self.controllers = controllers


def parse_mountinfo(path: str, cgroup_root: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts at or below ``cgroup_root``, in mountinfo order."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise CgroupError(f"read {path}: {_why(e)}", e.errno) from None
    root = cgroup_root.rstrip("/") or "/"
    mounts: list[Mount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        post = right.split()
        if not post or post[0] not in ("cgroup", "cgroup2"):
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        mnt = unescape(fields[4])
        if mnt != root and not mnt.startswith(root + "/"):
            continue
        ctrls: list[str] = []
        if post[0] == "cgroup":
            opts = post[2].split(",") if len(post) > 2 else []
            ctrls = [o for o in opts if o in V1_CONTROLLERS or o.startswith("name=")]
            if not ctrls:
                continue
        mounts.append(Mount(mnt, unescape(fields[3]), post[0], ctrls))
    return mounts


def parse_own_cgroup(path: str) -> dict[str, str]:
    """/proc/self/cgroup as {controller: path}; the cgroup2 entry ``0::/x`` is under ``""``."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise CgroupError(f"read {path}: {_why(e)}", e.errno) from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            out[""] = parts[2]
            continue
        for c in parts[1].split(","):
            if c:
                out[c] = parts[2]
    return out


def parse_cpu_list(text: str) -> list[int]:
    """``0-3,7`` -> [0, 1, 2, 3, 7]."""
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        a, _, b = part.partition("-")
        lo = int(a)
        out.extend(range(lo, int(b) + 1) if b else [lo])
    return out
