"""What every gRPC handler shares: the namespace and lease of a request, and errors.

containerd carries the namespace of a request in the gRPC metadata header
``containerd-namespace`` and the client's lease in ``containerd-lease``. Errors leave a handler
as gRPC statuses with the codes of containerd's ``errdefs`` (the image library's error classes
name theirs in ``code``); anything else is an internal error, logged with its traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from skiff.images.errors import ImageError, InvalidArgument
from skiff.images.metadata import validate_identifier

NAMESPACE_HEADER = "containerd-namespace"
LEASE_HEADER = "containerd-lease"

log = logging.getLogger("skiff.containerd")

F = TypeVar("F", bound=Callable[..., Any])


class RpcError(Exception):
    """An error with an explicit gRPC status code (``code``: a ``grpc.StatusCode`` name)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def failed_precondition(message: str) -> RpcError:
    return RpcError("FAILED_PRECONDITION", message)


def unimplemented(message: str) -> RpcError:
    return RpcError("UNIMPLEMENTED", message)


def header(context: grpc.ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode()
    return None


def namespace_of(context: grpc.ServicerContext) -> str:
    """The request's namespace (containerd: FailedPrecondition "namespace is required")."""
    ns = header(context, NAMESPACE_HEADER)
    if not ns:
        raise failed_precondition(f"namespace is required: send the {NAMESPACE_HEADER} header")
    validate_identifier(ns, "namespace")
    return ns


def lease_of(context: grpc.ServicerContext) -> str | None:
    """The client's lease for this request, if it sent one (as the metadata database keeps it)."""
    return header(context, LEASE_HEADER) or None


def status_code(exc: BaseException) -> grpc.StatusCode:
    code = getattr(exc, "code", None)
    if isinstance(exc, (ImageError, RpcError)) and isinstance(code, str):
        return getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, method: str, exc: BaseException) -> None:
    code = status_code(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.error("%s: internal error: %s", method, exc, exc_info=exc)
        message = f"{method}: internal error: {type(exc).__name__}: {exc}"
    else:
        log.debug("%s: %s: %s", method, code.name, exc)
        message = str(exc)
    context.abort(code, message)


def handler(fn: F) -> F:
    """Wrap a unary (or stream-in) handler: library errors become gRPC statuses."""
    name = fn.__qualname__

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except Exception as e:  # every error leaves as a status; grpc's own abort passes through
            if _is_abort(e):
                raise
            _abort(context, name, e)
    return wrapper  # type: ignore[return-value]


def stream_handler(fn: F) -> F:
    """Wrap a handler that returns an iterator of responses (server streaming or bidi)."""
    name = fn.__qualname__

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(self, request, context)
        except Exception as e:
            if _is_abort(e):
                raise
            _abort(context, name, e)
    return wrapper  # type: ignore[return-value]


def _is_abort(exc: BaseException) -> bool:
    # grpc's context.abort() raises a plain Exception after recording the status; a handler
    # that called it itself (or a nested abort) must not be converted again. A grpc.RpcError
    # inside a handler is the client's stream ending (cancelled, gone): nothing to answer.
    return (type(exc) is Exception and not exc.args) or isinstance(exc, grpc.RpcError)


def require(value: object, what: str) -> None:
    """containerd's "X required" argument checks."""
    if not value:
        raise InvalidArgument(f"{what} required")
