"""The Dockerfile word lexer (skiff.daemon.build.shellwords) against Docker's documented rules.

Docker's "Environment replacement" rules: ``$v``/``${v}``, ``${v:-w}``, ``${v:+w}`` (and the
``-``/``+``/``?`` forms without the colon), the word of a modifier expanded in turn, quotes and
escapes processed as the shell does, ``\\$`` keeping a literal dollar, the escape character set by
the ``escape`` directive.  ProcessWords splits after expansion on whitespace that was not quoted.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skiff.daemon.build.shellwords import ShellError, ShellLex

ENV = {
    "PWD": "/home",
    "SHELL": "bash",
    "NULL": "",
    "space": "abc  def",
    "leading": "  ab c",
    "trailing": "ab c   ",
    "KOREAN": "한국어",
    "abc": "hello",
}

# (word, expected) with ENV and the default escape "\"; ERR = ShellError.
# Every case without whitespace here and in BACKTICK_CASES was checked against a real dockerd 20.10
# (ENV r=<word> in a FROM scratch build, DOCKER_BUILDKIT=0): same value, or an error with the same
# message, except ${X-w} / ${X+w} (no colon), which dockerd 20.10 refuses ("missing ':' in
# substitution") and BuildKit's Dockerfile frontend supports, as skiff does.
ERR = ShellError
WORD_CASES = [
    # plain text, quotes
    ("hello", "hello"),
    ("he'll'o", "hello"),
    ('"hel\'lo"', "hel'lo"),
    ("'\"hello\"'", '"hello"'),
    ("\"''\"", "''"),
    ("he'llo", ERR),
    ('"hello', ERR),
    ('"hello\\"', ERR),
    ("'hello", ERR),
    # escapes outside quotes: the next character is literal
    ("he\\'llo", "he'llo"),
    ("abc\\tdef", "abctdef"),
    ("hello\\", "hello"),
    ("hello\\\\", "hello\\"),
    ("he\\\\'llo", ERR),
    # inside double quotes only \" \\ \$ are escapes
    ('"abc\\tdef"', "abc\\tdef"),
    ('"abc\\\\tdef"', "abc\\tdef"),
    ('"a\\"b"', 'a"b'),
    ('"he\\$PWD"', "he$PWD"),
    ('"he\\\\$PWD"', "he\\/home"),
    # single quotes: all literal, no escapes
    ("'abc\\tdef'", "abc\\tdef"),
    ("'hello\\'", "hello\\"),
    ("'he${XX}'", "he${XX}"),
    ("'$PWD'", "$PWD"),
    ("'\\$PWD'", "\\$PWD"),
    # $name
    ("$PWD", "/home"),
    ("he$PWD", "he/home"),
    ("he$PWD.x", "he/home.x"),
    ("he$pwd.", "he."),  # names are case-sensitive; unset -> ""
    ("he$1x", "hex"),  # positional parameters are never set
    ("$.", "$."),  # "$" before a non-name character stays
    ("he$.x", "he$.x"),
    ("a$", "a$"),
    ("$ b", "$ b"),
    ("he\\$PWD", "he$PWD"),
    ("he\\\\$PWD", "he\\/home"),
    ('"$PWD"', "/home"),
    ("\"he'$PWD'\"", "he'/home'"),
    ("$KOREAN", "한국어"),
    ("안녕$KOREAN", "안녕한국어"),
    # ${name}
    ("he${PWD}", "he/home"),
    ("he${hi}xx", "hexx"),
    ("${abc}}", "hello}"),
    ("\\${}", "${}"),
    ("he\\${}xx", "he${}xx"),
    ("${}", ERR),
    ("he${}xx", ERR),
    ("he${.}", ERR),
    ("${{aaa}", ERR),
    ("${aaa", ERR),
    ("he${PWD", ERR),
    ("${:}", ERR),
    ("${:-bbb}", ERR),
    # ${name:-word} / ${name-word}
    ("he${XXX:-000}xx", "he000xx"),
    ("he${PWD:-000}xx", "he/homexx"),
    ("he${NULL:-000}xx", "he000xx"),
    ("he${NULL-000}xx", "hexx"),
    ("he${XXX-000}xx", "he000xx"),
    ("he${XXX:-$PWD}xx", "he/homexx"),
    ("he${XXX:-${PWD:-yyy}}xx", "he/homexx"),
    ("he${XXX:-${YYY:-yyy}}xx", "heyyyxx"),
    ("he${XXX:-\\$PWD:}xx", "he$PWD:xx"),
    ("he${XXX:-\\${PWD}z}xx", "he${PWDz}xx"),
    ("${aaa:-bbb}}", "bbb}"),
    ("${aaa:-bbb {foo}", "bbb {foo"),
    ("${aaa:-'x y'}", "x y"),
    ("${aaa:-bbb", ERR),
    ("${aaa:-bbb ${foo}", ERR),
    ("${1:-bbb}", "bbb"),
    # ${name:+word} / ${name+word}
    ("he${XXX:+000}xx", "hexx"),
    ("he${PWD:+000}xx", "he000xx"),
    ("he${NULL:+000}xx", "hexx"),
    ("he${NULL+000}xx", "he000xx"),
    ("he${XXX+000}xx", "hexx"),
    ("he${XXX:+${PWD}}xx", "hexx"),
    ("he${PWD:+${SHELL}}xx", "hebashxx"),
    ("he${PWD:+${PWD}:}xx", "he/home:xx"),
    # ${name:?msg} / ${name?msg}
    ("he${PWD?}", "he/home"),
    ("he${PWD:?}", "he/home"),
    ("he${NULL?}", "he"),
    ("he${NULL:?}", ERR),
    ("he${XXX?}", ERR),
    ("he${XXX:?}", ERR),
    # modifiers Docker's classic builder does not have
    ("he${XXX:YYY}", ERR),
    ("he${PWD:=000}xx", ERR),
    ("${PWD#/}", ERR),
    ("${PWD%e}", ERR),
]


@pytest.mark.parametrize(("word", "expected"), WORD_CASES)
def test_process_word(word: str, expected: str | type[ShellError]) -> None:
    lex = ShellLex()
    if expected is ERR:
        with pytest.raises(ShellError) as info:
            lex.process_word(word, ENV)
        assert info.value.word == word
        assert str(info.value).startswith("failed to process ")
    else:
        assert lex.process_word(word, ENV) == expected


# (text, expected words)
WORDS_CASES = [
    ("hello", ["hello"]),
    ("hello there     ", ["hello", "there"]),
    ("  a \t b  ", ["a", "b"]),
    ("hello${hi}bye", ["hellobye"]),
    ("hello${abc}bye", ["hellohellobye"]),
    # an unquoted expansion is split, a quoted one is not
    ("hello${space}bye", ["helloabc", "defbye"]),
    ('hello"${space}"bye', ["helloabc  defbye"]),
    ('hello "${space}"bye', ["hello", "abc  defbye"]),
    ("hello${leading}def", ["hello", "ab", "cdef"]),
    ('hello"${leading}" def', ["hello  ab c", "def"]),
    ("hello${trailing}", ["helloab", "c"]),
    ("hello${trailing}d", ["helloab", "c", "d"]),
    ('hello"${trailing}"d', ["helloab c   d"]),
    ('hello" there  "', ["hello there  "]),
    ("hello\\ there", ["hello there"]),
    ('hello\\" there', ['hello"', "there"]),
    ('hello"\\\\there"', ["hello\\there"]),
    ("hello'\\\\there'", ["hello\\\\there"]),
    ("hello'$there'", ["hello$there"]),
    ("${space:-x}", ["abc", "def"]),
    ('"${space:-x}"', ["abc  def"]),
    ("${XXX:-a b}", ["a", "b"]),
    ("$NULL", []),
    ("", []),
    ('""', []),  # as moby: an empty quoted string yields no word
    ("a '' b", ["a", "b"]),
    ("8080/tcp 53/udp", ["8080/tcp", "53/udp"]),
    # heredoc operators keep the space after them in the same word
    ("cat << EOF", ["cat", "<< EOF"]),
    ("a < b", ["a", "<", "b"]),
]


@pytest.mark.parametrize(("text", "expected"), WORDS_CASES)
def test_process_words(text: str, expected: list[str]) -> None:
    assert ShellLex().process_words(text, ENV) == expected


def test_process_words_errors_name_the_text() -> None:
    with pytest.raises(ShellError) as info:
        ShellLex().process_words("a 'b", ENV)
    assert info.value.reason == "unexpected end of statement while looking for matching single-quote"
    assert str(info.value) == 'failed to process "a \'b": ' + info.value.reason


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${NAME:?needs a name}", "NAME: needs a name"),
        ("${NAME?must be set}", "NAME: must be set"),
        ("${NAME:?}", "NAME: is not allowed to be unset"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${EMPTY:?$HOW}", "EMPTY: expanded message"),
        ("${aaa:-bbb", "syntax error: missing '}'"),
        ("${}", "syntax error: bad substitution"),
        ("${x:=y}", "unsupported modifier (:=) in substitution"),
    ],
)
def test_error_messages(word: str, message: str) -> None:
    with pytest.raises(ShellError) as info:
        ShellLex().process_word(word, {"EMPTY": "", "HOW": "expanded message"})
    assert info.value.reason == message


# The escape directive set to backtick: ` escapes, \ is an ordinary character (Windows paths).
BACKTICK_CASES = [
    ("C:\\path", "C:\\path"),
    ("a`$PWD", "a$PWD"),
    ("a``b", "a`b"),
    ("a` b", "a b"),
    ('"x`"y"', 'x"y'),
    ('"x`$PWD"', "x$PWD"),
    ('"x\\$PWD"', "x\\/home"),
    ("c:\\$PWD", "c:\\/home"),
    ("trailing`", "trailing"),
]


@pytest.mark.parametrize(("word", "expected"), BACKTICK_CASES)
def test_backtick_escape(word: str, expected: str) -> None:
    assert ShellLex("`").process_word(word, ENV) == expected


def test_bad_escape_token_refused() -> None:
    with pytest.raises(ValueError, match="escape token"):
        ShellLex("/")


def test_documented_env_example() -> None:
    """The Dockerfile reference: ENV abc=hello; ENV abc=bye def=$abc; ENV ghi=$abc gives
    def=hello (the line is expanded before any of its assignments) and ghi=bye."""
    lex = ShellLex()
    env = {"abc": "hello"}
    line = {"abc": lex.process_word("bye", env), "def": lex.process_word("$abc", env)}
    env.update(line)
    assert env == {"abc": "bye", "def": "hello"}
    assert lex.process_word("$abc", env) == "bye"


def test_used_reports_names_looked_up() -> None:
    lex = ShellLex()
    lex.process_word("$PWD ${XXX:-$SHELL} ${NULL:+${abc}} '$quoted' \\$escaped", ENV)
    # ${NULL:+...}: the word is expanded (and its names looked up) whatever NULL holds
    assert lex.used() == {"PWD", "XXX", "SHELL", "NULL", "abc"}
    assert lex.matched() == {"PWD", "SHELL", "NULL", "abc"}
    lex.process_words("no variables", ENV)
    assert lex.used() == set()


def test_raw_options_used_for_heredoc_detection() -> None:
    raw = ShellLex(raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    assert raw.process_words("RUN cat <<'EOF' \\$x $y ${z:-w}", {}) == [
        "RUN",
        "cat",
        "<<'EOF'",
        "\\$x",
        "$y",
        "${z:-w}",
    ]
    assert ShellLex(skip_process_quotes=True).process_word("'$abc' \"x\"", ENV) == "'hello' \"x\""


# --- properties ----------------------------------------------------------------------------------

PLAIN = st.text(
    alphabet=st.characters(blacklist_characters="$'\"\\<`", blacklist_categories=("Cs",)),
    max_size=40,
)
NAMES = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=8)


@settings(max_examples=300)
@given(PLAIN)
def test_text_without_specials_is_unchanged(text: str) -> None:
    assert ShellLex().process_word(text, ENV) == text
    assert ShellLex("`").process_word(text, ENV) == text


@settings(max_examples=300)
@given(st.lists(st.text(alphabet=string.ascii_letters + string.digits + "/._-:", min_size=1), max_size=6))
def test_words_without_specials_split_on_spaces(words: list[str]) -> None:
    assert ShellLex().process_words("  ".join(words), ENV) == words


@settings(max_examples=200)
@given(PLAIN)
def test_single_quoting_is_literal(text: str) -> None:
    text = text.replace("'", "")
    with_specials = text + '$PWD ${x:-y} \\ " `'
    assert ShellLex().process_word("'" + with_specials + "'", ENV) == with_specials


@settings(max_examples=200)
@given(NAMES, PLAIN)
def test_quoted_variable_is_one_word(name: str, value: str) -> None:
    words = ShellLex().process_words(f'"${{{name}}}"', {name: value})
    assert words == ([value] if value else [])


@settings(max_examples=200)
@given(NAMES, st.text(alphabet=string.ascii_letters + " \t\n/.", max_size=30))
def test_unquoted_variable_is_split_on_whitespace(name: str, value: str) -> None:
    assert ShellLex().process_words(f"${name}", {name: value}) == value.split()


@settings(max_examples=200)
@given(NAMES, st.one_of(st.none(), PLAIN), PLAIN.map(lambda s: s.replace("}", "")))
def test_default_and_alternative_modifiers(name: str, value: str | None, word: str) -> None:
    env = {} if value is None else {name: value}
    lex = ShellLex()
    is_set = value is not None
    non_empty = bool(value)
    assert lex.process_word(f"${{{name}:-{word}}}", env) == (value if non_empty else word)
    assert lex.process_word(f"${{{name}-{word}}}", env) == (value if is_set else word)
    assert lex.process_word(f"${{{name}:+{word}}}", env) == (word if non_empty else "")
    assert lex.process_word(f"${{{name}+{word}}}", env) == (word if is_set else "")
    assert lex.used() == {name}


@settings(max_examples=500)
@given(
    st.lists(
        st.sampled_from(["$", "{", "}", ":", "-", "+", "?", "'", '"', "\\", "`", " ", "a", "PWD", "<", "é"]),
        max_size=25,
    ).map("".join)
)
def test_any_text_expands_or_raises_shell_error(text: str) -> None:
    for escape in ("\\", "`"):
        try:
            ShellLex(escape).process_word(text, ENV)
            ShellLex(escape).process_words(text, ENV)
        except ShellError as e:
            assert e.reason


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    word = "${a:-" * 3000 + "x" + "}" * 3000
    with pytest.raises(ShellError, match="nested too deeply"):
        ShellLex().process_word(word, {})
    assert ShellLex().process_word("${a:-" * 50 + "x" + "}" * 50, {}) == "x"
