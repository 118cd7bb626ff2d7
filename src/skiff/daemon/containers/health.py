"""Healthchecks (image ``HEALTHCHECK`` and ``--health-*``), run as Docker does: a probe process
exec'd in the running container every ``Interval`` (``StartInterval`` during ``StartPeriod``),
killed after ``Timeout``; ``Retries`` failures in a row make the container unhealthy (failures
during the start period do not count). The last 5 results are kept in ``State.Health.Log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from skiff.daemon.api.errors import ApiError, NotFound
from skiff.daemon.containers.model import Container, rfc3339

log = logging.getLogger("skiff.daemon.containers")

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_START_INTERVAL = 5.0
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096


def probe_args(test: list[str]) -> list[str] | None:
    """The probe's argv from ``Healthcheck.Test``; None when there is no check
    (empty, ``["NONE"]``)."""
    if not test or test[0] == "NONE":
        return None
    kind, rest = test[0], list(test[1:])
    if kind == "CMD":
        return rest or None
    if kind == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(rest)] if rest else None
    # a bare command (API users): as CMD
    return list(test)


def _seconds(ns: Any, default: float) -> float:
    return int(ns) / 1e9 if ns else default


class Settings:
    def __init__(self, hc: dict[str, Any]) -> None:
        self.args = probe_args(list(hc.get("Test") or []))
        self.interval = _seconds(hc.get("Interval"), DEFAULT_INTERVAL)
        self.timeout = _seconds(hc.get("Timeout"), DEFAULT_TIMEOUT)
        self.start_period = _seconds(hc.get("StartPeriod"), 0.0)
        self.start_interval = _seconds(hc.get("StartInterval"), DEFAULT_START_INTERVAL)
        self.retries = int(hc.get("Retries") or DEFAULT_RETRIES)


def record(health: dict[str, Any], result: dict[str, Any], retries: int, in_start_period: bool) -> str:
    """Add a probe result to ``State.Health``; returns the new status."""
    entries = list(health.get("Log") or [])
    entries.append(result)
    health["Log"] = entries[-MAX_LOG_ENTRIES:]
    if result["ExitCode"] == 0:
        health["FailingStreak"] = 0
        health["Status"] = "healthy"
    elif not in_start_period:
        health["FailingStreak"] = int(health.get("FailingStreak") or 0) + 1
        if health["FailingStreak"] >= retries:
            health["Status"] = "unhealthy"
    return str(health["Status"])


ExecRunner = Callable[[Container, str, dict[str, Any], float], Awaitable[tuple[int, str]]]


class HealthMonitor:
    """The probe loop of one container run."""

    def __init__(self, c: Container, process: dict[str, Any], run_probe: ExecRunner,
                 on_change: Callable[[Container, str], None], save: Callable[[Container], None]) -> None:
        self.c = c
        self.process = process
        self.settings = Settings(c.config.get("Healthcheck") or {})
        self.run_probe = run_probe
        self.on_change = on_change
        self.save = save
        self.task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self.settings.args is not None

    def start(self) -> None:
        self.c.state.health = {"Status": "starting", "FailingStreak": 0, "Log": []}
        self.task = asyncio.get_running_loop().create_task(self._loop(), name=f"health-{self.c.id[:12]}")

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _loop(self) -> None:
        s = self.settings
        started = time.monotonic()
        assert s.args is not None
        while True:
            in_start = time.monotonic() - started < s.start_period
            await asyncio.sleep(s.start_interval if in_start else s.interval)
            in_start = time.monotonic() - started < s.start_period
            proc = dict(self.process)
            proc["args"] = list(s.args)
            proc["terminal"] = False
            proc.pop("consoleSize", None)
            begin = time.time_ns()
            try:
                code, output = await self.run_probe(self.c, "health-" + secrets.token_hex(16), proc, s.timeout)
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                code, output = -1, str(e)
            result = {"Start": rfc3339(begin), "End": rfc3339(time.time_ns()), "ExitCode": code,
                      "Output": output}
            health = self.c.state.health
            if health is None or self.c.state.status not in ("running", "paused"):
                return
            before = health.get("Status")
            after = record(health, result, s.retries, in_start)
            with contextlib.suppress(OSError):
                self.save(self.c)
            if after != before:
                self.on_change(self.c, after)


async def run_probe_with(cd: Any, new_io: Callable[[Container, str], Any], exits: dict[str, asyncio.Future[int]],
                         c: Container, exec_id: str, process: dict[str, Any], timeout: float) -> tuple[int, str]:
    """Exec ``process`` in ``c`` as ``exec_id``; (exit code, output) — -1 and Docker's message
    when it outlives ``timeout``."""
    io = new_io(c, exec_id)
    _, stdout, stderr = io.fifo_paths()
    await io.open()
    sub = io.subscribe(stdout=True, stderr=True)
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    exits[exec_id] = fut
    out = bytearray()

    async def collect() -> None:
        async for _stream, data in sub:
            if len(out) < MAX_OUTPUT:
                out.extend(data[:MAX_OUTPUT - len(out)])

    collector = asyncio.get_running_loop().create_task(collect())
    try:
        await cd.exec(c.id, exec_id, process, "", stdout, stderr, False)
        await io.process_created()
        await cd.start(c.id, exec_id)
        try:
            code = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            with contextlib.suppress(ApiError):
                await cd.kill(c.id, 9, exec_id=exec_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), 5)
            return -1, f"Health check exceeded timeout ({timeout:g}s)"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(io.wait_closed(), 5)
        return code, out.decode(errors="replace")
    finally:
        exits.pop(exec_id, None)
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        with contextlib.suppress(NotFound, ApiError):
            await cd.delete_process(c.id, exec_id)
        with contextlib.suppress(Exception):
            await io.close()
        with contextlib.suppress(Exception):
            io.remove()
