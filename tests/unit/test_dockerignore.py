""".dockerignore reading and matching (skiff.dockerignore) against Docker's documented behaviour.

The cases come from the .dockerignore section of the Dockerfile reference: comments, cleaning
(``/foo/bar`` and ``foo/bar`` are the same), ``filepath.Match`` syntax, ``**``, ``!`` exceptions
where the last matching line decides, and a pattern matching a parent directory excluding what is
under it.  The properties compare the matcher with an independent segment-by-segment matcher.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skiff.dockerignore import Matcher, PatternError, clean, parse

# --- reading --------------------------------------------------------------------------------------

PARSE_CASES = [
    ("", []),
    ("# comment\n\n   \n", []),
    ("*/temp*\n*/*/temp*\ntemp?\n", ["*/temp*", "*/*/temp*", "temp?"]),
    # leading "/" and "./" are dropped, paths cleaned
    ("/foo/bar\nfoo/bar\n./foo//bar/\nfoo/./baz/../bar\n", ["foo/bar"] * 4),
    ("  spaced  \n\tx\t\n", ["spaced", "x"]),
    # only a "#" in the first column starts a comment
    ("  #not-a-comment\n#comment\n", ["#not-a-comment"]),
    # exceptions keep their "!", cleaned after it
    ("!README.md\n! /docs/./a\n!\n", ["!README.md", "!docs/a", "!"]),
    ("/\n", ["/"]),
    ("../outside\n", ["../outside"]),
    ("/../x\n", ["x"]),
    ("\ufeff*.md\r\n!README.md\r\n", ["*.md", "!README.md"]),
    ("**/*.go\n.git\n", ["**/*.go", ".git"]),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse(text: str, expected: list[str]) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", "."),
        (".", "."),
        ("a//b", "a/b"),
        ("a/b/", "a/b"),
        ("./a", "a"),
        ("a/../..", ".."),
        ("/..", "/"),
        ("/a/../../b", "/b"),
        ("../../a", "../../a"),
        ("//a", "/a"),
        ("a/./b/.", "a/b"),
    ],
)
def test_clean_is_go_path_clean(path: str, expected: str) -> None:
    assert clean(path) == expected


# --- matching: the documented examples ------------------------------------------------------------


def excluded(patterns: str, path: str) -> bool:
    return Matcher(parse(patterns)).excluded(path)


MATCH_CASES = [
    # */temp*: files and directories starting with temp in any immediate subdirectory
    ("*/temp*", "somedir/temporary.txt", True),
    ("*/temp*", "somedir/temp", True),
    ("*/temp*", "somedir/temp/inside", True),  # the parent directory matches
    ("*/temp*", "temp", False),
    ("*/temp*", "a/b/temp", False),
    # */*/temp*: two levels below the root
    ("*/*/temp*", "somedir/subdir/temporary.txt", True),
    ("*/*/temp*", "somedir/temporary.txt", False),
    # temp?: one character after temp, in the root
    ("temp?", "tempa", True),
    ("temp?", "tempb", True),
    ("temp?", "temp", False),
    ("temp?", "tempab", False),
    ("temp?", "dir/tempa", False),
    # **: any number of directories, including none
    ("**/*.go", "main.go", True),
    ("**/*.go", "a/b/c/main.go", True),
    ("**/*.go", "a/b/main.py", False),
    ("**/vendor", "vendor", True),
    ("**/vendor", "x/vendor/y", True),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "a/x/y/bb", False),
    ("a/**", "a/x/y", True),
    ("a/**", "a", False),
    ("**", "anything/at/all", True),
    ("**foo", "barfoo", True),  # a leading ** matches any path ending with the rest
    ("**foo", "x/barfoo", True),
    # "*" and "?" do not cross "/"
    ("*", "top", True),
    ("*", "dir/file", True),  # via the parent "dir"
    ("*.md", "README.md", True),
    ("*.md", "docs/guide.md", False),
    ("a?b", "a/b", False),
    # exact names, cleaned
    ("/foo/bar", "foo/bar", True),
    ("foo/bar", "foo/bar/baz.txt", True),
    ("foo/bar", "foo/barista", False),
    ("foo/bar", "foo", False),
    ("./foo", "foo", True),
    (".git", ".git/HEAD", True),
    ("node_modules", "node_modules/x/index.js", True),
    ("node_modules", "src/node_modules", False),
    # character classes and ranges (filepath.Match)
    ("docs/[a-c]*.md", "docs/b1.md", True),
    ("docs/[a-c]*.md", "docs/d.md", False),
    ("file[0-9]", "file7", True),
    ("file[^0-9]", "file7", False),
    ("file[^0-9]", "filex", True),
    ("file[ab-]x", "file-x", False),  # invalid class: see test_bad_patterns
    # escapes
    ("\\*.txt", "*.txt", True),
    ("\\*.txt", "a.txt", False),
    ("a\\?", "a?", True),
    ("a\\?", "ab", False),
    ("file\\[1]", "file[1]", True),
    # regex metacharacters are literal
    ("a.b", "axb", False),
    ("a+b(c)|{d}$", "a+b(c)|{d}$", True),
    ("^a", "^a", True),
    # the context root is never excluded
    ("*", ".", False),
    ("**", "", False),
]


@pytest.mark.parametrize(("patterns", "path", "expected"), [c for c in MATCH_CASES if "[ab-]" not in c[0]])
def test_matching(patterns: str, path: str, expected: bool) -> None:
    assert excluded(patterns, path) is expected


EXCEPTION_CASES = [
    # all markdown files right under the context are excluded except README.md
    ("*.md\n!README.md", {"README.md": False, "CHANGES.md": True, "docs/x.md": False}),
    # the last matching line decides
    (
        "*.md\n!README*.md\nREADME-secret.md",
        {"README.md": False, "README-ok.md": False, "README-secret.md": True, "other.md": True},
    ),
    ("*.md\nREADME-secret.md\n!README*.md", {"README-secret.md": False, "README.md": False, "x.md": True}),
    # an exception for a parent directory re-includes what is under it
    ("docs\n!docs/keep", {"docs/a": True, "docs/keep": False, "docs/keep/deep/x": False}),
    ("*\n!src", {"src/main.c": False, "build/out": True, "Makefile": True}),
    # re-excluded below an exception
    ("*\n!src\nsrc/*.o", {"src/a.c": False, "src/a.o": True, "src/sub/a.o": False}),
    ("**/*.log\n!important/*.log", {"x.log": True, "important/a.log": False, "important/sub/a.log": True}),
]


@pytest.mark.parametrize(("patterns", "expectations"), EXCEPTION_CASES)
def test_exceptions(patterns: str, expectations: dict[str, bool]) -> None:
    m = Matcher(parse(patterns))
    assert m.has_exceptions
    assert {p: m.excluded(p) for p in expectations} == expectations


def test_has_exceptions_and_patterns() -> None:
    assert not Matcher(parse("a\nb/**\n")).has_exceptions
    m = Matcher(["  a//b ", "", "!c/./d"])
    assert m.has_exceptions
    assert m.patterns == ["a/b", "!c/d"]


def test_may_reinclude_under() -> None:
    m = Matcher(parse("vendor\nbuild\n!build/keep/me\n!**/x\n"))
    assert m.may_reinclude_under("build")
    assert m.may_reinclude_under("build/keep")
    # as Docker's context walker: only an exception starting with the directory counts
    assert not m.may_reinclude_under("vendor")
    assert not Matcher(parse("vendor\n")).may_reinclude_under("vendor")


@pytest.mark.parametrize(
    "pattern",
    ["[", "a[", "[]", "[]a]", "[a-]", "[-a]", "a\\", "[\\", "[z-a]", "!"],
)
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(PatternError):
        Matcher([pattern])


def test_bad_pattern_message_names_it() -> None:
    with pytest.raises(PatternError, match=r"syntax error in pattern 'file\[ab-\]x'"):
        Matcher(["file[ab-]x"])
    with pytest.raises(PatternError, match='illegal exclusion pattern: "!"'):
        Matcher(parse("!\n"))


# --- properties -------------------------------------------------------------------------------

SEGMENTS = ["a", "b", "ab", "*", "?", "a*", "*b", "a?", "[ab]", "[a-b]x", "**"]
PATH_SEGMENTS = st.text(alphabet="abx", min_size=1, max_size=3)
PATHS = st.lists(PATH_SEGMENTS, min_size=1, max_size=4).map("/".join)


def _pattern(exceptions: bool) -> st.SearchStrategy[str]:
    body = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4).map("/".join)
    if not exceptions:
        return body
    return st.tuples(st.booleans(), body).map(lambda t: ("!" if t[0] else "") + t[1])


def _segment_match(pat: str, name: str) -> bool:
    """filepath.Match of one segment (no "/"): *, ?, [a-b] classes, literals."""
    if not pat:
        return not name
    ch = pat[0]
    if ch == "*":
        return any(_segment_match(pat[1:], name[i:]) for i in range(len(name) + 1))
    if not name:
        return False
    if ch == "?":
        return _segment_match(pat[1:], name[1:])
    if ch == "[":
        end = pat.index("]")
        members = pat[1:end]
        allowed = set()
        i = 0
        while i < len(members):
            if i + 2 < len(members) and members[i + 1] == "-":
                allowed |= {chr(c) for c in range(ord(members[i]), ord(members[i + 2]) + 1)}
                i += 3
            else:
                allowed.add(members[i])
                i += 1
        return name[0] in allowed and _segment_match(pat[end + 1 :], name[1:])
    return ch == name[0] and _segment_match(pat[1:], name[1:])


def _segments_match(pats: list[str], names: list[str]) -> bool:
    if not pats:
        return not names
    if pats[0] == "**":
        if len(pats) == 1:  # a trailing "**": one or more segments
            return len(names) >= 1
        return any(_segments_match(pats[1:], names[i:]) for i in range(len(names) + 1))
    return bool(names) and _segment_match(pats[0], names[0]) and _segments_match(pats[1:], names[1:])


def _reference_excluded(patterns: list[str], path: str) -> bool:
    """The documented rule, independently: the last pattern matching the path or one of its
    parent directories decides; "!" patterns include."""
    names = path.split("/")
    result = False
    for raw in patterns:
        exclusion = raw.startswith("!")
        pats = (raw[1:] if exclusion else raw).split("/")
        if any(_segments_match(pats, names[:n]) for n in range(1, len(names) + 1)):
            result = not exclusion
    return result


@settings(max_examples=400)
@given(st.lists(_pattern(exceptions=True), min_size=1, max_size=4), PATHS)
def test_matches_the_segment_reference(patterns: list[str], path: str) -> None:
    assert Matcher(patterns).excluded(path) == _reference_excluded(patterns, path)


@settings(max_examples=300)
@given(st.lists(_pattern(exceptions=False), min_size=1, max_size=4), PATHS, PATH_SEGMENTS)
def test_without_exceptions_an_excluded_directory_excludes_its_contents(
    patterns: list[str], path: str, child: str
) -> None:
    m = Matcher(patterns)
    assert not m.has_exceptions
    if m.excluded(path):
        assert m.excluded(path + "/" + child)


@settings(max_examples=300)
@given(st.lists(_pattern(exceptions=True), max_size=4), PATHS)
def test_a_last_literal_pattern_decides(patterns: list[str], path: str) -> None:
    assert Matcher(patterns + [path]).excluded(path)
    assert not Matcher(patterns + [path, "!" + path]).excluded(path)
    assert not Matcher(patterns + ["!" + path]).excluded(path)


PATTERN_TEXT = st.text(alphabet=string.ascii_letters + "./!*? \t", max_size=20)


@settings(max_examples=300)
@given(st.lists(PATTERN_TEXT, max_size=6))
def test_parse_then_match_is_idempotent(lines: list[str]) -> None:
    """Re-reading what parse() returns gives a matcher with the same patterns.  (parse itself is
    not idempotent, as in Docker: "/ x" becomes " x", stripped only by the matcher.)"""
    once = parse("\n".join(lines))
    if "!" in once:
        return  # an illegal pattern either way
    assert Matcher(parse("\n".join(once))).patterns == Matcher(once).patterns


# --- measured against the docker CLI 28.2.2 ---------------------------------------------------------
# A context holding FILES was sent by the real docker CLI (DOCKER_BUILDKIT=0, to a dockerd 20.10)
# with each .dockerignore below and copied into a FROM scratch image (COPY . /ctx/); the files that
# reached the image were recorded.  A walk of the same tree with Matcher (entering an excluded
# directory only when may_reinclude_under says so, as the CLI's context walker) must agree.
CONTEXT_FILES = [
    "README.md",
    "CHANGES.md",
    "README-secret.md",
    "README-ok.md",
    "docs/guide.md",
    "docs/a/b1.md",
    "docs/b1.md",
    "docs/d.md",
    "temp",
    "tempa",
    "tempab",
    "x/temp1",
    "x/temporary.txt",
    "a/b/temp2",
    "a/b/temporary.txt",
    "main.go",
    "a/b/c.go",
    "a/b/c.py",
    "keep.log",
    "a.log",
    "sub/a.log",
    "important/a.log",
    "important/sub/a.log",
    "build/out",
    "build/keep/me",
    "build/keep/other",
    "file[1]",
    "*.txt",
    "a.txt",
    "node_modules/x/index.js",
    "src/node_modules/y.js",
    "src/main.c",
    "src/a.o",
    "src/sub/a.o",
    "vendor/v.go",
    "x/vendor/w.go",
    "barfoo",
    "y/barfoo",
    "ab",
    "a?",
    "file7",
    "filex",
    ".git/HEAD",
    ".hidden",
    "deep/1/2/3/4.txt",
    "a+b(c)|{d}$",
    "sp ace/f",
]

MEASURED_CLI = [
    (
        "docs-example",
        "# comment\n*/temp*\n*/*/temp*\ntemp?\n",
        "excluded",
        ["a/b/temp2", "a/b/temporary.txt", "tempa", "x/temp1", "x/temporary.txt"],
    ),
    ("md-exception", "*.md\n!README.md\n", "excluded", ["CHANGES.md", "README-ok.md", "README-secret.md"]),
    ("md-last-wins", "*.md\n!README*.md\nREADME-secret.md\n", "excluded", ["CHANGES.md", "README-secret.md"]),
    ("md-last-wins-2", "*.md\nREADME-secret.md\n!README*.md\n", "excluded", ["CHANGES.md"]),
    (
        "doublestar",
        "**/*.go\n**/vendor\n",
        "excluded",
        ["a/b/c.go", "main.go", "vendor/v.go", "x/vendor/w.go"],
    ),
    ("dir-exception", "build\n!build/keep/me\n", "excluded", ["build/keep/other", "build/out"]),
    ("star-exception", "*\n!src\nsrc/*.o\n", "kept", ["src/main.c", "src/node_modules/y.js", "src/sub/a.o"]),
    (
        "log-exception",
        "**/*.log\n!important/*.log\n",
        "excluded",
        ["a.log", "important/sub/a.log", "keep.log", "sub/a.log"],
    ),
    (
        "prefix-suffix",
        "a/**\n**foo\n",
        "excluded",
        ["a/b/c.go", "a/b/c.py", "a/b/temp2", "a/b/temporary.txt", "barfoo", "y/barfoo"],
    ),
    (
        "classes-escapes",
        "docs/[a-c]*.md\nfile[^0-9]\n\\*.txt\na\\?\nfile\\[1]\n",
        "excluded",
        ["*.txt", "a?", "docs/b1.md", "file[1]", "filex"],
    ),
    (
        "cleaning",
        "/node_modules/\n./x//vendor/../vendor\n!/x/vendor/w.go\n",
        "excluded",
        ["node_modules/x/index.js"],
    ),
    ("regex-meta", "a+b(c)|{d}$\n^ab\n", "excluded", ["a+b(c)|{d}$"]),
    ("exception-under-skipped", "deep\n!deep/1/2/3/4.txt\n", "excluded", []),
    ("exception-doublestar-under-excluded", "*\n!**/*.c\n", "kept", []),
    ("hidden", ".*\n!.hidden\n", "excluded", [".git/HEAD"]),
    ("spaces", "  sp ace  \n", "excluded", ["sp ace/f"]),
    ("dot", ".\n", "excluded", []),
    # "^" is not escaped by Docker: an anchor in a pattern that becomes a regex
    (
        "caret-anchor",
        "^a*\nx/^t*\n",
        "excluded",
        [
            "a+b(c)|{d}$",
            "a.log",
            "a.txt",
            "a/b/c.go",
            "a/b/c.py",
            "a/b/temp2",
            "a/b/temporary.txt",
            "a?",
            "ab",
        ],
    ),
]


def _walk_kept(root: Path, m: Matcher) -> set[str]:
    kept: set[str] = set()

    def walk(rel: str) -> None:
        for name in sorted(os.listdir(root / rel if rel else root)):
            r = f"{rel}/{name}" if rel else name
            isdir = (root / r).is_dir()
            if m.excluded(r):
                if isdir and m.may_reinclude_under(r):
                    walk(r)
            elif isdir:
                walk(r)
            else:
                kept.add(r)

    walk("")
    return kept


@pytest.mark.parametrize(("name", "ignore", "which", "files"), MEASURED_CLI, ids=[m[0] for m in MEASURED_CLI])
def test_matches_the_docker_cli(tmp_path: Path, name: str, ignore: str, which: str, files: list[str]) -> None:
    for f in CONTEXT_FILES:
        p = tmp_path / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f)
    kept = _walk_kept(tmp_path, Matcher(parse(ignore)))
    expected_kept = set(files) if which == "kept" else set(CONTEXT_FILES) - set(files)
    assert kept == expected_kept
