"""Restart policies with Docker's backoff, and the loop that turns containerd's events into
container state changes (exits, OOM kills).

Docker's backoff: the first restart waits 100 ms, each next one twice as long (at most one
minute); a run that lasted at least 10 s resets the delay. ``on-failure:N`` restarts a container
that exited non-zero while fewer than N restarts happened; a container stopped or killed by a
user is not restarted (``unless-stopped`` remembers that across daemon restarts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from skiff.daemon.api.errors import ApiError, InvalidParameter

log = logging.getLogger("skiff.daemon.containers")

POLICIES = ("no", "always", "unless-stopped", "on-failure")
MIN_BACKOFF = 0.1
MAX_BACKOFF = 60.0
RESET_AFTER = 10.0


def validate_restart_policy(policy: dict[str, Any] | None, auto_remove: bool) -> dict[str, Any]:
    """The policy with Docker's defaults (``{"Name": "no", "MaximumRetryCount": 0}``);
    InvalidParameter with Docker's wording when it is not valid."""
    p = dict(policy or {})
    name = str(p.get("Name") or "no")
    count = p.get("MaximumRetryCount") or 0
    if name not in POLICIES:
        raise InvalidParameter(f"invalid restart policy: unknown policy '{name}'; use one of "
                               "'no', 'always', 'on-failure', or 'unless-stopped'")
    if not isinstance(count, int) or isinstance(count, bool):
        raise InvalidParameter(f"invalid restart policy: MaximumRetryCount {count!r} is not an integer")
    if count < 0:
        raise InvalidParameter("invalid restart policy: maximum retry count cannot be negative")
    if count and name != "on-failure":
        raise InvalidParameter("invalid restart policy: maximum retry count can only be used "
                               "with 'on-failure'")
    if auto_remove and name != "no":
        raise InvalidParameter("conflicting options: cannot specify both --restart and --rm")
    return {"Name": name, "MaximumRetryCount": count}


class RestartManager:
    """One per container: decides whether an exit leads to a restart, and after how long."""

    def __init__(self, policy: str, max_retries: int, restart_count: int = 0) -> None:
        self.policy = policy
        self.max_retries = max_retries
        self.count = restart_count
        self.delay = 0.0
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def should_restart(self, exit_code: int, manually_stopped: bool, ran_for: float) -> tuple[bool, float]:
        """(restart?, delay in seconds). A restart counts (``self.count``)."""
        if self.cancelled or manually_stopped:
            return False, 0.0
        if ran_for >= RESET_AFTER:
            self.delay = 0.0
        if self.policy == "always" or self.policy == "unless-stopped":
            restart = True
        elif self.policy == "on-failure":
            restart = exit_code != 0 and (self.max_retries == 0 or self.count < self.max_retries)
        else:
            restart = False
        if not restart:
            return False, 0.0
        self.delay = MIN_BACKOFF if self.delay == 0 else min(self.delay * 2, MAX_BACKOFF)
        self.count += 1
        return True, self.delay


def restart_on_daemon_start(policy: str, exit_code: int, manually_stopped: bool) -> bool:
    """Whether a stopped container is started when the daemon starts (moby's ShouldRestart):
    ``always`` even after a manual stop (Docker's documented behaviour), ``unless-stopped`` not."""
    if policy == "always":
        return True
    if policy == "unless-stopped":
        return not manually_stopped
    if policy == "on-failure":
        return exit_code != 0 and not manually_stopped
    return False


ExitHandler = Callable[[str, str, int, int], Awaitable[None]]   # (container, exec id, status, at_ns)
OomHandler = Callable[[str], Awaitable[None]]


class EventMonitor:
    """Subscribes to containerd's events of skiffd's namespace and dispatches task exits and OOM
    kills. Re-subscribes when the stream breaks (containerd restarted) and then calls
    ``on_reconnect`` so that exits missed meanwhile are picked up."""

    def __init__(self, subscribe: Callable[[list[str]], Any], namespace: str, on_exit: ExitHandler,
                 on_oom: OomHandler, on_reconnect: Callable[[], Awaitable[None]] | None = None,
                 ensure_containerd: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.subscribe = subscribe
        self.ensure_containerd = ensure_containerd
        self.namespace = namespace
        self.on_exit = on_exit
        self.on_oom = on_oom
        self.on_reconnect = on_reconnect
        self.subscribed = asyncio.Event()
        # issue 7: image events (``on_images_changed``) and whether the stream is up
        # (``on_subscribed(bool)``) for the client's image-list cache
        self.on_images_changed: Callable[[], None] | None = None
        self.on_subscribed: Callable[[bool], None] | None = None
        self.retry_delay = 1.0          # seconds between a broken stream and the next attempt
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="containerd-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        filters = [f'namespace=="{self.namespace}"']
        first = True
        while True:
            try:
                stream = self.subscribe(filters)
                if not first and self.on_reconnect is not None:
                    await self.on_reconnect()
                first = False
                self.subscribed.set()
                if self.on_subscribed is not None:
                    self.on_subscribed(True)
                async for env in stream:
                    await self.dispatch(env.topic, env.event)
                log.warning("containerd event stream ended; subscribing again")
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                log.warning("containerd event stream: %s; subscribing again in 1 s", e)
            except Exception:
                log.exception("containerd event stream: internal error; subscribing again in 1 s")
            self.subscribed.clear()
            if self.on_subscribed is not None:
                self.on_subscribed(False)
            await asyncio.sleep(self.retry_delay)
            if self.ensure_containerd is not None:
                try:
                    await self.ensure_containerd()     # start it again when it died
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.error("containerd: %s", e)

    async def dispatch(self, topic: str, event: dict[str, Any]) -> None:
        try:
            if topic == "/tasks/exit":
                await self.on_exit(str(event.get("container_id", "")), str(event.get("id", "")),
                                   int(event.get("exit_status", 0)), int(event.get("exited_at", 0) or 0))
            elif topic == "/tasks/oom":
                await self.on_oom(str(event.get("container_id", "")))
            elif topic.startswith("/images/") and self.on_images_changed is not None:
                self.on_images_changed()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handling containerd event %s %s", topic, event)
