"""skiff-containerd's configuration: a TOML file in containerd's style.

::

    version = 2                                  # containerd's config version (1 or 2 accepted)
    root = "/var/lib/skiff/containerd"           # persistent data: metadata, content, snapshots
    state = "/run/skiff/containerd"              # runtime state: pid file, shim sockets
    snapshotter = "overlayfs"                    # used when a request names no snapshotter
    default_runtime = "skiff-runc"               # what io.containerd.runc.v2 (ctr's default) means

    [grpc]
    address = "/run/skiff/containerd.sock"
    uid = 0                                      # owner and group of the socket (mode 0660)
    gid = 0
    max_recv_message_size = 16777216
    max_send_message_size = 16777216
    max_workers = 128                            # request threads (streams hold one each)

    [debug]
    level = "info"                               # debug, info, warning, error

    [runtimes.crun]                              # a runtime: a name, a binary with runc's CLI,
    binary = "/usr/bin/crun"                     # and options
    [runtimes.crun.options]
    root = "/run/skiff/crun"                     # the runtime's --root
    args = []                                    # global flags before the verb
    systemd_cgroup = false
    hide_cgroup2_unified = true                  # see Runtime.argv

Built-in runtimes (a file may change or add to them): ``skiff-runc`` (the default, this
package's runtime), ``runc`` and ``crun``. crun 1.8 refuses a hybrid cgroup host whose cgroup2
"unified" hierarchy has a controller (hugetlb here), so it runs with ``hide_cgroup2_unified``:
in a private mount namespace where ``/sys/fs/cgroup/unified`` is unmounted, it sees a pure
cgroup v1 host.

Unknown keys are errors (a typo must not be silently ignored), named by their TOML path.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

DEFAULT_ROOT = "/var/lib/skiff/containerd"
DEFAULT_STATE = "/run/skiff/containerd"
DEFAULT_ADDRESS = "/run/skiff/containerd.sock"
DEFAULT_CONFIG = "/etc/skiff/containerd.toml"
DEFAULT_MAX_MESSAGE = 16 << 20  # containerd's defaults.DefaultMaxRecvMsgSize / SendMsgSize

# Runtime names a containerd client may send that mean "the default runtime": the shim type
# names of containerd 1.6 (ctr's --runtime default is io.containerd.runc.v2).
RUNTIME_ALIASES = ("io.containerd.runc.v2", "io.containerd.runc.v1", "io.containerd.runtime.v1.linux")

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """The configuration is invalid: says which key and why."""


@dataclass
class Runtime:
    """An OCI runtime with runc's command line."""

    name: str
    binary: str
    root: str = ""
    args: list[str] = field(default_factory=list)
    systemd_cgroup: bool = False
    hide_cgroup2_unified: bool = False

    def resolved_binary(self) -> str:
        """The binary as an absolute path (looked up in PATH, then beside this Python's
        executable for skiff's own), or the name as given when not found."""
        if os.path.isabs(self.binary):
            return self.binary
        found = shutil.which(self.binary)
        if found:
            return found
        beside = os.path.join(os.path.dirname(sys.executable), self.binary)
        return beside if os.path.exists(beside) else self.binary

    def argv(self, *args: str) -> list[str]:
        """The command line that runs the runtime with ``args`` (global flags included).

        With ``hide_cgroup2_unified`` the runtime runs in a private mount namespace where
        ``/sys/fs/cgroup/unified`` is lazily unmounted when it is a mount point.
        """
        cmd = [self.resolved_binary()]
        if self.root:
            cmd += ["--root", self.root]
        if self.systemd_cgroup:
            cmd.append("--systemd-cgroup")
        cmd += self.args
        cmd += args
        if not self.hide_cgroup2_unified:
            return cmd
        script = ('if mountpoint -q /sys/fs/cgroup/unified; then umount -l /sys/fs/cgroup/unified || exit 1; fi; '
                  'exec "$0" "$@"')
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, *cmd]


def builtin_runtimes() -> dict[str, Runtime]:
    return {
        "skiff-runc": Runtime("skiff-runc", "skiff-runc"),
        "runc": Runtime("runc", "runc"),
        "crun": Runtime("crun", "crun", hide_cgroup2_unified=True),
    }


@dataclass
class Config:
    root: str = DEFAULT_ROOT
    state: str = DEFAULT_STATE
    address: str = DEFAULT_ADDRESS
    uid: int = 0
    gid: int = 0
    max_recv_message_size: int = DEFAULT_MAX_MESSAGE
    max_send_message_size: int = DEFAULT_MAX_MESSAGE
    max_workers: int = 128
    snapshotter: str = "overlayfs"
    default_runtime: str = "skiff-runc"
    log_level: str = "info"
    runtimes: dict[str, Runtime] = field(default_factory=builtin_runtimes)
    path: str = ""  # the file it was read from ("" for the defaults)

    @property
    def pid_file(self) -> str:
        return os.path.join(self.state, "containerd.pid")

    def runtime(self, name: str) -> Runtime:
        """The runtime a container names (an alias of containerd's shim types means the default)."""
        if name in self.runtimes:
            return self.runtimes[name]
        if name in RUNTIME_ALIASES or not name:
            return self.runtimes[self.default_runtime]
        raise ConfigError(f"runtime {name!r}: not configured (known: {', '.join(sorted(self.runtimes))}, "
                          f"or {', '.join(RUNTIME_ALIASES)} for the default {self.default_runtime})")

    def validate(self) -> Config:
        from skiff.images.snapshots import SNAPSHOTTERS
        for key in ("root", "state"):
            value = getattr(self, key)
            if not os.path.isabs(value):
                raise ConfigError(f"{key}: {value!r} is not an absolute path")
        if not self.address:
            raise ConfigError("grpc.address: must not be empty")
        if len(os.fsencode(self.address)) > 107:
            raise ConfigError(f"grpc.address: {self.address!r} is longer than a unix socket path may be "
                              "(107 bytes)")
        if self.snapshotter not in SNAPSHOTTERS:
            raise ConfigError(f"snapshotter: {self.snapshotter!r} is not one of {', '.join(SNAPSHOTTERS)}")
        if self.default_runtime not in self.runtimes:
            raise ConfigError(f"default_runtime: {self.default_runtime!r} is not in the runtimes table "
                              f"({', '.join(sorted(self.runtimes))})")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"debug.level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        for key in ("max_recv_message_size", "max_send_message_size", "max_workers"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"grpc.{key}: must be positive")
        return self


_TOP = {"version", "root", "state", "snapshotter", "default_runtime", "grpc", "debug", "runtimes"}
_GRPC = {"address", "uid", "gid", "max_recv_message_size", "max_send_message_size", "max_workers"}
_DEBUG = {"level"}
_RUNTIME = {"binary", "options"}
_OPTIONS = {"root", "args", "systemd_cgroup", "hide_cgroup2_unified"}


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            path = f"{where}.{key}" if where else key
            raise ConfigError(f"{path}: unknown key (known: {', '.join(sorted(allowed))})")


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    path = f"{where}.{key}" if where else key
    if isinstance(value, bool) and kind is int:
        raise ConfigError(f"{path}: expected an integer, got a boolean")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{path}: expected {names}, got {type(value).__name__} {value!r}")
    return value


def _table(table: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    return _get(table, key, dict, where, {})


def parse(data: dict[str, Any], path: str = "") -> Config:
    """A Config from a parsed TOML document (defaults for what it leaves out)."""
    _check_keys(data, _TOP, "")
    version = _get(data, "version", int, "", 2)
    if version not in (1, 2):
        raise ConfigError(f"version: {version} is not supported (1 or 2)")
    cfg = Config(path=path)
    cfg.root = _get(data, "root", str, "", cfg.root)
    cfg.state = _get(data, "state", str, "", cfg.state)
    cfg.snapshotter = _get(data, "snapshotter", str, "", cfg.snapshotter)
    cfg.default_runtime = _get(data, "default_runtime", str, "", cfg.default_runtime)
    grpc = _table(data, "grpc", "")
    _check_keys(grpc, _GRPC, "grpc")
    cfg.address = _get(grpc, "address", str, "grpc", cfg.address)
    for key in ("uid", "gid", "max_recv_message_size", "max_send_message_size", "max_workers"):
        setattr(cfg, key, _get(grpc, key, int, "grpc", getattr(cfg, key)))
    debug = _table(data, "debug", "")
    _check_keys(debug, _DEBUG, "debug")
    cfg.log_level = _get(debug, "level", str, "debug", cfg.log_level)
    for name, rt in _table(data, "runtimes", "").items():
        where = f"runtimes.{name}"
        if not isinstance(rt, dict):
            raise ConfigError(f"{where}: expected a table")
        _check_keys(rt, _RUNTIME, where)
        base = cfg.runtimes.get(name)
        binary = _get(rt, "binary", str, where, base.binary if base else None)
        if not binary:
            raise ConfigError(f"{where}.binary: required for a runtime that is not built in")
        opts = _table(rt, "options", where)
        ow = f"{where}.options"
        _check_keys(opts, _OPTIONS, ow)
        args = _get(opts, "args", list, ow, list(base.args) if base else [])
        for i, a in enumerate(args):
            if not isinstance(a, str):
                raise ConfigError(f"{ow}.args[{i}]: expected a string, got {type(a).__name__}")
        cfg.runtimes[name] = Runtime(
            name=name, binary=binary,
            root=_get(opts, "root", str, ow, base.root if base else ""),
            args=list(args),
            systemd_cgroup=_get(opts, "systemd_cgroup", bool, ow, base.systemd_cgroup if base else False),
            hide_cgroup2_unified=_get(opts, "hide_cgroup2_unified", bool, ow,
                                      base.hide_cgroup2_unified if base else False))
    return cfg.validate()


def load(path: str | None) -> Config:
    """Read the config file at ``path``; None: the defaults (and ``DEFAULT_CONFIG`` if it exists)."""
    import tomllib
    if path is None:
        if not os.path.exists(DEFAULT_CONFIG):
            return Config().validate()
        path = DEFAULT_CONFIG
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: not valid TOML: {e}") from e
    try:
        return parse(data, path)
    except ConfigError as e:
        raise ConfigError(f"config file {path}: {e}") from e


def dump(cfg: Config) -> str:
    """The configuration as TOML (what ``skiff-containerd config default`` prints)."""
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = [
        "version = 2",
        f"root = {q(cfg.root)}",
        f"state = {q(cfg.state)}",
        f"snapshotter = {q(cfg.snapshotter)}",
        f"default_runtime = {q(cfg.default_runtime)}",
        "",
        "[grpc]",
        f"address = {q(cfg.address)}",
        f"uid = {cfg.uid}",
        f"gid = {cfg.gid}",
        f"max_recv_message_size = {cfg.max_recv_message_size}",
        f"max_send_message_size = {cfg.max_send_message_size}",
        f"max_workers = {cfg.max_workers}",
        "",
        "[debug]",
        f"level = {q(cfg.log_level)}",
    ]
    for name in sorted(cfg.runtimes):
        rt = cfg.runtimes[name]
        lines += ["", f"[runtimes.{q(name)}]", f"binary = {q(rt.binary)}", f"[runtimes.{q(name)}.options]",
                  f"root = {q(rt.root)}", "args = [" + ", ".join(q(a) for a in rt.args) + "]",
                  f"systemd_cgroup = {'true' if rt.systemd_cgroup else 'false'}",
                  f"hide_cgroup2_unified = {'true' if rt.hide_cgroup2_unified else 'false'}"]
    return "\n".join(lines) + "\n"
