import pytest
from ctr_util import Events
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


@pytest.fixture
def events():
    """Start ``ctr events`` subscriptions; any still running at teardown is stopped by PID."""
    started: list[Events] = []

    def start(address: str, *filters: str) -> Events:
        ev = Events(address, *filters)
        started.append(ev)
        return ev
    yield start
    for ev in started:
        if ev.proc.poll() is None:
            ev.stop()
