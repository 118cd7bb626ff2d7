"""Snapshotters: copy-on-write filesystem trees for image layers and containers.

The interface is containerd's (``snapshots.Snapshotter``), so skiff-containerd can serve it
over containerd 1.6's ``containerd.services.snapshots.v1`` API one to one:

- ``prepare(key, parent)`` makes an *active* (writable) snapshot on top of the *committed*
  snapshot ``parent`` (or empty); ``view(key, parent)`` a read-only one;
- ``commit(name, key)`` turns the active snapshot ``key`` into the committed snapshot
  ``name`` (which may then be a parent); ``remove(key)`` deletes a snapshot without
  children;
- ``mounts(key)`` describes how to mount an active or view snapshot as a list of
  :class:`Mount` (containerd's ``mount.Mount``: type, source, options). A snapshotter never
  mounts anything itself: :func:`skiff.images.mount.mount_all` is the caller's tool;
- ``stat``, ``update`` (labels only), ``usage``, ``walk`` (with containerd's filter syntax,
  see :func:`compile_filters`), ``close``.

Active and view snapshots are named by their *key*, committed ones by their *name*; keys
and names share one namespace per snapshotter. A snapshotter keeps its metadata in its own
SQLite file, ``<root>/metadata.db`` (as containerd's snapshotter plugins keep a bolt file in
their root), and its trees in ``<root>/snapshots/<id>/``.

Implementations: :class:`~skiff.images.snapshots.overlay.OverlaySnapshotter` (overlayfs,
the default) and :class:`~skiff.images.snapshots.native.NativeSnapshotter` (full copies,
for filesystems that cannot hold an overlay upper directory). :func:`new_snapshotter`
builds one by name.
"""

from __future__ import annotations

import datetime as _dt
import enum
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from skiff.images.errors import InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

# containerd's label limits (labels.Validate): key and value together at most 4096 bytes
MAX_LABEL_SIZE = 4096

SNAPSHOTTERS = ("overlayfs", "native")
DEFAULT_SNAPSHOTTER = "overlayfs"


class Kind(enum.IntEnum):
    """A snapshot's kind; the values are those of containerd's ``snapshots.v1.Kind``."""

    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3

    def __str__(self) -> str:  # containerd's Kind.String()
        return self.name.capitalize()

    @classmethod
    def parse(cls, text: str) -> Kind:
        try:
            return cls[text.upper()]
        except KeyError:
            raise InvalidArgument(f"snapshot kind {text!r}: unknown (view, active or committed)") from None


@dataclass
class Info:
    """What ``stat`` returns: containerd's ``snapshots.Info``."""

    name: str
    parent: str  # "" for none
    kind: Kind
    labels: dict[str, str] = field(default_factory=dict)
    created: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.UTC))
    updated: _dt.datetime = field(default_factory=lambda: _dt.datetime.now(_dt.UTC))


@dataclass(frozen=True)
class Usage:
    """Disk usage of a snapshot's own tree: bytes of allocated blocks and distinct inodes."""

    size: int
    inodes: int


@dataclass
class Mount:
    """How to mount (part of) a snapshot: containerd's ``mount.Mount``.

    ``options`` are mount(8)-style: flags (``ro``, ``rbind``, ``nosuid``...) and
    filesystem data (``lowerdir=...``). Paths in overlay options are absolute; when the
    option string is longer than the kernel takes (a page), ``mount_all`` shortens them.
    """

    type: str
    source: str
    options: list[str] = field(default_factory=list)
    target: str = ""

    def to_json(self) -> dict:
        d: dict = {"type": self.type, "source": self.source}
        if self.target:
            d["target"] = self.target
        d["options"] = list(self.options)
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> Mount:
        return cls(type=str(d.get("type", "")), source=str(d.get("source", "")),
                   options=[str(o) for o in d.get("options") or []], target=str(d.get("target", "")))

    def option(self, name: str) -> str | None:
        """The value of ``name=value`` among the options (the last one wins), or None."""
        prefix = name + "="
        found = None
        for o in self.options:
            if o.startswith(prefix):
                found = o[len(prefix):]
        return found


class Snapshotter(Protocol):
    """containerd's snapshotter interface (see the module doc)."""

    def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]: ...

    def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]: ...

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None: ...

    def remove(self, key: str) -> None: ...

    def mounts(self, key: str) -> list[Mount]: ...

    def stat(self, key: str) -> Info: ...

    def update(self, info: Info, fieldpaths: Sequence[str] = ()) -> Info: ...

    def usage(self, key: str) -> Usage: ...

    def walk(self, fn: Callable[[Info], object], filters: Sequence[str] = ()) -> None: ...

    def close(self) -> None: ...


def validate_labels(labels: Mapping[str, str], where: str) -> dict[str, str]:
    """Check labels as containerd does (non-empty keys, key + value at most 4096 bytes)."""
    out: dict[str, str] = {}
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgument(f"{where}: label {k!r}: keys and values must be strings")
        if not k:
            raise InvalidArgument(f"{where}: label with an empty key")
        if len(k.encode()) + len(v.encode()) > MAX_LABEL_SIZE:
            raise InvalidArgument(f"{where}: label {k[:64]!r}: key and value exceed {MAX_LABEL_SIZE} bytes")
        out[k] = v
    return out


# --- filters ---------------------------------------------------------------------------------
#
# containerd's filter syntax (package ``filters``): a filter is selectors joined by ``,``
# (all must match); a list of filters matches when any one does. A selector is a field path
# (``name``, ``parent``, ``kind``, ``labels.KEY``; components separated by ``.``, a component
# may be a double-quoted string) alone (present and non-empty) or followed by ``==``, ``!=``
# or ``~=`` (regular expression) and a value (bare or quoted).

_TOKEN = re.compile(r'\s*(?:(?P<quoted>"(?:[^"\\]|\\.)*")|(?P<op>==|!=|~=)|(?P<sep>[.,])'
                    r'|(?P<bare>[^\s.,=!~"]+))')


def _unquote(tok: str, where: str) -> str:
    body = tok[1:-1]
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            i += 1
            if i == len(body):
                raise InvalidArgument(f"{where}: dangling backslash")
            c = {"n": "\n", "t": "\t"}.get(body[i], body[i])
        out.append(c)
        i += 1
    return "".join(out)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise InvalidArgument(f"filter {text!r}: unexpected input at {text[pos:]!r}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        value = m.group(kind)
        if kind == "quoted":
            out.append(("value", _unquote(value, f"filter {text!r}")))
        elif kind == "bare":
            out.append(("value", value))
        else:
            out.append((kind, value))
    return out


Selector = tuple[tuple[str, ...], str, str]  # field path, operator ("" = present), value


def parse_filter(text: str) -> list[Selector]:
    """Parse one filter string into its selectors (all must match)."""
    toks = _tokens(text)
    selectors: list[Selector] = []
    i = 0
    if not toks:
        raise InvalidArgument("filter '': empty")
    while i < len(toks):
        path: list[str] = []
        while True:
            if i >= len(toks) or toks[i][0] != "value":
                raise InvalidArgument(f"filter {text!r}: expected a field name")
            path.append(toks[i][1])
            i += 1
            if i < len(toks) and toks[i][0] == "sep" and toks[i][1] == ".":
                i += 1
                continue
            break
        op, value = "", ""
        if i < len(toks) and toks[i][0] == "op":
            op = toks[i][1]
            i += 1
            # a value may contain dots when bare (a.b.c): join value tokens until a comma
            parts: list[str] = []
            while i < len(toks) and not (toks[i][0] == "sep" and toks[i][1] == ","):
                if toks[i][0] == "op":
                    raise InvalidArgument(f"filter {text!r}: unexpected operator {toks[i][1]!r}")
                parts.append(toks[i][1])
                i += 1
            if not parts:
                raise InvalidArgument(f"filter {text!r}: operator {op!r} without a value")
            value = "".join(parts)
            if op == "~=":
                try:
                    re.compile(value)
                except re.error as e:
                    raise InvalidArgument(f"filter {text!r}: bad regular expression {value!r}: {e}") from None
        selectors.append((tuple(path), op, value))
        if i < len(toks):
            if toks[i] != ("sep", ","):
                raise InvalidArgument(f"filter {text!r}: expected ',' between selectors")
            i += 1
            if i == len(toks):
                raise InvalidArgument(f"filter {text!r}: trailing ','")
    return selectors


def _field(info: Info, path: tuple[str, ...]) -> str | None:
    head = path[0]
    if head == "labels":
        if len(path) == 1:
            return "1" if info.labels else None
        return info.labels.get(".".join(path[1:]))
    if len(path) != 1:
        return None
    if head == "name":
        return info.name
    if head == "parent":
        return info.parent
    if head == "kind":
        return str(info.kind).lower()
    return None


def _match(info: Info, sel: Selector) -> bool:
    path, op, value = sel
    got = _field(info, path)
    if op == "":
        return bool(got)
    if op == "==":
        if path == ("kind",):
            return got == value.lower()
        return got == value
    if op == "!=":
        return got != value
    return got is not None and re.search(value, got) is not None


def compile_filters(filters: Iterable[str]) -> Callable[[Info], bool]:
    """A predicate over :class:`Info` for containerd-style filters (none: match all)."""
    parsed = [parse_filter(f) for f in filters]
    if not parsed:
        return lambda info: True

    def pred(info: Info) -> bool:
        return any(all(_match(info, s) for s in sels) for sels in parsed)
    return pred


def new_snapshotter(name: str, root: str) -> Snapshotter:
    """The snapshotter called ``name`` (``overlayfs`` or ``native``) with its state in ``root``."""
    if name == "overlayfs":
        from skiff.images.snapshots.overlay import OverlaySnapshotter
        return OverlaySnapshotter(root)
    if name == "native":
        from skiff.images.snapshots.native import NativeSnapshotter
        return NativeSnapshotter(root)
    raise InvalidArgument(f"snapshotter {name!r}: unknown (known: {', '.join(SNAPSHOTTERS)})")


__all__ = [
    "DEFAULT_SNAPSHOTTER",
    "SNAPSHOTTERS",
    "Info",
    "Kind",
    "Mount",
    "Snapshotter",
    "Usage",
    "compile_filters",
    "new_snapshotter",
    "parse_filter",
    "validate_labels",
]
