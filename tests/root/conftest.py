import pytest
from runtime_util import Runtime


@pytest.fixture
def runtime(tmp_path):
    rt = Runtime(str(tmp_path / "runtime-root"))
    yield rt
    rt.cleanup()


@pytest.fixture
def request_cleanup():
    """A list of callables run after the test, last first."""
    todo: list = []
    yield todo
    for fn in reversed(todo):
        fn()
