"""Parsing of query parameters as moby's httputils and filters packages do."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

from skiff.daemon.api.errors import InvalidParameter


def bool_value(value: str | None) -> bool:
    """False iff the value (trimmed, lower-cased) is "", "0", "no", "false" or "none"."""
    if value is None:
        return False
    return value.strip().lower() not in ("", "0", "no", "false", "none")


def parse_filters(raw: str | None, accepted: tuple[str, ...]) -> dict[str, list[str]]:
    """``filters=`` as a JSON map of sets ({"k":{"v":true}}) or of lists ({"k":["v"]})."""
    if raw is None or raw == "":
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InvalidParameter(f"invalid filter: filters {raw!r}: {e}") from None
    if not isinstance(data, dict):
        raise InvalidParameter(f"invalid filter: filters {raw!r}: expected a JSON object")
    out: dict[str, list[str]] = {}
    for key, values in data.items():
        if key not in accepted:
            raise InvalidParameter(f"invalid filter '{key}'")
        if isinstance(values, dict):
            out[key] = [str(v) for v, on in values.items() if on]
        elif isinstance(values, list):
            out[key] = [str(v) for v in values]
        else:
            raise InvalidParameter(f"invalid filter '{key}': expected a set or a list of values")
    return out


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}


def _go_duration_ns(value: str) -> int | None:
    pos, total = 0, 0.0
    if not value:
        return None
    while pos < len(value):
        m = _DURATION.match(value, pos)
        if not m:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return int(total)


def parse_timestamp(name: str, value: str, now_ns: int | None = None) -> int:
    """A ``since``/``until`` value in nanoseconds since the epoch: unix seconds with an
    optional fraction (what the CLI sends), a Go duration before now ("10m"), or an RFC 3339
    date/time."""
    v = value.strip()
    now = time.time_ns() if now_ns is None else now_ns
    m = re.fullmatch(r"(-?\d+)(?:\.(\d{1,9}))?", v)
    if m:
        frac = (m.group(2) or "").ljust(9, "0")
        return int(m.group(1)) * 1_000_000_000 + int(frac or 0)
    d = _go_duration_ns(v)
    if d is not None:
        return now - d
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameter(f"{name}: cannot parse {value!r} as a timestamp (unix seconds, "
                               "a duration such as 10m, or an RFC 3339 date)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000_000)
