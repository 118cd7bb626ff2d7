"""The event exchange: publish, forward and subscribe, as containerd's ``events/exchange``.

An event is an envelope (timestamp, namespace, topic, event as a protobuf ``Any``). Events
published by the services carry the namespace of the request that caused them and an ``Any``
whose type URL is the event message's full name (``containerd.events.ContainerCreate``), which
is what containerd's ``typeurl`` writes for them and what ``ctr events`` decodes.

Subscribers receive every event published after they subscribed that matches any of their
filters (containerd's filter syntax, :func:`skiff.images.metadata.parse_filters`), on the
fields ``namespace``, ``topic`` and ``event.<field>`` (the event message's fields by their
protobuf names; ``event.labels.KEY`` for a label). Each subscriber has its own queue, bounded
so that a subscriber that stops reading cannot exhaust memory: when it is full the
subscription ends with an error saying how many events were pending, rather than silently
dropping events.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from skiff.images.errors import ImageError, InvalidArgument
from skiff.images.metadata import Filter, parse_filters, validate_identifier

QUEUE_LIMIT = 10000


class Envelope:
    __slots__ = ("event", "namespace", "timestamp", "topic")

    def __init__(self, timestamp: int, namespace: str, topic: str, event: Any) -> None:
        self.timestamp = timestamp  # nanoseconds since the epoch
        self.namespace = namespace
        self.topic = topic
        self.event = event  # a google.protobuf.Any (type_url, value)

    def __repr__(self) -> str:
        return f"Envelope({self.namespace!r}, {self.topic!r}, {self.event.type_url if self.event else None!r})"


def validate_topic(topic: str) -> None:
    """containerd's topic rule: "/" then identifiers separated by "/"."""
    if not topic:
        raise InvalidArgument("envelope topic: must not be empty")
    if not topic.startswith("/"):
        raise InvalidArgument(f"envelope topic {topic!r}: must start with '/'")
    if len(topic) == 1:
        raise InvalidArgument(f"envelope topic {topic!r}: must have at least one component")
    for component in topic[1:].split("/"):
        try:
            validate_identifier(component, "topic component")
        except InvalidArgument as e:
            raise InvalidArgument(f"envelope topic {topic!r}: {e}") from None


def _field_value(msg: Any, path: Sequence[str]) -> tuple[str, bool]:
    """A protobuf message's field by its path of field names (the fieldpath adaptor)."""
    if not path or msg is None:
        return "", False
    fields = msg.DESCRIPTOR.fields_by_name
    fd = fields.get(path[0])
    if fd is None:
        return "", False
    value = getattr(msg, path[0])
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        if len(path) < 2:
            return "", False
        key = ".".join(path[1:])
        if key in value:
            v = value[key]
            return (str(v), True) if not hasattr(v, "DESCRIPTOR") else ("", False)
        return "", False
    repeated = fd.is_repeated if hasattr(type(fd), "is_repeated") else fd.label == fd.LABEL_REPEATED
    if repeated:
        return "", False
    if fd.message_type is not None:
        if fd.message_type.full_name == "google.protobuf.Timestamp":
            return "", False
        return _field_value(value, path[1:]) if msg.HasField(path[0]) else ("", False)
    if len(path) > 1:
        return "", False
    if isinstance(value, bool):
        return ("true" if value else "false"), True
    if isinstance(value, bytes):
        return "", False
    text = str(value)
    return text, text != "" and text != "0"


class Subscription:
    """One subscriber's queue; iterate ``events()`` until ``close()``."""

    def __init__(self, exchange: Exchange, flt: Filter | None) -> None:
        self._exchange = exchange
        self._filter = flt
        self._queue: queue.Queue[Envelope | None] = queue.Queue()
        self._closed = False
        self.error: str | None = None

    def matches(self, env: Envelope, decoded: Any) -> bool:
        if self._filter is None:
            return True

        def adaptor(path: Sequence[str]) -> tuple[str, bool]:
            if not path:
                return "", False
            if path[0] == "namespace" and len(path) == 1:
                return env.namespace, bool(env.namespace)
            if path[0] == "topic" and len(path) == 1:
                return env.topic, bool(env.topic)
            if path[0] == "event":
                return _field_value(decoded, path[1:])
            return "", False
        return self._filter.match(adaptor)

    def _put(self, env: Envelope) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= QUEUE_LIMIT:
            self.error = (f"event subscription: the subscriber fell {QUEUE_LIMIT} events behind; "
                          "ending the subscription so that no event is lost unnoticed")
            self.close()
            return
        self._queue.put(env)

    def get(self, timeout: float | None = None) -> Envelope | None:
        """The next event; None when closed, or after ``timeout`` seconds without one."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._exchange._remove(self)
            self._queue.put(None)


class Exchange:
    """Broadcasts envelopes to subscriptions (thread-safe)."""

    def __init__(self, decoder: Any = None) -> None:
        # decoder(any) -> message or None: turns an event's Any into its message for filters
        self._decoder = decoder
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []

    def subscribe(self, filters: Sequence[str] = ()) -> Subscription:
        flt = parse_filters(filters) if filters else None
        sub = Subscription(self, flt)
        with self._lock:
            self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def close(self) -> None:
        with self._lock:
            subs = list(self._subs)
        for s in subs:
            s.close()

    def _broadcast(self, env: Envelope) -> None:
        with self._lock:
            subs = list(self._subs)
        if not subs:
            return
        decoded = None
        if any(s._filter is not None for s in subs) and self._decoder is not None:
            decoded = self._decoder(env.event)
        for s in subs:
            if s.matches(env, decoded):
                s._put(env)

    def publish(self, namespace: str, topic: str, event: Any) -> Envelope:
        """Publish ``event`` (an ``Any``) now, in ``namespace`` under ``topic``."""
        if not namespace:
            raise ImageError("publish event: namespace is required")
        validate_identifier(namespace, "namespace")
        validate_topic(topic)
        env = Envelope(time.time_ns(), namespace, topic, event)
        self._broadcast(env)
        return env

    def forward(self, env: Envelope) -> None:
        """Re-publish an envelope made elsewhere (a shim's), keeping its timestamp."""
        try:
            validate_identifier(env.namespace, "namespace")
        except InvalidArgument as e:
            raise InvalidArgument(f"event envelope has invalid namespace: {e}") from None
        validate_topic(env.topic)
        if not env.timestamp:
            raise InvalidArgument("timestamp must be set on forwarded event")
        self._broadcast(env)
