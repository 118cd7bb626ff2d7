"""A table-driven flag parser with docker's conventions: ``-a``, ``--all``, ``--name=x``,
``--name x``, combined shorts (``-it``, ``-dit``), attached short values (``-eFOO=1``),
repeatable flags, ``--`` and (for run/exec/create) flags only before the first argument."""

from __future__ import annotations

from skiff.cli.http import CLIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# a spec: "a|all" bool; "e|env=" list; "name:" string; "t|time#" int
# suffix: "" bool, ":" string, "=" repeatable list, "#" int


class Spec:
    def __init__(self, *defs: str) -> None:
        self.by_name: dict[str, tuple[str, str]] = {}
        self.defaults: dict[str, Any] = {}
        for d in defs:
            kind = ""
            if d[-1] in ":=#":
                kind, d = d[-1], d[:-1]
            names = d.split("|")
            key = max(names, key=len).replace("-", "_")
            for n in names:
                self.by_name[n] = (key, kind)
            self.defaults[key] = [] if kind == "=" else (False if kind == "" else None)


class HelpRequested(CLIError):
    """``--help`` among a command's flags: main prints the usage generated from ``spec``."""

    def __init__(self, spec: Spec, cmd: str) -> None:
        super().__init__(f"skiff {cmd} --help", 0)
        self.spec = spec
        self.cmd = cmd


def _bool(name: str, v: str) -> bool:
    low = v.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise CLIError(f'invalid argument "{v}" for "--{name}" flag: strconv.ParseBool: parsing "{v}": invalid syntax', 125)


def parse(spec: Spec, args: list[str], interspersed: bool = True, cmd: str = "") -> tuple[dict, list[str]]:
    opts = dict(spec.defaults)
    for k, v in opts.items():
        if isinstance(v, list):
            opts[k] = []
    pos: list[str] = []
    i = 0

    def setv(name: str, value: str | None, take_next: bool) -> int:
        ent = spec.by_name.get(name)
        if ent is None:
            dash = "--" if len(name) > 1 else "-"
            raise CLIError(f"unknown flag: {dash}{name}\nSee 'docker {cmd} --help'.", 125)
        key, kind = ent
        used = 0
        if kind == "":
            opts[key] = True if value is None else _bool(name, value)
            return 0
        if value is None:
            if not take_next or i + 1 >= len(args):
                dash = "--" if len(name) > 1 else "-"
                raise CLIError(f"flag needs an argument: {dash}{name}\nSee 'docker {cmd} --help'.", 125)
            value = args[i + 1]
            used = 1
        if kind == "=":
            opts[key].append(value)
        elif kind == "#":
            try:
                opts[key] = int(value)
            except ValueError:
                raise CLIError(f'invalid argument "{value}" for "--{name}" flag: strconv.ParseInt: '
                               f'parsing "{value}": invalid syntax', 125) from None
        else:
            opts[key] = value
        return used

    while i < len(args):
        a = args[i]
        if a == "--":
            pos.extend(args[i + 1:])
            break
        if a.startswith("--") and len(a) > 2:
            name, eq, val = a[2:].partition("=")
            if name == "help" and "help" not in spec.by_name:
                raise HelpRequested(spec, cmd)
            i += 1 + setv(name, val if eq else None, True)
            continue
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                c = a[j]
                ent = spec.by_name.get(c)
                if ent is None and c == "h" and a == "-h":
                    raise HelpRequested(spec, cmd)      # -h is help where it is not a flag of its own
                if ent is None:
                    raise CLIError(f"unknown shorthand flag: '{c}' in {a}\nSee 'docker {cmd} --help'.", 125)
                if ent[1] == "":
                    if a[j + 1:j + 2] == "=":
                        setv(c, a[j + 2:], False)
                        break
                    opts[ent[0]] = True
                    j += 1
                    continue
                rest = a[j + 1:]
                if rest.startswith("="):
                    rest = rest[1:]
                if rest:
                    setv(c, rest, False)
                    break
                i += setv(c, None, True)
                break
            i += 1
            continue
        pos.append(a)
        i += 1
        if not interspersed:
            pos.extend(args[i:])
            break
    return opts, pos
