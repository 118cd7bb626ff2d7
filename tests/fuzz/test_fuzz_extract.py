"""Runs the atheris harness (fuzz_extract.py) for a short while: no crash, no escape.

Marked slow (about 20 s of fuzzing). SKIFF_FUZZ_SECONDS changes the duration.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HARNESS = os.path.join(os.path.dirname(__file__), "fuzz_extract.py")


@pytest.mark.slow
def test_fuzz_the_extractor(tmp_path):
    corpus = tmp_path / "corpus"
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "SKIFF_FUZZ_DIR": str(work)}
    subprocess.run([sys.executable, HARNESS, "--make-corpus", str(corpus)], check=True, env=env)
    seeds = len(os.listdir(corpus))
    seconds = int(os.environ.get("SKIFF_FUZZ_SECONDS", "20"))
    proc = subprocess.run(
        [sys.executable, HARNESS, str(corpus), f"-max_total_time={seconds}", "-timeout=20",
         "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=seconds + 120, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Done" in out and "stat::number_of_executed_units" in out
    runs = int(out.split("stat::number_of_executed_units:")[1].split()[0])
    assert runs > seeds  # it ran beyond the seeds
    assert not [f for f in os.listdir(tmp_path) if f.startswith(("crash-", "timeout-", "oom-"))]
