"""Helpers shared by the networking root tests (tests/root/test_daemon_network*.py): a skiffd that
removes its user networks at the end, checks on docker CLI results, HTTP to published ports."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Iterator

from skiffd_util import Skiffd


def network_skiffd(state_dirs) -> Iterator[Skiffd]:
    """For a fixture (``yield from``): a skiffd in the test's state directories; at the end its
    containers and its user-defined networks are removed, then it stops."""
    d = Skiffd(str(state_dirs.run), str(state_dirs.data))
    yield d
    d.remove_all_containers()
    for n in d.docker("network", "ls", "-q", "--filter", "type=custom").stdout.split():
        d.docker("network", "rm", n)
    d.stop()


def ok(r: subprocess.CompletedProcess) -> str:
    """The stdout of a docker CLI call that must have succeeded."""
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr}"
    return r.stdout


def links() -> set[str]:
    """The network interfaces of this (the host's) namespace."""
    return set(os.listdir("/sys/class/net"))


def http_get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return resp.read().decode()


def wait_http(url: str) -> str:
    """``http_get``, retried: httpd in a just-started container may not listen yet (a bounded
    number of times)."""
    last: Exception | None = None
    for _ in range(100):
        try:
            return http_get(url)
        except OSError as e:
            last = e
            subprocess.run(["sleep", "0.1"])
    raise AssertionError(f"{url}: no answer: {last}")
