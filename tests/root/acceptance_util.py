"""Running ``../shared/acceptance/docker-cli.sh`` one group per test, with known gaps.

A group with checks that do not pass yet is an ``xfail(strict=True)`` whose reason lists those
checks: ``run_group`` raises ``KnownGaps`` only when exactly those (or a subset) fail, so any other
failing check fails the test, and a group that passes entirely turns the xfail into a failure
(remove its entry from the caller's ``KNOWN_GAPS`` then).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "acceptance", "docker-cli.sh")
GROUPS = ("basics", "run", "exec", "logs", "lifecycle", "limits", "security", "events", "images", "cp",
          "network", "volumes", "registry")      # every group of the script

Gaps = dict[str, tuple[set[str], str]]           # group -> (checks that fail today, why)


class KnownGaps(Exception):
    """Only the checks listed in KNOWN_GAPS failed."""


def params(groups: tuple[str, ...], gaps: Gaps) -> list:
    out = []
    for group in groups:
        gap = gaps.get(group)
        if gap is None:
            out.append(group)
            continue
        checks, why = gap
        out.append(pytest.param(group, marks=pytest.mark.xfail(
            raises=KnownGaps, strict=True, reason=f"{why}; failing: {', '.join(sorted(checks))}")))
    return out


def descendants(root: int) -> list[int]:
    """The processes below ``root``, deepest first."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out: list[int] = []
    todo = [root]
    while todo:
        kids = [pid for pid, pp in parent.items() if pp == todo[0]]
        todo = todo[1:] + kids
        out += kids
    return out[::-1]


def run_script(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``argv``; on a timeout, end it and everything it started (by PID) and fail."""
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [*descendants(p.pid), p.pid]:   # script's children are in sessions of their own
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = p.communicate()
        pytest.fail(f"{' '.join(argv)}: no result after {timeout:.0f} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def run_group(env: dict[str, str], docker: str, group: str, gaps: Gaps) -> None:
    # The TTY checks run `script -qec "timeout ..."`: script starts $SHELL -c, and dash (the
    # /bin/sh it falls back to when SHELL is unset, as under CI) forks instead of exec'ing, so
    # timeout, which moves itself to a new process group, leaves the pty's foreground group and
    # the client stops on SIGTTOU. bash execs the one command, and timeout stays in front.
    env = {**env, "DOCKER": docker, "ACC_TIMEOUT": "60", "SHELL": "/bin/bash"}
    r = run_script(["bash", SCRIPT, group], env, timeout=280)
    passed = re.findall(r"^PASS (\S+)", r.stdout, re.M)
    failed = dict(re.findall(r"^FAIL (\S+): (.*)$", r.stdout, re.M))
    summary = re.search(r"^(\d+) passed, (\d+) failed$", r.stdout, re.M)
    assert summary is not None, f"the script did not finish (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
    assert int(summary.group(1)) == len(passed) and int(summary.group(2)) == len(failed)
    assert passed, f"group {group}: no check passed:\n{r.stdout}"
    known = gaps.get(group, (set(), ""))[0]
    unexpected = {k: v for k, v in failed.items() if k not in known}
    assert not unexpected, f"group {group}: failing checks:\n" + "\n".join(
        f"{k}: {v}" for k, v in unexpected.items())
    if failed:
        raise KnownGaps(f"group {group}: {len(passed)} passed; still failing: {', '.join(sorted(failed))}")
    assert r.returncode == 0, r.stdout
