"""pytest plugin for Skiff's tests: the root tier's rules, the leak checker, shared fixtures.

Root tier (tests marked ``@pytest.mark.root``, kept in ``tests/root/``):

- not running as root (euid != 0): root tests are skipped;
- running as root: any root test that is skipped anyway (``pytest.skip``, a skip marker, a
  skipping fixture, a module skipped at collection) makes the whole run fail, with a summary
  naming them, so a root run can never pass by skipping;
- every root test runs inside a leak check (see :mod:`harness.leakcheck`): a test that leaves
  a mount, cgroup, network namespace, link, firewall rule or process behind ERRORs at teardown
  with the list of what it left; the same check runs once over the whole root tier (from before
  the first root test's fixtures to the end of the session, after session-scoped fixtures are
  torn down), which also covers module- and session-scoped fixtures; a leak there fails the run.

Fixtures: ``state_dirs``, ``runtime_bin``, ``busybox_rootfs``, ``busybox_bundle``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import leakcheck

ROOT_MARK = "root"
ROOT_DIR_PARTS = ("tests", "root")  # tests in this directory must carry the root marker
BUSYBOX_TAR = os.environ.get(
    "SKIFF_BUSYBOX_TAR", str(Path(__file__).resolve().parents[3] / "shared" / "images" / "busybox.tar"))

# Seconds the leak checker polls for objects that are going away; the harness's own tests shorten it.
GRACE_ENV = "SKIFF_LEAKCHECK_GRACE"

_TIER = pytest.StashKey["RootTier"]()
_LEAKED = pytest.StashKey[bool]()
_SCRATCH = pytest.StashKey[list[Path]]()


def running_as_root() -> bool:
    """Whether this run is a root run (a function, so the harness's own tests can pretend)."""
    return os.geteuid() == 0


def _grace() -> float:
    return float(os.environ.get(GRACE_ENV, "2"))


def _in_root_dir(nodeid: str) -> bool:
    parts = tuple(nodeid.split("::")[0].split("/"))
    return any(parts[i:i + 2] == ROOT_DIR_PARTS for i in range(len(parts) - 1))


class RootTier:
    """State of the root tier over one pytest session; registered by :func:`pytest_configure`."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.as_root = running_as_root()
        self.token = os.environ[leakcheck.TOKEN_ENV]
        self.skipped: list[tuple[str, str]] = []  # (nodeid, reason) of root tests skipped as root
        self.session_before: leakcheck.Snapshot | None = None
        self.session_leaks: list[leakcheck.Leak] = []
        # cgroups and network namespaces seen holding other sessions' processes (see leakcheck.diff)
        self.foreign: set[str] = set()

    # -- collection

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        unmarked = [it.nodeid for it in items
                    if _in_root_dir(it.nodeid) and it.get_closest_marker(ROOT_MARK) is None]
        if unmarked:
            raise pytest.UsageError(
                "tests under tests/root/ must be marked @pytest.mark.root (the marker turns on the "
                "leak check and the root-run rules); unmarked: " + ", ".join(unmarked))
        if not self.as_root:
            skip = pytest.mark.skip(reason="needs root (euid 0): creates real kernel objects")
            for it in items:
                if it.get_closest_marker(ROOT_MARK) is not None:
                    it.add_marker(skip)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if self.as_root and report.skipped and _in_root_dir(report.nodeid):
            self.skipped.append((report.nodeid, _skip_reason(report)))

    # -- running

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        # Before the first root test's fixtures: module- and session-scoped fixtures set up for
        # it are inside the whole-tier check.
        if self.as_root and self.session_before is None and item.get_closest_marker(ROOT_MARK):
            self.session_before = leakcheck.take_snapshot()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None):
        try:
            return (yield)
        finally:
            _remove_scratch_dirs(item)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if (self.as_root and report.skipped and ROOT_MARK in report.keywords
                and not hasattr(report, "wasxfail")):
            self.skipped.append((report.nodeid, _skip_reason(report)))

    # -- end of session

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.session_before is not None:
            self.session_leaks = leakcheck.wait_until_clean(
                self.session_before, self_pid=os.getpid(), token=self.token, grace=_grace(),
                foreign=self.foreign)
        if (self.session_leaks or self.skipped) and session.exitstatus in (
                pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        if self.skipped:
            tr.section("root tier: skipped root tests", sep="=", red=True, bold=True)
            for nodeid, reason in self.skipped:
                tr.line(f"SKIPPED ROOT TEST {nodeid}: {reason}", red=True)
            tr.line(f"FAILED root tier: {len(self.skipped)} root test(s) skipped while running as "
                    f"root: {', '.join(n for n, _ in self.skipped)}", red=True, bold=True)
        if self.session_leaks:
            tr.section("root tier: leak check over the whole tier", sep="=", red=True, bold=True)
            tr.line(leakcheck.format_leaks(self.session_leaks, "FAILED root tier"), red=True)


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2])
    return str(lr)


def pytest_configure(config: pytest.Config) -> None:
    # Children inherit the token; the leak checker recognises re-parented daemons by it. An
    # enclosing session (pytester) keeps its own.
    os.environ.setdefault(leakcheck.TOKEN_ENV, f"{os.getpid()}-{time.time_ns()}")
    tier = RootTier(config)
    config.stash[_TIER] = tier
    config.pluginmanager.register(tier, "skiff-root-tier")


# ---------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def _skiff_leak_check(request: pytest.FixtureRequest):
    """Around every root test: snapshot, run, diff; a leak ERRORs the test at teardown."""
    if request.node.get_closest_marker(ROOT_MARK) is None:
        yield
        return
    tier = request.config.stash[_TIER]
    before = leakcheck.take_snapshot()
    if tier.session_before is not None:
        leakcheck.learn_foreign(tier.session_before, before, self_pid=os.getpid(), token=tier.token,
                                foreign=tier.foreign)
    yield
    leaks = leakcheck.wait_until_clean(before, self_pid=os.getpid(), token=tier.token, grace=_grace(),
                                       foreign=tier.foreign)
    if leaks:
        request.node.stash[_LEAKED] = True
        pytest.fail(leakcheck.format_leaks(leaks, f"leak check: {request.node.nodeid}"), pytrace=False)


@dataclass(frozen=True)
class StateDirs:
    """One test's own state roots.

    ``bundle`` and ``data`` live in the test's ``tmp_path`` (kept by pytest for the last runs, for
    post-mortems). ``root`` (give it to ``skiff-runc --root`` / ``runc --root``) and ``run``
    (sockets, pid files, fifos) live in a short directory ``/tmp/sk-XXXXXXXX`` because a unix
    socket path must fit in 108 bytes and ``tmp_path`` can be long; that directory is removed after
    the test, unless the leak check found something or mounts remain under it (then it is kept
    and its path printed).
    """

    tmp: Path     # the test's tmp_path
    short: Path   # /tmp/sk-XXXXXXXX
    root: Path    # runtime state root
    bundle: Path  # OCI bundle directory (empty; see busybox_bundle)
    data: Path    # a daemon's data root (images, snapshots, content)
    run: Path     # a daemon's run root (sockets, pid files)


@pytest.fixture
def state_dirs(request: pytest.FixtureRequest, tmp_path: Path) -> StateDirs:
    short = Path(tempfile.mkdtemp(prefix="sk-", dir="/tmp"))
    request.node.stash.setdefault(_SCRATCH, []).append(short)
    dirs = StateDirs(tmp=tmp_path, short=short, root=short / "root", bundle=tmp_path / "bundle",
                     data=tmp_path / "data", run=short / "run")
    for d in (dirs.root, dirs.run):
        d.mkdir(mode=0o700)
    for d in (dirs.bundle, dirs.data):
        d.mkdir(mode=0o755)
    return dirs


def _remove_scratch_dirs(item: pytest.Item) -> None:
    dirs = item.stash.get(_SCRATCH, [])
    if not dirs:
        return
    with open("/proc/self/mountinfo") as f:
        points = leakcheck.mount_points(f.read())
    leaked = item.stash.get(_LEAKED, False)
    for d in dirs:
        under = [p for p in points if p == str(d) or p.startswith(f"{d}/")]
        if under or leaked:
            why = f"mounts remain under it: {', '.join(under)}" if under else "the test leaked"
            warnings.warn(f"{item.nodeid}: keeping {d} ({why})", stacklevel=1)
            continue
        shutil.rmtree(d)


@pytest.fixture(scope="session")
def runtime_bin() -> str:
    """Path of the ``skiff-runc`` console script of the running venv."""
    path = os.path.join(os.path.dirname(sys.executable), "skiff-runc")
    if not os.access(path, os.X_OK):
        pytest.fail(f"skiff-runc console script not found at {path} (next to {sys.executable}); "
                    "install the package into the venv: .venv/bin/pip install -e .", pytrace=False)
    return path


def extract_docker_save_rootfs(tar_path: str, dest: Path) -> None:
    """Extract every layer of a ``docker save`` archive into ``dest``, in order.

    Only for trusted reference images: whiteouts are not applied (the busybox image has one layer).
    """
    import json

    with tarfile.open(tar_path) as outer:
        manifest_file = outer.extractfile("manifest.json")
        if manifest_file is None:
            raise ValueError(f"{tar_path}: manifest.json is not a file")
        manifest = json.load(manifest_file)
        for layer in manifest[0]["Layers"]:
            fobj = outer.extractfile(layer)
            if fobj is None:
                raise ValueError(f"{tar_path}: layer {layer} is not a file")
            with tarfile.open(fileobj=fobj) as lt:
                for m in lt.getmembers():
                    if m.name.startswith("/") or ".." in Path(m.name).parts:
                        raise ValueError(f"{tar_path}: layer {layer}: unsafe member path {m.name!r}")
                lt.extractall(dest)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference busybox image's root filesystem, extracted once per session. Read-only:
    copy it (``busybox_bundle``) before running a container on it."""
    if not os.path.exists(BUSYBOX_TAR):
        pytest.fail(f"busybox image not found at {BUSYBOX_TAR} (set SKIFF_BUSYBOX_TAR)", pytrace=False)
    dest = tmp_path_factory.mktemp("busybox-rootfs")
    extract_docker_save_rootfs(BUSYBOX_TAR, dest)
    return dest


@pytest.fixture
def busybox_bundle(state_dirs: StateDirs, busybox_rootfs: Path) -> Path:
    """``state_dirs.bundle`` with a private copy of the busybox rootfs in ``rootfs/``; the test
    writes ``config.json``."""
    shutil.copytree(busybox_rootfs, state_dirs.bundle / "rootfs", symlinks=True)
    return state_dirs.bundle
