"""The OCI runtime-tools validation suite against skiff-runc.

/work/shared/conformance/runtime-tools/run.sh builds opencontainers/runtime-tools' validation
programs (Go) and runs each against the runtime; it writes one line per test file to
``summary.txt``. The goal: every file that runc 1.1.5 passes on this kind of machine
(``baseline-runc.txt`` beside run.sh) passes for skiff-runc too. Files that fail for skiff-runc
and for runc are printed but not asserted (see the table and docs in the report: most are
disagreements between the suite and the spec, or host limits).

The Go build takes about a minute: it is kept in a stable directory, ``SKIFF_RT_CACHE``
(default /var/tmp/skiff-runtime-tools), built there once per source version by a run of run.sh
that selects no test, under a lock; each test run then uses a fresh work directory in /tmp
whose ``build`` is a symlink to the cached build (run.sh rebuilds into the work directory
instead if the source changed in between). Not pytest's tmp_path: the bundles are made under
the work directory, and the user-namespace tests' container root (a mapped, unprivileged host
uid) must be able to reach them, which /tmp/pytest-of-root (0700) forbids. The work directory
is removed after a pass and kept (its path printed) after a failure. run.sh runs every test file in a private
mount namespace and deletes the containers the suite leaves; the harness's leak checker checks
that no cgroup or process is left.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

SUITE = os.environ.get("SKIFF_RT_SUITE", "/work/shared/conformance/runtime-tools")
CACHE = os.environ.get("SKIFF_RT_CACHE", "/var/tmp/skiff-runtime-tools")
RUNTIME = os.path.join(os.path.dirname(sys.executable), "skiff-runc")


def read_summary(text: str) -> dict[str, tuple[str, str]]:
    """``PASS name: details`` lines of a tap_run.py summary -> {name: (status, details)}."""
    out = {}
    for line in text.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("PASS", "FAIL", "SKIP") and ": " in rest:
            name, _, details = rest.partition(": ")
            out[name] = (status, details)
    return out


def _run_sh(work: str, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, RUNTIME=RUNTIME, RT_WORK=work, **env)
    return subprocess.run([os.path.join(SUITE, "run.sh")], env=full, capture_output=True,
                          text=True, timeout=1500)


def _cached_build(tmp_path) -> str:
    """The cached build directory, built (once per source version) if needed."""
    os.makedirs(CACHE, exist_ok=True)
    # a skip list naming every test: run.sh builds, then runs nothing
    names = sorted(os.listdir(os.path.join(SUITE, "src", "validation")))
    skip_all = tmp_path / "skip-all.txt"
    skip_all.write_text("\n".join(names) + "\n")
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time
        p = _run_sh(CACHE, RT_SKIP=str(skip_all))
    assert p.returncode == 0 and p.stdout.rstrip().endswith("0 passed, 0 failed"), (
        f"building the validation suite in {CACHE} failed:\n{p.stdout}\n{p.stderr}")
    return os.path.join(CACHE, "build")


@pytest.mark.timeout(1800)  # a cold Go build (about a minute here) plus ~50 test files (~70 s)
def test_runtime_tools_validation_suite(tmp_path):
    from pathlib import Path

    build = _cached_build(tmp_path)
    work = Path(tempfile.mkdtemp(prefix="skiff-rt-", dir="/tmp"))
    os.chmod(work, 0o755)
    os.symlink(build, work / "build")
    try:
        _check_run(work)
    except BaseException:
        print(f"keeping {work} (results/skiff-runc/ holds each test file's TAP and stderr)")
        raise
    shutil.rmtree(work)


def _check_run(work) -> None:
    p = _run_sh(str(work))
    summary_file = work / "results" / "skiff-runc" / "summary.txt"
    assert summary_file.exists(), f"run.sh wrote no summary:\n{p.stdout}\n{p.stderr}"
    ours = read_summary(summary_file.read_text())
    with open(os.path.join(SUITE, "baseline-runc.txt")) as f:
        runc = read_summary(f.read())
    with open(os.path.join(SUITE, "baseline-crun.txt")) as f:
        crun = read_summary(f.read())
    required = sorted(n for n, (s, _) in runc.items() if s == "PASS")
    assert len(required) >= 30 and len(ours) >= 50, (len(required), len(ours), p.stdout)

    rows = [f"{'test file':34} {'runc':5} {'crun':5} {'skiff':5}  skiff details"]
    for name in sorted(set(ours) | set(runc)):
        r = runc.get(name, ("-", ""))[0]
        c = crun.get(name, ("-", ""))[0]
        s, details = ours.get(name, ("-", "missing from the run"))
        rows.append(f"{name:34} {r:5} {c:5} {s:5}  {details}")
    passed = {n: sum(1 for s, _ in d.values() if s == "PASS") for n, d in
              (("runc", runc), ("crun", crun), ("skiff", ours))}
    rows.append(f"files passed: runc {passed['runc']}, crun {passed['crun']}, "
                f"skiff-runc {passed['skiff']} (of {len(ours)})")
    table = "\n".join(rows)
    print(table)

    regressions = [n for n in required if ours.get(n, ("-",))[0] != "PASS"]
    assert not regressions, (f"files runc 1.1.5 passes and skiff-runc fails: {regressions}; "
                             f"logs in {work}/results/skiff-runc\n{table}")
    assert p.returncode == 0, f"run.sh exited {p.returncode}:\n{p.stdout}\n{p.stderr}"


def test_read_summary_parses_tap_run_lines():
    text = ("runtime: x\nPASS create: 4 ok, 0 not ok, 0 skip\n"
            "FAIL misc_props: 2 ok, 1 not ok, 0 skip | skiff-runc: boom: x\n"
            "files: 1 passed, 1 failed, 0 skipped\n1 passed, 1 failed\n")
    assert read_summary(text) == {"create": ("PASS", "4 ok, 0 not ok, 0 skip"),
                                  "misc_props": ("FAIL", "2 ok, 1 not ok, 0 skip | skiff-runc: boom: x")}
