"""A small command-line flag parser with runc's conventions, cheap to import.

``argparse`` costs several milliseconds to import and build; a runtime verb runs in ~15 ms all
told, so the runtime parses its flags itself. Accepted forms: ``--flag value``,
``--flag=value``, ``-f value``, boolean ``--flag`` / ``--flag=true|false``, repeated flags
(``kind="list"``), and ``--`` to end flags. Flags and positional arguments may be mixed, as
urfave/cli allows for runc.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad command line; the CLI prints it with the verb's usage and exits 1."""


class Flag:
    __slots__ = ("names", "dest", "kind", "default")

    def __init__(self, names: str, kind: str = "str", default: object = None, dest: str = "") -> None:
        self.names = names.split(",")
        self.dest = dest or self.names[0].lstrip("-").replace("-", "_")
        self.kind = kind  # "str", "bool", "int", "list"
        self.default = [] if kind == "list" and default is None else default
        if kind == "bool" and default is None:
            self.default = False


def parse(args: list[str], flags: list[Flag], *, positional_max: int | None = None,
          stop_at_first_positional: bool = False) -> tuple[dict, list[str]]:
    """Parse ``args``; return ``(values by dest, positional arguments)``.

    ``stop_at_first_positional`` makes everything after the first positional argument
    positional (``exec ID cmd --flag`` passes ``--flag`` to the command).
    """
    by_name: dict[str, Flag] = {}
    for fl in flags:
        for n in fl.names:
            by_name[n] = fl
    values: dict = {fl.dest: (list(fl.default) if fl.kind == "list" else fl.default)  # type: ignore[call-overload]
                    for fl in flags}
    pos: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            pos.extend(args[i:])
            break
        if not a.startswith("-") or a == "-":
            pos.append(a)
            if stop_at_first_positional:
                pos.extend(args[i:])
                break
            continue
        name, eq, inline = a.partition("=")
        f = by_name.get(name)
        if f is None and not name.startswith("--"):
            f = by_name.get("-" + name)  # runc accepts -bundle as well as --bundle
        if f is None and name.startswith("--"):
            f = by_name.get(name[1:])
        if f is None:
            raise UsageError(f"flag provided but not defined: {name}")
        if f.kind == "bool":
            if eq:
                if inline not in ("true", "false", "1", "0"):
                    raise UsageError(f"invalid boolean value {inline!r} for flag {name}")
                values[f.dest] = inline in ("true", "1")
            else:
                values[f.dest] = True
            continue
        if eq:
            v = inline
        else:
            if i >= len(args):
                raise UsageError(f"flag needs an argument: {name}")
            v = args[i]
            i += 1
        if f.kind == "int":
            try:
                values[f.dest] = int(v, 0)
            except ValueError:
                raise UsageError(f"invalid value {v!r} for flag {name}: expected an integer") from None
        elif f.kind == "list":
            values[f.dest].append(v)
        else:
            values[f.dest] = v
    if positional_max is not None and len(pos) > positional_max:
        raise UsageError(f"too many arguments: {' '.join(pos[positional_max:])}")
    return values, pos
