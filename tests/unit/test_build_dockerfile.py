"""Dockerfile parsing (skiff.daemon.build.dockerfile) against Docker's documented behaviour.

Cases follow the Dockerfile reference (parser directives, escape character, comments and line
continuations, shell and exec forms, ENV/LABEL/ARG forms, heredocs, ONBUILD restrictions) and the
classic builder's parser (empty continuation lines, JSON fallback, flags).
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skiff.daemon.build.dockerfile import (
    Dockerfile,
    DockerfileError,
    Heredoc,
    Instruction,
    parse,
    parse_go_duration,
    parse_line,
)


def body(df: Dockerfile) -> list[tuple[str, list[str]]]:
    """(cmd, args) of every instruction after the first FROM."""
    return [(i.cmd, i.args) for i in df.instructions if i.line > df.stages[0].from_instr.line]


def one(text: str) -> Instruction:
    """The single instruction after "FROM scratch"."""
    df = parse("FROM scratch\n" + text)
    assert len(df.instructions) == 2, df.instructions
    return df.instructions[1]


# --- comments, continuations ----------------------------------------------------------------------

CONTINUATION_CASES = [
    # (text after "FROM x\n", expected args of the single RUN)
    ("RUN echo hello\\\n  world", "echo hello  world"),
    # continuation lines keep their leading whitespace; the line before keeps its trailing space
    ("RUN echo hello  \\\n  world", "echo hello    world"),
    ("RUN echo hello \\\ngoodbye\\\nfrog", "echo hello goodbyefrog"),
    # blanks after the escape character still make it a continuation
    ("RUN echo hello  \\  \nworld", "echo hello  world"),
    ("RUN echo hello  \\\t\nworld", "echo hello  world"),
    # a line holding only the escape character continues with nothing
    ("RUN echo hi \\\n \\\n world \\\n\\\n good\\\n\\\nnight", "echo hi   world  goodnight"),
    # comments inside a continuation run are dropped, blank lines too
    (
        "RUN echo hello \\\n# a comment\n\n   # indented comment\n\nmore stuff",
        "echo hello more stuff",
    ),
    # continuation at the end of the file
    ("RUN something \\", "something"),
    ("RUN something \\\n", "something"),
    # an escaped escape character at the end is not a continuation (moby's rule)
    ("RUN echo a\\\\\nRUN echo b", "echo a\\\\"),
    # CRLF line endings
    ("RUN echo a \\\r\n  b\r\n", "echo a   b"),
]


@pytest.mark.parametrize(("text", "expected"), CONTINUATION_CASES)
def test_continuations(text: str, expected: str) -> None:
    df = parse("FROM x\n" + text)
    assert df.instructions[1].cmd == "run"
    assert df.instructions[1].args == [expected]


def test_continuation_lines_and_original() -> None:
    df = parse("FROM x\nRUN apt-get update && \\\n    apt-get install -y curl\nUSER nobody\n")
    run = df.instructions[1]
    assert run.line == 2 and run.end_line == 3
    assert run.original == "RUN apt-get update &&     apt-get install -y curl"
    assert df.instructions[2].line == 4


def test_empty_continuation_line_is_a_warning() -> None:
    df = parse("FROM x\nRUN foo \\\n\nbar \\\n\nbaz\n")
    assert body(df) == [("run", ["foo bar baz"])]
    assert df.warnings == [
        "Empty continuation line found in: RUN foo bar baz",
        "Empty continuation lines will become errors in a future release.",
    ]


def test_comments_and_blank_lines() -> None:
    df = parse("# first\n\n  # indented\nFROM x\n# RUN not this\nRUN echo # not a comment\n")
    assert [(i.cmd, i.args) for i in df.instructions] == [
        ("from", ["x"]),
        ("run", ["echo # not a comment"]),
    ]
    assert df.instructions[0].line == 4
    assert df.instructions[1].line == 6


def test_instruction_names_are_case_insensitive() -> None:
    df = parse("from x AS Base\nrun echo\nCoPy a b\n")
    assert [i.cmd for i in df.instructions] == ["from", "run", "copy"]
    assert df.stages[0].name == "base"
    assert df.instructions[1].original == "run echo"


def test_byte_order_mark_and_bytes_input() -> None:
    df = parse("\ufeffFROM x\n".encode())
    assert df.stages[0].base == "x"


def test_invalid_utf8_names_the_line() -> None:
    with pytest.raises(DockerfileError) as info:
        parse(b"FROM x\nRUN echo \xff\n")
    assert info.value.line == 2


# --- parser directives ------------------------------------------------------------------------


def test_escape_directive_backtick() -> None:
    df = parse("# escape=`\nFROM image\nENV GOPATH `\n\\go\nRUN dir c:\\\n")
    assert df.escape == "`"
    assert body(df) == [("env", ["GOPATH", "\\go"]), ("run", ["dir c:\\"])]


@pytest.mark.parametrize(
    "header",
    ["# escape=`\n", "#escape = `\n", "# ESCAPE=`\n", "  #   Escape   =   `   \n", "# escape=`\n\n"],
)
def test_escape_directive_spellings(header: str) -> None:
    assert parse(header + "FROM x\n").escape == "`"


def test_escape_directive_backslash_explicit() -> None:
    df = parse("# escape=\\\nFROM x\nRUN a \\\n b\n")
    assert df.escape == "\\"
    assert body(df) == [("run", ["a  b"])]


@pytest.mark.parametrize(
    "text",
    [
        # after a comment, a blank line or an instruction, a directive is a plain comment
        "# a comment\n# escape=`\nFROM x\n",
        "\n# escape=`\nFROM x\n",
        "FROM x\n# escape=`\n",
        # an unknown directive ends the directives too
        "# unknown=1\n# escape=`\nFROM x\n",
        # not a directive at all: needs name=value
        "# escape `\nFROM x\n",
    ],
)
def test_escape_directive_only_at_the_top(text: str) -> None:
    assert parse(text).escape == "\\"


def test_syntax_directive_is_ignored_with_a_warning() -> None:
    df = parse("# syntax = docker/dockerfile:1\n# escape = `\n\nFROM `\n    image\n")
    assert df.escape == "`"  # directives after syntax still count
    assert df.stages[0].base == "image"
    assert len(df.warnings) == 1
    assert "syntax=docker/dockerfile:1" in df.warnings[0]
    assert "ignored" in df.warnings[0]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("# escape=x\nFROM a\n", 1, "invalid escape token 'x' does not match ` or \\"),
        ("# escape=`\n# escape=\\\nFROM a\n", 2, "only one escape parser directive can be used"),
        ("# syntax=a\n# SYNTAX=b\nFROM a\n", 2, "only one syntax parser directive can be used"),
    ],
)
def test_directive_errors(text: str, line: int, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    assert info.value.line == line
    assert info.value.msg == message
    assert str(info.value) == f"Dockerfile parse error on line {line}: {message}"


# --- forms of arguments -----------------------------------------------------------------------

JSON_CASES = [
    ('CMD ["a"]', ["a"], True),
    ('CMD ["a","b"]', ["a", "b"], True),
    ('CMD [ "a", "b" ]', ["a", "b"], True),
    ('CMD\t[\t"a",\t"b"\t]\t', ["a", "b"], True),
    ('CMD [""]', [""], True),
    ("CMD []", [], True),
    ('CMD ["abc 123", "♥", "\\" \\\\ \\/ \\n \\t \\u0041"]', ["abc 123", "♥", '" \\ / \n \t A'], True),
    # not JSON: shell form, as written
    ("CMD ['echo','single quotes are invalid JSON']", ["['echo','single quotes are invalid JSON']"], False),
    ('CMD ["echo", "unterminated"', ['["echo", "unterminated"'], False),
    ('CMD \'["echo", "JSON in a string"]\'', ['\'["echo", "JSON in a string"]\''], False),
    ('CMD ["a", ]', ['["a", ]'], False),
    ("CMD [NaN]", ["[NaN]"], False),
    # as dockerd 20.10: the first JSON value counts, what follows it is ignored
    ('CMD ["a"] extra', ["a"], True),
    ('CMD ["a"]]', ["a"], True),
    ("CMD echo $HOME", ["echo $HOME"], False),
    ('ENTRYPOINT [ "/usr/bin/redis-server" ]', ["/usr/bin/redis-server"], True),
    ('RUN ["sh", "-c", "echo hi"]', ["sh", "-c", "echo hi"], True),
    ('SHELL ["/bin/bash", "-o", "pipefail", "-c"]', ["/bin/bash", "-o", "pipefail", "-c"], True),
    ('VOLUME ["/data", "/logs"]', ["/data", "/logs"], True),
    ("VOLUME /data /logs", ["/data", "/logs"], False),
    ('COPY ["a b", "c", "/dst/"]', ["a b", "c", "/dst/"], True),
    ('ADD ["x", "/y"]', ["x", "/y"], True),
    ("COPY a\tb  /dst/", ["a", "b", "/dst/"], False),
]


@pytest.mark.parametrize(("text", "args", "json_form"), JSON_CASES)
def test_exec_and_shell_forms(text: str, args: list[str], json_form: bool) -> None:
    ins = one(text)
    assert ins.args == args
    assert ins.json_form is json_form


def test_json_array_of_non_strings_is_an_error() -> None:
    for text in ('CMD ["a", 1]', 'RUN [["nested"]]', "COPY [true, false]"):
        with pytest.raises(DockerfileError, match="arrays must be comprised of strings only") as info:
            parse("FROM x\n" + text)
        assert info.value.line == 2


ENV_CASES = [
    ("ENV name value", ["name", "value"]),
    ("ENV name value with spaces", ["name", "value with spaces"]),
    ("ENV name=value", ["name", "value"]),
    ("ENV name=value name2=value2", ["name", "value", "name2", "value2"]),
    ('ENV name="value value1"', ["name", '"value value1"']),
    ("ENV name=value\\ value2", ["name", "value\\ value2"]),
    ("ENV name=\"value'quote space'value2\"", ["name", "\"value'quote space'value2\""]),
    ("ENV name='value\"double quote\"value2'", ["name", "'value\"double quote\"value2'"]),
    ('ENV name="a\\"b"', ["name", '"a\\"b"']),
    ("ENV name='a\\'b'", ["name", "'a\\'b'"]),
    ("ENV name=\"''\"", ["name", "\"''\""]),
    ("ENV name=", ["name", ""]),
    ('ENV name=""', ["name", '""']),
    ('ENV a=1 b="x y"', ["a", "1", "b", '"x y"']),
    ("ENV a=b=c", ["a", "b=c"]),
    (
        'ENV name=value \\\n    name1=value1 \\\n    name2="value2a \\\n           value2b"',
        ["name", "value", "name1", "value1", "name2", '"value2a            value2b"'],
    ),
    (
        'LABEL maintainer James Turnbull "james@example.com"',
        ["maintainer", 'James Turnbull "james@example.com"'],
    ),
    (
        'LABEL "com.example.vendor"="ACME Incorporated" version=1.0',
        ['"com.example.vendor"', '"ACME Incorporated"', "version", "1.0"],
    ),
    (
        'LABEL multi.label1="value1" \\\n      other="value3"',
        ["multi.label1", '"value1"', "other", '"value3"'],
    ),
]


@pytest.mark.parametrize(("text", "args"), ENV_CASES)
def test_env_and_label_forms(text: str, args: list[str]) -> None:
    assert one(text).args == args


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ENV", "ENV requires at least one argument"),
        ("ENV name", "ENV must have two arguments"),
        ("LABEL name", "LABEL must have two arguments"),
        ("ENV a=1 b", 'Syntax error - can\'t find = in "b". Must be of the form: name=value'),
        ("ENV =x", "ENV names can not be blank"),
        ("LABEL", "LABEL requires at least one argument"),
    ],
)
def test_env_and_label_errors(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse("FROM x\n" + text)
    assert (info.value.line, info.value.msg) == (2, message)


def test_arg_forms() -> None:
    df = parse('ARG foo bar=baz\nFROM ubuntu\nARG abc="123 456" def\nARG empty=\n')
    assert [i.args for i in df.meta_args] == [["foo", "bar=baz"]]
    assert body(df) == [("arg", ['abc="123 456"', "def"]), ("arg", ["empty="])]


def test_expose_user_workdir_stopsignal_maintainer() -> None:
    df = parse(
        "FROM x\nEXPOSE 80 443/udp  8080/tcp\nUSER app:app\nWORKDIR /a b\nSTOPSIGNAL SIGKILL\n"
        "MAINTAINER Jane <jane@example.com>\n"
    )
    assert body(df) == [
        ("expose", ["80", "443/udp", "8080/tcp"]),
        ("user", ["app:app"]),
        ("workdir", ["/a b"]),
        ("stopsignal", ["SIGKILL"]),
        ("maintainer", ["Jane <jane@example.com>"]),
    ]


HEALTHCHECK_CASES = [
    ("HEALTHCHECK NONE", ["NONE"], False, {}),
    ("HEALTHCHECK none", ["NONE"], False, {}),
    (
        "HEALTHCHECK --interval=5s --timeout=3s --retries=3 \\\n  CMD /app/check.sh --quiet",
        ["CMD", "/app/check.sh --quiet"],
        False,
        {"interval": ["5s"], "timeout": ["3s"], "retries": ["3"]},
    ),
    ("HEALTHCHECK   CMD   a b", ["CMD", "a b"], False, {}),
    ('HEALTHCHECK --timeout=3s CMD ["foo"]', ["CMD", "foo"], True, {"timeout": ["3s"]}),
    (
        'HEALTHCHECK --start-period=0s --start-interval=0s --interval=5s --timeout=0s --retries=0 CMD ["foo"]',
        ["CMD", "foo"],
        True,
        {
            "start-period": ["0s"],
            "start-interval": ["0s"],
            "interval": ["5s"],
            "timeout": ["0s"],
            "retries": ["0"],
        },
    ),
]


@pytest.mark.parametrize(("text", "args", "json_form", "flags"), HEALTHCHECK_CASES)
def test_healthcheck(text: str, args: list[str], json_form: bool, flags: dict[str, list[str]]) -> None:
    ins = one(text)
    assert (ins.args, ins.json_form, ins.flags) == (args, json_form, flags)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CONNECT TCP 7000", 'Unknown type "CONNECT" in HEALTHCHECK (try CMD)'),
        ("HEALTHCHECK --interval=1us CMD true", 'Interval "interval" cannot be less than 1ms'),
        ("HEALTHCHECK --timeout=soon CMD true", "HEALTHCHECK --timeout: invalid duration 'soon'"),
        ("HEALTHCHECK --retries=-1 CMD true", "--retries cannot be negative (-1)"),
        ("HEALTHCHECK --retries=x CMD true", 'HEALTHCHECK --retries: invalid integer "x"'),
        ("HEALTHCHECK --interval=5s NONE", "unknown flag: --interval"),
    ],
)
def test_healthcheck_errors(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse("FROM x\n" + text)
    assert (info.value.line, info.value.msg) == (2, message)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("5s", 5 * 10**9),
        ("1m30s", 90 * 10**9),
        ("1.5h", 5400 * 10**9),
        ("300ms", 3 * 10**8),
        ("2us", 2000),
        ("-1s", -(10**9)),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize("text", ["", "5", "s", "1x", "1.s5", "--1s"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


# --- flags ------------------------------------------------------------------------------------

FLAG_CASES = [
    ("COPY foo /tmp/", {}, ["foo", "/tmp/"]),
    ("COPY --from=build foo /tmp/", {"from": ["build"]}, ["foo", "/tmp/"]),
    (
        "COPY --chown=1:2 --chmod=0755 --link foo /tmp/",
        {"chown": ["1:2"], "chmod": ["0755"], "link": ["true"]},
        ["foo", "/tmp/"],
    ),
    ("COPY --link=false foo /tmp/", {"link": ["false"]}, ["foo", "/tmp/"]),
    ("COPY --link=TRUE foo /tmp/", {"link": ["true"]}, ["foo", "/tmp/"]),
    ('COPY --chown="a b" foo /tmp/', {"chown": ["a b"]}, ["foo", "/tmp/"]),
    ("COPY --from=$STAGE foo /tmp/", {"from": ["$STAGE"]}, ["foo", "/tmp/"]),
    ("COPY -- foo /tmp/", {}, ["foo", "/tmp/"]),
    ("COPY --from=a -- --weird /tmp/", {"from": ["a"]}, ["--weird", "/tmp/"]),
    ("ADD --checksum=sha256:abc --chown=0 x /y", {"checksum": ["sha256:abc"], "chown": ["0"]}, ["x", "/y"]),
    (
        "RUN --mount=type=cache,target=/a --mount=type=tmpfs,target=/b --network=none echo hi",
        {"mount": ["type=cache,target=/a", "type=tmpfs,target=/b"], "network": ["none"]},
        ["echo hi"],
    ),
    ("RUN --security=insecure ls", {"security": ["insecure"]}, ["ls"]),
    # a "-" word that is not "--" ends the flags
    ("RUN -x", {}, ["-x"]),
]


@pytest.mark.parametrize(("text", "flags", "args"), FLAG_CASES)
def test_flags(text: str, flags: dict[str, list[str]], args: list[str]) -> None:
    ins = one(text)
    assert (ins.flags, ins.args) == (flags, args)


def test_from_platform_flag() -> None:
    df = parse("FROM --platform=$BUILDPLATFORM golang AS build\n")
    stage = df.stages[0]
    assert (stage.platform, stage.base, stage.name) == ("$BUILDPLATFORM", "golang", "build")
    assert stage.from_instr.flags == {"platform": ["$BUILDPLATFORM"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("COPY --user=me foo /tmp/", "unknown flag: --user"),
        ("COPY --from=a --from=b foo /tmp/", "duplicate flag specified: --from"),
        ("COPY --from foo /tmp/", "missing a value on flag: --from"),
        ("COPY --link= foo /tmp/", "missing a value on flag: --link"),
        ("COPY --link=maybe foo /tmp/", "expecting boolean value for flag --link, not: maybe"),
        ("ADD --from=x a b", "unknown flag: --from"),
        ('CMD --doit [ "a", "b" ]', "unknown flag: --doit"),
        ("ENV --x=1 a=b", "unknown flag: --x"),
        ("RUN --device=/dev/x ls", "unknown flag: --device"),
        ("WORKDIR --x=1 /a", "unknown flag: --x"),
    ],
)
def test_flag_errors(text: str, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse("FROM x\n" + text)
    assert (info.value.line, info.value.msg) == (2, message)


# --- heredocs ---------------------------------------------------------------------------------

HEREDOC_CASES = [
    ("RUN <<EMPTY\nEMPTY\n", ["<<EMPTY"], [Heredoc("EMPTY", "", True)]),
    ("RUN 3<<EMPTY2\nEMPTY2\n", ["3<<EMPTY2"], [Heredoc("EMPTY2", "", True, fd=3)]),
    ("RUN <<INDENT\n\tfoo\n\tbar\nINDENT\n", ["<<INDENT"], [Heredoc("INDENT", "\tfoo\n\tbar\n", True)]),
    (
        "RUN <<-UNINDENT\n\tbaz\n\tquux\nUNINDENT\n",
        ["<<-UNINDENT"],
        [Heredoc("UNINDENT", "baz\nquux\n", True, chomp=True)],
    ),
    (
        "RUN <<-UNINDENT2\n\tbaz\n\tquux\n\tUNINDENT2\n",
        ["<<-UNINDENT2"],
        [Heredoc("UNINDENT2", "baz\nquux\n", True, chomp=True)],
    ),
    (
        "RUN <<-'NOEXPAND'\n\tdon't expand $NAME\nNOEXPAND\n",
        ["<<-'NOEXPAND'"],
        [Heredoc("NOEXPAND", "don't expand $NAME\n", False, chomp=True)],
    ),
    ('RUN <<"Q"\n$x\nQ\n', ['<<"Q"'], [Heredoc("Q", "$x\n", False)]),
    # heredoc bodies are not comments, continuations or directives
    (
        "RUN <<COMMENT\n# internal comment\necho hello \\\n# escape=`\nCOMMENT\n",
        ["<<COMMENT"],
        [Heredoc("COMMENT", "# internal comment\necho hello \\\n# escape=`\n", True)],
    ),
    (
        "RUN --mount=type=cache,target=/foo <<MOUNT\necho hello\nMOUNT\n",
        ["<<MOUNT"],
        [Heredoc("MOUNT", "echo hello\n", True)],
    ),
    (
        "RUN <<COMPLEX python3\nprint('hello world')\nCOMPLEX\n",
        ["<<COMPLEX python3"],
        [Heredoc("COMPLEX", "print('hello world')\n", True)],
    ),
    ("RUN <<eo'f'\necho foo\neof\n", ["<<eo'f'"], [Heredoc("eof", "echo foo\n", False)]),
    ("RUN <<eo\\'f\necho foo\neo'f\n", ["<<eo\\'f"], [Heredoc("eo'f", "echo foo\n", True)]),
    ("RUN <<'e'o\\'f\necho foo\neo'f\n", ["<<'e'o\\'f"], [Heredoc("eo'f", "echo foo\n", False)]),
    ("RUN <<'one two'\necho bar\none two\n", ["<<'one two'"], [Heredoc("one two", "echo bar\n", False)]),
    ("RUN <<$EOF\n$EOF\n", ["<<$EOF"], [Heredoc("$EOF", "", True)]),
    ("RUN <<  EOF  > foo\nEOF\n", ["<<  EOF  > foo"], [Heredoc("EOF", "", True)]),
    (
        "RUN cat <<A && cat <<-B\na\nA\n\tb\n\tB\n",
        ["cat <<A && cat <<-B"],
        [Heredoc("A", "a\n", True), Heredoc("B", "b\n", True, chomp=True)],
    ),
    ('RUN echo "<<NOHEREDOC"\n', ['echo "<<NOHEREDOC"'], []),
    (
        "COPY <<FILE1 <<FILE2 /dest\ncontent 1\nFILE1\ncontent 2\nFILE2\n",
        ["<<FILE1", "<<FILE2", "/dest"],
        [Heredoc("FILE1", "content 1\n", True), Heredoc("FILE2", "content 2\n", True)],
    ),
    (
        "COPY <<X <<Y /dest\nY\nX\nX\nY\n",
        ["<<X", "<<Y", "/dest"],
        [Heredoc("X", "Y\n", True), Heredoc("Y", "X\n", True)],
    ),
    (
        "COPY <<EOF /quotes\n\"foo\"\n'bar'\nEOF\n",
        ["<<EOF", "/quotes"],
        [Heredoc("EOF", "\"foo\"\n'bar'\n", True)],
    ),
    (
        "ADD --chmod=600 <<file.txt /dest\nhello world\nfile.txt\n",
        ["<<file.txt", "/dest"],
        [Heredoc("file.txt", "hello world\n", True)],
    ),
    ("COPY <<EOF\nEOF\n", None, None),  # no destination: error below
]


@pytest.mark.parametrize(("text", "args", "heredocs"), [c for c in HEREDOC_CASES if c[1] is not None])
def test_heredocs(text: str, args: list[str], heredocs: list[Heredoc]) -> None:
    df = parse("FROM x\n" + text + "USER after\n")
    ins = df.instructions[1]
    assert ins.args == args
    assert ins.heredocs == heredocs
    assert ins.original == text.split("\n", 1)[0]
    # the line after the bodies is an instruction again
    assert df.instructions[2].cmd == "user"
    assert df.instructions[2].line == ins.end_line + 1


def test_heredocs_only_for_run_copy_add_in_shell_form() -> None:
    df = parse('FROM x\nRUN ["cat", "<<EOF"]\nCMD cat <<EOF\nENV a <<EOF\n')
    assert [(i.cmd, i.heredocs) for i in df.instructions[1:]] == [("run", []), ("cmd", []), ("env", [])]
    with pytest.raises(DockerfileError) as info:
        parse("FROM x\nUSER <<INVALID\nINVALID\n")
    assert (info.value.line, info.value.msg) == (3, "unknown instruction: INVALID")


def test_heredoc_line_numbers() -> None:
    df = parse("FROM x\nRUN <<A\n1\n2\nA\nRUN echo\n")
    assert (df.instructions[1].line, df.instructions[1].end_line) == (2, 5)
    assert df.instructions[2].line == 6


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("FROM x\nRUN <<EOF\nno end\n", 2, "unterminated heredoc EOF"),
        ("FROM x\nCOPY <<A <<B /d\na\nA\n", 2, "unterminated heredoc B"),
        (
            "FROM x\nCOPY <<EOF\nEOF\n",
            2,
            "COPY requires at least two arguments, but only one was provided. Destination could not be determined",
        ),
        ("FROM x\nCOPY a <<EOF\nEOF\n", 2, "COPY cannot accept a heredoc as a destination"),
    ],
)
def test_heredoc_errors(text: str, line: int, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    assert (info.value.line, info.value.msg) == (line, message)


# --- stages -----------------------------------------------------------------------------------


def test_stages_and_meta_args() -> None:
    df = parse(
        "ARG VERSION=latest\nARG OTHER\nFROM busybox:$VERSION AS Build\nARG VERSION\nRUN make\n"
        "FROM --platform=linux/amd64 scratch\nCOPY --from=build /out /out\n"
    )
    assert [i.args for i in df.meta_args] == [["VERSION=latest"], ["OTHER"]]
    assert [(s.index, s.name, s.base, s.platform) for s in df.stages] == [
        (0, "build", "busybox:$VERSION", ""),
        (1, "", "scratch", "linux/amd64"),
    ]
    assert [i.cmd for i in df.stages[0].instructions] == ["arg", "run"]
    assert [i.cmd for i in df.stages[1].instructions] == ["copy"]
    assert df.stages[0].from_instr.args == ["busybox:$VERSION", "build"]
    assert len(df.instructions) == 7
    assert df.stage_index("BUILD") == 0 and df.stage_index("1") == 1
    assert df.stage_index("2") is None and df.stage_index("nope") is None


@pytest.mark.parametrize("as_word", ["AS", "as", "As"])
def test_from_as_is_case_insensitive(as_word: str) -> None:
    assert parse(f"FROM x {as_word} stage-1.a_b\n").stages[0].name == "stage-1.a_b"


# --- errors that name the line ------------------------------------------------------------------

ERROR_CASES = [
    ("", 0, "the Dockerfile (Dockerfile) cannot be empty"),
    ("# only a comment\n\n", 2, "file with no instructions"),
    ("FROM x\nFOOBAR baz\n", 2, "unknown instruction: FOOBAR"),
    ("FROM x\n\nrunn echo\n", 3, "unknown instruction: RUNN"),
    (
        "RUN echo\nFROM x\n",
        1,
        "no build stage in current context: RUN before the first FROM (only ARG may come before FROM)",
    ),
    (
        "ARG a\nENV b=c\nFROM x\n",
        2,
        "no build stage in current context: ENV before the first FROM (only ARG may come before FROM)",
    ),
    ("ARG a\nARG b\n", 2, "no build stage in the Dockerfile: it has no FROM instruction"),
    ("FROM\n", 1, "FROM requires either one or three arguments"),
    ("FROM a AS\n", 1, "FROM requires either one or three arguments"),
    ("FROM a b c d\n", 1, "FROM requires either one or three arguments"),
    ("FROM a IS b\n", 1, "FROM requires either one or three arguments"),
    (
        "FROM a AS 1st\n",
        1,
        'invalid name for build stage: "1st", name can\'t start with a number or contain symbols',
    ),
    (
        "FROM a AS b$c\n",
        1,
        'invalid name for build stage: "b$c", name can\'t start with a number or contain symbols',
    ),
    ("FROM x\nSHELL /bin/sh -c\n", 2, "SHELL requires the arguments to be in JSON form"),
    ("FROM x\nSHELL []\n", 2, "SHELL requires at least one argument"),
    ("FROM x\nSHELL\n", 2, "SHELL requires at least one argument"),
    (
        "FROM x\nCOPY onlyone\n",
        2,
        "COPY requires at least two arguments, but only one was provided. Destination could not be determined",
    ),
    (
        "FROM x\nADD\n",
        2,
        "ADD requires at least two arguments, but only one was provided. Destination could not be determined",
    ),
    ("FROM x\nWORKDIR\n", 2, "WORKDIR requires exactly one argument"),
    ("FROM x\nUSER\n", 2, "USER requires exactly one argument"),
    ("FROM x\nSTOPSIGNAL\n", 2, "STOPSIGNAL requires exactly one argument"),
    ("FROM x\nMAINTAINER\n", 2, "MAINTAINER requires exactly one argument"),
    ("FROM x\nEXPOSE\n", 2, "EXPOSE requires at least one argument"),
    ("FROM x\nVOLUME\n", 2, "VOLUME requires at least one argument"),
    ('FROM x\nVOLUME ["/a", " "]\n', 2, "VOLUME specified can not be an empty string"),
    ("FROM x\nARG\n", 2, "ARG requires at least one argument"),
    ("FROM x\nARG =1\n", 2, "ARG names can not be blank"),
    ("FROM x\nONBUILD\n", 2, "ONBUILD requires at least one argument"),
    ("FROM x\nONBUILD ONBUILD RUN x\n", 2, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("FROM x\nONBUILD FROM y\n", 2, "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM x\nONBUILD maintainer me\n", 2, "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("FROM x\nONBUILD BOGUS y\n", 2, "unknown instruction: BOGUS"),
    (
        "FROM x\nONBUILD COPY onlyone\n",
        2,
        "COPY requires at least two arguments, but only one was provided. Destination could not be determined",
    ),
    ("FROM x\nRUN a \\\n  b\nFOO \\\n bar\n", 4, "unknown instruction: FOO"),
]


@pytest.mark.parametrize(("text", "line", "message"), ERROR_CASES)
def test_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    assert (info.value.line, info.value.msg) == (line, message)
    if line:
        assert str(info.value) == f"Dockerfile parse error on line {line}: {message}"
    else:
        assert str(info.value) == message


# --- ONBUILD and parse_line -------------------------------------------------------------------


def test_onbuild_trigger_text() -> None:
    df = parse("FROM x\nONBUILD RUN echo hi\nonbuild   COPY --chown=1 a /b\n")
    assert body(df) == [("onbuild", ["RUN echo hi"]), ("onbuild", ["COPY --chown=1 a /b"])]
    trigger = parse_line(df.instructions[2].args[0], 7)
    assert (trigger.cmd, trigger.flags, trigger.args, trigger.line) == (
        "copy",
        {"chown": ["1"]},
        ["a", "/b"],
        7,
    )


def test_onbuild_with_heredoc_round_trips() -> None:
    df = parse("FROM x\nONBUILD RUN <<EOF\necho one\nEOF\nUSER u\n")
    on = df.instructions[1]
    assert on.args == ["RUN <<EOF\necho one\nEOF"]
    assert df.instructions[2].cmd == "user"
    trigger = parse_line(on.args[0])
    assert trigger.cmd == "run"
    assert trigger.heredocs == [Heredoc("EOF", "echo one\n", True)]


def test_parse_line() -> None:
    ins = parse_line('CMD ["a", "b"]', 3)
    assert (ins.cmd, ins.args, ins.json_form, ins.line) == ("cmd", ["a", "b"], True, 3)
    assert parse_line("RUN dir c:\\", escape="`").args == ["dir c:\\"]
    with pytest.raises(DockerfileError) as info:
        parse_line("FOO x", 9)
    assert (info.value.line, info.value.msg) == (9, "unknown instruction: FOO")
    with pytest.raises(DockerfileError, match="onbuild trigger should be a single expression, found 2"):
        parse_line("RUN a\nRUN b", 1)
    # no parser directives in a trigger
    assert parse_line("# escape=`\nRUN a `", 1).args == ["a `"]


# --- properties -------------------------------------------------------------------------------

SAFE = string.ascii_letters + string.digits + "/._-:=$@ "
SAFE_WORD = st.text(alphabet=string.ascii_letters + string.digits + "/._-:$@", min_size=1, max_size=12)


@settings(max_examples=200)
@given(st.lists(SAFE_WORD, min_size=1, max_size=5))
def test_run_shell_form_is_the_rest_of_the_line(words: list[str]) -> None:
    text = " ".join(words)
    if text.startswith("--"):
        text = "x" + text
    df = parse(f"FROM x\nRUN {text}\n")
    assert df.instructions[1].args == [text]


@settings(max_examples=200)
@given(st.lists(st.text(max_size=10), max_size=5))
def test_json_form_round_trips(args: list[str]) -> None:
    import json

    df = parse("FROM x\nCMD " + json.dumps(args) + "\n")
    assert df.instructions[1].args == args
    assert df.instructions[1].json_form


@settings(max_examples=200)
@given(st.lists(SAFE_WORD, min_size=1, max_size=5), st.integers(min_value=1, max_value=4))
def test_splitting_a_line_with_continuations_keeps_the_words(words: list[str], pieces: int) -> None:
    """A RUN split over lines with "\\" continuations has the same words as the one-line form."""
    if words[0].startswith("--"):
        words[0] = "x" + words[0]
    one_line = parse("FROM x\nRUN " + " ".join(words) + "\n").instructions[1].args[0]
    chunks = [words[i::pieces] for i in range(pieces)]
    chunks = [c for c in chunks if c]
    lines = " \\\n   ".join(" ".join(c) for c in chunks)
    split = parse("FROM x\nRUN " + lines + "\n").instructions[1].args[0]
    assert sorted(split.split()) == sorted(one_line.split())


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=6),
            st.text(alphabet=SAFE.replace(" ", "").replace("=", ""), max_size=8),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_env_pairs_round_trip(pairs: list[tuple[str, str]]) -> None:
    text = " ".join(f"{k}={v}" for k, v in pairs)
    df = parse(f"FROM x\nENV {text}\n")
    assert df.instructions[1].args == [x for kv in pairs for x in kv]


DOCKERFILE_ALPHABET = st.sampled_from(
    [
        "FROM ",
        "RUN ",
        "COPY ",
        "ENV ",
        "ARG ",
        "ONBUILD ",
        "HEALTHCHECK ",
        "SHELL ",
        "CMD ",
        "x",
        "AS ",
        "a=b ",
        "--from=",
        "--link ",
        "<<EOF",
        "<<-'E'",
        "EOF",
        "E",
        "\n",
        "\\\n",
        "\\",
        "`",
        "# escape=`\n",
        "# syntax=x\n",
        "#",
        " ",
        "\t",
        '"',
        "'",
        "[",
        "]",
        '["a"]',
        ",",
        "$",
        "{",
        "}",
        "\r\n",
        "\ufeff",
        "é",
    ]
)


@settings(max_examples=500)
@given(st.lists(DOCKERFILE_ALPHABET, max_size=30).map("".join))
def test_any_text_parses_or_raises_dockerfile_error(text: str) -> None:
    try:
        df = parse(text)
    except DockerfileError as e:
        assert e.msg
        assert e.line >= 0
        return
    assert df.stages
    for ins in df.instructions:
        assert 1 <= ins.line <= ins.end_line
        assert ins.cmd in {"from", "run", "copy", "env", "arg", "onbuild", "healthcheck", "shell", "cmd"}


def test_hostile_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(DockerfileError, match="Chaining ONBUILD"):
        parse("FROM x\n" + "ONBUILD " * 5000 + "RUN x\n")


def test_run_without_arguments_parses_as_docker_does() -> None:
    """dockerd 20.10 accepts a bare RUN (it then runs the shell with an empty command)."""
    ins = one("RUN")
    assert (ins.args, ins.json_form) == ([], False)


@pytest.mark.parametrize(
    ("text", "docker_message"),
    [
        # measured against dockerd 20.10's classic builder (DOCKER_BUILDKIT=0 docker build)
        ("FROM x\nFOOBAR baz\n", "dockerfile parse error line 2: unknown instruction: FOOBAR"),
        ("FROM scratch AS\n", "dockerfile parse error line 1: FROM requires either one or three arguments"),
        (
            "LABEL a=b\nFROM scratch\n",
            "no build stage in current context: LABEL before the first FROM (only ARG may come before FROM)",
        ),
        (
            "FROM x\nSHELL /bin/sh -c\n",
            "dockerfile parse error line 2: SHELL requires the arguments to be in JSON form",
        ),
        ("FROM x\nENV name\n", "failed to parse Dockerfile: ENV must have two arguments"),
        (
            'FROM x\nCMD ["a", 1]\n',
            "failed to parse Dockerfile: when using JSON array syntax, arrays must be comprised of strings only",
        ),
        (
            "# escape=x\nFROM x\n",
            "failed to parse Dockerfile: invalid escape token 'x' does not match ` or \\",
        ),
        ("# c\n\n", "failed to parse Dockerfile: file with no instructions"),
        ("", "the Dockerfile (Dockerfile) cannot be empty"),
        (
            "FROM x\nONBUILD ONBUILD LABEL a=b\n",
            "dockerfile parse error line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        (
            "FROM x\nHEALTHCHECK CONNECT TCP 7000\n",
            'dockerfile parse error line 2: Unknown type "CONNECT" in HEALTHCHECK (try CMD)',
        ),
    ],
)
def test_docker_message(text: str, docker_message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    assert info.value.docker_message == docker_message


# --- measured against dockerd 20.10 ---------------------------------------------------------------
# (name, Dockerfile, build args, image config fields) as dockerd 20.10's classic builder produced
# them (DOCKER_BUILDKIT=0 docker build of FROM scratch images, docker image inspect); the parser's
# output, expanded with ShellLex where Docker expands (ENV, LABEL, ARG), must give the same.
MEASURED = [
    (
        "env-forms",
        'FROM scratch\nENV name value\nENV n2=value n3=v3\nENV n4="value value1"\nENV n5=value\\ value2\nENV n6="value\'quote space\'value2"\nENV n7=\'value"double quote"value2\'\nENV n8="a\\"b"\nENV legacy a  b   c\nENV e=\nENV q="\'\'"\n',
        {},
        {
            "Env": {
                "name": "value",
                "n2": "value",
                "n3": "v3",
                "n4": "value value1",
                "n5": "value value2",
                "n6": "value'quote space'value2",
                "n7": 'value"double quote"value2',
                "n8": 'a"b',
                "legacy": "a  b   c",
                "e": "",
                "q": "''",
            }
        },
    ),
    (
        "env-same-line",
        "FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n",
        {},
        {"Env": {"abc": "bye", "def": "hello", "ghi": "bye"}},
    ),
    (
        "env-continuation",
        'FROM scratch\nENV name=value \\\n    name1=value1 \\\n    name2="value2a \\\n           value2b" \\\n    name3="value3a\\n\\"value3b\\"" \\\n\tname4="value4a\\\\nvalue4b"\n',
        {},
        {
            "Env": {
                "name": "value",
                "name1": "value1",
                "name2": "value2a            value2b",
                "name3": 'value3a\\n"value3b"',
                "name4": "value4a\\nvalue4b",
            }
        },
    ),
    (
        "env-modifiers",
        "FROM scratch\nENV A=a E=\nENV r1=${A:-x} r2=${B:-x} r3=${A:+y} r4=${B:+y} r5=${E:-d} r6=${E:+z}\nENV r7=\"${A}${B}\" r8='$A' r9=\\$A r10=$A.x r11=${A:-$A$A}\n",
        {},
        {
            "Env": {
                "A": "a",
                "E": "",
                "r1": "a",
                "r2": "x",
                "r3": "y",
                "r4": "",
                "r5": "d",
                "r6": "",
                "r7": "a",
                "r8": "$A",
                "r9": "$A",
                "r10": "a.x",
                "r11": "a",
            }
        },
    ),
    (
        "label-forms",
        'FROM scratch\nLABEL "com.example.vendor"="ACME Incorporated" version=1.0\nLABEL maintainer James Turnbull "james@example.com"\nLABEL multi.label1="value1" \\\n      other="value3"\n',
        {},
        {
            "Labels": {
                "com.example.vendor": "ACME Incorporated",
                "maintainer": "James Turnbull james@example.com",
                "multi.label1": "value1",
                "other": "value3",
                "version": "1.0",
            }
        },
    ),
    (
        "continuations",
        "FROM scratch\nCMD echo hello\\\n  world\\\n  goodnight  \\\n  moon\n",
        {},
        {"Cmd": ["/bin/sh", "-c", "echo hello  world  goodnight    moon"]},
    ),
    (
        "continuation-trailing-ws",
        "FROM scratch\nCMD echo hello  \\  \nworld\n",
        {},
        {"Cmd": ["/bin/sh", "-c", "echo hello  world"]},
    ),
    (
        "continuation-only-escape",
        "FROM scratch\nCMD echo hi \\\n \\\n world \\\n\\\n good\\\n\\\nnight\n",
        {},
        {"Cmd": ["/bin/sh", "-c", "echo hi   world  goodnight"]},
    ),
    (
        "continuation-comments",
        "FROM scratch\nCMD echo hello \\\n# a comment\n\n  # indented\n\nmore stuff\n",
        {},
        {"Cmd": ["/bin/sh", "-c", "echo hello more stuff"]},
    ),
    ("continuation-eof", "FROM scratch\nCMD something \\", {}, {"Cmd": ["/bin/sh", "-c", "something"]}),
    (
        "escaped-escape",
        "FROM scratch\nCMD echo a\\\\\nLABEL x=y\n",
        {},
        {"Labels": {"x": "y"}, "Cmd": ["/bin/sh", "-c", "echo a\\\\"]},
    ),
    (
        "escape-after-comment",
        "# a comment\n# escape=`\nFROM scratch\nCMD a \\\n b\n",
        {},
        {"Cmd": ["/bin/sh", "-c", "a  b"]},
    ),
    ("escape-case", "# ESCAPE = `\nFROM scratch\nCMD a `\n b\n", {}, {"Cmd": ["/bin/sh", "-c", "a  b"]}),
    (
        "syntax-then-escape",
        "# syntax=docker/dockerfile:1\n# escape=`\nFROM scratch\nCMD a `\n b\n",
        {},
        {"Cmd": ["/bin/sh", "-c", "a  b"]},
    ),
    (
        "json-forms",
        'FROM scratch\nCMD [ "a", "b" ]\nENTRYPOINT ["x", "\\u0041 \\" \\\\"]\n',
        {},
        {"Cmd": ["a", "b"], "Entrypoint": ["x", 'A " \\']},
    ),
    ("json-empty", "FROM scratch\nCMD []\n", {}, {}),
    (
        "json-invalid-fallback",
        "FROM scratch\nCMD ['echo','single']\nENTRYPOINT [\"unterminated\"\n",
        {},
        {"Cmd": ["/bin/sh", "-c", "['echo','single']"], "Entrypoint": ["/bin/sh", "-c", '["unterminated"']},
    ),
    ("json-extra", 'FROM scratch\nCMD ["a"] extra\n', {}, {"Cmd": ["a"]}),
    (
        "shell-then-cmd",
        'FROM scratch\nSHELL ["/bin/bash", "-o", "pipefail", "-c"]\nCMD echo hi\n',
        {},
        {
            "Cmd": ["/bin/bash", "-o", "pipefail", "-c", "echo hi"],
            "Shell": ["/bin/bash", "-o", "pipefail", "-c"],
        },
    ),
    (
        "healthcheck",
        "FROM scratch\nHEALTHCHECK --interval=5s --timeout=3s --retries=3 \\\n  CMD /check --quiet\n",
        {},
        {
            "Healthcheck": {
                "Test": ["CMD-SHELL", "/check --quiet"],
                "Interval": 5000000000,
                "Timeout": 3000000000,
                "Retries": 3,
            }
        },
    ),
    (
        "healthcheck-json",
        'FROM scratch\nHEALTHCHECK --start-period=1m30s CMD ["true", "x"]\n',
        {},
        {"Healthcheck": {"Test": ["CMD", "true", "x"], "StartPeriod": 90000000000}},
    ),
    ("healthcheck-none", "FROM scratch\nHEALTHCHECK none\n", {}, {"Healthcheck": {"Test": ["NONE"]}}),
    (
        "onbuild",
        'FROM scratch\nONBUILD RUN echo hi\nonbuild   COPY --chown=1 a /b\nONBUILD ENV a="x y"\n',
        {},
        {"OnBuild": ["RUN echo hi", "COPY --chown=1 a /b", 'ENV a="x y"']},
    ),
    (
        "case-insensitive",
        "from scratch AS Base\nenv a=1\nLaBeL b=2\n",
        {},
        {"Env": {"a": "1"}, "Labels": {"b": "2"}},
    ),
    (
        "arg-meta-and-build-arg",
        "ARG V=1\nFROM scratch\nARG V\nARG W=w${V}\nENV v=$V w=$W\n",
        {"V": "9"},
        {"Env": {"v": "9", "w": "w9"}},
    ),
    (
        "arg-default",
        "FROM scratch\nARG A=def B\nENV a=$A b=${B:-unset}\n",
        {},
        {"Env": {"a": "def", "b": "unset"}},
    ),
    (
        "empty-continuation",
        "FROM scratch\nCMD foo \\\n\nbar \\\n\nbaz\n",
        {},
        {"Cmd": ["/bin/sh", "-c", "foo bar baz"]},
    ),
    (
        "crlf",
        'FROM scratch\r\nCMD a \\\r\n  b\r\nLABEL x="y"\r\n',
        {},
        {"Labels": {"x": "y"}, "Cmd": ["/bin/sh", "-c", "a   b"]},
    ),
    ("bom", "\ufeffFROM scratch\nLABEL bom=yes\n", {}, {"Labels": {"bom": "yes"}}),
    (
        "quotes-in-label-key",
        'FROM scratch\nLABEL "a b"=c \'d\'="e"\n',
        {},
        {"Labels": {"a b": "c", "d": "e"}},
    ),
    (
        "dollar-literal",
        "FROM scratch\nENV a=$ b=a$ c=$. d=${x:-$}\n",
        {},
        {"Env": {"a": "$", "b": "a$", "c": "$.", "d": "$"}},
    ),
    (
        "label-escaped-space",
        'FROM scratch\nLABEL a=b\\ c d=e=f "g h"="i\\"j" k=l\\\\m\n',
        {},
        {"Labels": {"a": "b c", "d": "e=f", "g h": 'i"j', "k": "l\\m"}},
    ),
    (
        "directive-leading-ws",
        "  #  escape=`\nFROM scratch\nCMD a `\n b\n",
        {},
        {"Cmd": ["/bin/sh", "-c", "a  b"]},
    ),
    (
        "directive-explicit-backslash",
        "# escape=\\\nFROM scratch\nCMD a \\\n b\n",
        {},
        {"Cmd": ["/bin/sh", "-c", "a  b"]},
    ),
    (
        "arg-quotes",
        "FROM scratch\nARG a=\"x y\" b='$a'\nENV c=$a d=$b\n",
        {},
        {"Env": {"c": "x y", "d": "$a"}},
    ),
    (
        "onbuild-continuation",
        'FROM scratch\nONBUILD RUN a \\\n   b\nONBUILD   LABEL x="1 2"\n',
        {},
        {"OnBuild": ["RUN a    b", 'LABEL x="1 2"']},
    ),
    (
        "backtick-env",
        '# escape=`\nFROM scratch\nENV y=Y\nENV a=x`$y b="q`"r" c=c:\\d\\$y\n',
        {},
        {"Env": {"y": "Y", "a": "x$y", "b": 'q"r', "c": "c:\\d\\Y"}},
    ),
    (
        "unicode",
        'FROM scratch\nLABEL é=ü\nENV 한=국 x="♥ $한"\n',
        {},
        {"Env": {"한": "국", "x": "♥ "}, "Labels": {"é": "ü"}},
    ),
    ("cmd-tabs", "FROM scratch\nCMD\techo\thi  \n", {}, {"Cmd": ["/bin/sh", "-c", "echo\thi"]}),
    (
        "env-key-var",
        "FROM scratch\nENV K=key\nENV $K=v ${K}2=w\n",
        {},
        {"Env": {"K": "key", "key": "v", "key2": "w"}},
    ),
    (
        "label-legacy-multi",
        'FROM scratch\nLABEL desc this is   a  "thing"\n',
        {},
        {"Labels": {"desc": "this is   a  thing"}},
    ),
    (
        "healthcheck-shell-continuation",
        "FROM scratch\nHEALTHCHECK \\\n  CMD curl -f http://x/ \\\n    || exit 1\n",
        {},
        {"Healthcheck": {"Test": ["CMD-SHELL", "curl -f http://x/     || exit 1"]}},
    ),
    (
        "flags-quoted",
        "FROM scratch\nHEALTHCHECK --interval=\"5s\" --retries='2' CMD true\n",
        {},
        {"Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 5000000000, "Retries": 2}},
    ),
    (
        "empty-value-forms",
        'FROM scratch\nENV a="" b=\'\' c=\nLABEL d="" e=\n',
        {},
        {"Env": {"a": "", "b": "", "c": ""}, "Labels": {"d": "", "e": ""}},
    ),
    (
        "positional-and-special",
        "FROM scratch\nENV a=$1x b=${1:-d} c=$@ d=$$\n",
        {},
        {"Env": {"a": "x", "b": "d", "c": "", "d": ""}},
    ),
]


def _dispatch_metadata(text: str, build_args: dict[str, str]) -> dict[str, object]:
    """The image config fields these metadata-only Dockerfiles set, by moby's dispatch rules: the
    words of ENV, LABEL and ARG are expanded with the environment before the instruction; CMD and
    ENTRYPOINT are not expanded, shell form runs under SHELL."""
    from skiff.daemon.build.shellwords import ShellLex

    df = parse(text)
    lex = ShellLex(df.escape)
    env: dict[str, str] = {}
    args: dict[str, str] = {}
    shell = ["/bin/sh", "-c"]
    labels: dict[str, str] = {}
    onbuild: list[str] = []
    out: dict[str, object] = {}
    for ins in df.stages[-1].instructions:
        scope = {**args, **env}
        words = [lex.process_word(a, scope) for a in ins.args] if ins.cmd in ("env", "label") else []
        if ins.cmd == "env":
            for k, v in zip(words[::2], words[1::2], strict=True):
                env[k] = v
            out["Env"] = dict(env)
        elif ins.cmd == "label":
            labels.update(zip(words[::2], words[1::2], strict=True))
            out["Labels"] = dict(labels)
        elif ins.cmd == "arg":
            for a in ins.args:
                k, eq, v = a.partition("=")
                k = lex.process_word(k, scope)
                if k in build_args:
                    args[k] = build_args[k]
                elif eq:
                    args[k] = lex.process_word(v, scope)
        elif ins.cmd in ("cmd", "entrypoint"):
            out[ins.cmd.capitalize()] = ins.args if ins.json_form else shell + ins.args
        elif ins.cmd == "shell":
            shell = out["Shell"] = ins.args
        elif ins.cmd == "onbuild":
            onbuild += ins.args
            out["OnBuild"] = list(onbuild)
        elif ins.cmd == "healthcheck":
            if ins.args == ["NONE"]:
                out["Healthcheck"] = {"Test": ["NONE"]}
                continue
            test = ["CMD", *ins.args[1:]] if ins.json_form else ["CMD-SHELL", ins.args[1]]
            hc: dict[str, object] = {"Test": test}
            for flag, key in (
                ("interval", "Interval"),
                ("timeout", "Timeout"),
                ("start-period", "StartPeriod"),
            ):
                if flag in ins.flags and parse_go_duration(ins.flags[flag][0]):
                    hc[key] = parse_go_duration(ins.flags[flag][0])
            if "retries" in ins.flags and int(ins.flags["retries"][0]):
                hc["Retries"] = int(ins.flags["retries"][0])
            out["Healthcheck"] = hc
    return {k: v for k, v in out.items() if v}  # as inspected: empty fields left out


@pytest.mark.parametrize(("name", "text", "build_args", "config"), MEASURED, ids=[m[0] for m in MEASURED])
def test_matches_dockerd_20_10(
    name: str, text: str, build_args: dict[str, str], config: dict[str, object]
) -> None:
    assert _dispatch_metadata(text, build_args) == config
