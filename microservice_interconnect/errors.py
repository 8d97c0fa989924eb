"""RPC errors: each carries the status code that travels in AGATA's envelope."""

from __future__ import annotations

from typing import Any, ClassVar


class RpcError(Exception):
    """An RPC failed; ``status_code`` is the envelope's (and the gateway's HTTP) status."""

    status_code: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        error_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.error_id = error_id


class BadRequest(RpcError):
    """The request is malformed or fails validation (400)."""

    status_code = 400


class Unauthorized(RpcError):
    """Missing or wrong credential (401)."""

    status_code = 401


class Forbidden(RpcError):
    """The caller is known but may not do this (403)."""

    status_code = 403


class NotFound(RpcError):
    """The named thing does not exist (404)."""

    status_code = 404


class Conflict(RpcError):
    """The request conflicts with the current state (409)."""

    status_code = 409


class PayloadTooLarge(RpcError):
    """The request is over a size limit (413)."""

    status_code = 413


class ServiceUnavailable(RpcError):
    """The broker or the service cannot be reached (503)."""

    status_code = 503


class RpcTimeout(RpcError):
    """No reply arrived within the call's timeout (504)."""

    status_code = 504


_BY_STATUS: dict[int, type[RpcError]] = {
    cls.status_code: cls
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge,
                ServiceUnavailable, RpcTimeout)
}


def error_for_status(
    status_code: int,
    message: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    error_id: str | None = None,
) -> RpcError:
    """The error class matching a status code (plain ``RpcError`` with that code otherwise)."""
    cls = _BY_STATUS.get(status_code)
    if cls is not None:
        return cls(message, errors=errors, error_id=error_id)
    error = RpcError(message, errors=errors, error_id=error_id)
    error.status_code = status_code  # type: ignore[misc]
    return error
