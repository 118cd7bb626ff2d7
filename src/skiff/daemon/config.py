"""skiffd's configuration: ``daemon.json`` with dockerd's common keys, and the same flags.

::

    {
      "data-root": "/var/lib/skiff",          "exec-root": "/run/skiff",
      "pidfile": "/run/skiff/skiffd.pid",     "hosts": ["unix:///run/skiff/skiff.sock"],
      "default-runtime": "skiff-runc",
      "runtimes": {"my-runc": {"path": "/usr/sbin/runc", "runtimeArgs": ["--debug"]}},
      "log-driver": "json-file",              "log-opts": {"max-size": "10m"},
      "insecure-registries": ["127.0.0.1:5000"], "registry-mirrors": ["https://mirror.example"],
      "live-restore": true,                   "debug": false,
      "tls": false, "tlsverify": true, "tlscacert": "ca.pem", "tlscert": "cert.pem",
      "tlskey": "key.pem",                    "group": "docker",
      "containerd": "/run/skiff/containerd.sock", "cgroup-parent": "/skiff",
      "bridge": "", "bip": "172.30.0.1/16",   "mtu": 1500,
      "dns": ["192.0.2.53"], "dns-search": ["example.org"], "dns-opts": ["ndots:2"],
      "default-address-pools": [{"base": "10.240.0.0/16", "size": 24}]
    }

``containerd`` names the socket of a containerd to use (as dockerd's ``--containerd``); without
it skiffd uses, or starts, skiff-containerd on ``<exec-root>/containerd.sock``.

As in dockerd, a directive given both as a flag and in the file is an error (no silent
precedence), and keys that match no directive are refused. ``merge`` applies the file and then
the flags to the defaults; ``validate`` checks the result (runtimes, hosts, TLS) before anything
is created.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CONFIG_FILE = "/etc/skiff/daemon.json"
DEFAULT_DATA_ROOT = "/var/lib/skiff"
DEFAULT_EXEC_ROOT = "/run/skiff"
DEFAULT_CGROUP_PARENT = "/skiff"
DEFAULT_SOCKET = "/run/skiff/skiff.sock"
DEFAULT_GROUP = "docker"
DEFAULT_RUNTIME = "skiff-runc"

# Runtimes known without configuration: skiff's own, and runc/crun when installed. A name here
# cannot be redefined in ``runtimes`` (dockerd reserves "runc" the same way).
BUILTIN_RUNTIMES = ("skiff-runc", "runc", "crun")

LOG_DRIVERS = ("json-file", "none")


class ConfigError(Exception):
    """The configuration is invalid; the message names the directive and why."""


@dataclass
class RuntimeConfig:
    name: str
    path: str
    args: list[str] = field(default_factory=list)

    def to_info(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path}
        if self.args:
            d["runtimeArgs"] = list(self.args)
        return d


@dataclass
class DaemonConfig:
    data_root: str = DEFAULT_DATA_ROOT
    exec_root: str = DEFAULT_EXEC_ROOT
    pidfile: str = ""                      # "" means <exec-root>/skiffd.pid
    hosts: list[str] = field(default_factory=list)   # [] means unix://DEFAULT_SOCKET
    default_runtime: str = DEFAULT_RUNTIME
    runtimes: dict[str, RuntimeConfig] = field(default_factory=dict)   # configured ones only
    log_driver: str = "json-file"
    log_opts: dict[str, str] = field(default_factory=dict)
    insecure_registries: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)
    live_restore: bool = False
    debug: bool = False
    tls: bool = False
    tlsverify: bool = False
    tlscacert: str = ""
    tlscert: str = ""
    tlskey: str = ""
    group: str = DEFAULT_GROUP
    group_explicit: bool = False           # set by the file or a flag (then it must exist)
    containerd: str = ""                   # "" means skiff-containerd on <exec-root>/containerd.sock
    cgroup_parent: str = DEFAULT_CGROUP_PARENT   # containers' cgroups are <parent>/<id>
    # default bridge network (issue 8): bridge name ("" = skiff0, or the next free skiffN when
    # another skiffd holds skiff0), its address/prefix ("" = a free /16 from 172.30.0.0/16 on),
    # and the MTU of the containers' interfaces
    bridge: str = ""
    bip: str = ""
    mtu: int = 1500
    # containers' DNS when they give none (--dns, --dns-search, --dns-option), and the subnets
    # of the default bridge (without bip) and of user networks (without --subnet)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_opts: list[str] = field(default_factory=list)
    default_address_pools: list[dict[str, Any]] = field(default_factory=list)

    def effective_pidfile(self) -> str:
        return self.pidfile or os.path.join(self.exec_root, "skiffd.pid")

    def containerd_address(self) -> str:
        """The containerd socket path skiffd talks to."""
        if self.containerd:
            return self.containerd[len("unix://"):] if self.containerd.startswith("unix://") else self.containerd
        return os.path.join(self.exec_root, "containerd.sock")

    def effective_hosts(self) -> list[str]:
        return list(self.hosts) or ["unix://" + DEFAULT_SOCKET]

    def all_runtimes(self) -> dict[str, RuntimeConfig]:
        """Built-in runtimes whose binary is installed, then the configured ones."""
        out: dict[str, RuntimeConfig] = {}
        for name in BUILTIN_RUNTIMES:
            path = _find_binary(name)
            if path:
                out[name] = RuntimeConfig(name, path)
        out.update(self.runtimes)
        return out

    def validate(self) -> DaemonConfig:
        for key, value in (("data-root", self.data_root), ("exec-root", self.exec_root)):
            if not os.path.isabs(value):
                raise ConfigError(f"{key}: {value!r} is not an absolute path")
        if self.containerd and not os.path.isabs(self.containerd_address()):
            raise ConfigError(f"containerd: {self.containerd!r}: expected an absolute socket path "
                              "(or unix:///path)")
        parts = self.cgroup_parent.split("/")
        if not self.cgroup_parent.startswith("/") or any(p in (".", "..") for p in parts) or \
                "" in parts[1:]:
            raise ConfigError(f"cgroup-parent: {self.cgroup_parent!r}: expected an absolute cgroup "
                              "path like /skiff (no empty, '.' or '..' parts)")
        if self.pidfile and not os.path.isabs(self.pidfile):
            raise ConfigError(f"pidfile: {self.pidfile!r} is not an absolute path")
        for name, rt in self.runtimes.items():
            if name in BUILTIN_RUNTIMES:
                raise ConfigError(f"runtimes.{name}: runtime name {name!r} is reserved")
            if not rt.path:
                raise ConfigError(f"runtimes.{name}.path: missing (the runtime's binary)")
        runtimes = self.all_runtimes()
        if self.default_runtime not in runtimes:
            raise ConfigError(f"default-runtime: no runtime named {self.default_runtime!r} "
                              f"(known: {', '.join(sorted(runtimes)) or 'none'})")
        if self.log_driver not in LOG_DRIVERS:
            raise ConfigError(f"log-driver: {self.log_driver!r} is not supported "
                              f"(supported: {', '.join(LOG_DRIVERS)})")
        from skiff.daemon.logger import LogOptError, validate_log_opts
        try:
            validate_log_opts(self.log_driver, self.log_opts)
        except LogOptError as e:
            raise ConfigError(f"log-opts: {e}") from None
        for host in self.effective_hosts():
            parse_host(host)
        if self.tlsverify:
            for key, value in (("tlscacert", self.tlscacert), ("tlscert", self.tlscert),
                               ("tlskey", self.tlskey)):
                if not value:
                    raise ConfigError(f"{key}: required with tlsverify (mutual TLS)")
                if not os.path.isfile(value):
                    raise ConfigError(f"{key}: {value}: no such file")
        tcp = [h for h in self.effective_hosts() if parse_host(h)[0] == "tcp"]
        if tcp and not self.tlsverify:
            raise ConfigError(
                f"hosts: refusing to listen on {tcp[0]}: TCP is served only with mutual TLS "
                "(tlsverify with tlscacert, tlscert and tlskey); anyone who can reach an "
                "unauthenticated Engine API port is root on this host")
        return self


def _find_binary(name: str) -> str:
    if name == "skiff-runc":
        import sys
        beside = os.path.join(os.path.dirname(sys.executable), "skiff-runc")
        if os.access(beside, os.X_OK):
            return beside
    return shutil.which(name) or ""


def parse_host(host: str) -> tuple[str, str]:
    """``unix:///path`` -> ("unix", "/path"); ``tcp://addr:port`` -> ("tcp", "addr:port")."""
    if host.startswith("unix://"):
        path = host[len("unix://"):]
        if not path.startswith("/"):
            raise ConfigError(f"hosts: {host!r}: the socket path must be absolute")
        return "unix", path
    if host.startswith("tcp://"):
        addr = host[len("tcp://"):].rstrip("/")
        hostpart, sep, port = addr.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"hosts: {host!r}: expected tcp://ADDRESS:PORT")
        return "tcp", addr
    raise ConfigError(f"hosts: {host!r}: unsupported address (use unix:///path or tcp://addr:port)")


# ------------------------------------------------------------------ keys, file and flags

def _str(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{key}: expected a string, got {json.dumps(v)}")
    return v


def _int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{key}: expected an integer, got {json.dumps(v)}")
    if key == "mtu" and not 68 <= v <= 65535:
        raise ConfigError(f"mtu: {v} is out of range (68..65535)")
    return v


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: expected true or false, got {json.dumps(v)}")
    return v


def _strlist(key: str, v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{key}: expected a list of strings, got {json.dumps(v)}")
    return list(v)


def _dns_servers(key: str, v: Any) -> list[str]:
    import ipaddress
    out = _strlist(key, v)
    for ip in out:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ConfigError(f"{key}: {ip!r} is not an IP address") from None
    return out


def _address_pools(key: str, v: Any) -> list[dict[str, Any]]:
    from skiff.daemon.network.ipam import parse_address_pools
    if not isinstance(v, list):
        raise ConfigError(f"{key}: expected a list of {{\"base\": CIDR, \"size\": N}}")
    try:
        parse_address_pools(v)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return list(v)


def _strmap(key: str, v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise ConfigError(f"{key}: expected an object of strings, got {json.dumps(v)}")
    return dict(v)


def _runtimes(key: str, v: Any) -> dict[str, RuntimeConfig]:
    if not isinstance(v, dict):
        raise ConfigError(f"{key}: expected an object of runtimes, got {json.dumps(v)}")
    out = {}
    for name, spec in v.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{key}.{name}: expected an object with \"path\"")
        unknown = sorted(set(spec) - {"path", "runtimeArgs"})
        if unknown:
            raise ConfigError(f"{key}.{name}.{unknown[0]}: not supported (a runtime has \"path\" "
                              "and \"runtimeArgs\"; shim runtimes via runtimeType are not)")
        path = _str(f"{key}.{name}.path", spec.get("path", ""))
        args = _strlist(f"{key}.{name}.runtimeArgs", spec.get("runtimeArgs", []))
        out[name] = RuntimeConfig(name, path, args)
    return out


# JSON key -> (DaemonConfig attribute, converter)
KEYS: dict[str, tuple[str, Any]] = {
    "data-root": ("data_root", _str),
    "exec-root": ("exec_root", _str),
    "pidfile": ("pidfile", _str),
    "hosts": ("hosts", _strlist),
    "default-runtime": ("default_runtime", _str),
    "runtimes": ("runtimes", _runtimes),
    "log-driver": ("log_driver", _str),
    "log-opts": ("log_opts", _strmap),
    "insecure-registries": ("insecure_registries", _strlist),
    "registry-mirrors": ("registry_mirrors", _strlist),
    "live-restore": ("live_restore", _bool),
    "debug": ("debug", _bool),
    "tls": ("tls", _bool),
    "tlsverify": ("tlsverify", _bool),
    "tlscacert": ("tlscacert", _str),
    "tlscert": ("tlscert", _str),
    "tlskey": ("tlskey", _str),
    "group": ("group", _str),
    "containerd": ("containerd", _str),
    "cgroup-parent": ("cgroup_parent", _str),
    "bridge": ("bridge", _str),
    "bip": ("bip", _str),
    "mtu": ("mtu", _int),
    "dns": ("dns", _dns_servers),
    "dns-search": ("dns_search", _strlist),
    "dns-opts": ("dns_opts", _strlist),
    "default-address-pools": ("default_address_pools", _address_pools),
}


def read_file(path: str) -> dict[str, Any]:
    """The directives of a daemon.json, checked for unknown keys and types."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path}: invalid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a JSON object")
    unknown = sorted(k for k in data if k not in KEYS)
    if unknown:
        raise ConfigError(f"config file {path}: the following directives don't match any "
                          f"configuration option: {', '.join(unknown)}")
    for key, value in data.items():
        KEYS[key][1](key, value)
    return data


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return json.dumps({k: (x.to_info() if isinstance(x, RuntimeConfig) else x) for k, x in v.items()})
    return str(v)


def merge(file_values: dict[str, Any], flag_values: dict[str, Any]) -> DaemonConfig:
    """Defaults, then the file, then the flags (keys as in daemon.json). A key in both is an
    error, with dockerd's wording."""
    both = sorted(set(file_values) & set(flag_values))
    if both:
        parts = [f"{k}: (from flag: {_fmt(flag_values[k])}, from file: {_fmt(file_values[k])})"
                 for k in both]
        raise ConfigError("the following directives are specified both as a flag and in the "
                          "configuration file: " + ", ".join(parts))
    cfg = DaemonConfig()
    for source in (file_values, flag_values):
        for key, value in source.items():
            if key not in KEYS:
                raise ConfigError(f"{key}: not a configuration option")
            attr, conv = KEYS[key]
            setattr(cfg, attr, conv(key, value))
            if key == "group":
                cfg.group_explicit = True
    for key in ("data-root", "exec-root", "pidfile", "tlscacert", "tlscert", "tlskey"):
        attr = KEYS[key][0]
        value = getattr(cfg, attr)
        if value and key.startswith("tls"):
            setattr(cfg, attr, os.path.abspath(value))
    return cfg
