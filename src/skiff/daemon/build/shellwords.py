"""Variable expansion and word splitting as the Dockerfile builder does it.

The rules are those of moby's Dockerfile shell lexer (ProcessWord / ProcessWords), used for the
instructions that Docker expands (ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER VOLUME WORKDIR ARG
and some flags):

- ``$NAME`` and ``${NAME}``; ``${NAME:-word}`` / ``${NAME-word}`` (default when unset, or also
  when empty with ``:``), ``${NAME:+word}`` / ``${NAME+word}`` (alternative), ``${NAME:?msg}`` /
  ``${NAME?msg}`` (error).  The word of a modifier is itself expanded.  Unset names expand to "".
- ``'...'`` is literal, ``"..."`` expands ``$``; inside double quotes the escape character only
  escapes ``"``, ``$`` and itself.  Outside quotes the escape character makes the next character
  literal.  The escape character is ``\\`` or `````, set by the ``escape`` parser directive.
- ``$`` not followed by a name, a digit, a special parameter or ``{`` stays a literal ``$``.
- ProcessWords splits the *expanded* text on whitespace that was not quoted: the value of an
  unquoted ``$VAR`` is split, the value of ``"$VAR"`` is not.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

_EOF = ""
# Go's unicode.IsSpace for the ASCII range (Python's str.isspace also accepts \x1c-\x1f)
_ASCII_SPACE = frozenset("\t\n\v\f\r \x85\xa0")
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_HEREDOC_SPACE = frozenset("\t\r ")


def _is_space(ch: str) -> bool:
    if ch in _ASCII_SPACE:
        return True
    return ord(ch) > 0xA0 and ch.isspace()


class ShellError(Exception):
    """A word could not be expanded: bad ``${...}`` syntax, an unterminated quote, ``${X:?msg}``.

    ``reason`` is the bare cause; ``str()`` names the word as well.
    """

    def __init__(self, word: str, reason: str) -> None:
        self.word = word
        self.reason = reason
        quoted = word.replace("\\", "\\\\").replace('"', '\\"')
        super().__init__(f'failed to process "{quoted}": {reason}')


class _Fail(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Words:
    """Collects the words of ProcessWords: characters from an expansion are split on whitespace,
    characters from quotes or escapes are not."""

    __slots__ = ("buf", "words", "in_word")

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if _is_space(ch):
            if self.in_word and self.buf:
                self.words.append("".join(self.buf))
                self.buf.clear()
                self.in_word = False
        else:
            self.buf.append(ch)
            self.in_word = True

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw_string(self, s: str) -> None:
        if s:
            self.buf.append(s)
        self.in_word = True

    def finish(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
            self.buf.clear()
            self.in_word = False
        return self.words


class ShellLex:
    """The Dockerfile word lexer.  Not thread-safe: ``used()`` reports on the last call.

    The options mirror the lexer's knobs the parser needs (heredoc detection):
    ``raw_quotes`` keeps quote characters in the result, ``raw_escapes`` keeps escape characters,
    ``skip_process_quotes`` treats quotes as ordinary characters, ``skip_unset_env`` leaves
    references to unset names as written instead of expanding them to "".
    """

    def __init__(
        self,
        escape: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_process_quotes: bool = False,
        skip_unset_env: bool = False,
    ) -> None:
        if escape not in ("\\", "`"):
            raise ValueError(f"invalid escape token {escape!r}: must be '\\' or '`'")
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset_env = skip_unset_env
        self._used: set[str] = set()
        self._matched: set[str] = set()
        # scanner state of the current call
        self._src = ""
        self._pos = 0
        self._env: Mapping[str, str] = {}

    # -- public API --------------------------------------------------------------------------

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand ``word`` (quotes removed, escapes applied); whitespace is kept as is."""
        result, _ = self._run(word, env)
        return result

    def process_words(self, text: str, env: Mapping[str, str]) -> list[str]:
        """Expand ``text`` and split it into words on whitespace that was not quoted or escaped."""
        _, words = self._run(text, env)
        return words

    def used(self) -> set[str]:
        """Names the last call looked up (set or not)."""
        return set(self._used)

    def matched(self) -> set[str]:
        """Names the last call looked up that were set in ``env``."""
        return set(self._matched)

    # -- scanner -----------------------------------------------------------------------------

    def _run(self, src: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
        self._src = src
        self._pos = 0
        self._env = env
        self._used = set()
        self._matched = set()
        try:
            return self._process_until(_EOF, self.raw_escapes)
        except _Fail as e:
            raise ShellError(src, e.reason) from None
        except RecursionError:
            raise ShellError(src, "substitutions nested too deeply") from None

    def _peek(self) -> str:
        return self._src[self._pos] if self._pos < len(self._src) else _EOF

    def _next(self) -> str:
        if self._pos < len(self._src):
            ch = self._src[self._pos]
            self._pos += 1
            return ch
        return _EOF

    def _process_until(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Scan up to ``stop`` (consumed) or the end of input when ``stop`` is ``_EOF``."""
        result: list[str] = []
        words = _Words()
        quotes = not self.skip_process_quotes
        while True:
            ch = self._peek()
            if ch == _EOF:
                break
            if stop != _EOF and ch == stop:
                self._next()
                return "".join(result), words.finish()
            if ch == "$":
                tmp = self._dollar()
                result.append(tmp)
                words.add_string(tmp)
            elif ch == "<":
                tmp = self._possible_heredoc()
                result.append(tmp)
                words.add_raw_string(tmp)
            elif quotes and ch == "'":
                tmp = self._single_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
            elif quotes and ch == '"':
                tmp = self._double_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
            else:
                ch = self._next()
                if ch == self.escape:
                    if raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    ch = self._next()
                    if ch == _EOF:
                        # an escape at the very end is dropped
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop != _EOF:
            raise _Fail(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.finish()

    def _single_quote(self) -> str:
        out: list[str] = []
        ch = self._next()  # the opening quote
        if self.raw_quotes:
            out.append(ch)
        while True:
            ch = self._next()
            if ch == _EOF:
                raise _Fail("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def _double_quote(self) -> str:
        out: list[str] = []
        ch = self._next()  # the opening quote
        if self.raw_quotes:
            out.append(ch)
        while True:
            ch = self._peek()
            if ch == _EOF:
                raise _Fail("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self._next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            ch = self._next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                nxt = self._peek()
                if nxt == _EOF:
                    continue  # reported as an unterminated quote on the next round
                if nxt in ('"', "$", self.escape):
                    ch = self._next()
            out.append(ch)

    def _possible_heredoc(self) -> str:
        self._next()
        if self._peek() != "<":
            return "<"
        self._next()
        space: list[str] = []
        while self._peek() in _HEREDOC_SPACE and self._peek() != _EOF:
            space.append(self._next())
        return "<<" + "".join(space)

    def _name(self) -> str:
        """A variable name: letters, digits, ``_``; or a run of digits; or one special parameter."""
        name: list[str] = []
        while True:
            ch = self._peek()
            if ch == _EOF:
                break
            if not name and ch.isdecimal():
                while self._peek() != _EOF and self._peek().isdecimal():
                    name.append(self._next())
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                return self._next()
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            name.append(self._next())
        return "".join(name)

    def _lookup(self, name: str) -> tuple[str, bool]:
        self._used.add(name)
        env = self._env
        if name in env:
            self._matched.add(name)
            return env[name], True
        return "", False

    def _dollar(self) -> str:
        self._next()  # "$"
        if self._peek() != "{":
            name = self._name()
            if not name:
                return "$"
            value, found = self._lookup(name)
            if not found and self.skip_unset_env:
                return "$" + name
            return value

        self._next()  # "{"
        ch = self._peek()
        if ch == _EOF:
            raise _Fail("syntax error: missing '}'")
        if ch in "{}:":
            raise _Fail("syntax error: bad substitution")
        name = self._name()
        ch = self._next()
        if ch == "}":
            value, found = self._lookup(name)
            if not found and self.skip_unset_env:
                return "${" + name + "}"
            return value
        if ch == _EOF:
            raise _Fail("syntax error: missing '}'")
        if not name:
            raise _Fail("syntax error: bad substitution")
        modifier = ch
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self._next()
            if ch == _EOF:
                raise _Fail("syntax error: missing '}'")
            modifier += ch
        if ch not in "-+?":
            raise _Fail(f"unsupported modifier ({modifier}) in substitution")
        try:
            word, _ = self._process_until("}", False)
        except _Fail:
            if self._peek() == _EOF:
                raise _Fail("syntax error: missing '}'") from None
            raise
        value, found = self._lookup(name)
        if not found and self.skip_unset_env:
            return "${" + name + modifier + word + "}"
        unset = not found or (null_is_unset and value == "")
        if ch == "-":
            return word if unset else value
        if ch == "+":
            return "" if unset else word
        # "?"
        if not found:
            raise _Fail(f"{name}: {word or 'is not allowed to be unset'}")
        if unset:
            raise _Fail(f"{name}: {word or 'is not allowed to be empty'}")
        return value
