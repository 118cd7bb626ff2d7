"""Containers' mount points and the volumes behind them.

At container create, ``prepare`` turns a container's HostConfig (Binds, Mounts, Tmpfs,
VolumesFrom) and its merged Config's ``Volumes`` (``-v /path`` and the image's VOLUMEs) into
mount points, in dockerd's order of precedence: explicit Binds/Mounts win over VolumesFrom,
which win over Config/image volumes. Volumes that do not exist are created (anonymous ones
with a random 64-hex name and the ``com.docker.volume.anonymous`` label), a missing bind
source of ``-v`` is created as a directory (``--mount type=bind`` refuses it: specgen), and an
empty volume gets a copy of what the image has at that path (unless ``nocopy``). The mount
points are persisted as ``<data-root>/containers/<id>/mountpoints.json`` and give
``Mounts`` in container inspect.

Every container (whatever its state) holds a reference on its volumes: ``volume rm`` of a
referenced volume is a 409. ``started``/``stopped`` mount and unmount volumes created with
driver options (first user starts / last user stops). ``release`` forgets a removed
container and removes its anonymous volumes when asked (``--rm``, ``docker rm -v``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from skiff.daemon.api.errors import ApiError, Conflict, InvalidParameter, NotFound
from skiff.daemon.volumes.store import ANON_LABEL, DRIVER, VolumeStore, new_anonymous_name

log = logging.getLogger(__name__)

MOUNTPOINTS_FILE = "mountpoints.json"


class VolumeService:
    def __init__(self, data_root: str, resolve_container: Callable[[str], str] | None = None,
                 events: Any = None) -> None:
        self.data_root = data_root
        self.events = events            # EventsHub (thread-safe publish) or None
        self.store = VolumeStore(os.path.join(data_root, "volumes"))
        self.containers_root = os.path.join(data_root, "containers")
        # a container reference (name, id, prefix) -> its id; NotFound when none
        self.resolve_container = resolve_container or (lambda ref: ref)
        self.points: dict[str, list[dict[str, Any]]] = {}   # container id -> mount points
        self.running: set[str] = set()                       # containers with volumes in use
        # held while mount points are resolved and while volumes are removed: a volume cannot
        # go between being chosen for a new container and being referenced by it
        self._lock = threading.RLock()

    def _publish(self, action: str, name: str, **attrs: str) -> None:
        if self.events is not None:
            self.events.publish("volume", action, name, {"driver": DRIVER, **attrs})

    # -- start-up --------------------------------------------------------------------------
    def load(self) -> list[str]:
        errors = self.store.load()
        if os.path.isdir(self.containers_root):
            for cid in os.listdir(self.containers_root):
                p = os.path.join(self.containers_root, cid, MOUNTPOINTS_FILE)
                if not os.path.isfile(p):
                    continue
                try:
                    with open(p) as f:
                        self.points[cid] = json.load(f)
                except (OSError, ValueError) as e:
                    errors.append(f"container {cid}: cannot read {p}: {e}")
        return errors

    def restore(self, running: list[str]) -> None:
        """After live restore: the containers still running keep their volumes mounted; mounts
        no running container uses are undone."""
        with self._lock:
            self.running = {cid for cid in running if cid in self.points}
            busy = {p["Name"] for c in self.running for p in self.points.get(c, [])
                    if p["Type"] == "volume"}
            for name in sorted(self.store.mounted - busy):
                try:
                    self.store.unmount(name)
                except ApiError as e:
                    log.error("%s", e)

    # -- references --------------------------------------------------------------------------
    def users(self, name: str) -> list[str]:
        return sorted(cid for cid, pts in list(self.points.items())
                      if any(p["Type"] == "volume" and p["Name"] == name for p in pts))

    def mounts_of(self, cid: str) -> list[dict[str, Any]]:
        """``Mounts`` of container inspect."""
        out = []
        for p in self.points.get(cid, []):
            out.append({k: p[k] for k in ("Type", "Name", "Source", "Destination", "Driver", "Mode",
                                          "RW", "Propagation") if k in p})
            if p["Type"] != "volume":
                out[-1].pop("Name", None)
                out[-1].pop("Driver", None)
        return out

    # -- create ------------------------------------------------------------------------------
    async def prepare(self, cid: str, config: dict[str, Any], host: dict[str, Any],
                      layer_dirs: list[str]) -> list[tuple[str, str, bool]]:
        """Resolve and record the mount points of a new container; returns the
        ``SpecInput.volume_mounts``. Undo with ``release(cid, remove_anonymous=True)``."""
        return await asyncio.to_thread(self._prepare_locked, cid, config, host, layer_dirs)

    def _prepare_locked(self, cid: str, config: dict[str, Any], host: dict[str, Any],
                        layer_dirs: list[str]) -> list[tuple[str, str, bool]]:
        with self._lock:
            return self._prepare(cid, config, host, layer_dirs)

    def _prepare(self, cid: str, config: dict[str, Any], host: dict[str, Any],
                 layer_dirs: list[str]) -> list[tuple[str, str, bool]]:
        from skiff.daemon import specgen

        si = specgen.sysinfo()
        explicit = specgen.user_mounts(host, si)
        points: dict[str, dict[str, Any]] = {}
        # image / Config volumes (lowest precedence)
        for dest in sorted(config.get("Volumes") or {}):
            d = os.path.normpath(dest)
            if not d.startswith("/") or d == "/" or d.startswith("//"):
                raise InvalidParameter(f"invalid volume {dest!r} in the image or Config.Volumes: "
                                       "it must be an absolute path other than /")
            points[d] = {"Type": "volume", "Name": "", "Destination": d, "RW": True, "Mode": "",
                         "Propagation": "", "copy": True}
        # VolumesFrom
        for spec in host.get("VolumesFrom") or []:
            if not isinstance(spec, str) or not spec:
                raise InvalidParameter(f"VolumesFrom: invalid entry {spec!r}")
            ref, _, mode = spec.partition(":")
            if mode not in ("", "ro", "rw"):
                raise InvalidParameter(f"invalid mode for volumes-from: {mode}")
            try:
                src_id = self.resolve_container(ref)
            except NotFound:
                # 400, not 404: the CLI takes a 404 from create for a missing image and pulls
                raise InvalidParameter(f"VolumesFrom: No such container: {ref}") from None
            if src_id == cid:
                raise InvalidParameter("container cannot take volumes from itself")
            for p in self.points.get(src_id, []):
                if p["Type"] == "tmpfs":
                    continue
                q = dict(p)
                if mode:
                    q["RW"] = mode == "rw"
                    q["Mode"] = mode if q["Type"] == "bind" else ""
                q["copy"] = False
                points[q["Destination"]] = q
        # Binds / Mounts / Tmpfs (highest precedence)
        binds = set(host.get("Binds") or [])
        for m in explicit:
            if m.kind == "volume":
                points[m.destination] = {
                    "Type": "volume", "Name": m.name, "Destination": m.destination, "RW": not m.ro,
                    "Mode": "ro" if m.ro else "", "Propagation": "",
                    "copy": not m.nocopy, "labels": m.vol_labels, "driver": m.vol_driver,
                    "options": m.vol_options}
            elif m.kind == "bind":
                points[m.destination] = {
                    "Type": "bind", "Source": m.source, "Destination": m.destination,
                    "RW": "ro" not in m.options, "Mode": "ro" if "ro" in m.options else "",
                    "Propagation": m.propagation or "rprivate",
                    "create": any(b.split(":")[0] == m.source or
                                  os.path.normpath(b.split(":")[0]) == m.source for b in binds)}
            else:
                points[m.destination] = {"Type": "tmpfs", "Source": "", "Destination": m.destination,
                                         "RW": "ro" not in m.options, "Mode": "",
                                         "Propagation": ""}
        made: list[str] = []
        try:
            for p in points.values():
                if p["Type"] == "bind":
                    if p.pop("create", False) and not os.path.lexists(p["Source"]):
                        # dockerd's -v: a missing host path becomes a directory
                        os.makedirs(p["Source"], mode=0o755, exist_ok=True)
                    continue
                if p["Type"] != "volume":
                    continue
                anonymous = not p["Name"]
                name = p["Name"] or new_anonymous_name()
                labels = dict(p.pop("labels", None) or {})
                if anonymous:
                    labels[ANON_LABEL] = ""
                try:
                    v, created = self.store.create(name, driver=p.pop("driver", "") or "",
                                                   labels=labels, options=p.pop("options", None),
                                                   anonymous=anonymous)
                except NotFound as e:     # an unknown driver: 400 (a 404 makes the CLI pull)
                    raise InvalidParameter(str(e)) from None
                if created:
                    made.append(name)
                    self._publish("create", name)
                p.update(Name=name, Source=self.store.data_path(name), Driver=DRIVER)
                copy = p.pop("copy", False)
                if copy and not v.has_mount:
                    self._copy_up(layer_dirs, p["Destination"], self.store.data_path(name))
            for p in points.values():
                p.pop("copy", None)
                p.pop("create", None)
            ordered = sorted(points.values(), key=lambda p: p["Destination"])
            self._save(cid, ordered)
        except BaseException:
            for name in made:
                with contextlib.suppress(ApiError, OSError):
                    self.store.remove(name)
            raise
        self.points[cid] = ordered
        explicit_dests = {m.destination for m in explicit if m.kind != "volume"}
        return [(p["Destination"], p["Source"], not p["RW"]) for p in ordered
                if p["Type"] != "tmpfs" and p["Destination"] not in explicit_dests]

    def _save(self, cid: str, points: list[dict[str, Any]]) -> None:
        d = os.path.join(self.containers_root, cid)
        os.makedirs(d, mode=0o710, exist_ok=True)
        p = os.path.join(d, MOUNTPOINTS_FILE)
        with open(p + ".tmp", "w") as f:
            json.dump(points, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(p + ".tmp", p)

    def _copy_up(self, layer_dirs: list[str], dest: str, target: str) -> None:
        """Copy what the image has at ``dest`` into the empty volume directory ``target``.
        The image's layers are seen merged (a read-only overlay mount when there are several);
        ``dest`` is resolved inside that root (symlinks never lead out of it) and symlinks in
        the copied tree are copied as symlinks."""
        if not layer_dirs or os.listdir(target):
            return
        from skiff.runtime.paths import resolve_in_root

        tmp = ""
        root = layer_dirs[0]
        if len(layer_dirs) > 1:
            from skiff.runtime.syscalls import MNT_DETACH, MS_RDONLY, LinuxSyscalls, SyscallError
            tmp = tempfile.mkdtemp(prefix=".copyup-", dir=self.store.root)  # no volume name starts with "."
            try:
                LinuxSyscalls().mount("overlay", tmp, "overlay", MS_RDONLY,
                                      "lowerdir=" + ":".join(layer_dirs))
            except SyscallError as e:
                os.rmdir(tmp)
                raise ApiError(f"copy-up into volume at {dest}: mounting the image: {e}") from None
            root = tmp
        try:
            src = resolve_in_root(os.path.realpath(root), dest)
            if not os.path.isdir(src) or os.path.islink(src):
                return
            _copy_tree(src, target)
        finally:
            if tmp:
                LinuxSyscalls().umount2(tmp, MNT_DETACH)
                os.rmdir(tmp)

    # -- run / stop / remove -----------------------------------------------------------------
    async def started(self, cid: str) -> None:
        """Before the container's task is created: mount its driver-option volumes."""
        await asyncio.to_thread(self._started, cid)

    def _started(self, cid: str) -> None:
        with self._lock:
            if cid in self.running:
                return
            for p in self.points.get(cid, []):
                if p["Type"] == "volume":
                    self.store.mount(p["Name"])
            self.running.add(cid)
            for p in self.points.get(cid, []):
                if p["Type"] == "volume":
                    self._publish("mount", p["Name"], container=cid, destination=p["Destination"],
                                  propagation=p.get("Propagation") or "",
                                  **{"read/write": "true" if p["RW"] else "false"})

    async def stopped(self, cid: str) -> None:
        """After the container's task is gone: unmount volumes no other running container uses."""
        await asyncio.to_thread(self._stopped, cid)

    def _stopped(self, cid: str) -> None:
        with self._lock:
            if cid not in self.running:
                return
            self.running.discard(cid)
            busy = {p["Name"] for c in self.running for p in self.points.get(c, [])
                    if p["Type"] == "volume"}
            for p in self.points.get(cid, []):
                if p["Type"] != "volume":
                    continue
                self._publish("unmount", p["Name"], container=cid)
                if p["Name"] not in busy:
                    try:
                        self.store.unmount(p["Name"])
                    except ApiError as e:
                        log.error("container %s: %s", cid, e)

    async def release(self, cid: str, remove_anonymous: bool) -> None:
        await asyncio.to_thread(self._release, cid, remove_anonymous)

    def _release(self, cid: str, remove_anonymous: bool) -> None:
        self._stopped(cid)
        with self._lock:
            pts = self.points.pop(cid, [])
            if remove_anonymous:
                self._remove_anonymous(cid, pts)

    def _remove_anonymous(self, cid: str, pts: list[dict[str, Any]]) -> None:
        for p in pts:
            if p["Type"] != "volume":
                continue
            v = self.store.volumes.get(p["Name"])
            if v is None or not v.anonymous or self.users(v.name):
                continue
            try:
                self.store.remove(v.name)
            except (ApiError, OSError) as e:
                log.error("container %s: removing its anonymous volume %s: %s", cid, v.name, e)
                continue
            self._publish("destroy", v.name)

    # -- the volume API --------------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("Name") or ""
        labels = body.get("Labels") or {}
        opts = body.get("DriverOpts") or {}
        if not isinstance(labels, dict) or not isinstance(opts, dict):
            raise InvalidParameter("volume create: Labels and DriverOpts must be objects")
        if body.get("ClusterVolumeSpec"):
            raise InvalidParameter("volume create: cluster volumes are not supported by skiffd")
        anonymous = not name
        if anonymous:
            name = new_anonymous_name()
            labels = {**labels, ANON_LABEL: ""}
        v, created = self.store.create(name, driver=body.get("Driver") or "", labels=labels,
                                       options=opts, anonymous=anonymous)
        if created:
            self._publish("create", name)
        return self.store.inspect(v)

    def inspect(self, name: str) -> dict[str, Any]:
        return self.store.inspect(self.store.get(name))

    def list_volumes(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        out = []
        for v in sorted(self.store.volumes.values(), key=lambda v: v.name):
            if not self._matches(v, filters):
                continue
            out.append(self.store.inspect(v))
        return out

    def _matches(self, v: Any, filters: dict[str, list[str]]) -> bool:
        if filters.get("name") and not any(n in v.name for n in filters["name"]):
            return False
        if filters.get("driver") and DRIVER not in filters["driver"]:
            return False
        for d in filters.get("dangling", []):
            if d.lower() not in ("true", "false", "1", "0"):
                raise InvalidParameter(f'invalid filter \'dangling={d}\'')
            want = d.lower() in ("true", "1")
            if want == bool(self.users(v.name)):
                return False
        for lab in filters.get("label", []):
            k, sep, val = lab.partition("=")
            if k not in v.labels or (sep and v.labels[k] != val):
                return False
        for lab in filters.get("label!", []):
            k, sep, val = lab.partition("=")
            if k in v.labels and (not sep or v.labels[k] == val):
                return False
        return True

    def remove(self, name: str, force: bool = False) -> None:
        with self._lock:
            if name not in self.store.volumes:
                if force:
                    return
                raise NotFound(f"get {name}: no such volume")
            users = self.users(name)
            if users:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
            self.store.remove(name)
        self._publish("destroy", name)

    def prune(self, filters: dict[str, list[str]], all_volumes: bool) -> dict[str, Any]:
        with self._lock:
            return self._prune(filters, all_volumes)

    def _prune(self, filters: dict[str, list[str]], all_volumes: bool) -> dict[str, Any]:
        deleted, reclaimed = [], 0
        for v in list(self.store.volumes.values()):
            if not all_volumes and not v.anonymous:
                continue
            if self.users(v.name) or not self._matches(v, {k: x for k, x in filters.items()
                                                           if k in ("label", "label!")}):
                continue
            size = self.store.usage(v.name)
            try:
                self.store.remove(v.name)
            except (ApiError, OSError) as e:
                log.error("volume prune: %s: %s", v.name, e)
                continue
            deleted.append(v.name)
            reclaimed += size
            self._publish("destroy", v.name)
        return {"VolumesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def disk_usage(self) -> list[dict[str, Any]]:
        out = []
        for v in sorted(self.store.volumes.values(), key=lambda v: v.name):
            d = self.store.inspect(v)
            d["UsageData"] = {"Size": self.store.usage(v.name), "RefCount": len(self.users(v.name))}
            out.append(d)
        return out


def _copy_tree(src: str, dst: str) -> None:
    """Copy the contents of directory ``src`` into ``dst`` keeping modes, owners, times and
    symlinks (as links); ``dst`` gets ``src``'s mode and owner."""
    for entry in os.scandir(src):
        s, d = entry.path, os.path.join(dst, entry.name)
        st = entry.stat(follow_symlinks=False)
        if entry.is_symlink():
            os.symlink(os.readlink(s), d)
        elif entry.is_dir(follow_symlinks=False):
            os.mkdir(d)
            _copy_tree(s, d)
        elif entry.is_file(follow_symlinks=False):
            shutil.copyfile(s, d, follow_symlinks=False)
        else:
            os.mknod(d, st.st_mode, st.st_rdev)
        os.lchown(d, st.st_uid, st.st_gid)
        if not entry.is_symlink():
            os.chmod(d, st.st_mode & 0o7777)     # after chown, which clears set-id bits
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, st.st_mode & 0o7777)
