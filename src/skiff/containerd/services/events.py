"""containerd.services.events.v1.Events: publish, forward, subscribe."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf.empty_pb2 import Empty

from skiff.containerd import convert
from skiff.containerd.events import Envelope
from skiff.containerd.rpc import RpcError, handler, namespace_of, stream_handler
from skiff.containerd.services import Service
from skiff.images.errors import InvalidArgument

# How often a subscription's thread wakes to check that its client is still there (a hang-up
# also closes the subscription through the RPC's callback).
POLL_SECONDS = 1.0


class EventsService(Service):
    @handler
    def Publish(self, request: Any, context: Any) -> Any:
        ns = namespace_of(context)
        if not request.HasField("event"):
            raise InvalidArgument(f"publish {request.topic}: event must be set")
        self.core.exchange.publish(ns, request.topic, request.event)
        return Empty()

    @handler
    def Forward(self, request: Any, context: Any) -> Any:
        env = request.envelope
        if not env.HasField("timestamp"):
            raise InvalidArgument("timestamp must be set on forwarded event")
        self.core.exchange.forward(Envelope(convert.ns_from_ts(env.timestamp), env.namespace, env.topic,
                                            env.event if env.HasField("event") else None))
        return Empty()

    @stream_handler
    def Subscribe(self, request: Any, context: Any) -> Iterator[Any]:
        sub = self.core.exchange.subscribe(list(request.filters))
        context.add_callback(sub.close)  # the client hung up or the server stops
        try:
            while True:
                env = sub.get(POLL_SECONDS)
                if env is None:
                    if sub.closed:
                        break
                    if not context.is_active():
                        return
                    continue
                out = self.api.events.Envelope(timestamp=convert.ts_ns(env.timestamp), namespace=env.namespace,
                                               topic=env.topic)
                if env.event is not None:
                    out.event.CopyFrom(env.event)
                yield out
        finally:
            sub.close()
        if sub.error:
            raise RpcError("RESOURCE_EXHAUSTED", sub.error)
