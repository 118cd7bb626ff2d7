"""Framing and error codes of the shim API, shared by the shim (server) and ShimClient.

One message per line: a JSON object (``skiff.fastjson``, ASCII only, so a line never holds a raw
newline) followed by ``\\n``. See the package docstring for the methods.
"""

from __future__ import annotations

from skiff import fastjson

# Error codes: the gRPC status names containerd uses, so the manager maps them one to one.
NOT_FOUND = "NotFound"
ALREADY_EXISTS = "AlreadyExists"
FAILED_PRECONDITION = "FailedPrecondition"
INVALID_ARGUMENT = "InvalidArgument"
UNIMPLEMENTED = "Unimplemented"
UNKNOWN = "Unknown"            # the runtime failed; the message holds its error
INTERNAL = "Internal"          # a bug or an unexpected system error in the shim
UNAVAILABLE = "Unavailable"    # client side: the shim cannot be reached
DEADLINE_EXCEEDED = "DeadlineExceeded"  # client side: no answer in time

CODES = (NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, INVALID_ARGUMENT, UNIMPLEMENTED, UNKNOWN,
         INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED)

MAX_LINE = 1 << 20  # a request longer than this is refused (and the connection closed)


class ShimError(Exception):
    """An error answered by the shim (or met reaching it): ``code`` is one of ``CODES``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


def encode(obj: dict) -> bytes:
    return fastjson.dumps(obj).encode() + b"\n"


def decode(line: bytes) -> dict:
    """One message; ValueError when it is not a JSON object."""
    obj = fastjson.loads(line)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def error_reply(rid: object, code: str, message: str) -> dict:
    return {"id": rid, "error": {"code": code, "message": message}}


def split_lines(buf: bytearray) -> list[bytes]:
    """Take the complete lines out of ``buf`` (in place); what follows the last newline stays."""
    end = buf.rfind(b"\n")
    if end < 0:
        return []
    lines = bytes(buf[:end]).split(b"\n")
    del buf[:end + 1]
    return [ln for ln in lines if ln.strip()]
