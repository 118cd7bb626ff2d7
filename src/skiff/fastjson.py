"""JSON for the per-container processes (runtime, shim) without importing ``json``.

``import json`` costs ~10 ms in a fresh interpreter because ``json.decoder`` and
``json.encoder`` import ``re`` (and with it ``enum``), only for whitespace skipping and string
escaping that the C accelerator ``_json`` does anyway. This module drives ``_json``'s scanner and
encoder directly: same output as ``json.dumps(obj)`` (compact separators ``, `` and ``: ``), same
parsing as ``json.loads``. Errors raise ``ValueError`` (``json.JSONDecodeError`` when the C scanner
reports them, which imports ``json.decoder`` only then).
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WS = " \t\n\r"


class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


_scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]  # any object with these attributes


def loads(s: str | bytes) -> Any:
    if isinstance(s, (bytes, bytearray)):
        s = s.decode()
    start = len(s) - len(s.lstrip(_WS))
    try:
        obj, end = _scan(s, start)
    except StopIteration as e:
        raise ValueError(f"Expecting value: char {e.value}") from None
    except SystemError:
        # Python 3.11's scanner raises json.decoder.JSONDecodeError for a syntax error but only
        # looks it up in sys.modules (no import): without it, it fails with a bare SystemError.
        # Import it now and scan again to get the real error.
        import json.decoder  # noqa: F401

        obj, end = _scan(s, start)
    if s[end:].strip(_WS):
        raise ValueError(f"Extra data: char {end}")
    return obj


def _default(o: object) -> object:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_encode = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ": ", ", ",
                             False, False, True)


def dumps(obj: object, indent: int | None = None) -> str:
    if indent is None:
        return "".join(_encode(obj, 0))
    return _pretty(obj, indent, 0)


def _pretty(obj: object, indent: int, level: int) -> str:
    pad = "\n" + " " * (indent * (level + 1))
    end = "\n" + " " * (indent * level)
    if isinstance(obj, dict) and obj:
        items = [_json.encode_basestring_ascii(str(k)) + ": " + _pretty(v, indent, level + 1)
                 for k, v in obj.items()]
        return "{" + pad + ("," + pad).join(items) + end + "}"
    if isinstance(obj, (list, tuple)) and obj:
        return "[" + pad + ("," + pad).join(_pretty(v, indent, level + 1) for v in obj) + end + "]"
    return "".join(_encode(obj, 0))


def load_file(path: str) -> Any:
    with open(path, "rb") as f:
        return loads(f.read())
