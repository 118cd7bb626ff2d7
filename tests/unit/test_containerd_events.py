"""The event exchange (filters on envelope and event fields, bounded queues), the health
service's wire encoding and the mapping of library errors to gRPC codes."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyPB

from skiff.containerd import events as events_mod
from skiff.containerd import protos
from skiff.containerd.events import Envelope, Exchange, validate_topic
from skiff.containerd.rpc import RpcError, status_code
from skiff.containerd.services import health
from skiff.images import errors

api = protos.load()


def packed(msg) -> AnyPB:
    return AnyPB(type_url=msg.DESCRIPTOR.full_name, value=msg.SerializeToString())


def decoder(any_pb):
    for m in api.event_modules():
        for cls in vars(m).values():
            if getattr(getattr(cls, "DESCRIPTOR", None), "full_name", None) == any_pb.type_url:
                msg = cls()
                msg.ParseFromString(any_pb.value)
                return msg
    return None


def drain(sub) -> list[Envelope]:
    out = []
    while True:
        env = sub.get(0)
        if env is None:
            return out
        out.append(env)


def test_filters_on_topic_namespace_and_event_fields():
    ex = Exchange(decoder)
    subs = {
        "all": ex.subscribe(),
        "exit": ex.subscribe(['topic=="/tasks/exit"']),
        "images": ex.subscribe(['topic~="/images/"']),
        "ns": ex.subscribe(["namespace==b"]),
        "label": ex.subscribe(['event.labels.k==v']),
        "either": ex.subscribe(['event.id=="c1"', 'event.name~="^busy"']),
        "nested": ex.subscribe(['event.runtime.name==runc']),
        "exitcode": ex.subscribe(["event.exit_status==3"]),
    }
    ex.publish("a", "/tasks/exit", packed(api.ev_task.TaskExit(container_id="c1", exit_status=3)))
    ex.publish("a", "/images/create", packed(api.ev_image.ImageCreate(name="busybox", labels={"k": "v"})))
    cc = api.ev_container.ContainerCreate(id="c1")
    cc.runtime.name = "runc"
    ex.publish("b", "/containers/create", packed(cc))
    got = {k: [e.topic for e in drain(s)] for k, s in subs.items()}
    assert got == {
        "all": ["/tasks/exit", "/images/create", "/containers/create"],
        "exit": ["/tasks/exit"],
        "images": ["/images/create"],
        "ns": ["/containers/create"],
        "label": ["/images/create"],
        "either": ["/images/create", "/containers/create"],
        "nested": ["/containers/create"],
        "exitcode": ["/tasks/exit"],
    }


def test_publish_validates_topic_and_namespace_and_forward_keeps_timestamp():
    ex = Exchange()
    sub = ex.subscribe()
    for bad in ("", "x", "/", "/a//b", "/a/-b"):
        with pytest.raises(errors.InvalidArgument):
            validate_topic(bad)
    with pytest.raises(errors.InvalidArgument):
        ex.publish("bad/ns", "/t", AnyPB())
    ex.forward(Envelope(1234567890123456789, "n", "/x/y", AnyPB(type_url="t")))
    with pytest.raises(errors.InvalidArgument, match="timestamp must be set"):
        ex.forward(Envelope(0, "n", "/x/y", None))
    [env] = drain(sub)
    assert (env.timestamp, env.namespace, env.topic) == (1234567890123456789, "n", "/x/y")


def test_a_subscriber_that_falls_behind_is_ended_with_an_error(monkeypatch):
    monkeypatch.setattr(events_mod, "QUEUE_LIMIT", 3)
    ex = Exchange()
    slow = ex.subscribe()
    for i in range(5):
        ex.publish("n", "/t", AnyPB(type_url=f"e{i}"))
    assert slow.closed and "fell 3 events behind" in (slow.error or "")
    assert [e.event.type_url for e in drain(slow)] == ["e0", "e1", "e2"]
    assert ex._subs == []


def test_close_wakes_subscribers():
    ex = Exchange()
    sub = ex.subscribe()
    ex.close()
    assert sub.get(5) is None and sub.closed


def test_health_wire_encoding():
    assert health.encode_response(health.SERVING) == b"\x08\x01"
    assert health.decode_request(b"") == ""
    name = b"containerd.services.images.v1.Images"
    assert health.decode_request(b"\x0a" + bytes([len(name)]) + name + b"\x10\x05") == name.decode()
    with pytest.raises(ValueError):
        health.decode_request(b"\x0a\x05ab")
    assert health._read_varint(health._varint(300), 0) == (300, 2)


@pytest.mark.parametrize("exc, code", [
    (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
    (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.DigestMismatch("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (errors.Unimplemented("x"), grpc.StatusCode.UNIMPLEMENTED),
    (errors.ImageError("x"), grpc.StatusCode.UNKNOWN),
    (RpcError("OUT_OF_RANGE", "x"), grpc.StatusCode.OUT_OF_RANGE),
    (KeyError("x"), grpc.StatusCode.INTERNAL),
])
def test_error_codes(exc, code):
    assert status_code(exc) == code
