"""Entry point of ``skiffd``: the Docker Engine API daemon.

    skiffd [--config-file FILE] [-H unix:///run/skiff/skiff.sock] [--data-root DIR] ...
    skiffd --validate          check the configuration and exit

Flags are dockerd's; every flag has a ``daemon.json`` key of the same name (see
``skiff.daemon.config``). A directive given both ways is an error, as in dockerd.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from skiff.daemon.config import DEFAULT_CONFIG_FILE, ConfigError, DaemonConfig, merge, read_file


def _bool_arg(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "t", "true"):
        return True
    if v in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {value!r}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiffd", description="skiff's Docker Engine API daemon",
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config-file", help=f"daemon.json to read (default {DEFAULT_CONFIG_FILE} if present)")
    p.add_argument("--validate", action="store_true", help="validate the configuration and exit")
    p.add_argument("--data-root", help="persistent state (default /var/lib/skiff)")
    p.add_argument("--exec-root", help="runtime state (default /run/skiff)")
    p.add_argument("-p", "--pidfile", help="pid file (default <exec-root>/skiffd.pid)")
    p.add_argument("-H", "--host", dest="hosts", action="append",
                   help="unix:///path or tcp://addr:port (repeatable; TCP needs --tlsverify)")
    p.add_argument("--default-runtime", help="runtime for containers that name none")
    p.add_argument("--add-runtime", dest="runtimes", action="append", metavar="NAME=PATH",
                   help="register an OCI runtime (repeatable)")
    p.add_argument("--log-driver", help="default container log driver (json-file, none)")
    p.add_argument("--log-opt", dest="log_opts", action="append", metavar="KEY=VALUE",
                   help="default log driver option (repeatable)")
    p.add_argument("--insecure-registry", dest="insecure_registries", action="append")
    p.add_argument("--registry-mirror", dest="registry_mirrors", action="append")
    p.add_argument("--live-restore", nargs="?", const=True, type=_bool_arg)
    p.add_argument("-D", "--debug", nargs="?", const=True, type=_bool_arg)
    p.add_argument("--tls", nargs="?", const=True, type=_bool_arg)
    p.add_argument("--tlsverify", nargs="?", const=True, type=_bool_arg)
    p.add_argument("--tlscacert")
    p.add_argument("--tlscert")
    p.add_argument("--tlskey")
    p.add_argument("--containerd", metavar="ADDRESS",
                   help="containerd socket to use (default: skiff-containerd on <exec-root>/containerd.sock, "
                        "started when not running)")
    p.add_argument("--cgroup-parent", help="parent cgroup of containers (default /skiff)")
    p.add_argument("-G", "--group", help="group of the Unix socket (default docker, else root)")
    return p


def _pairs(flag: str, items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ConfigError(f"--{flag} {item!r}: expected KEY=VALUE")
        out[k] = v
    return out


def flag_directives(ns: argparse.Namespace) -> dict[str, Any]:
    """The flags that were given, as daemon.json directives."""
    given = vars(ns)
    out: dict[str, Any] = {}
    for attr, value in given.items():
        if attr in ("config_file", "validate"):
            continue
        key = attr.replace("_", "-")
        if attr == "runtimes":
            value = {k: {"path": v} for k, v in _pairs("add-runtime", value).items()}
        elif attr == "log_opts":
            value = _pairs("log-opt", value)
        out[key] = value
    return out


def load_config(argv: list[str] | None) -> tuple[DaemonConfig, argparse.Namespace]:
    ns = _parser().parse_args(argv)
    path = getattr(ns, "config_file", None)
    if path is None and os.path.exists(DEFAULT_CONFIG_FILE):
        path = DEFAULT_CONFIG_FILE
    file_values = read_file(path) if path else {}
    cfg = merge(file_values, flag_directives(ns))
    return cfg.validate(), ns


class _Formatter(logging.Formatter):
    """One line per record: ``time level component message`` (docs/conventions.md)."""

    def format(self, record: logging.LogRecord) -> str:
        import time
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage()
        if record.exc_info:
            msg += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return f"{t}.{int(record.msecs):03d}Z {record.levelname.lower()} {record.name} {msg}"


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    for name in ("skiff", "aiohttp"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.propagate = False
    logging.getLogger("skiff").setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


MALLOC_ARENAS = 1


def setup_process() -> None:
    """Process-level memory settings, before any thread starts (docs/memory.md): one malloc
    arena. Each thread that allocates (grpc's event engine and timer threads, asyncio's executor
    threads) would otherwise get an arena of its own that keeps what the thread freed; skiffd
    runs Python code under one GIL and gains no speed from them."""
    from skiff import memtrim

    if not memtrim.limit_arenas(MALLOC_ARENAS):
        logging.getLogger("skiff.daemon").warning(
            "mallopt(M_ARENA_MAX, %d) failed: malloc keeps one arena per thread", MALLOC_ARENAS)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, ns = load_config(argv)
    except ConfigError as e:
        print(f"skiffd: {e}", file=sys.stderr)
        return 1
    if getattr(ns, "validate", False):
        print("configuration OK")
        return 0
    setup_logging(cfg.debug)
    setup_process()
    from skiff.daemon.server import Daemon, run_forever
    return run_forever(Daemon(cfg))



if __name__ == "__main__":
    sys.exit(main())
