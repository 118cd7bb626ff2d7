"""The system backend: what ``/version`` and ``/info`` report, read from the host, the
configuration and the other backends (moby's ``daemon/info.go``)."""

from __future__ import annotations

import os
import platform
import socket
import uuid
from datetime import UTC
from typing import Any

import skiff
from skiff.daemon.backend import ContainersBackend, ImagesBackend
from skiff.daemon.config import DaemonConfig

API_VERSION = "1.47"
MIN_API_VERSION = "1.24"
STORAGE_DRIVER = "overlayfs"
CGROUP_DRIVER = "cgroupfs"

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def go_arch() -> str:
    m = platform.machine()
    return _ARCH.get(m, m)


def cgroup_version(sysroot: str = "/") -> str:
    """"2" on a unified (cgroup v2 only) host, else "1" (v1 or hybrid)."""
    return "2" if os.path.exists(os.path.join(sysroot, "sys/fs/cgroup/cgroup.controllers")) else "1"


def _mem_total(sysroot: str) -> int:
    try:
        with open(os.path.join(sysroot, "proc/meminfo")) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _os_release(sysroot: str) -> tuple[str, str]:
    name, version = "Linux", ""
    try:
        with open(os.path.join(sysroot, "etc/os-release")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                v = v.strip('"')
                if k == "PRETTY_NAME":
                    name = v
                elif k == "VERSION_ID":
                    version = v
    except OSError:
        pass
    return name, version


class SystemService:
    def __init__(self, cfg: DaemonConfig, containers: ContainersBackend, images: ImagesBackend,
                 *, sysroot: str = "/") -> None:
        self.cfg = cfg
        self.containers = containers
        self.images = images
        self.sysroot = sysroot
        self._engine_id: str | None = None

    def engine_id(self) -> str:
        """A stable ID kept in ``<data-root>/engine-id`` (created on first use)."""
        if self._engine_id is None:
            path = os.path.join(self.cfg.data_root, "engine-id")
            try:
                with open(path) as f:
                    self._engine_id = f.read().strip()
            except FileNotFoundError:
                self._engine_id = str(uuid.uuid4())
                os.makedirs(self.cfg.data_root, mode=0o711, exist_ok=True)
                tmp = path + ".tmp"
                with open(tmp, "w") as f:
                    f.write(self._engine_id + "\n")
                os.replace(tmp, path)
        return self._engine_id

    def version(self) -> dict[str, Any]:
        kernel = platform.release()
        ver = skiff.__version__
        engine_details = {"ApiVersion": API_VERSION, "Arch": go_arch(), "BuildTime": "",
                          "Experimental": "false", "GitCommit": "", "GoVersion": "",
                          "KernelVersion": kernel, "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
                          "PythonVersion": platform.python_version()}
        rt = self.cfg.all_runtimes()[self.cfg.default_runtime]
        components = [
            {"Name": "Engine", "Version": ver, "Details": engine_details},
            {"Name": "skiff-containerd", "Version": ver, "Details": {"GitCommit": ""}},
            {"Name": self.cfg.default_runtime,
             "Version": ver if rt.name == "skiff-runc" else "",
             "Details": {"Path": rt.path}},
        ]
        return {"Platform": {"Name": f"Skiff Engine {ver}"}, "Components": components,
                "Version": ver, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                "GitCommit": "", "GoVersion": "", "Os": "linux", "Arch": go_arch(),
                "KernelVersion": kernel, "Experimental": False, "BuildTime": ""}

    def info(self) -> dict[str, Any]:
        cfg = self.cfg
        counts = self.containers.counts()
        os_name, os_version = _os_release(self.sysroot)
        runtimes = {name: rt.to_info() for name, rt in cfg.all_runtimes().items()}
        mirrors = list(cfg.registry_mirrors)
        cidrs = [r for r in cfg.insecure_registries if "/" in r]
        index_configs: dict[str, Any] = {
            "docker.io": {"Name": "docker.io", "Mirrors": mirrors, "Secure": True, "Official": True}}
        for r in cfg.insecure_registries:
            if "/" not in r:
                index_configs[r] = {"Name": r, "Mirrors": [], "Secure": False, "Official": False}
        return {
            "ID": self.engine_id(),
            "Containers": counts.total, "ContainersRunning": counts.running,
            "ContainersPaused": counts.paused, "ContainersStopped": counts.stopped,
            "Images": self.images.count(),
            "Driver": STORAGE_DRIVER, "DriverStatus": [],
            "Plugins": {"Volume": [], "Network": [], "Authorization": None, "Log": [cfg.log_driver]},
            "MemoryLimit": True, "SwapLimit": True, "KernelMemoryTCP": False,
            "CpuCfsPeriod": True, "CpuCfsQuota": True, "CPUShares": True, "CPUSet": True,
            "PidsLimit": True, "IPv4Forwarding": True, "Debug": cfg.debug,
            "NFd": len(os.listdir("/proc/self/fd")), "OomKillDisable": False,
            "NGoroutines": 0, "SystemTime": _now_rfc3339(), "LoggingDriver": cfg.log_driver,
            "CgroupDriver": CGROUP_DRIVER, "CgroupVersion": cgroup_version(self.sysroot),
            "NEventsListener": 0, "KernelVersion": platform.release(),
            "OperatingSystem": os_name, "OSVersion": os_version, "OSType": "linux",
            "Architecture": platform.machine(), "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {"InsecureRegistryCIDRs": cidrs, "IndexConfigs": index_configs,
                               "Mirrors": mirrors},
            "NCPU": os.cpu_count() or 0, "MemTotal": _mem_total(self.sysroot),
            "GenericResources": None, "DockerRootDir": cfg.data_root,
            "HttpProxy": os.environ.get("HTTP_PROXY", os.environ.get("http_proxy", "")),
            "HttpsProxy": os.environ.get("HTTPS_PROXY", os.environ.get("https_proxy", "")),
            "NoProxy": os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")),
            "Name": socket.gethostname(), "Labels": [], "ExperimentalBuild": False,
            "ServerVersion": skiff.__version__,
            "Runtimes": runtimes, "DefaultRuntime": cfg.default_runtime,
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                      "ControlAvailable": False, "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": cfg.live_restore, "Isolation": "",
            "InitBinary": "", "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""},
            "InitCommit": {"ID": ""}, "SecurityOptions": self.containers.security_options(),
            "CDISpecDirs": [], "Warnings": self._warnings(),
        }

    def _warnings(self) -> list[str]:
        return []


def _now_rfc3339() -> str:
    from datetime import datetime
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
