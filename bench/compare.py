#!/usr/bin/env python3
"""Time commands side by side: warm-up runs, then alternating rounds (A B C A B C ...).

    python bench/compare.py -n 30 --name runc 'runc run -b b bench-{i}' --name crun 'crun run ...'

Prints, per command: median wall time, min-max, the ratio of its median to the first
(baseline) command's median, median CPU time (user+sys of the command and the children it
waited for, from wait4's rusage) and peak RSS (the largest resident set of any process in the
command's tree that was waited for).

Peak RSS needs care: a process records the peak RSS of the memory it replaces when it execs, so
any direct child of this Python process reports at least this Python's own RSS (about 13 MiB).
The peak RSS is therefore measured in a few extra runs (``--rss-runs``, default 3, not timed)
started through GNU time (``/usr/bin/time -f %M``), whose own small footprint is what a child
inherits; without it, ``busybox time`` (a floor of about 5 MiB); without either, wait4's numbers
from the timed runs, marked ``*`` (a floor of this Python's RSS).

Per-command options come before the command they belong to:

    --name NAME      label (default: the command itself)
    --setup CMD      run before every run of the command, not timed
    --cleanup CMD    run after every run of the command, not timed (also after a failed run)

``{i}`` in a command, its setup or its cleanup is replaced by the run's number (0, 1, 2, ...;
warm-up runs included), so each run can use a fresh container id. A command is a shell string
(run by /bin/sh when it holds shell syntax, else split and executed directly, so no shell is
timed) or a JSON argv list (``'["runc", "run", "x"]'``).

Global options: ``-n/--runs N`` (30), ``-w/--warmup N`` (3), ``--rss-runs N`` (3),
``--json FILE`` (raw numbers),
``--show-output`` (let the commands write to this terminal; by default stdout goes to /dev/null
and stderr is kept to explain failures). A command that fails (non-zero exit, or its setup
fails) is dropped from further rounds and shown with its error instead of numbers.

Standard library only.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

SHELL_CHARS = set("|&;<>()$`\\\"'*?[]#~\n")


@dataclass
class Command:
    argv: str | list[str]  # shell string or argv list; "{i}" is replaced by the run number
    name: str = ""
    setup: str | list[str] | None = None
    cleanup: str | list[str] | None = None

    def label(self) -> str:
        return self.name or (self.argv if isinstance(self.argv, str) else shlex.join(self.argv))


@dataclass
class Result:
    command: Command
    wall: list[float] = field(default_factory=list)  # seconds
    cpu: list[float] = field(default_factory=list)  # user+sys seconds
    maxrss_kib: list[int] = field(default_factory=list)  # from the RSS runs
    wait4_maxrss_kib: list[int] = field(default_factory=list)  # from the timed runs (floored)
    error: str = ""


def to_argv(cmd: str | list[str], i: int) -> list[str]:
    """The argv to execute for run ``i``: a list as given, a string split or run by /bin/sh."""
    if isinstance(cmd, list):
        return [a.replace("{i}", str(i)) for a in cmd]
    text = cmd.replace("{i}", str(i))
    words = text.split()
    if SHELL_CHARS & set(text) or not words or "=" in words[0]:
        return ["/bin/sh", "-c", text]
    return words


def run_once(argv: list[str], *, show_output: bool = False) -> tuple[float, float, int, int, str]:
    """Run ``argv`` once; return (wall seconds, cpu seconds, maxrss KiB, wait status, stderr)."""
    with tempfile.TemporaryFile() as err:
        actions = []
        if not show_output:
            actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                       (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                       (os.POSIX_SPAWN_DUP2, err.fileno(), 2)]
        t0 = time.perf_counter()
        try:
            pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
        except OSError as e:
            return 0.0, 0.0, 0, 127 << 8, f"cannot run {argv[0]}: {e.strerror}"
        _, status, ru = os.wait4(pid, 0)
        wall = time.perf_counter() - t0
        err.seek(0)
        text = err.read().decode(errors="replace")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, status, text


def _describe(status: int, stderr: str) -> str:
    if os.WIFSIGNALED(status):
        how = f"killed by signal {os.WTERMSIG(status)}"
    else:
        how = f"exit status {os.waitstatus_to_exitcode(status)}"
    tail = " | ".join(line for line in stderr.strip().splitlines()[-3:] if line.strip())
    return f"{how}: {tail}" if tail else how


def _aux(cmd: str | list[str] | None, i: int, what: str, show_output: bool) -> str:
    """Run a setup/cleanup command; return an error description or ""."""
    if cmd is None:
        return ""
    _, _, _, status, err = run_once(to_argv(cmd, i), show_output=show_output)
    return "" if status == 0 else f"{what} failed ({_describe(status, err)})"


def rss_tool() -> list[str]:
    """The argv prefix that reports a command's peak RSS in KiB on the last line of ``-o FILE``."""
    for path in ("/usr/bin/time", "/bin/busybox"):
        if os.access(path, os.X_OK):
            return [path, "-f", "%M", "-o"] if path.endswith("/time") else [path, "time", "-f", "%M", "-o"]
    return []


def _one_round(r: Result, i: int, *, timed: bool, rss: list[str], show_output: bool) -> None:
    c = r.command
    err = _aux(c.setup, i, "setup", show_output)
    if not err:
        argv = to_argv(c.argv, i)
        if rss:
            with tempfile.NamedTemporaryFile("r") as out:
                _, _, _, status, stderr = run_once(rss + [out.name] + argv, show_output=show_output)
                report = out.read().split()
            if status == 0:
                if not report or not report[-1].isdigit():
                    err = f"{rss[0]} wrote no peak RSS: {' '.join(report)!r}"
                else:
                    r.maxrss_kib.append(int(report[-1]))
        else:
            wall, cpu, kib, status, stderr = run_once(argv, show_output=show_output)
            if status == 0 and timed:
                r.wall.append(wall)
                r.cpu.append(cpu)
                r.wait4_maxrss_kib.append(kib)
        if status != 0:
            err = _describe(status, stderr)
    cleanup_err = _aux(c.cleanup, i, "cleanup", show_output)
    if err or cleanup_err:
        r.error = f"run {i}: " + "; ".join(e for e in (err, cleanup_err) if e)


def compare(commands: list[Command], *, runs: int = 30, warmup: int = 3, rss_runs: int = 3,
            show_output: bool = False, progress: bool = True) -> list[Result]:
    """Warm up, run the commands in alternating timed rounds, then the RSS rounds."""
    results = [Result(c) for c in commands]
    tool = rss_tool() if rss_runs else []
    schedule: list[tuple[str, bool, list[str]]] = [("w", False, [])] * warmup + [(".", True, [])] * runs + [("m", False, tool)] * (
        rss_runs if tool else 0)
    for i, (mark, timed, rss) in enumerate(schedule):
        for r in results:
            if not r.error:
                _one_round(r, i, timed=timed, rss=rss, show_output=show_output)
        if progress:
            sys.stderr.write(mark)
            sys.stderr.flush()
    if progress:
        sys.stderr.write("\n")
    return results


def _ms(s: float) -> str:
    return f"{s * 1000:.1f}"


def format_table(results: list[Result], title: str = "") -> str:
    """Median, min-max, ratio to the first command, CPU time and peak RSS, one line each."""
    base = results[0] if results and not results[0].error and results[0].wall else None
    base_med = statistics.median(base.wall) if base else 0.0
    name_w = max([len(r.command.label()) for r in results] + [7])
    head = (f"{'command':<{name_w}}  {'median ms':>9}  {'min-max ms':>15}  {'ratio':>6}  "
            f"{'cpu ms':>7}  {'peak RSS':>10}  runs")
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    floored = False
    for r in results:
        label = r.command.label()
        if r.error or not r.wall:
            lines.append(f"{label:<{name_w}}  FAILED: {r.error or 'no runs'}")
            continue
        med = statistics.median(r.wall)
        ratio = f"{med / base_med:.2f}" if base_med else "-"
        if r.maxrss_kib:
            rss = f"{max(r.maxrss_kib) / 1024:>6.1f} MiB"
        else:
            rss = f"{max(r.wait4_maxrss_kib) / 1024:>5.1f}* MiB"
            floored = True
        lines.append(f"{label:<{name_w}}  {_ms(med):>9}  {_ms(min(r.wall)) + '-' + _ms(max(r.wall)):>15}  "
                     f"{ratio:>6}  {_ms(statistics.median(r.cpu)):>7}  {rss:>10}  {len(r.wall)}")
    if base is None and results:
        lines.append(f"(no ratios: the baseline {results[0].command.label()!r} has no successful runs)")
    if floored:
        lines.append("* from the timed runs' wait4: at least this Python's own RSS (no time tool for RSS runs)")
    return "\n".join(lines)


def to_json(results: list[Result]) -> list[dict]:
    return [{"name": r.command.label(), "argv": r.command.argv, "wall_s": r.wall, "cpu_s": r.cpu,
             "maxrss_kib": r.maxrss_kib, "wait4_maxrss_kib": r.wait4_maxrss_kib, "error": r.error}
            for r in results]


def parse_args(argv: list[str]) -> tuple[list[Command], dict]:
    opts: dict = {"runs": 30, "warmup": 3, "rss_runs": 3, "json": "", "show_output": False}
    commands: list[Command] = []
    pending: dict = {}
    it = iter(argv)
    for a in it:
        if a in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        if a in ("-n", "--runs", "-w", "--warmup", "--rss-runs", "--json", "--name", "--setup", "--cleanup"):
            try:
                val = next(it)
            except StopIteration:
                raise SystemExit(f"compare.py: {a} needs a value") from None
            if a in ("-n", "--runs", "-w", "--warmup", "--rss-runs"):
                key = {"-n": "runs", "--runs": "runs", "-w": "warmup", "--warmup": "warmup"}.get(a, "rss_runs")
                try:
                    opts[key] = int(val)
                except ValueError:
                    raise SystemExit(f"compare.py: {a} needs a whole number, not {val!r}") from None
            elif a == "--json":
                opts["json"] = val
            else:
                pending[a[2:]] = val
        elif a == "--show-output":
            opts["show_output"] = True
        elif a.startswith("-") and not commands and not pending and a != "-":
            raise SystemExit(f"compare.py: unknown option {a}")
        else:
            cmd: str | list[str] = a
            if a.lstrip().startswith("["):
                try:
                    cmd = json.loads(a)
                except ValueError as e:
                    raise SystemExit(f"compare.py: command {a!r} looks like a JSON list but is not: {e}") from None
                if not (isinstance(cmd, list) and cmd and all(isinstance(x, str) for x in cmd)):
                    raise SystemExit(f"compare.py: a JSON command must be a non-empty list of strings: {a!r}")
            commands.append(Command(cmd, name=pending.get("name", ""), setup=pending.get("setup"),
                                    cleanup=pending.get("cleanup")))
            pending = {}
    if pending:
        raise SystemExit(f"compare.py: {', '.join('--' + k for k in pending)} given after the last command")
    if not commands:
        raise SystemExit("compare.py: no commands given (see --help)")
    if opts["runs"] < 1 or opts["warmup"] < 0 or opts["rss_runs"] < 0:
        raise SystemExit("compare.py: --runs must be at least 1, --warmup and --rss-runs at least 0")
    return commands, opts


def main(argv: list[str] | None = None) -> int:
    commands, opts = parse_args(sys.argv[1:] if argv is None else argv)
    results = compare(commands, runs=opts["runs"], warmup=opts["warmup"], rss_runs=opts["rss_runs"],
                      show_output=opts["show_output"])
    print(format_table(results, f"{opts['runs']} runs each after {opts['warmup']} warm-up, alternating"))
    if opts["json"]:
        with open(opts["json"], "w") as f:
            json.dump(to_json(results), f, indent=1)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
