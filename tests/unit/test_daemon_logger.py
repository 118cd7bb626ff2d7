"""skiffd's log drivers: json-file format, rotation, reader (tail, since/until, follow), options."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from skiff.daemon.logger import (
    LogOptError,
    new_logger,
    read_logs,
    validate_log_opts,
)
from skiff.daemon.logger.jsonfile import (
    JSONFileWriter,
    format_time,
    parse_size,
    parse_time,
    rotated_paths,
)

T0 = 1_795_803_342_000_000_000      # 2026-11-27T...Z


def collect(path: str, **kw) -> list[tuple[str, int, bytes]]:
    async def run() -> list[tuple[str, int, bytes]]:
        return [(e.stream, e.time_ns, e.line) async for e in read_logs(path, **kw)]
    return asyncio.run(run())


# --- options -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    ("100", 100), ("10k", 10 * 1024), ("10m", 10 << 20), ("1g", 1 << 30), ("10MB", 10 << 20),
    ("512kib", 512 << 10), ("1.5m", int(1.5 * (1 << 20))), (" 2 m", 2 << 20),
])
def test_parse_size(value: str, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["", "m", "10x", "-1", "1e3"])
def test_parse_size_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(value)


def test_validate_accepts_dockers_options() -> None:
    validate_log_opts("json-file", {"max-size": "10m", "max-file": "3", "compress": "false"})
    validate_log_opts("json-file", {})
    validate_log_opts("none", {})


@pytest.mark.parametrize("driver,opts,message", [
    ("json-file", {"max-sise": "1m"}, "unknown log opt 'max-sise' for json-file log driver"),
    ("json-file", {"compress": "true"}, "log-opt compress: compressing rotated log files is not supported"),
    ("json-file", {"compress": "maybe"}, "log-opt compress: 'maybe' is not a boolean"),
    ("json-file", {"max-file": "0"}, "max-file cannot be less than 1"),
    ("json-file", {"max-file": "two"}, "log-opt max-file: 'two' is not a number"),
    ("json-file", {"max-size": "0"}, "log-opt max-size: '0': must be a positive size"),
    ("json-file", {"max-size": "lots"}, "log-opt max-size: invalid size"),
    ("json-file", {"labels": "a"}, "log-opt labels: log attributes"),
    ("none", {"max-size": "1m"}, "log-opt max-size: the none log driver takes no options"),
    ("local", {}, "logging driver 'local' is not supported by skiffd"),
    ("nosuch", {}, "no log driver named 'nosuch' is registered"),
])
def test_validate_refuses(driver: str, opts: dict[str, str], message: str) -> None:
    with pytest.raises(LogOptError) as ei:
        validate_log_opts(driver, opts)
    assert message in str(ei.value)


def test_none_driver_has_no_writer(tmp_path) -> None:
    assert new_logger("none", {}, str(tmp_path / "x-json.log")) is None
    assert not (tmp_path / "x-json.log").exists()


# --- format ------------------------------------------------------------------------------------

def test_time_format_round_trip() -> None:
    assert format_time(T0 + 9_341_393) == "2026-11-27T18:15:42.009341393Z"
    assert format_time(T0) == "2026-11-27T18:15:42.000000000Z"
    assert parse_time("2026-11-27T18:15:42.009341393Z") == T0 + 9_341_393
    assert parse_time("2026-11-27T18:15:42.5Z") == T0 + 500_000_000
    assert parse_time("2026-11-27T19:15:42+01:00") == T0
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_writer_writes_dockers_format(tmp_path) -> None:
    path = str(tmp_path / "c-json.log")
    w = new_logger("json-file", {}, path)
    assert w is not None
    w.write("stdout", b"hi\n", T0 + 1)
    w.write("stderr", b"bad \xff utf8 \"q\"\n", T0 + 2)
    w.write("stdout", b"partial", T0 + 3)
    w.close()
    raw = open(path, "rb").read()
    lines = raw.split(b"\n")
    assert lines[0] == b'{"log":"hi\\n","stream":"stdout","time":"2026-11-27T18:15:42.000000001Z"}'
    assert json.loads(lines[1]) == {"log": "bad \ufffd utf8 \"q\"\n", "stream": "stderr",
                                    "time": "2026-11-27T18:15:42.000000002Z"}
    assert json.loads(lines[2])["log"] == "partial"
    assert lines[3] == b"" and len(lines) == 4
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_reader_reads_dockerd_written_lines(tmp_path) -> None:
    # a file as dockerd writes it (HTML-escaped characters, Go's JSON)
    path = tmp_path / "d-json.log"
    path.write_bytes(b'{"log":"\\u003cb\\u003e\\n","stream":"stdout","time":"2026-11-27T18:15:42.1Z"}\n'
                     b'{"log":"e\\n","stream":"stderr","time":"2026-11-27T18:15:43.000000001Z"}\n')
    assert collect(str(path)) == [("stdout", T0 + 100_000_000, b"<b>\n"),
                                  ("stderr", T0 + 1_000_000_001, b"e\n")]


# --- rotation ----------------------------------------------------------------------------------

def write_lines(w: JSONFileWriter, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        w.write("stdout" if i % 2 == 0 else "stderr", f"line {i:04d}\n".encode(), T0 + i)
        w.flush()


def test_rotation_keeps_max_file_files(tmp_path) -> None:
    path = str(tmp_path / "c-json.log")
    entry = len(b'{"log":"line 0000\\n","stream":"stdout","time":"2026-11-27T18:15:42.000000000Z"}\n')
    w = new_logger("json-file", {"max-size": str(entry * 10), "max-file": "3"}, path)
    assert isinstance(w, JSONFileWriter)
    write_lines(w, 45)
    w.close()
    assert rotated_paths(path) == [path + ".2", path + ".1"]
    assert not os.path.exists(path + ".3")
    for p in (path, path + ".1", path + ".2"):
        assert os.path.getsize(p) <= entry * 10
    # 45 lines in files of 10: the 15 oldest are gone
    lines = [e[2] for e in collect(path)]
    assert lines == [f"line {i:04d}\n".encode() for i in range(20, 45)]
    # tail counts across the rotated files
    assert [e[2] for e in collect(path, tail=12)] == \
        [f"line {i:04d}\n".encode() for i in range(33, 45)]
    assert collect(path, tail=0) == []
    assert len(collect(path, tail=1000)) == 25


def test_rotation_with_one_file_truncates(tmp_path) -> None:
    path = str(tmp_path / "c-json.log")
    w = new_logger("json-file", {"max-size": "1k"}, path)
    assert isinstance(w, JSONFileWriter)
    write_lines(w, 40)
    w.close()
    assert rotated_paths(path) == []
    assert os.path.getsize(path) <= 1024
    lines = [e[2] for e in collect(path)]
    assert lines and lines[-1] == b"line 0039\n"
    assert lines == [f"line {i:04d}\n".encode() for i in range(40 - len(lines), 40)]


def test_filters_streams_and_time(tmp_path) -> None:
    path = str(tmp_path / "c-json.log")
    w = JSONFileWriter(path)
    write_lines(w, 10)
    w.close()
    assert [e[2] for e in collect(path, stderr=False)] == \
        [f"line {i:04d}\n".encode() for i in range(0, 10, 2)]
    assert [e[0] for e in collect(path, stdout=False)] == ["stderr"] * 5
    assert [e[1] - T0 for e in collect(path, since_ns=T0 + 3, until_ns=T0 + 6)] == [3, 4, 5, 6]
    # tail applies before the time filter, as in dockerd
    assert [e[1] - T0 for e in collect(path, tail=3, since_ns=T0 + 8)] == [8, 9]


def test_missing_log_reads_nothing(tmp_path) -> None:
    assert collect(str(tmp_path / "nothing-json.log")) == []


def test_long_lines_and_tail_of_big_file(tmp_path) -> None:
    path = str(tmp_path / "c-json.log")
    w = JSONFileWriter(path)
    big = b"x" * 200_000 + b"\n"
    for i in range(5):
        w.write("stdout", big, T0 + i)
    w.write("stdout", b"last\n", T0 + 9)
    w.close()
    got = collect(path, tail=2)
    assert [g[2] for g in got] == [big, b"last\n"]


# --- follow ------------------------------------------------------------------------------------

def test_follow_sees_new_entries_across_rotations_until_stopped(tmp_path) -> None:
    path = str(tmp_path / "c-json.log")

    async def run() -> list[bytes]:
        w = JSONFileWriter(path, max_size=400, max_file=2)
        write_lines(w, 2)
        stop = asyncio.Event()
        got: list[bytes] = []
        seen = asyncio.Queue[int]()

        async def follow() -> None:
            async for e in read_logs(path, follow=True, stop=stop):
                got.append(e.line)
                seen.put_nowait(len(got))

        task = asyncio.create_task(follow())
        assert await seen.get() == 1 and await seen.get() == 2
        # many rotations (about 4 entries per file) while the follower waits
        for i in range(2, 30):
            write_lines(w, 1, start=i)
            assert await seen.get() == i + 1
        write_lines(w, 3, start=30)
        w.close()
        stop.set()
        await task
        return got

    got = asyncio.run(run())
    assert got == [f"line {i:04d}\n".encode() for i in range(33)]
    assert rotated_paths(path) == [path + ".1"]


def test_follow_with_truncation(tmp_path) -> None:
    path = str(tmp_path / "c-json.log")

    async def run() -> list[bytes]:
        w = JSONFileWriter(path, max_size=300, max_file=1)
        stop = asyncio.Event()
        got: list[bytes] = []
        seen = asyncio.Queue[int]()

        async def follow() -> None:
            async for e in read_logs(path, follow=True, tail=0, stop=stop):
                got.append(e.line)
                seen.put_nowait(len(got))

        task = asyncio.create_task(follow())
        await asyncio.sleep(0)       # the follower has opened the log (tail=0: nothing before)
        for i in range(12):
            write_lines(w, 1, start=i)
            assert await seen.get() == i + 1
        w.close()
        stop.set()
        await task
        return got

    assert asyncio.run(run()) == [f"line {i:04d}\n".encode() for i in range(12)]


def test_follow_waits_for_the_file_and_stop_ends_it(tmp_path) -> None:
    path = str(tmp_path / "late-json.log")

    async def run() -> list[bytes]:
        stop = asyncio.Event()
        got: list[bytes] = []
        seen = asyncio.Queue[int]()

        async def follow() -> None:
            async for e in read_logs(path, follow=True, stop=stop):
                got.append(e.line)
                seen.put_nowait(1)

        task = asyncio.create_task(follow())
        await asyncio.sleep(0)
        w = JSONFileWriter(path)
        write_lines(w, 1)
        await seen.get()
        # written before stop: still delivered
        write_lines(w, 1, start=1)
        w.close()
        stop.set()
        await task
        return got

    assert asyncio.run(run()) == [b"line 0000\n", b"line 0001\n"]


def test_follow_until_in_the_past_does_not_follow(tmp_path) -> None:
    path = str(tmp_path / "c-json.log")
    w = JSONFileWriter(path)
    write_lines(w, 3)
    w.close()
    # no stop event: returns only because until is in the past
    assert len(collect(path, follow=True, until_ns=T0 + 1)) == 2


def test_effective_log_config_merges_as_dockerd() -> None:
    from skiff.daemon.logger import effective_log_config
    daemon_opts = {"max-size": "10m", "max-file": "2"}
    assert effective_log_config(None, "json-file", daemon_opts) == ("json-file", daemon_opts)
    assert effective_log_config({"Type": "", "Config": {}}, "json-file", daemon_opts) == \
        ("json-file", daemon_opts)
    assert effective_log_config({"Type": "json-file", "Config": {"max-size": "1m"}}, "json-file",
                                daemon_opts) == ("json-file", {"max-size": "1m", "max-file": "2"})
    # another driver than the daemon's: the daemon's options do not apply
    assert effective_log_config({"Type": "none"}, "json-file", daemon_opts) == ("none", {})
    assert effective_log_config({"Type": "json-file"}, "none", {}) == ("json-file", {})
    with pytest.raises(LogOptError, match="unknown log opt 'foo'"):
        effective_log_config({"Type": "json-file", "Config": {"foo": "1"}}, "json-file", {})
    with pytest.raises(LogOptError, match="expected an object of strings"):
        effective_log_config({"Config": {"max-size": 5}}, "json-file", {})
