"""Issue 10's proof: ``build-acceptance.sh`` (the ``build`` acceptance group: every instruction,
multi-stage, build args and --target, a fully cached rebuild, a failing RUN's message and exit
code, .dockerignore, the Dockerfile from outside the context and from stdin, -q, --iidfile,
history, hostile contexts) driven by three clients against a private skiffd:

- the real docker CLI with ``DOCKER_BUILDKIT=0`` (classic builder, after its deprecation notice);
- the real docker CLI as is (no buildx here: it falls back to the classic ``POST /build``);
- the skiff CLI.

The same script also runs against a private real dockerd 20.10 (its classic builder) with the
real docker CLI and with the skiff CLI: those runs keep the script's expectations Docker's own,
and check the skiff CLI against Docker's daemon (``test_reference_dockerd_*``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from acceptance_util import run_script
from dockerd_util import busybox_dockerd
from skiffd_util import DOCKER, Skiffd

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(Path(__file__).resolve().parent / "build-acceptance.sh")
SKIFF = os.path.join(os.path.dirname(sys.executable), "skiff")
BUSYBOX_TAR = REPO / "build" / "images" / "busybox.tar"

# client -> (program, extra environment)
CLIENTS = {
    "docker-classic": (DOCKER, {"DOCKER_BUILDKIT": "0"}),
    "docker-plain": (DOCKER, {}),
    "skiff": (SKIFF, {}),
}

pytestmark = [pytest.mark.root, pytest.mark.slow]


def run_build_group(env: dict[str, str], client: str) -> None:
    program, extra = CLIENTS[client]
    env = {k: v for k, v in env.items() if k != "DOCKER_BUILDKIT"}
    env.update(extra, DOCKER=program, ACC_TIMEOUT="120", BUSYBOX_TAR=str(BUSYBOX_TAR))
    r = run_script(["bash", SCRIPT, "build"], env, timeout=560)
    passed = re.findall(r"^PASS (\S+)", r.stdout, re.M)
    failed = dict(re.findall(r"^FAIL (\S+): (.*)$", r.stdout, re.M))
    summary = re.search(r"^(\d+) passed, (\d+) failed$", r.stdout, re.M)
    assert summary is not None, f"the script did not finish (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
    assert int(summary.group(1)) == len(passed) and int(summary.group(2)) == len(failed)
    assert not failed, f"{client}: {len(passed)} passed; failing checks:\n" + "\n".join(
        f"{k}: {v}" for k, v in failed.items())
    assert len(passed) >= 50, r.stdout          # every check ran
    assert r.returncode == 0, r.stdout


@pytest.fixture
def skiffd(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    yield d
    d.stop()


# a whole group of builds (each a few RUN containers) takes more than the default 300 s on 2 cores
@pytest.mark.timeout(600)
@pytest.mark.parametrize("client", list(CLIENTS))
def test_build_acceptance_skiffd(skiffd, client):
    run_build_group(skiffd.env, client)


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory):
    yield from busybox_dockerd(tmp_path_factory.mktemp("dockerd-build"), str(BUSYBOX_TAR))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("client", ["docker-classic", "skiff"])
def test_reference_dockerd(dockerd, client):
    run_build_group(dockerd.env, client)
