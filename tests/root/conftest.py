import pytest

from runtime_util import Runtime


@pytest.fixture
def runtime(tmp_path):
    rt = Runtime(str(tmp_path / "runtime-root"))
    yield rt
    rt.cleanup()
