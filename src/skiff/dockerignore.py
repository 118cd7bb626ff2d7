""".dockerignore files: reading them and matching context paths, as Docker does.

Reading (``parse``): a line starting with ``#`` is a comment; the others are stripped of
surrounding whitespace, blank ones dropped, cleaned like Go's ``filepath.Clean`` and a leading
``/`` removed, so ``/a/./b/`` and ``a/b`` are the same pattern; ``!`` (exception) is kept as the
prefix.

Matching (``Matcher``, moby's patternmatcher ``MatchesOrParentMatches``): patterns are applied in
order and the last one that matches decides; a ``!`` pattern re-includes.  A pattern matches a path
when it matches the path itself or one of its parent directories, so excluding ``dir`` excludes
everything under it.  Pattern syntax is Go's ``filepath.Match`` (``*`` and ``?`` do not cross
``/``, ``[a-z]`` / ``[^a-z]`` classes, ``\\`` escapes the next character) plus ``**``, any number
of directories including none; a pattern starting with ``**`` matches any path that ends with the
rest (``**/foo`` matches ``foo`` and ``a/b/foo``); one ending in ``**`` any path that starts with
what comes before.

Imported by the CLI: keep this module cheap (no dataclasses, typing or re at import time).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from re import Pattern as _RegexPattern

# Go's unicode.IsSpace over the characters that matter (strings.TrimSpace)
_SPACE = " \t\n\v\f\r\x85\xa0"

_EXACT, _PREFIX, _SUFFIX, _REGEX = 0, 1, 2, 3


class PatternError(ValueError):
    """A .dockerignore pattern that is not valid ``filepath.Match`` syntax."""


def _strip(s: str) -> str:
    s = s.strip(_SPACE)
    # non-ASCII Unicode spaces, rare: only pay for them when present
    while s and ord(s[0]) > 0x7F and s[0].isspace():
        s = s[1:]
    while s and ord(s[-1]) > 0x7F and s[-1].isspace():
        s = s[:-1]
    return s


def clean(path: str) -> str:
    """Go's ``path.Clean``: the shortest equivalent path ("" -> ".", "a//b/../c/" -> "a/c")."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    joined = "/".join(out)
    if rooted:
        return "/" + joined
    return joined or "."


def parse(text: str) -> list[str]:
    """The patterns of a .dockerignore file, in order (Docker's ignorefile.ReadAll)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    patterns: list[str] = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if line.startswith("#"):
            continue
        pattern = _strip(line)
        if pattern == "":
            continue
        invert = pattern[0] == "!"
        if invert:
            pattern = _strip(pattern[1:])
        if pattern:
            pattern = clean(pattern)
            if len(pattern) > 1 and pattern[0] == "/":
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


def _class_end(p: str, i: int) -> int:
    """``p[i]`` is "[": the index just past the matching "]", checked as ``filepath.Match`` does.
    Raises PatternError on a malformed class."""
    n = len(p)
    i += 1
    if i < n and p[i] == "^":
        i += 1
    ranges = 0
    while True:
        if i < n and p[i] == "]" and ranges > 0:
            return i + 1
        i = _class_char(p, i)  # low end
        if i < n and p[i] == "-":
            i = _class_char(p, i + 1)  # high end
        ranges += 1


def _class_char(p: str, i: int) -> int:
    n = len(p)
    if i >= n or p[i] in "-]":
        raise PatternError(f"syntax error in pattern {p!r}: bad character class")
    if p[i] == "\\":
        i += 1
        if i >= n:
            raise PatternError(f"syntax error in pattern {p!r}: bad character class")
    return i + 1


def _check_syntax(p: str) -> None:
    i, n = 0, len(p)
    while i < n:
        ch = p[i]
        if ch == "\\":
            if i + 1 >= n:
                raise PatternError(f"syntax error in pattern {p!r}: trailing backslash")
            i += 2
        elif ch == "[":
            i = _class_end(p, i)
        else:
            i += 1


def _class_regex(body: str, escape: Callable[[str], str]) -> str:
    """A Python regex class for the inside of a ``[...]`` (already syntax-checked)."""
    out = ["["]
    i = 0
    if body.startswith("^"):
        out.append("^")
        i = 1
    n = len(body)
    while i < n:
        ch = body[i]
        if ch == "\\":
            i += 1
            out.append(escape(body[i]))
        elif ch == "-":
            out.append("-")
        else:
            out.append(escape(ch))
        i += 1
    out.append("]")
    return "".join(out)


class _Pattern:
    __slots__ = ("text", "exclusion", "kind", "regex")

    def __init__(self, text: str, exclusion: bool) -> None:
        self.text = text
        self.exclusion = exclusion
        self.regex: _RegexPattern[str] | None = None
        self.kind = _EXACT
        self._compile()

    def _compile(self) -> None:
        p = self.text
        n = len(p)
        kind = _EXACT
        # ("re", fragment), ("lit", character) or ("class", inside of [...])
        parts: list[tuple[str, str]] = []
        i = 0
        while i < n:
            first = i == 0
            ch = p[i]
            i += 1
            if ch == "*":
                if i < n and p[i] == "*":
                    i += 1
                    if i < n and p[i] == "/":
                        i += 1
                    if i >= n:
                        if kind == _EXACT:
                            kind = _PREFIX
                        else:
                            parts.append(("re", ".*"))
                            kind = _REGEX
                    else:
                        parts.append(("re", "(?:.*/)?"))
                        kind = _REGEX
                    if first:
                        kind = _SUFFIX
                else:
                    parts.append(("re", "[^/]*"))
                    kind = _REGEX
            elif ch == "?":
                parts.append(("re", "[^/]"))
                kind = _REGEX
            elif ch == "\\":
                parts.append(("lit", p[i]))
                i += 1
                kind = _REGEX
            elif ch == "[":
                end = _class_end(p, i - 1)
                parts.append(("class", p[i : end - 1]))
                i = end
                kind = _REGEX
            elif ch == "^":
                # not escaped by Docker either: in a regex pattern it is an anchor
                parts.append(("re", "^"))
            else:
                parts.append(("lit", ch))
                if ch == "]":
                    kind = _REGEX
        self.kind = kind
        if kind != _REGEX:
            return
        import re

        regex: list[str] = []
        for what, text in parts:
            if what == "re":
                regex.append(text)
            elif what == "class":
                regex.append(_class_regex(text, re.escape))
            else:
                regex.append(re.escape(text))
        try:
            self.regex = re.compile("".join(regex))
        except re.error as e:
            raise PatternError(f"syntax error in pattern {p!r}: {e}") from None

    def match(self, path: str) -> bool:
        kind = self.kind
        if kind == _EXACT:
            return path == self.text
        if kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if kind == _SUFFIX:
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix[:1] == "/" and path == suffix[1:]
        assert self.regex is not None
        return self.regex.fullmatch(path) is not None


class Matcher:
    """Decides which context paths a list of .dockerignore patterns excludes."""

    __slots__ = ("_patterns", "_has_exceptions")

    def __init__(self, patterns: list[str]) -> None:
        self._patterns: list[_Pattern] = []
        self._has_exceptions = False
        for raw in patterns:
            p = _strip(raw)
            if p == "":
                continue
            p = clean(p)
            exclusion = p[0] == "!"
            if exclusion:
                if len(p) == 1:
                    raise PatternError('illegal exclusion pattern: "!"')
                p = p[1:]
                self._has_exceptions = True
            _check_syntax(p)
            self._patterns.append(_Pattern(p, exclusion))

    @property
    def has_exceptions(self) -> bool:
        """Some pattern starts with "!": a walker must look inside excluded directories."""
        return self._has_exceptions

    @property
    def patterns(self) -> list[str]:
        """The patterns in use, cleaned, with their "!" prefix."""
        return [("!" if p.exclusion else "") + p.text for p in self._patterns]

    def excluded(self, path: str) -> bool:
        """Whether ``path`` (relative to the context, "/"-separated) is excluded.  The context
        root itself (".", "") is never excluded."""
        path = clean(path)
        if path == "." or path == "/":
            return False
        path = path.lstrip("/")
        parents: list[str] | None = None
        matched = False
        for pattern in self._patterns:
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit:
                if parents is None:
                    parents = []
                    pos = path.find("/")
                    while pos != -1:
                        parents.append(path[:pos])
                        pos = path.find("/", pos + 1)
                for parent in parents:
                    if pattern.match(parent):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched

    def may_reinclude_under(self, directory: str) -> bool:
        """Whether a walker must enter the excluded ``directory``: Docker's context tar does only
        when a "!" pattern starts with ``directory + "/"`` (and skips it otherwise)."""
        if not self._has_exceptions:
            return False
        prefix = clean(directory).lstrip("/") + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self._patterns)
