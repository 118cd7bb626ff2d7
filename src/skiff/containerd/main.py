"""Entry point of ``skiff-containerd``: containerd 1.6's gRPC API over the image library.

    skiff-containerd [--config FILE] [--address SOCK] [--root DIR] [--state DIR]
                     [--log-level LEVEL] [--pid-file FILE] [--ready-fd FD]
    skiff-containerd config default      print the default configuration (TOML)
    skiff-containerd config dump         print the configuration in effect

It runs in the foreground (skiffd, a service manager or a test starts it) until SIGTERM or
SIGINT. ``--ready-fd`` names an inherited file descriptor on which it writes ``ready`` and
which it closes once the socket accepts requests.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time


class _Formatter(logging.Formatter):
    """One line per record: ``time level component message`` (docs/conventions.md)."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{t}.{int(record.msecs):03d}Z {record.levelname.lower()} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("skiff")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiff-containerd",
                                description="containerd 1.6's gRPC API (skiff's lifecycle manager)")
    p.add_argument("--config", "-c", help="config file (TOML; default /etc/skiff/containerd.toml if present)")
    p.add_argument("--address", "-a", help="unix socket to serve on (overrides grpc.address)")
    p.add_argument("--root", help="persistent data directory (overrides root)")
    p.add_argument("--state", help="runtime state directory (overrides state)")
    p.add_argument("--log-level", "-l", choices=["debug", "info", "warning", "error"],
                   help="log level (overrides debug.level)")
    p.add_argument("--pid-file", help="pid file (default <state>/containerd.pid)")
    p.add_argument("--ready-fd", type=int, help="write 'ready' on this inherited fd once serving, then close it")
    p.add_argument("command", nargs="*", help="`config default` or `config dump`")
    return p


def main(argv: list[str] | None = None) -> int:
    from skiff.containerd.config import Config, ConfigError, dump, load

    args = _parser().parse_args(argv)
    try:
        if args.command:
            if args.command == ["config", "default"]:
                sys.stdout.write(dump(Config().validate()))
                return 0
            if args.command != ["config", "dump"]:
                print(f"skiff-containerd: unknown command {' '.join(args.command)!r} "
                      "(known: config default, config dump)", file=sys.stderr)
                return 2
        cfg = load(args.config)
        if args.address:
            cfg.address = args.address
        if args.root:
            cfg.root = os.path.abspath(args.root)
        if args.state:
            cfg.state = os.path.abspath(args.state)
        if args.log_level:
            cfg.log_level = args.log_level
        cfg.validate()
    except ConfigError as e:
        print(f"skiff-containerd: {e}", file=sys.stderr)
        return 1
    if args.command == ["config", "dump"]:
        sys.stdout.write(dump(cfg))
        return 0
    return serve(cfg, pid_file=args.pid_file, ready_fd=args.ready_fd)


# Modules that grpcio imports and a synchronous gRPC server never uses (skiff.memtrim.defer_import):
# the C core imports asyncio (which imports ssl) and ``grpc`` imports ``grpc.aio`` (whose classes
# touch asyncio): ~3 MiB of skiff-containerd's memory.
UNUSED_MODULES = ("asyncio", "grpc.aio")


def setup_process(log: logging.Logger) -> None:
    """Process-level memory settings, before grpc is imported and before any thread starts:
    one malloc arena (every thread that allocates, gRPC's pollers and request threads, would get
    its own, each keeping freed memory: ~6 MiB after one image import, bench/containerd_rss.py)
    and the modules nobody uses here left unloaded."""
    from skiff import memtrim

    if not memtrim.limit_arenas(1):
        log.warning("mallopt(M_ARENA_MAX, 1) failed: malloc keeps one arena per thread")
    for name in UNUSED_MODULES:
        memtrim.defer_import(name)


def serve(cfg: object, *, pid_file: str | None = None, ready_fd: int | None = None) -> int:
    from skiff.containerd.config import Config

    assert isinstance(cfg, Config)
    setup_logging(cfg.log_level)
    log = logging.getLogger("skiff.containerd")
    setup_process(log)
    from skiff.containerd.protos import ProtoError
    from skiff.containerd.server import Server, ServerError
    from skiff.images.errors import ImageError

    server = Server(cfg, pid_file=pid_file)
    server.install_signal_handlers()
    try:
        server.start()
    except (ServerError, ProtoError, ImageError, OSError) as e:
        log.error("cannot start: %s", e)
        return 1
    if ready_fd is not None:
        try:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
        except OSError as e:
            log.error("--ready-fd %d: %s", ready_fd, e.strerror)
            server.stop()
            return 1
    from skiff.memtrim import Trimmer

    trimmer = Trimmer()  # the heap freed by start-up and by bursts goes back to the kernel
    trimmer.start()
    try:
        server.wait()
    finally:
        trimmer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
