"""Dockerfile parsing as Docker's classic builder does it (BuildKit's frontend for heredocs).

Pure: text in, :class:`Dockerfile` out, :class:`DockerfileError` naming the line on bad input.
Nothing is variable-expanded here; the engine expands with :mod:`.shellwords` where Docker does.

What Docker does, and so this module:

- Parser directives (``# escape=``, ``# syntax=``, ``# check=``; names case-insensitive) are only
  recognised at the top of the file: the first line that is not a directive (a blank line, another
  comment, an instruction) ends them, and a directive after that is a plain comment.  The classic
  builder ignores ``syntax`` (recorded in ``warnings``).
- Comments are whole lines starting with ``#`` (after leading whitespace), also inside a run of
  continuation lines.  A line ending in the escape character (trailing blanks after it allowed) is
  continued on the next one; continuation lines keep their leading whitespace.  Empty
  continuation lines are skipped with a warning.
- ``--name=value`` flags at the start of the arguments, per instruction; unknown ones are errors.
- JSON (exec) form is a valid JSON array of strings; anything else that is not valid JSON is
  shell form; a JSON array holding a non-string is an error.
- Heredocs (``<<EOF``, ``<<-EOF``, ``<<"EOF"``, ``<<'EOF'``, several per line) for RUN, COPY and
  ADD in shell form: their bodies are the lines that follow the instruction.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from skiff.daemon.build.shellwords import ShellError, ShellLex

__all__ = [
    "Dockerfile",
    "DockerfileError",
    "Heredoc",
    "Instruction",
    "Stage",
    "parse",
    "parse_go_duration",
    "parse_line",
]


class DockerfileError(Exception):
    """A Dockerfile that cannot be built as written.  ``line`` is 1-based, 0 when not about a line.

    ``kind`` says at which stage Docker's classic builder finds the problem, which decides how
    dockerd words it (``docker_message``): "parse" (the line parser: "failed to parse
    Dockerfile: ..."), "instruction" (an instruction's own checks: "dockerfile parse error line
    N: ..."), "plain" (the message alone)."""

    def __init__(self, msg: str, line: int = 0, kind: str = "instruction") -> None:
        self.msg = msg
        self.line = line
        self.kind = kind
        super().__init__(f"Dockerfile parse error on line {line}: {msg}" if line else msg)

    @property
    def docker_message(self) -> str:
        """The error as dockerd 20.10's classic builder reports it."""
        if self.kind == "parse":
            return f"failed to parse Dockerfile: {self.msg}"
        if self.kind == "instruction" and self.line:
            return f"dockerfile parse error line {self.line}: {self.msg}"
        return self.msg


@dataclass
class Heredoc:
    name: str  # the terminator word, quotes removed: "EOF"
    content: str  # the body, each line ending in "\n" (leading tabs stripped for <<-)
    expand: bool  # False when the word was quoted (<<'EOF', <<"EOF", <<E"O"F)
    chomp: bool = False  # <<- was used
    fd: int = 0  # the file descriptor written before << (3<<EOF), 0 when none


@dataclass
class Instruction:
    cmd: str  # lower case instruction name
    original: str  # as written, continuations joined, heredoc bodies left out, stripped
    line: int  # first line (1-based)
    flags: dict[str, list[str]]  # "--from=x" -> {"from": ["x"]}; booleans as "true"/"false"
    args: list[str]  # raw words, see the plan / parse()
    json_form: bool = False
    heredocs: list[Heredoc] = field(default_factory=list)
    end_line: int = 0  # last line, heredoc bodies included


@dataclass
class Stage:
    name: str  # lower-cased AS name, "" if none
    index: int
    base: str  # raw image reference from FROM (may hold $ARGs)
    platform: str  # raw --platform value or ""
    from_instr: Instruction
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    escape: str  # "\\" or "`"
    warnings: list[str]  # one message per line, printed by the engine as "[WARNING]: <message>"
    instructions: list[Instruction]
    meta_args: list[Instruction]  # ARGs before the first FROM
    stages: list[Stage]

    def stage_index(self, name_or_index: str) -> int | None:
        """The stage a ``--from``/``--target`` value names: an AS name (case-insensitive) or a
        stage number; None when there is no such stage."""
        lowered = name_or_index.lower()
        for stage in self.stages:
            if stage.name and stage.name == lowered:
                return stage.index
        if name_or_index.isdecimal():
            i = int(name_or_index)
            if i < len(self.stages):
                return i
        return None


# -- instruction table ---------------------------------------------------------------------------

_STRING, _STRINGS, _BOOL = "string", "strings", "bool"

_FLAGS: dict[str, dict[str, str]] = {
    "from": {"platform": _STRING},
    "copy": {"from": _STRING, "chown": _STRING, "chmod": _STRING, "link": _BOOL},
    "add": {"chown": _STRING, "chmod": _STRING, "link": _BOOL, "checksum": _STRING},
    "run": {"mount": _STRINGS, "network": _STRING, "security": _STRING},
    "healthcheck": {
        "interval": _STRING,
        "timeout": _STRING,
        "start-period": _STRING,
        "start-interval": _STRING,
        "retries": _STRING,
    },
}

_INSTRUCTIONS = frozenset(
    "add arg cmd copy entrypoint env expose from healthcheck label maintainer onbuild run shell "
    "stopsignal user volume workdir".split()
)
_HEREDOC_INSTRUCTIONS = frozenset(("run", "copy", "add"))

# Go's unicode.IsSpace over the characters that matter here
_SPACE = " \t\n\v\f\r\x85\xa0"
# moby splits commands and whitespace-delimited arguments on this class (no \n)
_SPLIT_RE = re.compile(r"[\t\v\f\r ]+")
_DIRECTIVE_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*")
_HEREDOC_RE = re.compile(r"(\d*)<<(-?)[\t\n\f\r ]*([^<]*)")
_STAGE_NAME_RE = re.compile(r"[a-z][a-z0-9\-_.]*")
_ONBUILD_PREFIX_RE = re.compile(r"^\s*ONBUILD\s*", re.IGNORECASE)


def _is_space(ch: str) -> bool:
    return ch in _SPACE or (ord(ch) > 0xA0 and ch.isspace())


# -- lines ---------------------------------------------------------------------------------------


def _split_lines(text: str) -> list[str]:
    """Lines with their "\\n" kept (the last one may lack it)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _trim_newline(line: str) -> str:
    return line.rstrip("\r\n")


def _is_comment(line: str) -> bool:
    return line.lstrip(_SPACE).startswith("#")


def _trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    """Remove a trailing escape character (and the blanks after it).  Returns (line, ended): ended
    is False when the line continues.  As in moby, an escape preceded by another escape character
    is not a continuation ("foo \\\\" ends the line)."""
    stripped = line.rstrip(" \t")
    if not stripped.endswith(escape):
        return line, True
    if len(stripped) == 1:
        return "", False
    if stripped[-2] == escape:
        return line, True
    return stripped[:-1], False


class _Directives:
    __slots__ = ("escape", "done", "seen", "warnings")

    def __init__(self, enabled: bool, escape: str) -> None:
        self.escape = escape
        self.done = not enabled
        self.seen: set[str] = set()
        self.warnings: list[str] = []

    def check(self, token: str, lineno: int) -> bool:
        """``token``: a line without its newline and leading whitespace.  True if it was a
        parser directive (it is then also a comment)."""
        if self.done:
            return False
        if not token.startswith("#"):
            self.done = True
            return False
        m = _DIRECTIVE_RE.fullmatch(token[1:].lstrip(_SPACE))
        if m is None:
            self.done = True
            return False
        key, value = m.group(1).lower(), m.group(2)
        if key not in ("escape", "syntax", "check"):
            self.done = True
            return False
        if key in self.seen:
            raise DockerfileError(f"only one {key} parser directive can be used", lineno, "parse")
        self.seen.add(key)
        if key == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(
                    f"invalid escape token '{value}' does not match ` or \\", lineno, "parse"
                )
            self.escape = value
        elif key == "syntax":
            self.warnings.append(
                f"the syntax parser directive (syntax={value}) is ignored: "
                "the classic builder has no Dockerfile frontends"
            )
        else:
            self.warnings.append(
                f"the check parser directive (check={value}) is ignored by the classic builder"
            )
        return True


# -- argument forms ------------------------------------------------------------------------------


def _extract_flags(rest: str, escape: str) -> tuple[str, list[str]]:
    """The ``--flag`` words at the start of ``rest`` (quotes and escapes processed) and the rest."""
    words: list[str] = []
    n = len(rest)
    pos = 0
    while True:
        while pos < n and _is_space(rest[pos]):
            pos += 1
        if pos >= n:
            return "", words
        if not rest.startswith("--", pos):
            return rest[pos:], words
        buf: list[str] = []
        blank_ok = False
        quote = ""
        while pos < n:
            ch = rest[pos]
            if quote:
                if ch == quote:
                    quote = ""
                    pos += 1
                    continue
                if ch == escape:
                    if pos + 1 == n:
                        quote = ""
                        pos += 1
                        continue
                    pos += 1
                    ch = rest[pos]
                buf.append(ch)
                pos += 1
                continue
            if _is_space(ch):
                break
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                pos += 1
                continue
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = rest[pos]
            buf.append(ch)
            pos += 1
        word = "".join(buf)
        if word == "--":
            if pos >= n:
                return "", words
            return rest[pos:], words
        if blank_ok or word:
            words.append(word)


def _parse_words(rest: str, escape: str) -> list[str]:
    """Split on unquoted whitespace, keeping quotes and escapes in the words (moby's parseWords)."""
    words: list[str] = []
    buf: list[str] = []
    in_word = False
    quote = ""
    blank_ok = False
    n = len(rest)
    pos = 0
    while pos < n:
        ch = rest[pos]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if pos + 1 == n:
                    quote = ""
                    pos += 1
                    continue
                buf.append(ch)
                pos += 1
                ch = rest[pos]
            buf.append(ch)
            pos += 1
            continue
        if not in_word:
            if _is_space(ch):
                pos += 1
                continue
            in_word = True
        if _is_space(ch):
            if blank_ok or buf:
                words.append("".join(buf))
            buf = []
            blank_ok = False
            in_word = False
            pos += 1
            continue
        if ch in ("'", '"'):
            quote = ch
            blank_ok = True
        elif ch == escape:
            if pos + 1 == n:
                pos += 1
                continue
            buf.append(ch)
            pos += 1
            ch = rest[pos]
        buf.append(ch)
        pos += 1
    if in_word and (blank_ok or buf):
        words.append("".join(buf))
    return words


class _NotStrings(Exception):
    pass


def _reject_constant(name: str) -> object:
    raise ValueError(f"not JSON: {name}")


_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def _parse_json(rest: str) -> list[str] | None:
    """The JSON array of strings ``rest`` holds, or None when it is not JSON (shell form)."""
    rest = rest.lstrip(_SPACE)
    if not rest.startswith("["):
        return None
    # dockerd 20.10 decodes the first JSON value and ignores what follows it (CMD ["a"] b)
    try:
        value, _ = _JSON.raw_decode(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise _NotStrings()
    # Go's decoder turns unpaired surrogate escapes ("\ud800") into U+FFFD
    return [_no_surrogates(v) for v in value]


def _no_surrogates(s: str) -> str:
    if s.isascii():
        return s
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)


def _ws_split(rest: str) -> list[str]:
    if rest == "":
        return []
    return _SPLIT_RE.split(rest)


_GO_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_GO_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]+)")


def parse_go_duration(s: str) -> int:
    """A Go ``time.ParseDuration`` string ("1m30s", "1.5h", "300ms", "0") in nanoseconds.
    Raises ValueError on bad syntax."""
    text = s
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if text == "":
        raise ValueError(f"invalid duration {s!r}")
    total = 0
    pos = 0
    while pos < len(text):
        m = _GO_DURATION_PART.match(text, pos)
        if m is None or (m.group(1) == "" and not m.group(2)):
            raise ValueError(f"invalid duration {s!r}")
        unit = _GO_UNITS.get(m.group(3))
        if unit is None:
            raise ValueError(f"unknown unit {m.group(3)!r} in duration {s!r}")
        whole = int(m.group(1) or "0") * unit
        frac = m.group(2) or ""
        if frac:
            whole += int(frac) * unit // (10 ** len(frac))
        total += whole
        pos = m.end()
    return sign * total


# -- nodes ---------------------------------------------------------------------------------------


class _Node:
    """One instruction split into its parts, before the per-instruction checks."""

    __slots__ = ("name", "flag_words", "rest", "args", "json", "line", "child")

    def __init__(self, name: str, flag_words: list[str], rest: str, line: str) -> None:
        self.name = name
        self.flag_words = flag_words
        self.rest = rest
        self.line = line
        self.args: list[str] = []
        self.json = False
        self.child: _Node | None = None

    @property
    def cmd(self) -> str:
        return self.name.lower()


def _node_from_line(line: str, escape: str, nested: bool = False) -> _Node:
    parts = _SPLIT_RE.split(line.strip(_SPACE), maxsplit=1)
    name = parts[0]
    flag_words: list[str] = []
    rest = ""
    if len(parts) == 2:
        rest, flag_words = _extract_flags(parts[1], escape)
        rest = rest.strip(_SPACE)
    node = _Node(name, flag_words, rest, line)
    cmd = node.cmd
    if cmd not in _INSTRUCTIONS:
        raise DockerfileError(f"unknown instruction: {name.upper()}")
    if nested and cmd == "onbuild":
        # refused here rather than after the check of the trigger: no recursion on hostile input
        raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    try:
        if cmd in ("add", "copy", "volume"):
            js = _parse_json(rest)
            if js is not None:
                node.args, node.json = js, True
            else:
                node.args = _ws_split(rest)
        elif cmd in ("run", "cmd", "entrypoint", "shell"):
            if rest:
                js = _parse_json(rest)
                if js is not None:
                    node.args, node.json = js, True
                else:
                    node.args = [rest]
        elif cmd == "healthcheck":
            sep = 0
            while sep < len(rest) and not _is_space(rest[sep]):
                sep += 1
            if sep:
                typ = rest[:sep]
                cmd_text = rest[sep:].lstrip(_SPACE)
                node.args = [typ]
                if cmd_text:
                    js = _parse_json(cmd_text)
                    if js is not None:
                        node.args += js
                        node.json = True
                    else:
                        node.args.append(cmd_text)
    except _NotStrings:
        raise DockerfileError(
            "when using JSON array syntax, arrays must be comprised of strings only", kind="parse"
        ) from None
    if cmd in ("env", "label"):
        node.args = _name_values(rest, cmd.upper(), escape)
    elif cmd == "arg":
        node.args = _parse_words(rest, escape)
    elif cmd in ("expose", "from"):
        node.args = _ws_split(rest)
    elif cmd in ("maintainer", "stopsignal", "user", "workdir"):
        node.args = [rest] if rest else []
    elif cmd == "onbuild":
        if rest:
            node.child = _node_from_line(rest, escape, nested=True)
    return node


def _name_values(rest: str, key: str, escape: str) -> list[str]:
    words = _parse_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        # legacy form: KEY name value...
        parts = _SPLIT_RE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise DockerfileError(f"{key} must have two arguments", kind="parse")
        return [parts[0], parts[1]]
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise DockerfileError(
                f'Syntax error - can\'t find = in "{word}". Must be of the form: name=value',
                kind="parse",
            )
        name, _, value = word.partition("=")
        if not name:
            raise DockerfileError(f"{key} names can not be blank")
        out += [name, value]
    return out


def _heredoc_from_word(word: str) -> Heredoc | None:
    m = _HEREDOC_RE.fullmatch(word)
    if m is None or not m.group(3):
        return None
    rest = m.group(3)
    words = ShellLex("\\", skip_unset_env=True).process_words(rest, {})
    if len(words) != 1:
        return None
    raw = ShellLex("\\", raw_quotes=True, skip_unset_env=True).process_words(rest, {})
    if len(raw) != 1:
        raise DockerfileError(
            f"internal lexing of heredoc produced inconsistent results: {rest}", kind="parse"
        )
    name = words[0]
    quotes = name.count("'") + name.count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return Heredoc(
        name=name,
        content="",
        expand=quotes == raw_quotes,
        chomp=m.group(2) == "-",
        fd=int(m.group(1)) if m.group(1) else 0,
    )


def _heredocs_in_line(line: str) -> list[Heredoc]:
    lex = ShellLex("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    try:
        words = lex.process_words(line, {})
    except ShellError:
        return []  # as moby: a line the lexer cannot split has no heredocs
    docs = []
    for word in words:
        try:
            doc = _heredoc_from_word(word)
        except ShellError as e:
            raise DockerfileError(f"heredoc {word}: {e.reason}", kind="parse") from None
        if doc is not None:
            docs.append(doc)
    return docs


def _is_heredoc_word(word: str) -> bool:
    try:
        return _heredoc_from_word(word) is not None
    except ShellError:
        return False


def _can_contain_heredoc(node: _Node) -> bool:
    if node.cmd == "onbuild" and node.child is not None:
        node = node.child
    return node.cmd in _HEREDOC_INSTRUCTIONS and not node.json


# -- per-instruction checks ----------------------------------------------------------------------


def _parse_flags(node: _Node) -> dict[str, list[str]]:
    spec = _FLAGS.get(node.cmd, {})
    if node.cmd == "healthcheck" and node.args and node.args[0].upper() == "NONE":
        spec = {}
    out: dict[str, list[str]] = {}
    for word in node.flag_words:
        if not word.startswith("--"):
            raise DockerfileError(f"arg should start with -- : {word}")
        name, has_value, value = word.partition("=")
        flag = name[2:]
        kind = spec.get(flag)
        if kind is None:
            raise DockerfileError(f"unknown flag: {name}")
        if flag in out and kind != _STRINGS:
            raise DockerfileError(f"duplicate flag specified: {name}")
        if kind == _BOOL:
            if has_value and value == "":
                raise DockerfileError(f"missing a value on flag: {name}")
            lowered = value.lower()
            if lowered in ("true", ""):
                value = "true"
            elif lowered == "false":
                value = "false"
            else:
                raise DockerfileError(f"expecting boolean value for flag {name}, not: {value}")
        elif not has_value:
            raise DockerfileError(f"missing a value on flag: {name}")
        out.setdefault(flag, []).append(value)
    return out


def _check_healthcheck(args: list[str], flags: dict[str, list[str]]) -> None:
    if not args:
        raise DockerfileError("HEALTHCHECK requires at least one argument")
    typ = args[0].upper()
    if typ == "NONE":
        if len(args) != 1:
            raise DockerfileError("HEALTHCHECK NONE takes no arguments")
        return
    if typ != "CMD":
        raise DockerfileError(f'Unknown type "{typ}" in HEALTHCHECK (try CMD)')
    if len(args) == 1:
        raise DockerfileError("Missing command after HEALTHCHECK CMD")
    for name in ("interval", "timeout", "start-period", "start-interval"):
        for value in flags.get(name, []):
            if value == "":
                continue
            try:
                ns = parse_go_duration(value)
            except ValueError as e:
                raise DockerfileError(f"HEALTHCHECK --{name}: {e}") from None
            if ns != 0 and ns < 1_000_000:
                raise DockerfileError(f'Interval "{name}" cannot be less than 1ms')
    for value in flags.get("retries", []):
        if value == "":
            continue
        try:
            retries = int(value, 10)
        except ValueError:
            raise DockerfileError(f'HEALTHCHECK --retries: invalid integer "{value}"') from None
        if retries < 0:
            raise DockerfileError(f"--retries cannot be negative ({retries})")
        if retries >= 2**31:
            raise DockerfileError(f'HEALTHCHECK --retries: value out of range "{value}"')


def _check_args(node: _Node, heredocs: list[Heredoc]) -> list[str]:
    """Validate the argument count and form of ``node``; returns its ``args`` as the plan says."""
    cmd, args = node.cmd, node.args
    upper = cmd.upper()
    if cmd == "from":
        if len(args) == 3 and args[1].lower() == "as":
            name = args[2].lower()
            if not _STAGE_NAME_RE.fullmatch(name):
                raise DockerfileError(
                    f'invalid name for build stage: "{args[2]}", '
                    "name can't start with a number or contain symbols"
                )
            return [args[0], name]
        if len(args) != 1:
            raise DockerfileError("FROM requires either one or three arguments")
        return list(args)
    if cmd in ("env", "label", "arg", "expose", "volume", "onbuild") and not args:
        if cmd != "onbuild" or node.child is None:
            raise DockerfileError(f"{upper} requires at least one argument")
    if cmd in ("env", "label", "arg"):
        if cmd == "arg":
            for word in args:
                if word.startswith("="):
                    raise DockerfileError("ARG names can not be blank")
        return list(args)
    if cmd in ("copy", "add"):
        if len(args) < 2:
            raise DockerfileError(
                f"{upper} requires at least two arguments, but only one was provided. "
                "Destination could not be determined"
            )
        if heredocs and _is_heredoc_word(args[-1]):
            raise DockerfileError(f"{upper} cannot accept a heredoc as a destination")
        return list(args)
    if cmd == "volume":
        for v in args:
            if v.strip(_SPACE) == "":
                raise DockerfileError("VOLUME specified can not be an empty string")
        return list(args)
    if cmd in ("maintainer", "stopsignal", "user", "workdir"):
        if len(args) != 1:
            raise DockerfileError(f"{upper} requires exactly one argument")
        return list(args)
    if cmd == "shell":
        if not args:
            raise DockerfileError("SHELL requires at least one argument")
        if not node.json:
            raise DockerfileError("SHELL requires the arguments to be in JSON form")
        return list(args)
    if cmd == "healthcheck":
        out = list(args)
        if out:
            out[0] = out[0].upper()
        return out
    return list(args)


def _finish(
    node: _Node, lineno: int, end_line: int, heredocs: list[Heredoc], raw_bodies: list[str], escape: str
) -> Instruction:
    """The per-instruction checks; errors carry ``lineno``."""
    try:
        flags = _parse_flags(node)
        args = _check_args(node, heredocs)
        if node.cmd == "healthcheck":
            _check_healthcheck(args, flags)
        if node.cmd == "onbuild":
            child = node.child
            if child is None:
                raise DockerfileError("ONBUILD requires at least one argument")
            trigger = child.cmd.upper()
            if trigger == "ONBUILD":
                raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            if trigger in ("MAINTAINER", "FROM"):
                raise DockerfileError(f"{trigger} isn't allowed as an ONBUILD trigger")
            expression = _ONBUILD_PREFIX_RE.sub("", node.line.strip(_SPACE), count=1)
            for doc, body in zip(heredocs, raw_bodies, strict=True):
                expression += "\n" + body + doc.name
            # validate the trigger as the child build will parse it
            parse_line(expression, lineno, escape)
            args = [expression]
            heredocs = []
    except DockerfileError as e:
        if e.line:
            raise
        raise DockerfileError(e.msg, lineno, e.kind) from None
    return Instruction(
        cmd=node.cmd,
        original=node.line.strip(_SPACE),
        line=lineno,
        flags=flags,
        args=args,
        json_form=node.json,
        heredocs=heredocs,
        end_line=end_line,
    )


# -- the parser ----------------------------------------------------------------------------------


def _parse_lines(lines: list[str], directives: _Directives, fixed_line: int) -> list[Instruction]:
    """Instructions of ``lines``.  ``fixed_line``: when not 0, the line every error and
    instruction is attributed to (an ONBUILD trigger re-parsed in a child build)."""
    out: list[Instruction] = []
    n = len(lines)
    i = 0

    def at(lineno: int) -> int:
        return fixed_line or lineno

    while i < n:
        raw = lines[i]
        i += 1
        token = _trim_newline(raw).lstrip(_SPACE)
        directives.check(token, at(i))
        if token.startswith("#"):
            token = ""
        start = i
        token, ended = _trim_continuation(token, directives.escape)
        if ended and token == "":
            continue
        buf = [token]
        empty_continuation = False
        while not ended and i < n:
            raw = lines[i]
            i += 1
            tok = _trim_newline(raw)
            if _is_comment(tok):
                continue
            if tok.lstrip(_SPACE) == "":
                empty_continuation = True
                continue
            tok, ended = _trim_continuation(tok, directives.escape)
            buf.append(tok)
        line = "".join(buf)
        if empty_continuation:
            directives.warnings.append(f"Empty continuation line found in: {line}")
        try:
            node = _node_from_line(line, directives.escape)
        except DockerfileError as e:
            raise DockerfileError(e.msg, e.line or at(start), e.kind) from None

        heredocs: list[Heredoc] = []
        bodies: list[str] = []
        if "<<" in line and _can_contain_heredoc(node):
            try:
                heredocs = _heredocs_in_line(line)
            except DockerfileError as e:
                raise DockerfileError(e.msg, at(start), e.kind) from None
            for doc in heredocs:
                body: list[str] = []
                terminated = False
                while i < n:
                    raw = lines[i]
                    i += 1
                    candidate = _trim_newline(raw)
                    if doc.chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == doc.name:
                        terminated = True
                        break
                    body.append(raw)
                if not terminated:
                    raise DockerfileError(f"unterminated heredoc {doc.name}", at(start), "parse")
                bodies.append("".join(body))
                if doc.chomp:
                    doc.content = "".join(b.lstrip("\t") for b in body)
                else:
                    doc.content = bodies[-1]
        out.append(_finish(node, at(start), at(i), heredocs, bodies, directives.escape))
    return out


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        raise DockerfileError(
            f"invalid UTF-8 at byte {e.start}: the Dockerfile must be UTF-8 text", lineno, "parse"
        ) from None


def parse(text: str | bytes, name: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile.  ``name`` is only used in the empty-file error."""
    if isinstance(text, bytes):
        text = _decode(text)
    if text == "":
        raise DockerfileError(f"the Dockerfile ({name}) cannot be empty", kind="plain")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _split_lines(text)
    directives = _Directives(True, "\\")
    instructions = _parse_lines(lines, directives, 0)
    if not instructions:
        raise DockerfileError("file with no instructions", len(lines), "parse")
    if directives.warnings and any(w.startswith("Empty continuation line") for w in directives.warnings):
        directives.warnings.append("Empty continuation lines will become errors in a future release.")

    meta_args: list[Instruction] = []
    stages: list[Stage] = []
    for ins in instructions:
        if ins.cmd == "from":
            stages.append(
                Stage(
                    name=ins.args[1] if len(ins.args) > 1 else "",
                    index=len(stages),
                    base=ins.args[0],
                    platform=ins.flags.get("platform", [""])[-1],
                    from_instr=ins,
                )
            )
        elif stages:
            stages[-1].instructions.append(ins)
        elif ins.cmd == "arg":
            meta_args.append(ins)
        else:
            raise DockerfileError(
                f"no build stage in current context: {ins.cmd.upper()} before the first FROM "
                "(only ARG may come before FROM)",
                ins.line,
                "plain",
            )
    if not stages:
        raise DockerfileError(
            "no build stage in the Dockerfile: it has no FROM instruction",
            meta_args[-1].line,
            "plain",
        )
    return Dockerfile(
        escape=directives.escape,
        warnings=directives.warnings,
        instructions=instructions,
        meta_args=meta_args,
        stages=stages,
    )


def parse_line(text: str, line: int = 0, escape: str = "\\") -> Instruction:
    """Parse one instruction (an ONBUILD trigger: "RUN echo hi", possibly followed by heredoc
    bodies).  Errors and the instruction carry ``line``.  No parser directives are recognised."""
    if escape not in ("\\", "`"):
        raise ValueError(f"invalid escape token {escape!r}")
    directives = _Directives(False, escape)
    instructions = _parse_lines(_split_lines(text), directives, line)
    if len(instructions) != 1:
        # dockerd's words for a trigger that is not one instruction
        raise DockerfileError(
            f"onbuild trigger should be a single expression, found {len(instructions)} in {text.strip()!r}",
            line,
        )
    return instructions[0]
