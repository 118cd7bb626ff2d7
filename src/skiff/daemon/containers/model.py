"""The container record: what ``GET /containers/{id}/json`` shows, persisted as
``<data-root>/containers/<id>/config.v2.json`` (written atomically: tmp, fsync, rename).

Times are kept as nanoseconds since the epoch (0 = never) and shown in RFC 3339 with
nanoseconds, Docker's zero time being ``0001-01-01T00:00:00Z``.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

ZERO_TIME = "0001-01-01T00:00:00Z"
CONFIG_FILE = "config.v2.json"

STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def rfc3339(ns: int) -> str:
    """``2026-11-27T18:26:45.009341393Z``; 0 is Docker's zero time."""
    if ns <= 0:
        return ZERO_TIME
    secs, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


def human_duration(seconds: float) -> str:
    """Go's ``units.HumanDuration``, which ``docker ps`` shows in STATUS."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(round(seconds / 3600))
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


@dataclass
class State:
    status: str = "created"
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    oom_killed: bool = False
    started_at: int = 0          # ns
    finished_at: int = 0         # ns
    health: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        """Running in Docker's sense: a task exists (also when paused or restarting? no: restarting
        is between two runs)."""
        return self.status in ("running", "paused")

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "Status": self.status,
            "Running": self.status in ("running", "paused"),
            "Paused": self.status == "paused",
            "Restarting": self.status == "restarting",
            "OOMKilled": self.oom_killed,
            "Dead": self.status == "dead",
            "Pid": self.pid,
            "ExitCode": self.exit_code,
            "Error": self.error,
            "StartedAt": rfc3339(self.started_at),
            "FinishedAt": rfc3339(self.finished_at),
        }
        if self.health is not None:
            d["Health"] = self.health
        return d

    def describe(self, now_ns: int | None = None) -> str:
        """The ``Status`` column of ``docker ps``."""
        now = time.time_ns() if now_ns is None else now_ns
        health = ""
        if self.health is not None and self.status == "running":
            h = self.health.get("Status")
            health = " (health: starting)" if h == "starting" else f" ({h})"
        if self.status == "running":
            return f"Up {human_duration((now - self.started_at) / 1e9)}{health}"
        if self.status == "paused":
            return f"Up {human_duration((now - self.started_at) / 1e9)} (Paused)"
        if self.status == "restarting":
            return f"Restarting ({self.exit_code}) {human_duration((now - self.finished_at) / 1e9)} ago"
        if self.status == "removing":
            return "Removal In Progress"
        if self.status == "dead":
            return "Dead"
        if self.status == "created" or self.finished_at == 0:
            return "Created"
        return f"Exited ({self.exit_code}) {human_duration((now - self.finished_at) / 1e9)} ago"


@dataclass
class Container:
    id: str
    name: str                             # "/name"
    created: int                          # ns
    image_id: str                         # "sha256:..."
    config: dict[str, Any]                # Docker "Config", merged with the image's defaults
    host_config: dict[str, Any]           # "HostConfig" with Docker's defaults filled in
    networking_config: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    args: list[str] = field(default_factory=list)
    state: State = field(default_factory=State)
    restart_count: int = 0
    manually_stopped: bool = False        # stop/kill by a user: no restart (unless-stopped remembers)
    has_been_started: bool = False
    runtime: str = ""                     # skiffd runtime name
    driver: str = "overlayfs"
    platform: str = "linux"
    log_path: str = ""
    hostname_path: str = ""
    hosts_path: str = ""
    resolv_conf_path: str = ""
    snapshot_key: str = ""
    exec_ids: list[str] = field(default_factory=list)

    # -- persistence -------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Container:
        data = dict(data)
        state = State(**data.pop("state", {}))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fields {', '.join(unknown)}")
        return cls(state=state, **data)

    def save(self, directory: str) -> None:
        """Write the record to ``directory/config.v2.json`` atomically."""
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, CONFIG_FILE)
        tmp = f"{path}.tmp"
        data = json.dumps(self.to_record(), indent=None, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @classmethod
    def load(cls, directory: str) -> Container:
        path = os.path.join(directory, CONFIG_FILE)
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        try:
            return cls.from_record(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"container record {path}: {e}") from None

    # -- views -------------------------------------------------------------------------------
    @property
    def short_name(self) -> str:
        return self.name.lstrip("/")

    @property
    def image_ref(self) -> str:
        """The image as the user gave it (``Config.Image``)."""
        return str(self.config.get("Image") or self.image_id)

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    @property
    def auto_remove(self) -> bool:
        return bool(self.host_config.get("AutoRemove"))

    @property
    def restart_policy(self) -> tuple[str, int]:
        rp = self.host_config.get("RestartPolicy") or {}
        return str(rp.get("Name") or "no"), int(rp.get("MaximumRetryCount") or 0)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    def command_line(self) -> str:
        """``Command`` of ``docker ps``: argv joined, arguments with spaces shell-quoted."""
        argv = [self.path, *self.args] if self.path else list(self.args)
        return " ".join(a if a and not any(ch in a for ch in " \t\n'\"\\$;&|<>()*?[]#~`!{}")
                        else shlex.quote(a) for a in argv)

    def event_attributes(self) -> dict[str, str]:
        attrs = {k: str(v) for k, v in self.labels.items()}
        attrs["image"] = self.image_ref
        attrs["name"] = self.short_name
        return attrs

    def network_settings(self) -> dict[str, Any]:
        # skiffd has no networks yet (a container gets a private network namespace with loopback
        # only, or the host's): no endpoints to show until the networking work fills them in.
        networks: dict[str, Any] = {}
        return {
            "Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": False,
            "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0, "Ports": {},
            "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None, "EndpointID": "",
            "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": "",
            "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "", "Networks": networks,
        }

    def inspect(self, *, size_rw: int | None = None, size_root_fs: int | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "Id": self.id,
            "Created": rfc3339(self.created),
            "Path": self.path,
            "Args": list(self.args),
            "State": self.state.to_json(),
            "Image": self.image_id,
            "ResolvConfPath": self.resolv_conf_path,
            "HostnamePath": self.hostname_path,
            "HostsPath": self.hosts_path,
            "LogPath": self.log_path,
            "Name": self.name,
            "RestartCount": self.restart_count,
            "Driver": self.driver,
            "Platform": self.platform,
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": list(self.exec_ids) or None,
            "HostConfig": self.host_config,
            "GraphDriver": {"Name": self.driver, "Data": None},
            "Mounts": [],
            "Config": self.config,
            "NetworkSettings": self.network_settings(),
        }
        if size_rw is not None:
            d["SizeRw"] = size_rw
        if size_root_fs is not None:
            d["SizeRootFs"] = size_root_fs
        return d

    def summary(self, now_ns: int | None = None) -> dict[str, Any]:
        """An entry of ``GET /containers/json``."""
        return {
            "Id": self.id,
            "Names": [self.name],
            "Image": self.image_ref,
            "ImageID": self.image_id,
            "Command": self.command_line(),
            "Created": self.created // 1_000_000_000,
            "Ports": [],
            "Labels": self.labels,
            "State": self.state.status,
            "Status": self.state.describe(now_ns),
            "HostConfig": {"NetworkMode": str(self.host_config.get("NetworkMode") or "default")},
            "NetworkSettings": {"Networks": self.network_settings()["Networks"]},
            "Mounts": [],
        }
