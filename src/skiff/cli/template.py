"""The Go-template subset ``--format`` uses: ``{{.A.B}}``, ``{{json .X}}``, ``{{index .M "k"}}``,
``(pipeline)``, pipes, ``{{range}}``/``{{if}}``/``{{with}}``/``{{else}}``/``{{end}}``, ``{{-``/``-}}``
trimming, and docker's functions (json, join, lower, upper, title, split, truncate, pad, len,
println, printf with %s/%d/%v). Data are JSON-like values (dict, list, str, int, float, bool, None).
Field lookup is exact, then case-insensitive (Go struct field ``APIVersion`` is JSON ``ApiVersion``).
"""

from __future__ import annotations

from skiff.cli.http import CLIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class TemplateError(CLIError):
    """A template that does not parse or fails on the data (the CLI exits 1 with it)."""


NOVALUE = object()


def _lex_action(src: str) -> list[tuple[str, Any]]:
    toks: list[tuple[str, Any]] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
        elif c == '"':
            j = i + 1
            out = []
            while j < n and src[j] != '"':
                if src[j] == "\\" and j + 1 < n:
                    out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(src[j + 1], src[j + 1]))
                    j += 2
                else:
                    out.append(src[j])
                    j += 1
            if j >= n:
                raise TemplateError("unterminated quoted string")
            toks.append(("str", "".join(out)))
            i = j + 1
        elif c == "`":
            j = src.find("`", i + 1)
            if j < 0:
                raise TemplateError("unterminated raw quoted string")
            toks.append(("str", src[i + 1:j]))
            i = j + 1
        elif c in "()|":
            toks.append((c, c))
            i += 1
        else:
            j = i
            while j < n and not src[j].isspace() and src[j] not in '()|"':
                j += 1
            word = src[i:j]
            i = j
            if word.startswith("."):
                toks.append(("field", [p for p in word.split(".")[1:] if p]))
            elif word.startswith("$"):
                if word.endswith(","):
                    word = word[:-1]
                    toks.append(("var", (word, [])))
                    toks.append((",", ","))
                    continue
                name, _, rest = word.partition(".")
                toks.append(("var", (name, [p for p in rest.split(".") if p])))
            elif word in ("true", "false"):
                toks.append(("lit", word == "true"))
            elif word == "nil":
                toks.append(("lit", None))
            elif word[0].isdigit() or (word[0] == "-" and len(word) > 1):
                try:
                    toks.append(("lit", int(word)))
                except ValueError:
                    try:
                        toks.append(("lit", float(word)))
                    except ValueError:
                        raise TemplateError(f"bad number syntax: {word!r}") from None
            elif word == ":=" or word == "=":
                toks.append(("assign", word))
            else:
                toks.append(("ident", word))
    return toks


class _Parser:
    def __init__(self, toks: list) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def pipeline(self) -> list:
        cmds = [self.command()]
        while self.peek() and self.peek()[0] == "|":  # type: ignore[index]
            self.i += 1
            cmds.append(self.command())
        return cmds

    def command(self) -> list:
        args = []
        while True:
            t = self.peek()
            if t is None or t[0] in ("|", ")"):
                break
            args.append(self.operand())
        if not args:
            raise TemplateError("missing value for command")
        return args

    def operand(self) -> tuple:
        t = self.toks[self.i]
        self.i += 1
        if t[0] == "(":
            p = self.pipeline()
            if not self.peek() or self.peek()[0] != ")":  # type: ignore[index]
                raise TemplateError("unclosed left paren")
            self.i += 1
            nt = self.peek()
            if nt and nt[0] == "field" and self._adjacent():
                self.i += 1
                return ("chain", p, nt[1])
            return ("pipe", p)
        return t

    def _adjacent(self) -> bool:
        return True


def _parse(src: str) -> list:
    """Parse into a node list: ("text", s) | ("action", pipeline) | ("if"|"range"|"with", pipeline, body, else)."""
    pos = 0
    items: list = []
    while True:
        i = src.find("{{", pos)
        if i < 0:
            items.append(("text", src[pos:]))
            break
        j = src.find("}}", i)
        if j < 0:
            raise TemplateError("unclosed action")
        text = src[pos:i]
        inner = src[i + 2:j]
        if inner.startswith("-") and inner[1:2] in (" ", "\t", "\n"):
            text = text.rstrip()
            inner = inner[1:]
        pos = j + 2
        if inner.endswith("-") and inner[-2:-1] in (" ", "\t", "\n"):
            inner = inner[:-1]
            k = pos
            while k < len(src) and src[k].isspace():
                k += 1
            pos = k
        items.append(("text", text))
        items.append(("raw", inner.strip()))
    nodes, k, end = _block(items, 0)
    if end is not None:
        raise TemplateError(f"unexpected {{{{{end}}}}}")
    return nodes


def _block(items: list, k: int) -> tuple[list, int, str | None]:
    nodes: list = []
    while k < len(items):
        kind, val = items[k]
        k += 1
        if kind == "text":
            if val:
                nodes.append(("text", val))
            continue
        if val.startswith("/*"):
            continue
        word = val.split(None, 1)[0] if val else ""
        if word in ("end", "else"):
            return nodes, k, val
        if word in ("if", "range", "with"):
            rest = val[len(word):].strip()
            toks = _lex_action(rest)
            var: Any = None
            if len(toks) > 2 and toks[0][0] == "var" and toks[1][0] == "assign":
                var = toks[0][1][0]
                toks = toks[2:]
            elif (len(toks) > 4 and toks[0][0] == "var" and toks[1][0] == "," and toks[2][0] == "var"
                  and toks[3][0] == "assign"):
                var = (toks[0][1][0], toks[2][1][0])
                toks = toks[4:]
            p = _Parser(toks)
            pipe = p.pipeline()
            body, k, stop = _block(items, k)
            other: list = []
            if stop is not None and stop.startswith("else"):
                elif_ = stop[4:].strip()
                if elif_:
                    # {{else if ...}}: a nested if closing at the same {{end}}
                    sub_items = [("raw", elif_)] + items[k:]
                    sub, used, _ = _block_single(sub_items)
                    other = [sub]
                    k += used - 1
                    stop = "end"
                else:
                    other, k, stop = _block(items, k)
            if stop != "end":
                raise TemplateError(f"missing {{{{end}}}} for {{{{{word}}}}}")
            nodes.append((word, pipe, body, other, var))
            continue
        if not val:
            raise TemplateError("missing value for command")
        toks = _lex_action(val)
        var = None
        if len(toks) > 2 and toks[0][0] == "var" and toks[1][0] == "assign":
            var = toks[0][1][0]
            toks = toks[2:]
        p = _Parser(toks)
        pipe = p.pipeline()
        if p.i != len(toks):
            raise TemplateError(f"unexpected {toks[p.i][1]!r} in command")
        nodes.append(("action", pipe, var))
    return nodes, k, None


def _block_single(items: list) -> tuple[tuple, int, None]:
    full, k, stop = _block(items[:], 0) if False else _block_until_first(items)
    return full[0], k, None


def _block_until_first(items: list) -> tuple[list, int, None]:
    """Parse the first node of ``items`` (an ``if`` with its body up to its own end)."""
    nodes: list = []
    sub, k, _ = _block(items[:1] + [("raw", "end")], 0)
    # the head alone parses to an if with an empty body; parse the real body from items[1:]
    word_node = sub[0]
    body, k2, stop = _block(items, 1)
    other: list = []
    if stop is not None and stop.startswith("else"):
        elif_ = stop[4:].strip()
        if elif_:
            sub2, used, _ = _block_single([("raw", elif_)] + items[k2:])
            other = [sub2]
            k2 += used - 1
            stop = "end"
        else:
            other, k2, stop = _block(items, k2)
    if stop != "end":
        raise TemplateError("missing {{end}}")
    nodes.append((word_node[0], word_node[1], body, other, word_node[4]))
    return nodes, k2, None


def _truthy(v: Any) -> bool:
    if v is NOVALUE or v is None:
        return False
    if isinstance(v, (dict, list, str, tuple)):
        return len(v) > 0
    return bool(v)


def gostr(v: Any) -> str:
    if v is NOVALUE:
        return "<no value>"
    if v is None:
        return "<nil>"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        if v == int(v) and abs(v) < 1e21:
            return str(int(v))
        return repr(v)
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{gostr(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(gostr(x) for x in v) + "]"
    return str(v)


def _field(v: Any, name: str) -> Any:
    if isinstance(v, dict):
        if name in v:
            return v[name]
        low = name.lower()
        for k in v:
            if isinstance(k, str) and k.lower() == low:
                return v[k]
        raise TemplateError(f'map has no entry for key "{name}"')   # Go's missingkey=error, as docker
    if v is None or v is NOVALUE:
        raise TemplateError(f"nil pointer evaluating .{name}")
    attr = getattr(v, name, NOVALUE)
    if attr is NOVALUE:
        raise TemplateError(f"can't evaluate field {name} in type {type(v).__name__}")
    return attr() if callable(attr) else attr


_compact: Any = None


def _json(v: Any) -> str:
    """Go's json.Marshal: compact, with <, > and & escaped, non-ASCII kept."""
    global _compact
    if _compact is None:
        import _json as cjson

        def default(o: object) -> object:
            raise TemplateError(f"json: unsupported type: {type(o).__name__}")
        _compact = cjson.make_encoder(None, default, cjson.encode_basestring, None, ":", ",",
                                      False, False, False)
    if v is NOVALUE:
        v = None
    out = "".join(_compact(v, 0))
    return out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k, NOVALUE)
        elif isinstance(v, (list, tuple, str)):
            try:
                v = v[int(k)]
            except (IndexError, ValueError):
                raise TemplateError(f"error calling index: index out of range: {k}") from None
        elif v is None or v is NOVALUE:
            return NOVALUE
        else:
            raise TemplateError(f"error calling index: can't index item of type {type(v).__name__}")
    return v


def _printf(fmt: str, *args: Any) -> str:
    out, ai, i = [], 0, 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%" and i + 1 < len(fmt):
            j = i + 1
            while j < len(fmt) and fmt[j] in "-+ #0123456789.":
                j += 1
            verb = fmt[j] if j < len(fmt) else ""
            spec = fmt[i + 1:j]
            i = j + 1
            if verb == "%":
                out.append("%")
                continue
            a = args[ai] if ai < len(args) else NOVALUE
            ai += 1
            if verb in "dxXo" and isinstance(a, (int, float)) and not isinstance(a, bool):
                out.append(("%" + spec + verb) % int(a))
            elif verb in "feg" and isinstance(a, (int, float)):
                out.append(("%" + spec + verb) % a)
            elif verb == "q":
                out.append(_json(gostr(a)))
            else:
                out.append(("%" + spec + "s") % gostr(a))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _truncate(s: Any, n: int) -> str:
    s = gostr(s)
    return s[:n]


def _pad(s: Any, before: int, after: int) -> str:
    return " " * before + gostr(s) + " " * after


FUNCS: dict[str, Any] = {
    "json": _json,
    "index": _index,
    "join": lambda lst, sep: sep.join(gostr(x) for x in (lst or [])),
    "split": lambda s, sep: gostr(s).split(sep),
    "lower": lambda s: gostr(s).lower(),
    "upper": lambda s: gostr(s).upper(),
    "title": lambda s: gostr(s).title(),
    "len": lambda v: len(v) if v not in (None, NOVALUE) else 0,
    "truncate": _truncate,
    "pad": _pad,
    "println": lambda *a: " ".join(gostr(x) for x in a) + "\n",
    "print": lambda *a: "".join(gostr(x) for x in a),
    "printf": _printf,
    "not": lambda v: not _truthy(v),
    "and": lambda *a: next((x for x in a if not _truthy(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truthy(x)), a[-1]),
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


class Template:
    def __init__(self, src: str) -> None:
        self.src = src
        try:
            self.nodes = _parse(src)
        except TemplateError as e:
            raise TemplateError(f"template parsing error: template: :1: {e}") from None

    def execute(self, data: Any) -> str:
        out: list[str] = []
        try:
            self._run(self.nodes, data, {"$": data}, out)
        except TemplateError as e:
            raise TemplateError(f"template: :1: executing \"\" at <{self.src[:40]}>: {e}") from None
        return "".join(out)

    def _run(self, nodes: list, dot: Any, vars: dict, out: list[str]) -> None:
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "action":
                v = self._pipe(node[1], dot, vars)
                if node[2]:
                    vars[node[2]] = v
                else:
                    out.append(gostr(v))
            elif kind == "if":
                v = self._pipe(node[1], dot, vars)
                self._run(node[2] if _truthy(v) else node[3], dot, vars, out)
            elif kind == "with":
                v = self._pipe(node[1], dot, vars)
                if _truthy(v):
                    self._run(node[2], v, vars, out)
                else:
                    self._run(node[3], dot, vars, out)
            elif kind == "range":
                v = self._pipe(node[1], dot, vars)
                pairs: list = []
                if isinstance(v, dict):
                    pairs = [(k, v[k]) for k in sorted(v)]
                elif isinstance(v, (list, tuple, str)):
                    pairs = list(enumerate(v))
                elif isinstance(v, int) and not isinstance(v, bool):
                    pairs = [(i, i) for i in range(v)]
                elif v not in (None, NOVALUE):
                    raise TemplateError(f"range can't iterate over {gostr(v)}")
                if not pairs:
                    self._run(node[3], dot, vars, out)
                var = node[4]
                for key, item in pairs:
                    if isinstance(var, tuple):
                        vars[var[0]] = key
                        vars[var[1]] = item
                    elif var:
                        vars[var] = item
                    self._run(node[2], item, vars, out)

    def _pipe(self, cmds: list, dot: Any, vars: dict) -> Any:
        v: Any = NOVALUE
        first = True
        for cmd in cmds:
            v = self._cmd(cmd, dot, vars, None if first else v)
            first = False
        return v

    def _cmd(self, args: list, dot: Any, vars: dict, piped: Any) -> Any:
        head = args[0]
        if head[0] == "ident":
            fn = FUNCS.get(head[1])
            if fn is None:
                raise TemplateError(f'function "{head[1]}" not defined')
            vals = [self._arg(a, dot, vars) for a in args[1:]]
            if piped is not None:
                vals.append(piped)
            try:
                return fn(*vals)
            except TemplateError:
                raise
            except TypeError as e:
                raise TemplateError(f"error calling {head[1]}: wrong arguments ({e})") from None
        if len(args) > 1 or piped is not None:
            raise TemplateError(f"can't give argument to non-function {head[1]}")
        return self._arg(head, dot, vars)

    def _arg(self, a: tuple, dot: Any, vars: dict) -> Any:
        kind = a[0]
        if kind == "field":
            v = dot
            for name in a[1]:
                v = _field(v, name)
            return v
        if kind == "str" or kind == "lit":
            return a[1]
        if kind == "var":
            name, path = a[1]
            if name not in vars:
                raise TemplateError(f"undefined variable: {name}")
            v = vars[name]
            for p in path:
                v = _field(v, p)
            return v
        if kind == "pipe":
            return self._pipe(a[1], dot, vars)
        if kind == "chain":
            v = self._pipe(a[1], dot, vars)
            for name in a[2]:
                v = _field(v, name)
            return v
        if kind == "ident":
            fn = FUNCS.get(a[1])
            if fn is None:
                raise TemplateError(f'function "{a[1]}" not defined')
            return fn()
        raise TemplateError(f"unexpected {a[1]!r}")
