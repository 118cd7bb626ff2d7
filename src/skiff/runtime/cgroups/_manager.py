"""The Manager: one container's cgroup directories and what is done to them."""

from __future__ import annotations

import errno as _errno
import os
import time

from ._util import (
    CgroupError,
    clean_path,
    join,
    mkdirs,
    parse_mountinfo,
    parse_own_cgroup,
    read,
    read_keyed,
    read_opt,
    read_pids,
    rmdir_tree,
    write,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from skiff.runtime.syscalls import Syscalls

    from ._util import Mount

FREEZE_TIMEOUT = 10.0
SIGKILL = 9


def _systemd_form(p: str) -> bool:
    """``slice:prefix:name``, the form of cgroupsPath that only systemd drivers understand."""
    return p.count(":") == 2 and "/" not in p


def open_manager(cgroups_path: str, container_id: str, *, systemd: bool = False,
                 cgroup_root: str = "/sys/fs/cgroup", mountinfo: str = "/proc/self/mountinfo",
                 own_cgroup: str = "/proc/self/cgroup",
                 syscalls: Syscalls | None = None) -> Manager:
    if systemd or _systemd_form(cgroups_path):
        raise CgroupError(f"cgroupsPath {cgroups_path!r}: systemd cgroups are not supported "
                          "(skiff-runc manages cgroupfs directly; use a path such as /skiff/<id>)")
    if not cgroups_path:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise CgroupError(f"container id {container_id!r} cannot name a cgroup")
        inner = container_id  # runc: relative to the runtime's own cgroup, named by the id
    else:
        inner = clean_path(cgroups_path)
        if inner in ("/", ""):
            raise CgroupError(f"cgroupsPath {cgroups_path!r} names "
                              + ("the root cgroup" if inner == "/" else "the runtime's own cgroup")
                              + ", not a cgroup of the container's own")
    root = os.path.normpath(cgroup_root)
    mounts = parse_mountinfo(mountinfo, root)
    if not mounts:
        raise CgroupError(f"no cgroup filesystem is mounted at or under {root} (per {mountinfo})")
    v2_at_root = [m for m in mounts if m.fstype == "cgroup2" and m.mountpoint == root]
    v1 = [m for m in mounts if m.fstype == "cgroup"]
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    own: dict[str, str] | None = None
    if not inner.startswith("/"):
        own = parse_own_cgroup(own_cgroup)

    def place(m: Mount, key: str) -> str:
        if inner.startswith("/"):
            return join(m.mountpoint, inner)
        assert own is not None
        mine = own.get(key)
        if mine is None:
            raise CgroupError(f"{own_cgroup} has no entry for "
                              + (f"the {key} controller" if key else "cgroup v2 (0::)")
                              + f", needed to place the relative cgroupsPath {inner!r}")
        if m.root != "/" and (mine == m.root or mine.startswith(m.root.rstrip("/") + "/")):
            mine = mine[len(m.root.rstrip("/")):]  # the mount shows a subtree: paths are below it
        return join(join(m.mountpoint, mine), inner)

    paths: dict[str, str] = {}
    mountpoints: dict[str, str] = {}
    if v2_at_root or not v1:
        mode = "v2"
        m = (v2_at_root or v2)[0]
        paths[""] = place(m, "")
        mountpoints[""] = m.mountpoint
    else:
        mode = "hybrid" if v2 else "v1"
        for m in v1:
            for c in m.controllers:
                if c in paths:
                    continue  # the same hierarchy mounted twice: the first mount wins
                paths[c] = place(m, c)
                mountpoints[c] = m.mountpoint
        if v2:
            paths[""] = place(v2[0], "")
            mountpoints[""] = v2[0].mountpoint
    return Manager(container_id, mode, paths, mountpoints, [], syscalls)


def load_manager(state: dict, *, syscalls: Syscalls | None = None) -> Manager:
    """Rebuild a Manager from ``Manager.state()``."""
    try:
        mode = state["mode"]
        paths = dict(state["paths"])
        mountpoints = dict(state["mountpoints"])
        created = list(state.get("created", []))
        cid = state.get("container_id", "")
    except (KeyError, TypeError) as e:
        raise CgroupError(f"cgroup state {state!r}: missing or malformed {e}") from None
    if mode not in ("v1", "v2", "hybrid") or set(paths) != set(mountpoints):
        raise CgroupError(f"cgroup state {state!r}: malformed")
    return Manager(cid, mode, paths, mountpoints, created, syscalls)


class Manager:
    """The cgroup directories of one container.

    ``paths`` maps a v1 controller (or a named hierarchy such as ``name=systemd``) to its
    directory, and ``""`` to the cgroup v2 directory (pure v2, or the unified hierarchy of a
    hybrid host). Co-mounted v1 controllers share a directory.
    """

    __slots__ = ("container_id", "mode", "_paths", "_mountpoints", "created", "_sys")

    def __init__(self, container_id: str, mode: str, paths: dict[str, str],
                 mountpoints: dict[str, str], created: list[str],
                 syscalls: Syscalls | None = None) -> None:
        self.container_id = container_id
        self.mode = mode
        self._paths = paths
        self._mountpoints = mountpoints
        self.created = created
        self._sys = syscalls

    def __repr__(self) -> str:
        return f"Manager({self.container_id!r}, {self.mode}, {self._paths})"

    @property
    def version(self) -> int:
        return 2 if self.mode == "v2" else 1

    @property
    def syscalls(self) -> Syscalls:
        if self._sys is None:
            from skiff.runtime.syscalls import LinuxSyscalls

            self._sys = LinuxSyscalls()
        return self._sys

    # --- where things are ------------------------------------------------------------------

    def paths(self) -> dict[str, str]:
        return dict(self._paths)

    def state(self) -> dict:
        return {"version": self.version, "mode": self.mode, "container_id": self.container_id,
                "paths": dict(self._paths), "mountpoints": dict(self._mountpoints),
                "created": list(self.created)}

    def _dirs(self) -> list[str]:
        """Each directory once (co-mounted controllers share one)."""
        seen: list[str] = []
        for p in self._paths.values():
            if p not in seen:
                seen.append(p)
        return seen

    @property
    def unified(self) -> str | None:
        """The cgroup v2 directory, if the container has one."""
        return self._paths.get("")

    def v1(self, controller: str) -> str | None:
        """The v1 directory of ``controller`` (None on pure v2 or if it is not mounted)."""
        return None if self.mode == "v2" else self._paths.get(controller)

    def v2_controllers(self) -> list[str]:
        """The controllers the cgroup2 hierarchy offers (its root's cgroup.controllers)."""
        mnt = self._mountpoints.get("")
        if mnt is None:
            return []
        text = read_opt(mnt + "/cgroup.controllers")
        return text.split() if text else []

    def v2_dir(self, controller: str, where: str, *, enable: bool = True) -> str:
        """The v2 directory, after making sure ``controller`` is enabled down to it."""
        d = self.unified
        if d is None:
            raise CgroupError(f"{where}: no {controller} controller on this host (no v1 {controller} "
                              "hierarchy and no cgroup v2 hierarchy)")
        avail = self.v2_controllers()
        if controller not in avail:
            where_v1 = " (and no v1 hierarchy of it is mounted)" if self.mode == "hybrid" else ""
            raise CgroupError(f"{where}: the {controller} controller is not available in the cgroup v2 "
                              f"hierarchy at {self._mountpoints['']} (it offers: "
                              f"{' '.join(avail) or 'none'}){where_v1}")
        if enable:
            self._enable(controller, where)
        return d

    def _ancestors_v2(self) -> list[str]:
        """The cgroup2 directories from the mount point down to the container's parent."""
        d, mnt = self.unified, self._mountpoints.get("")
        assert d is not None and mnt is not None
        out = [mnt]
        rel = d[len(mnt):].strip("/").split("/")
        for part in rel[:-1]:
            out.append(out[-1] + "/" + part)
        return out

    def _enable(self, controller: str, where: str) -> None:
        for p in self._ancestors_v2():
            f = p + "/cgroup.subtree_control"
            if controller in read(f).split():
                continue
            try:
                write(f, "+" + controller)
            except CgroupError as e:
                hint = (" (the cgroup has processes of its own: cgroup v2 lets only cgroups without "
                        "processes enable controllers for their children)"
                        if e.errno == _errno.EBUSY else "")
                raise CgroupError(f"{where}: enable the {controller} controller: {e}{hint}",
                                  e.errno) from None

    # --- lifecycle -----------------------------------------------------------------------

    def create(self) -> None:
        """Make every directory (``mkdir -p``), recording the ones made for ``destroy``. When
        one fails, the directories already made are removed again."""
        try:
            for key, d in self._paths.items():
                made = mkdirs(d, self._mountpoints[key])
                self.created.extend(x for x in made if x not in self.created)
                if key == "cpuset" and self.mode != "v2":
                    self._init_cpuset(d, self._mountpoints[key])
        except CgroupError:
            self._remove_created()
            raise
        if self.mode == "v2":
            # enable what the hierarchy offers so limits and statistics work; a controller that
            # cannot be enabled is reported by set() when a resource needs it
            for c in self.v2_controllers():
                try:
                    self._enable(c, "create")
                except CgroupError:
                    pass

    @staticmethod
    def _init_cpuset(d: str, mnt: str) -> None:
        """A new v1 cpuset cgroup starts with empty cpus/mems; copy them down from the parent."""
        chain = [d]
        while chain[-1] != mnt and len(chain[-1]) > len(mnt):
            chain.append(os.path.dirname(chain[-1]))
        chain.reverse()
        for parent, child in zip(chain, chain[1:], strict=False):
            for f in ("cpuset.cpus", "cpuset.mems"):
                if read(f"{child}/{f}").strip():
                    continue
                value = read(f"{parent}/{f}").strip()
                if not value:
                    raise CgroupError(f"{parent}/{f} is empty: cannot give the new cpuset cgroup "
                                      f"{child} any {'cpus' if f.endswith('cpus') else 'memory nodes'}")
                write(f"{child}/{f}", value)

    def add(self, pid: int) -> None:
        for d in self._dirs():
            write(d + "/cgroup.procs", str(pid))

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self._dirs())

    def destroy(self) -> None:
        """Remove the container's directories (and child cgroups), then the parents ``create``
        made when they are left empty. Missing directories are fine (idempotent)."""
        for d in self._dirs():
            rmdir_tree(d)
        self._remove_created(skip=set(self._dirs()))

    def _remove_created(self, skip: set[str] | None = None) -> None:
        """rmdir (never recursive) the directories ``create`` made, deepest first; one still
        holding another container's cgroup stays."""
        for d in sorted(self.created, key=lambda p: p.count("/"), reverse=True):
            if skip and d in skip:
                continue
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (_errno.ENOTEMPTY, _errno.EBUSY, _errno.EEXIST):
                    raise CgroupError(f"rmdir {d}: {e.strerror}", e.errno) from None
                # still used by another container's cgroup: leave it

    # --- resources ----------------------------------------------------------------------

    def set(self, resources: dict) -> None:
        """Apply ``linux.resources`` (validated first: unknown keys and bad values are refused)."""
        from ._resources import check
        from ._set import apply

        apply(self, check(resources), update=False)

    def update(self, resources: dict) -> None:
        """``set`` for a running container: only the fields given change."""
        from ._resources import check
        from ._set import apply

        apply(self, check(resources), update=True)

    # --- freezer ------------------------------------------------------------------------

    def _freezer(self) -> tuple[str, str]:
        d = self.v1("freezer")
        if d is not None:
            return "v1", d
        if self.unified is not None:
            return "v2", self.unified
        raise CgroupError(f"container {self.container_id}: no freezer (neither the v1 freezer "
                          "controller nor cgroup v2 is available)")

    def freeze(self) -> None:
        kind, d = self._freezer()
        if kind == "v1":
            self._set_v1_freezer(d, "FROZEN")
        else:
            self._set_v2_freezer(d, True)

    def thaw(self) -> None:
        kind, d = self._freezer()
        if kind == "v1":
            self._set_v1_freezer(d, "THAWED")
        else:
            self._set_v2_freezer(d, False)

    def frozen(self) -> bool:
        kind, d = self._freezer()
        if kind == "v1":
            return read(d + "/freezer.state").strip() == "FROZEN"
        return read_keyed(d + "/cgroup.events").get("frozen") == 1

    @staticmethod
    def _wait_for(done: Callable[[], bool], poke: Callable[[], None] | None) -> bool:
        """Poll ``done()`` until true (``True``) or FREEZE_TIMEOUT (``False``); ``poke()``
        every 100 ms if given."""
        deadline = time.monotonic() + FREEZE_TIMEOUT
        delay = 0.0005
        last_poke = time.monotonic()
        while not done():
            now = time.monotonic()
            if now > deadline:
                return False
            if poke is not None and now - last_poke > 0.1:
                last_poke = now
                poke()
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        return True

    def _set_v1_freezer(self, d: str, target: str) -> None:
        f = d + "/freezer.state"
        write(f, target)
        # reading freezer.state is what moves a FREEZING cgroup on to FROZEN; writing the
        # target again now and then helps tasks that were busy forking
        if self._wait_for(lambda: read(f).strip() == target, lambda: write(f, target)):
            return
        state = read(f).strip()
        if target == "FROZEN":
            write(f, "THAWED")
        raise CgroupError(f"{f}: still {state} {FREEZE_TIMEOUT:g}s after writing {target}"
                          + (" (thawed again)" if target == "FROZEN" else ""), _errno.ETIMEDOUT)

    def _set_v2_freezer(self, d: str, freeze: bool) -> None:
        f = d + "/cgroup.freeze"
        write(f, "1" if freeze else "0")
        if self._wait_for(lambda: read_keyed(d + "/cgroup.events").get("frozen") == int(freeze), None):
            return
        if freeze:
            write(f, "0")
        raise CgroupError(f"{d}/cgroup.events: no 'frozen {int(freeze)}' {FREEZE_TIMEOUT:g}s after "
                          f"writing {int(freeze)} to {f}" + (" (thawed again)" if freeze else ""),
                          _errno.ETIMEDOUT)

    # --- processes ----------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every process in the container's cgroups and their child cgroups."""
        found: set[int] = set()
        present = 0
        for d in self._dirs():
            if not os.path.isdir(d):
                continue
            present += 1
            for dirpath, _dirs, _files in os.walk(d):
                try:
                    found.update(read_pids(dirpath + "/cgroup.procs"))
                except CgroupError as e:
                    if e.errno != _errno.ENOENT:  # a child cgroup removed while walking
                        raise
        if not present:
            raise CgroupError(f"container {self.container_id}: its cgroup does not exist "
                              f"({', '.join(self._dirs())})", _errno.ENOENT)
        return sorted(found)

    def kill_all(self, sig: int) -> None:
        """Signal every process. SIGKILL uses cgroup.kill when the kernel has it; otherwise
        the cgroup is frozen while the signals are sent so that no new process escapes."""
        u = self.unified
        if sig == SIGKILL and u is not None and os.path.exists(u + "/cgroup.kill"):
            write(u + "/cgroup.kill", "1")
            if self.mode == "v2":
                return
            # hybrid: a process moved into the container's v1 cgroups only is not in the v2
            # one that cgroup.kill empties; the pass below signals every cgroup's processes
        froze = False
        try:
            kind, _ = self._freezer()
        except CgroupError:
            kind = ""
        if kind and not self.frozen():
            self.freeze()
            froze = True
        try:
            for pid in self.pids():
                try:
                    self.syscalls.kill(pid, sig)
                except OSError as e:
                    if e.errno != _errno.ESRCH:
                        raise CgroupError(f"kill -{sig} {pid} (container {self.container_id}): "
                                          f"{e.strerror}", e.errno) from None
        finally:
            if froze:
                self.thaw()

    # --- memory events ------------------------------------------------------------------

    def oom_kill_count(self) -> int:
        d = self.v1("memory")
        if d is not None:
            return read_keyed(d + "/memory.oom_control").get("oom_kill", 0)
        if self.unified is not None and "memory" in self.v2_controllers():
            return read_keyed(self.unified + "/memory.events").get("oom_kill", 0)
        raise CgroupError(f"container {self.container_id}: no memory controller to count OOM kills")

    def oom_event_fd(self) -> int | None:
        """v1: an eventfd that becomes readable on each OOM in the cgroup (and when the cgroup
        is removed). v2 has no such registration (watch memory.events instead): ``None``."""
        d = self.v1("memory")
        if d is None:
            return None
        efd = os.eventfd(0, os.EFD_CLOEXEC)
        try:
            try:
                cfd = os.open(d + "/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise CgroupError(f"open {d}/memory.oom_control: {e.strerror}", e.errno) from None
            try:
                write(d + "/cgroup.event_control", f"{efd} {cfd}")
            finally:
                os.close(cfd)
        except BaseException:
            os.close(efd)
            raise
        return efd

    # --- statistics ---------------------------------------------------------------------

    def stats(self) -> dict:
        from ._stats import collect

        return collect(self)
