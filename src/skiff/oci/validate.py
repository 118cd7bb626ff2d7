"""Validate OCI documents (config.json, the features document, state) against the spec's schemas.

The schemas are the runtime-spec's JSON Schema (draft-04) files in ``skiff/oci/schema/``. This is
a small draft-04 validator written for exactly the keywords those files use -- ``type``,
``properties``, ``required``, ``items``, ``enum``, ``pattern``, ``patternProperties``,
``additionalProperties``, ``minimum``/``maximum``, ``minItems``, ``anyOf``/``allOf`` and ``$ref``
(to ``#/definitions/...`` and to other files) -- plus the few neighbours that cost nothing
(``oneOf``, ``not``, ``maxItems``, ``uniqueItems``, ``minLength``/``maxLength``,
``exclusiveMinimum``/``exclusiveMaximum``). ``SUPPORTED_KEYWORDS`` lists them; a unit test
checks that the shipped schemas use nothing else.

Cost, since the runtime validates on every ``create`` (measured on the project machine:
import ~0.45 ms, first ``validate_config`` of the default config ~0.55 ms of which ~0.35 ms is
reading the four schema files, later calls ~0.1 ms): schema files are read only when a ``$ref``
first reaches them and kept for the life of the process; ``$ref`` targets are memoised; the
paths in error messages are built only when a check fails. A precompiled single-file schema
(merged JSON, or a Python module) would save ~0.2 ms per process and is not worth a cache that
can go stale. The patterns the schemas use are checked by hand-written code, which also gives
``$`` its JSON Schema (ECMA-262) meaning, end of input; a pattern the shipped schemas do not use
falls back to ``re``, imported at that moment. ``json`` is imported when the first schema file is
read (``json`` itself imports ``re``; the runtime has both loaded already to parse config.json).
Sections for platforms other than Linux (their schema files are not shipped) are not validated.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema")

SUPPORTED_KEYWORDS = frozenset({
    # checked
    "$ref", "type", "properties", "required", "items", "enum", "pattern", "patternProperties",
    "additionalProperties", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "anyOf", "allOf", "oneOf",
    "not",
    # annotations and containers, nothing to check
    "$schema", "id", "description", "title", "definitions", "default",
})

# Schema files that config-schema.json refers to but that describe other platforms; they are
# not shipped, and the sections that refer to them are accepted as they are.
_OTHER_PLATFORMS = frozenset({"config-solaris.json", "config-windows.json", "config-vm.json",
                              "config-zos.json", "config-freebsd.json"})


class SchemaError(ValueError):
    """A document that does not follow its schema.

    ``str()`` names the offending field: ``linux.namespaces[0].type: 'foo' is not one of [...]``.
    ``path`` holds the field's path as keys and indexes; ``reason`` the text after the colon.
    """

    def __init__(self, path: list, reason: str, root: str = "config") -> None:
        self.path = list(path)
        self.reason = reason
        super().__init__(f"{format_path(self.path, root)}: {reason}")


def format_path(path: list, root: str = "config") -> str:
    """``["linux", "namespaces", 0, "type"]`` -> ``linux.namespaces[0].type``.

    Keys that are not plain words (annotation and sysctl names) are quoted:
    ``linux.sysctl["net.ipv4.ip_forward"]``. The empty path is ``root``, and ``root`` also starts
    a path whose first step is an index or a quoted key (``value[2]``).
    """
    if not path:
        return root
    out: list[str] = []
    for p in path:
        if type(p) is int:
            out.append(f"{'' if out else root}[{p}]")
        elif p and p.replace("_", "a").replace("-", "a").isalnum() and p.isascii():
            out.append(f".{p}" if out else p)
        else:
            if not out:
                out.append(root)
            quoted = p.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'["{quoted}"]')
    return "".join(out)


# --- schema files and references ---------------------------------------------------------

_docs: dict[str, Any] = {}
_refs: dict[tuple[str, str], tuple[Any, str]] = {}


def _load(name: str) -> Any:
    doc = _docs.get(name)
    if doc is None:
        if name in _OTHER_PLATFORMS:
            doc = {}
        else:
            path = os.path.join(SCHEMA_DIR, name)
            from skiff import fastjson as json  # the runtime's lean JSON (no `re`)

            with open(path, "rb") as f:
                data = f.read()
            try:
                doc = json.loads(data)
            except ValueError as e:
                raise ValueError(f"schema {path}: invalid JSON: {e}") from None
        _docs[name] = doc
    return doc


def _resolve(ref: str, base: str) -> tuple[Any, str]:
    """Return the schema ``ref`` points to, seen from file ``base``, and the file it is in."""
    hit = _refs.get((base, ref))
    if hit is not None:
        return hit
    name, _, pointer = ref.partition("#")
    name = name or base
    node = _load(name)
    if name not in _OTHER_PLATFORMS:
        for part in pointer.split("/")[1:] if pointer else ():
            part = part.replace("~1", "/").replace("~0", "~")
            try:
                node = node[int(part)] if type(node) is list else node[part]
            except (KeyError, IndexError, ValueError, TypeError):
                raise ValueError(f"schema {name}: $ref {ref!r} (from {base}) does not resolve") from None
    hit = (node, name)
    _refs[(base, ref)] = hit
    return hit


# --- patterns ----------------------------------------------------------------------------

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DIGITS = "0123456789"


def _rlimit(s: str) -> bool:  # ^RLIMIT_[A-Z]+$
    return len(s) > 7 and s.startswith("RLIMIT_") and not s[7:].strip(_UPPER)


def _cpu_list(s: str) -> bool:  # ^[0-9, -]*$
    return not s.strip(_DIGITS + ", -")


def _page_size(s: str) -> bool:  # ^[1-9][0-9]*[KMG]B$
    return (len(s) >= 3 and s[0] in "123456789" and s[-1] == "B" and s[-2] in "KMG"
            and not s[1:-2].strip(_DIGITS))


def _mem_bw(s: str) -> bool:  # ^MB:[^\n]*$
    return s.startswith("MB:") and "\n" not in s


def _file_type(s: str) -> bool:  # ^[cbup]$
    return s in ("c", "b", "u", "p")


def _non_empty_line(s: str) -> bool:  # .{1,} (unanchored; "." is any but a line terminator)
    return bool(s.strip("\n\r\u2028\u2029"))


def _cap_name(s: str) -> bool:  # ^CAP_[A-Z_]+$
    return len(s) > 4 and s.startswith("CAP_") and not s[4:].strip(_UPPER + "_")


_PATTERNS: dict[str, Callable[[str], bool]] = {
    "^RLIMIT_[A-Z]+$": _rlimit,
    "^[0-9, -]*$": _cpu_list,
    "^[1-9][0-9]*[KMG]B$": _page_size,
    "^MB:[^\\n]*$": _mem_bw,
    "^[cbup]$": _file_type,
    ".{1,}": _non_empty_line,
    "^CAP_[A-Z_]+$": _cap_name,
}


def _matches(pattern: str, s: str) -> bool:
    check = _PATTERNS.get(pattern)
    if check is not None:
        return check(s)
    import re  # only for a pattern the shipped schemas do not use

    return re.search(pattern, s) is not None


# --- values ------------------------------------------------------------------------------

def _is_type(v: Any, t: str) -> bool:
    if t == "object":
        return type(v) is dict
    if t == "string":
        return type(v) is str
    if t == "array":
        return type(v) is list
    if t == "integer":
        return type(v) is int
    if t == "boolean":
        return type(v) is bool
    if t == "number":
        return type(v) is int or type(v) is float
    if t == "null":
        return v is None
    raise ValueError(f"schema: unknown type {t!r}")


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number"}.get(type(v), type(v).__name__)


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``; ``1`` is ``1.0``."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if type(a) in (int, float) and type(b) in (int, float):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _is_number(v: Any) -> bool:
    return type(v) is int or type(v) is float


# --- the walk ----------------------------------------------------------------------------

def _check(v: Any, s: Any, base: str, path: list, root: str) -> None:
    """Check value ``v`` against schema node ``s`` (from file ``base``) at ``path``."""
    ref = s.get("$ref")
    while ref is not None:  # draft-04: a $ref replaces its siblings
        s, base = _resolve(ref, base)
        ref = s.get("$ref")
    for k, a in s.items():
        if k == "type":
            if type(a) is str:
                ok = _is_type(v, a)
            else:
                ok = any(_is_type(v, t) for t in a)
            if not ok:
                want = repr(a) if type(a) is str else " or ".join(repr(t) for t in a)
                raise SchemaError(path, f"{_show(v)} is not of type {want} (got {_json_type(v)})",
                                  root)
        elif k == "properties":
            if type(v) is dict:
                for name, sub in a.items():
                    if name in v:
                        path.append(name)
                        _check(v[name], sub, base, path, root)
                        path.pop()
        elif k == "required":
            if type(v) is dict:
                for name in a:
                    if name not in v:
                        path.append(name)
                        raise SchemaError(path, "is required", root)
        elif k == "items":
            if type(v) is list:
                if type(a) is dict:
                    for i, x in enumerate(v):
                        path.append(i)
                        _check(x, a, base, path, root)
                        path.pop()
                else:  # a list of schemas: one per position
                    for i, (x, sub) in enumerate(zip(v, a, strict=False)):  # extra items: unchecked
                        path.append(i)
                        _check(x, sub, base, path, root)
                        path.pop()
        elif k == "enum":
            if not any(_same(v, e) for e in a):
                raise SchemaError(path, f"{_show(v)} is not one of {a!r}", root)
        elif k == "minimum":
            if _is_number(v) and (v <= a if s.get("exclusiveMinimum") else v < a):
                rel = "less than or equal to" if s.get("exclusiveMinimum") else "less than"
                raise SchemaError(path, f"{v!r} is {rel} the minimum of {a!r}", root)
        elif k == "maximum":
            if _is_number(v) and (v >= a if s.get("exclusiveMaximum") else v > a):
                rel = "greater than or equal to" if s.get("exclusiveMaximum") else "greater than"
                raise SchemaError(path, f"{v!r} is {rel} the maximum of {a!r}", root)
        elif k == "pattern":
            if type(v) is str and not _matches(a, v):
                raise SchemaError(path, f"{_show(v)} does not match {a!r}", root)
        elif k == "patternProperties":
            if type(v) is dict:
                for name, item in v.items():
                    for pat, sub in a.items():
                        if _matches(pat, name):
                            path.append(name)
                            _check(item, sub, base, path, root)
                            path.pop()
        elif k == "additionalProperties":
            if type(v) is dict:
                _check_additional(v, a, s, base, path, root)
        elif k == "minItems":
            if type(v) is list and len(v) < a:
                raise SchemaError(path, f"has {len(v)} items, fewer than the minimum of {a}", root)
        elif k == "maxItems":
            if type(v) is list and len(v) > a:
                raise SchemaError(path, f"has {len(v)} items, more than the maximum of {a}", root)
        elif k == "uniqueItems":
            if a and type(v) is list:
                for i in range(1, len(v)):
                    for j in range(i):
                        if _same(v[i], v[j]):
                            path.append(i)
                            raise SchemaError(path, f"{_show(v[i])} repeats item [{j}]", root)
        elif k == "minLength":
            if type(v) is str and len(v) < a:
                raise SchemaError(path, f"{_show(v)} is shorter than {a} characters", root)
        elif k == "maxLength":
            if type(v) is str and len(v) > a:
                raise SchemaError(path, f"{_show(v)} is longer than {a} characters", root)
        elif k == "allOf":
            for sub in a:
                _check(v, sub, base, path, root)
        elif k == "anyOf":
            _check_any(v, a, base, path, root)
        elif k == "oneOf":
            _check_one(v, a, base, path, root)
        elif k == "not":
            depth = len(path)
            try:
                _check(v, a, base, path, root)
            except SchemaError:
                del path[depth:]
            else:
                raise SchemaError(path, f"{_show(v)} matches a schema it must not match", root)


def _check_additional(v: dict, a: Any, s: dict, base: str, path: list, root: str) -> None:
    props = s.get("properties") or {}
    pats = s.get("patternProperties") or {}
    for name, item in v.items():
        if name in props or any(_matches(p, name) for p in pats):
            continue
        path.append(name)
        if a is False:
            raise SchemaError(path, "is not an allowed property", root)
        if type(a) is dict:
            _check(item, a, base, path, root)
        path.pop()


def _check_any(v: Any, subs: list, base: str, path: list, root: str) -> None:
    depth = len(path)
    best: SchemaError | None = None
    for sub in subs:
        try:
            _check(v, sub, base, path, root)
            return
        except SchemaError as e:
            del path[depth:]
            if best is None or len(e.path) > len(best.path):
                best = e  # the alternative that got furthest says the most
    if best is None:
        raise SchemaError(path, "anyOf has no alternatives", root)
    if len(subs) == 1 or len(best.path) > depth:
        raise best
    raise SchemaError(path, f"{_show(v)} matches none of the {len(subs)} allowed forms "
                            f"(first: {best.reason})", root)


def _check_one(v: Any, subs: list, base: str, path: list, root: str) -> None:
    depth = len(path)
    good = 0
    first: SchemaError | None = None
    for sub in subs:
        try:
            _check(v, sub, base, path, root)
            good += 1
        except SchemaError as e:
            del path[depth:]
            first = first or e
    if good == 1:
        return
    if good == 0 and first is not None and len(subs) == 1:
        raise first
    raise SchemaError(path, f"{_show(v)} matches {good} of the {len(subs)} forms, "
                            "exactly one is allowed", root)


# --- entry points ------------------------------------------------------------------------

def validate(doc: Any, schema: str | dict, root: str = "value") -> None:
    """Validate ``doc`` against a schema and raise ``SchemaError`` naming the offending field.

    ``schema`` is a file name in ``SCHEMA_DIR`` or a schema object, whose ``$ref`` name files in
    ``SCHEMA_DIR`` (``defs-linux.json#/definitions/Device``) or, without a file part, the
    definitions of ``defs.json`` (``#/definitions/uint32``). ``root`` names the document in
    errors about its top level.
    """
    if type(schema) is str:
        _check(doc, _load(schema), schema, [], root)
    else:
        _check(doc, schema, "defs.json", [], root)


def validate_config(doc: dict) -> None:
    """Validate a config.json document; raise ``SchemaError`` naming the offending field."""
    _check(doc, _load("config-schema.json"), "config-schema.json", [], "config")


def validate_features(doc: dict) -> None:
    """Validate a runtime features document (``features`` verb output)."""
    _check(doc, _load("features-schema.json"), "features-schema.json", [], "features")


def validate_state(doc: dict) -> None:
    """Validate a runtime state document (``state`` verb output)."""
    _check(doc, _load("state-schema.json"), "state-schema.json", [], "state")
