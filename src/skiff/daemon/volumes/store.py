"""The ``local`` volume driver: a volume is ``<data-root>/volumes/<name>/_data``, its metadata
``<data-root>/volumes/<name>/skiff-volume.json`` (name, labels, options, creation time,
anonymous or not), written atomically.

Driver options as Docker's local driver: ``type``, ``o`` and ``device`` make the volume a
mount (``type=tmpfs,device=tmpfs,o=size=10m`` or ``type=none,o=bind,device=/host/dir``) made
on ``_data`` when the first container using it starts and undone when the last one stops.
Other option keys are refused. Reference counting of users is the service's job
(``service.VolumeService``); this module only stores, mounts and removes."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from skiff.daemon.api.errors import ApiError, Conflict, InvalidParameter, NotFound

DRIVER = "local"
META_FILE = "skiff-volume.json"
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
OPTION_KEYS = ("type", "o", "device")
ANON_LABEL = "com.docker.volume.anonymous"

_FLAGS = {"ro": 1, "rw": 0, "nosuid": 2, "nodev": 4, "noexec": 8, "sync": 16, "dirsync": 128,
          "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24,
          "bind": 4096, "rbind": 4096 | 16384}


def _rfc3339(ns: int) -> str:
    t = time.gmtime(ns // 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)


def new_anonymous_name() -> str:
    return secrets.token_hex(32)


def valid_name(name: str) -> None:
    if not NAME_RE.match(name or ""):
        raise InvalidParameter(f'create {name}: "{name}" includes invalid characters for a local '
                               'volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you '
                               "intended to pass a host directory, use absolute path")


def parse_mount_options(o: str) -> tuple[int, str]:
    """``o=`` of a volume -> (mount flags, data string)."""
    flags, data = 0, []
    for opt in (o or "").split(","):
        if not opt:
            continue
        if opt in _FLAGS:
            flags |= _FLAGS[opt]
        else:
            data.append(opt)
    return flags, ",".join(data)


@dataclass
class Volume:
    name: str
    created: int                                  # ns
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False

    @property
    def has_mount(self) -> bool:
        return bool(self.options.get("type") or self.options.get("device"))


class VolumeStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.volumes: dict[str, Volume] = {}
        self.mounted: set[str] = set()
        self._lock = threading.Lock()

    # -- paths -----------------------------------------------------------------------------
    def dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def data_path(self, name: str) -> str:
        return os.path.join(self.root, name, "_data")

    # -- persistence ---------------------------------------------------------------------------
    def load(self) -> list[str]:
        """Read every volume's metadata; returns errors (one a line) for broken ones."""
        errors: list[str] = []
        os.makedirs(self.root, mode=0o701, exist_ok=True)
        for name in sorted(os.listdir(self.root)):
            p = os.path.join(self.root, name, META_FILE)
            if not os.path.isfile(p):
                continue
            try:
                with open(p) as f:
                    d = json.load(f)
                self.volumes[name] = Volume(**d)
            except (OSError, ValueError, TypeError) as e:
                errors.append(f"volume {name}: cannot read {p}: {e}")
        # mounts made before a daemon restart: known as mounted (the service unmounts those
        # no running container uses once the containers are reconciled)
        for v in self.volumes.values():
            if v.has_mount and os.path.ismount(self.data_path(v.name)):
                self.mounted.add(v.name)
        return errors

    def _save(self, v: Volume) -> None:
        p = os.path.join(self.dir(v.name), META_FILE)
        tmp = p + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(v), f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, p)

    # -- create / get / remove ---------------------------------------------------------------
    def create(self, name: str, *, driver: str = "", labels: dict[str, str] | None = None,
               options: dict[str, str] | None = None, anonymous: bool = False) -> tuple[Volume, bool]:
        """Returns (volume, created). An existing volume of that name is returned as is
        (Docker's behaviour for ``volume create`` of an existing name)."""
        if driver and driver != DRIVER:
            raise NotFound(f"create {name}: error looking up volume plugin {driver}: plugin "
                           f'"{driver}" not found (skiffd has only the local driver)')
        valid_name(name)
        options = dict(options or {})
        for k, val in options.items():
            if k not in OPTION_KEYS:
                raise InvalidParameter(f'create {name}: invalid option key: "{k}" (the local '
                                       "driver knows type, o, device)")
            if not isinstance(val, str):
                raise InvalidParameter(f"create {name}: option {k}: expected a string")
        if options.get("type") == "none" or "bind" in options.get("o", "").split(","):
            dev = options.get("device", "")
            if not dev.startswith("/"):
                raise InvalidParameter(f"create {name}: a bind-mounted local volume needs an "
                                       "absolute device path")
        elif options and not options.get("type"):
            raise InvalidParameter(f"create {name}: missing required option: \"type\"")
        with self._lock:
            if name in self.volumes:
                return self.volumes[name], False
            v = Volume(name, time.time_ns(), dict(labels or {}), options, anonymous)
            os.makedirs(self.data_path(name), mode=0o755, exist_ok=True)  # adopt a leftover dir
            try:
                self._save(v)
            except OSError:
                shutil.rmtree(self.dir(name), ignore_errors=True)
                raise
            self.volumes[name] = v
            return v, True

    def get(self, name: str) -> Volume:
        v = self.volumes.get(name)
        if v is None:
            raise NotFound(f"get {name}: no such volume")
        return v

    def remove(self, name: str) -> None:
        with self._lock:
            v = self.volumes.get(name)
            if v is None:
                raise NotFound(f"get {name}: no such volume")
            if name in self.mounted:
                raise Conflict(f"remove {name}: volume is in use (mounted)")
            shutil.rmtree(self.dir(name))
            del self.volumes[name]

    # -- driver mounts -------------------------------------------------------------------------
    def mount(self, name: str) -> None:
        v = self.get(name)
        if not v.has_mount or name in self.mounted:
            return
        from skiff.runtime.syscalls import LinuxSyscalls, SyscallError

        flags, data = parse_mount_options(v.options.get("o", ""))
        typ = v.options.get("type") or None
        dev = v.options.get("device") or typ or "none"
        if typ == "none":
            typ = None
        try:
            LinuxSyscalls().mount(dev, self.data_path(name), typ, flags, data or None)
            if flags & 4096 and flags & 1:   # a bind ignores ro: remount it read-only
                LinuxSyscalls().mount(None, self.data_path(name), None, 4096 | 32 | 1, None)
        except SyscallError as e:
            raise ApiError(f"volume {name}: mounting it: {e}") from None
        self.mounted.add(name)

    def unmount(self, name: str) -> None:
        if name in self.mounted:
            self._umount(name)
            self.mounted.discard(name)

    def _umount(self, name: str) -> None:
        from skiff.runtime.syscalls import MNT_DETACH, LinuxSyscalls, SyscallError
        try:
            LinuxSyscalls().umount2(self.data_path(name), MNT_DETACH)
        except SyscallError as e:
            raise ApiError(f"volume {name}: unmounting it: {e}") from None

    # -- reporting -----------------------------------------------------------------------------
    def inspect(self, v: Volume) -> dict[str, Any]:
        return {"CreatedAt": _rfc3339(v.created), "Driver": DRIVER, "Labels": dict(v.labels),
                "Mountpoint": self.data_path(v.name), "Name": v.name,
                "Options": dict(v.options) or None, "Scope": "local"}

    def usage(self, name: str) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.data_path(name)):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        return total
