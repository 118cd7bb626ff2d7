"""Issue 6's proof (and issues 7 and 8's): ``../shared/acceptance/docker-cli.sh`` with the real
docker CLI against a real skiffd (its own data root, exec root, socket and skiff-containerd), one
group per test; known gaps as in ``acceptance_util``."""

from __future__ import annotations

import pytest
from acceptance_util import GROUPS, Gaps, params, run_group
from skiffd_util import Skiffd

KNOWN_GAPS: Gaps = {}


@pytest.fixture
def skiffd(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    yield d
    d.stop()


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("group", params(GROUPS, KNOWN_GAPS))
def test_docker_cli_acceptance(skiffd, group):
    run_group(skiffd.env, "/usr/local/bin/docker", group, KNOWN_GAPS)
