"""Errors of the image library, one class per containerd ``errdefs`` kind.

skiff-containerd turns them into gRPC status codes by ``code`` (the name of the
``grpc.StatusCode`` member), the way containerd's ``errdefs.ToGRPC`` does:

=====================  ======================  ==================================
class                  ``code``                containerd errdefs
=====================  ======================  ==================================
ImageError             UNKNOWN                 ErrUnknown
InvalidArgument        INVALID_ARGUMENT        ErrInvalidArgument
NotFound               NOT_FOUND               ErrNotFound
AlreadyExists          ALREADY_EXISTS          ErrAlreadyExists
FailedPrecondition     FAILED_PRECONDITION     ErrFailedPrecondition
DigestMismatch         FAILED_PRECONDITION     (commit with the wrong digest/size)
Unavailable            UNAVAILABLE             ErrUnavailable (e.g. an ingest locked)
Unimplemented          UNIMPLEMENTED           ErrNotImplemented
=====================  ======================  ==================================

Messages follow the project's rule: what failed, on what object, why.
"""

from __future__ import annotations


class ImageError(Exception):
    """Base class; ``code`` names the gRPC status code it maps to."""

    code = "UNKNOWN"


class InvalidArgument(ImageError):
    code = "INVALID_ARGUMENT"


class NotFound(ImageError):
    code = "NOT_FOUND"


class AlreadyExists(ImageError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(ImageError):
    code = "FAILED_PRECONDITION"


class DigestMismatch(FailedPrecondition):
    """Committed content is not what the caller said it is (digest or size)."""


class Unavailable(ImageError):
    code = "UNAVAILABLE"


class Unimplemented(ImageError):
    code = "UNIMPLEMENTED"


__all__ = [
    "AlreadyExists",
    "DigestMismatch",
    "FailedPrecondition",
    "ImageError",
    "InvalidArgument",
    "NotFound",
    "Unimplemented",
    "Unavailable",
]
