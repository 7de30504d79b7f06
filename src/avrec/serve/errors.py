"""Errors the service raises with an HTTP status; the API answers them as ``{"error": message}``."""

from __future__ import annotations

from avrec.errors import AvrecError


class ServiceError(AvrecError):
    """An error with an HTTP status; the message is shown to the client."""

    status = 400


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Unavailable(ServiceError):
    status = 503
