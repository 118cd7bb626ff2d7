"""grpc.health.v1.Health, which containerd serves as its ``healthcheck`` plugin.

Its definition is not among Debian's containerd API files, and its two messages are tiny, so
they are encoded here by hand: ``HealthCheckRequest {string service = 1}`` and
``HealthCheckResponse {ServingStatus status = 1}`` with SERVING = 1, NOT_SERVING = 2,
SERVICE_UNKNOWN = 3. Services known by name are those registered on this server ("" is the
server as a whole).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

SERVICE = "grpc.health.v1.Health"
SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    value = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def decode_request(data: bytes) -> str:
    """The ``service`` field of a HealthCheckRequest (unknown fields skipped)."""
    pos = 0
    service = ""
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated length-delimited field")
            if field == 1:
                service = data[pos:pos + length].decode("utf-8")
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return service


def encode_response(status: int) -> bytes:
    return b"\x08" + _varint(status)


class HealthService:
    def __init__(self, services: list[str]) -> None:
        self.services = set(services) | {""}
        self.serving = True
        self._changed = threading.Condition()

    def status(self, service: str) -> int:
        if service not in self.services:
            return SERVICE_UNKNOWN
        return SERVING if self.serving else NOT_SERVING

    def set_serving(self, serving: bool) -> None:
        with self._changed:
            self.serving = serving
            self._changed.notify_all()

    def Check(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            service = decode_request(request)
        except (ValueError, UnicodeDecodeError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"health check request: {e}")
        status = self.status(service)
        if status == SERVICE_UNKNOWN:
            context.abort(grpc.StatusCode.NOT_FOUND, f"health check: unknown service {service!r}")
        return encode_response(status)

    def Watch(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            service = decode_request(request)
        except (ValueError, UnicodeDecodeError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"health watch request: {e}")
        last = None
        while context.is_active():
            status = self.status(service)
            if status != last:
                yield encode_response(status)
                last = status
            with self._changed:
                self._changed.wait(1.0)

    def handler(self) -> Any:
        ident = bytes
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Check": grpc.unary_unary_rpc_method_handler(self.Check, request_deserializer=ident,
                                                         response_serializer=ident),
            "Watch": grpc.unary_stream_rpc_method_handler(self.Watch, request_deserializer=ident,
                                                          response_serializer=ident),
        })
