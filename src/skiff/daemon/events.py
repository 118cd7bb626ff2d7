"""The events hub: backends publish, ``GET /events`` subscribers receive.

It keeps the last ``HISTORY`` events (as dockerd does) so that ``since`` can replay the past.
``publish`` may be called from any thread; subscribers are asyncio queues on the server's loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

HISTORY = 256   # dockerd's eventsLimit

EVENT_TYPES = ("builder", "config", "container", "daemon", "image", "network", "node",
               "plugin", "secret", "service", "volume")

# filter keys accepted by /events (dockerd's list)
FILTER_KEYS = ("config", "container", "daemon", "event", "image", "label", "network", "node",
               "plugin", "scope", "secret", "service", "type", "volume")


@dataclass
class Event:
    type: str
    action: str
    actor_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    scope: str = "local"
    time_nano: int = 0

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.type == "container" or (self.type == "image" and self.action != "create"):
            # the deprecated top-level fields, still read by old clients
            d["status"] = self.action
            d["id"] = self.actor_id
            if "image" in self.attributes:
                d["from"] = self.attributes["image"]
        d.update({"Type": self.type, "Action": self.action,
                  "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
                  "scope": self.scope, "time": self.time_nano // 1_000_000_000,
                  "timeNano": self.time_nano})
        return d


class EventFilter:
    """dockerd's event filter semantics: each key present must match (values of one key are
    alternatives); IDs match by prefix, names exactly."""

    def __init__(self, filters: dict[str, list[str]] | None = None) -> None:
        self.filters = {k: v for k, v in (filters or {}).items() if v}

    def _has(self, key: str, *candidates: str) -> bool:
        values = self.filters.get(key)
        if not values:
            return True
        return any(c and (c == v or (key != "label" and c.startswith(v)))
                   for v in values for c in candidates)

    def matches(self, ev: Event) -> bool:
        f = self.filters
        if not f:
            return True
        attrs = ev.attributes
        if "type" in f and ev.type not in f["type"]:
            return False
        if "scope" in f and ev.scope not in f["scope"]:
            return False
        if "event" in f:
            action = ev.action.split(":", 1)[0]   # "exec_start: sh" matches "exec_start"
            if ev.action not in f["event"] and action not in f["event"]:
                return False
        if "label" in f:
            for want in f["label"]:
                k, sep, v = want.partition("=")
                if k not in attrs or (sep and attrs[k] != v):
                    return False
        for key in ("container", "network", "volume", "plugin", "daemon", "node", "service",
                    "secret", "config"):
            if key in f:
                if ev.type != key:
                    return False
                if not self._has(key, ev.actor_id, attrs.get("name", "")):
                    return False
        if "image" in f:
            if ev.type not in ("image", "container"):
                return False
            cands = [attrs.get("image", ""), attrs.get("name", "")] if ev.type == "container" \
                else [ev.actor_id, attrs.get("name", "")]
            names = set(cands)
            for c in list(names):   # busybox matches busybox:latest
                if c.endswith(":latest"):
                    names.add(c[: -len(":latest")])
            if not any(v in names or (v and any(c.startswith(v) for c in names if c.startswith("sha256:")))
                       for v in f["image"]):
                return False
        return True


class Subscription:
    def __init__(self, hub: EventsHub, flt: EventFilter, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = hub
        self.filter = flt
        self.loop = loop
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def deliver(self, ev: Event | None) -> None:
        """Called with the hub's lock held, from any thread."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, ev)
        except RuntimeError:   # the loop is closed: the subscriber is gone
            pass

    async def get(self) -> Event | None:
        """The next matching event; None when the hub is closed."""
        return await self.queue.get()

    def close(self) -> None:
        self.hub.unsubscribe(self)


class EventsHub:
    def __init__(self, history: int = HISTORY) -> None:
        self._lock = threading.Lock()
        self._history: deque[Event] = deque(maxlen=history)
        self._subs: list[Subscription] = []
        self._closed = False

    def publish(self, type: str, action: str, actor_id: str,
                attributes: dict[str, str] | None = None, *, scope: str = "local",
                time_nano: int | None = None) -> Event:
        if type not in EVENT_TYPES:
            raise ValueError(f"event type {type!r}: unknown (known: {', '.join(EVENT_TYPES)})")
        ev = Event(type, action, actor_id, dict(attributes or {}), scope,
                   time.time_ns() if time_nano is None else time_nano)
        with self._lock:
            self._history.append(ev)
            for sub in self._subs:
                if sub.filter.matches(ev):
                    sub.deliver(ev)
        return ev

    def subscribe(self, flt: EventFilter, since_nano: int | None = None,
                  until_nano: int | None = None) -> tuple[list[Event], Subscription]:
        """The buffered events in [since, until] that match, and a live subscription; taken
        together under the lock so that no event is lost or sent twice."""
        loop = asyncio.get_running_loop()
        sub = Subscription(self, flt, loop)
        with self._lock:
            past: list[Event] = []
            if since_nano is not None or until_nano is not None:
                past = [ev for ev in self._history
                        if (since_nano is None or ev.time_nano >= since_nano)
                        and (until_nano is None or ev.time_nano <= until_nano)
                        and flt.matches(ev)]
            if self._closed:
                sub.deliver(None)
            else:
                self._subs.append(sub)
        return past, sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        """End every subscription (daemon shutdown)."""
        with self._lock:
            self._closed = True
            for sub in self._subs:
                sub.deliver(None)
            self._subs.clear()
