"""API errors: an exception class per HTTP status the clients branch on (moby's errdefs)."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered as ``{"message": ...}`` with ``status``."""

    status = 500


class InvalidParameter(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class NotModified(ApiError):
    status = 304


class NotImplementedYet(ApiError):
    status = 501


class Unavailable(ApiError):
    status = 503
