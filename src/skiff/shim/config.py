"""What a shim is started with: from its command line or from a zygote ``spawn`` request."""

from __future__ import annotations

import os

FIELDS = ("id", "namespace", "bundle", "state_dir", "socket", "address")
USAGE = """usage: skiff-shim --id ID --bundle DIR --socket PATH [--namespace NS] [--state-dir DIR]
                  [--address MANAGER_SOCKET] [--foreground]
       skiff-shim zygote --socket PATH [--pid-file PATH] [--foreground]

One shim per container: it daemonizes (own session, re-parented away from its starter), becomes
the container's subreaper, writes shim.pid and address into its state directory (default: the
bundle) and serves its API on --socket until the container is deleted and it is told to shut
down. It prints {"pid": PID, "socket": PATH} once it is ready.

`zygote` starts a pre-imported parent that forks shims on request (see skiff.shim).
"""


class ConfigError(ValueError):
    pass


class ShimConfig:
    __slots__ = FIELDS

    def __init__(self, id: str = "", namespace: str = "default", bundle: str = "", state_dir: str = "",
                 socket: str = "", address: str = "") -> None:
        self.id = id
        self.namespace = namespace
        self.bundle = bundle
        self.state_dir = state_dir
        self.socket = socket
        self.address = address

    def validate(self) -> ShimConfig:
        if not self.id or "/" in self.id or self.id in (".", "..") or "\0" in self.id:
            raise ConfigError(f"--id {self.id!r}: a container id is required (no '/')")
        if not self.bundle:
            raise ConfigError("--bundle: required")
        if not self.state_dir:
            self.state_dir = self.bundle
        for name in ("bundle", "state_dir", "socket"):
            v = getattr(self, name)
            if not v or not os.path.isabs(v):
                raise ConfigError(f"--{name.replace('_', '-')} {v!r}: an absolute path is required")
        if not os.path.isdir(self.state_dir):
            raise ConfigError(f"--state-dir {self.state_dir}: not a directory")
        if len(self.socket.encode()) > 107:
            raise ConfigError(f"--socket {self.socket}: longer than the 107 bytes a unix socket path can hold")
        return self

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> ShimConfig:
        cfg = cls()
        for k, v in d.items():
            if k not in FIELDS:
                raise ConfigError(f"unknown shim option {k!r}")
            if not isinstance(v, str):
                raise ConfigError(f"shim option {k!r}: expected a string")
            setattr(cfg, k, v)
        return cfg.validate()


def parse_flags(argv: list[str], allowed: tuple[str, ...], switches: tuple[str, ...] = ()) -> dict:
    """``--name value``, ``--name=value`` and bare ``--switch``; ConfigError on anything else."""
    out: dict[str, object] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--"):
            raise ConfigError(f"unexpected argument {a!r}")
        name, eq, val = a[2:].partition("=")
        key = name.replace("-", "_")
        if key in switches and not eq:
            out[key] = True
            i += 1
            continue
        if key not in allowed:
            raise ConfigError(f"flag provided but not defined: --{name}")
        if not eq:
            if i + 1 >= len(argv):
                raise ConfigError(f"flag needs an argument: --{name}")
            val = argv[i + 1]
            i += 1
        out[key] = val
        i += 1
    return out
