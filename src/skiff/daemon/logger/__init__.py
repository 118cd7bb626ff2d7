"""Container log drivers: ``json-file`` (Docker's on-disk format, with rotation) and ``none``.

A driver is chosen per container (``HostConfig.LogConfig``; the daemon's ``log-driver`` and
``log-opts`` when the container names none or the same driver). ``new_logger`` gives the
writer that :class:`skiff.daemon.streams.ContainerIO` feeds, ``read_logs`` reads a json-file log
back (``GET /containers/{id}/logs`` and ``attach?logs=1``).

Options (dockerd's names and syntax):

- json-file: ``max-size`` (bytes, or a number with a k/m/g unit, binary multiples; default
  unlimited), ``max-file`` (how many files to keep, >= 1, default 1; only with rotation),
  ``compress`` (only ``false``: compressing rotated files is not supported).
- none: no options.

Anything else is refused with an error naming the option (dockerd ignores nothing either:
``unknown log opt 'x' for json-file log driver``).
"""

from __future__ import annotations

from typing import Protocol

from skiff.daemon.logger.jsonfile import (
    JSONFileWriter,
    LogEntry,
    format_time,
    parse_size,
    read_logs,
)

__all__ = ["DRIVERS", "READ_NOT_SUPPORTED", "JSONFileWriter", "LogEntry", "LogOptError",
           "LogWriter", "effective_log_config", "format_time", "new_logger", "read_logs",
           "validate_log_opts"]

DRIVERS = ("json-file", "none")

# Drivers of dockerd that skiffd knows by name but does not implement.
_DOCKER_DRIVERS = ("local", "syslog", "journald", "gelf", "fluentd", "awslogs", "splunk",
                   "etwlogs", "gcplogs", "logentries")

# The logs endpoint's answer when the container's driver keeps nothing to read (dockerd's
# ErrReadLogsNotSupported, a 501).
READ_NOT_SUPPORTED = "configured logging driver does not support reading"

_JSONFILE_OPTS = ("max-size", "max-file", "compress")
# dockerd's json-file options that skiffd does not implement (log attributes).
_JSONFILE_UNSUPPORTED = ("labels", "labels-regex", "env", "env-regex", "tag")


class LogOptError(ValueError):
    """A log driver or one of its options is invalid or unsupported (the message says which
    and why). The API answers it as 400; daemon.json loading as a configuration error."""


class LogWriter(Protocol):
    def write(self, stream: str, line: bytes, time_ns: int) -> None:
        """Append one log message: a line with its newline, or a partial line without one."""

    def flush(self) -> None:
        """Write out what ``write`` buffered (called after each chunk of output)."""

    def close(self) -> None: ...


def validate_log_opts(driver: str, opts: dict[str, str]) -> None:
    """Check a driver name and its options (daemon.json ``log-driver``/``log-opts`` and a
    container's ``LogConfig``); raise :class:`LogOptError`."""
    if driver not in DRIVERS:
        if driver in _DOCKER_DRIVERS:
            raise LogOptError(f"logging driver {driver!r} is not supported by skiffd "
                              f"(supported: {', '.join(DRIVERS)})")
        raise LogOptError(f"failed to get logging factory: logger: no log driver named "
                          f"{driver!r} is registered (supported: {', '.join(DRIVERS)})")
    if driver == "none":
        for key in sorted(opts):
            raise LogOptError(f"log-opt {key}: the none log driver takes no options")
        return
    for key in sorted(opts):
        if key in _JSONFILE_UNSUPPORTED:
            raise LogOptError(f"log-opt {key}: log attributes ({key}) are not supported by "
                              "skiffd's json-file log driver")
        if key not in _JSONFILE_OPTS:
            raise LogOptError(f"unknown log opt '{key}' for json-file log driver")
    _jsonfile_limits(opts)


def _jsonfile_limits(opts: dict[str, str]) -> tuple[int, int]:
    max_size = -1
    if "max-size" in opts:
        try:
            max_size = parse_size(opts["max-size"])
        except ValueError as e:
            raise LogOptError(f"log-opt max-size: {e}") from None
        if max_size <= 0:
            raise LogOptError(f"log-opt max-size: {opts['max-size']!r}: must be a positive "
                              "size (bytes, or a number with a k, m or g unit)")
    max_file = 1
    if "max-file" in opts:
        raw = opts["max-file"].strip()
        try:
            max_file = int(raw)
        except ValueError:
            raise LogOptError(f"log-opt max-file: {opts['max-file']!r} is not a number") from None
        if max_file < 1:
            raise LogOptError(f"log-opt max-file: {opts['max-file']!r}: max-file cannot be "
                              "less than 1")
    if "compress" in opts:
        value = opts["compress"].strip().lower()
        if value in ("true", "1", "t"):
            raise LogOptError("log-opt compress: compressing rotated log files is not "
                              "supported by skiffd's json-file log driver (use compress=false "
                              "or leave it out)")
        if value not in ("false", "0", "f"):
            raise LogOptError(f"log-opt compress: {opts['compress']!r} is not a boolean")
    return max_size, max_file


def effective_log_config(log_config: object, default_driver: str,
                         default_opts: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A container's driver and options from ``HostConfig.LogConfig`` (``{"Type": ..., "Config":
    {...}}``, or null) and the daemon's ``log-driver``/``log-opts``, as dockerd merges them: no
    Type means the daemon's driver; the daemon's options fill in what the container leaves out
    only when the container uses the daemon's driver. Validated (LogOptError)."""
    if log_config is None:
        log_config = {}
    if not isinstance(log_config, dict):
        raise LogOptError("HostConfig.LogConfig: expected an object with Type and Config")
    driver = log_config.get("Type") or default_driver
    if not isinstance(driver, str):
        raise LogOptError("HostConfig.LogConfig.Type: expected a string")
    raw = log_config.get("Config") or {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise LogOptError("HostConfig.LogConfig.Config: expected an object of strings")
    opts = dict(raw)
    if driver == default_driver:
        for k, v in default_opts.items():
            opts.setdefault(k, v)
    validate_log_opts(driver, opts)
    return driver, opts


def new_logger(driver: str, opts: dict[str, str], path: str) -> LogWriter | None:
    """The writer for a container's log at ``path`` (``<id>-json.log``); None for ``none``.
    The options are validated again (LogOptError)."""
    validate_log_opts(driver, opts)
    if driver == "none":
        return None
    max_size, max_file = _jsonfile_limits(opts)
    return JSONFileWriter(path, max_size=max_size, max_file=max_file)
