"""Issue 9's proof: ``../shared/acceptance/docker-cli.sh`` driven with ``DOCKER=skiff`` (this
CLI) against a real skiffd, one group per test; known gaps as in ``acceptance_util``."""

from __future__ import annotations

import os
import sys

import pytest
from acceptance_util import GROUPS, Gaps, params, run_group
from skiffd_util import Skiffd

SKIFF = os.path.join(os.path.dirname(sys.executable), "skiff")
KNOWN_GAPS: Gaps = {}


@pytest.fixture
def skiffd(state_dirs):
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    yield d
    d.stop()


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("group", params(GROUPS, KNOWN_GAPS))
def test_skiff_cli_acceptance(skiffd, group):
    run_group(skiffd.env, SKIFF, group, KNOWN_GAPS)
