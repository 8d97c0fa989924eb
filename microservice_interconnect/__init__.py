"""The only code that knows AMQP: one connection per process, RPC services and clients, events."""

from microservice_interconnect.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RpcError,
    RpcTimeout,
    ServiceUnavailable,
    Unauthorized,
)
from microservice_interconnect.spec import Audience, Empty, RpcSpec

__all__ = [
    "Audience",
    "BadRequest",
    "Conflict",
    "Empty",
    "NotFound",
    "PayloadTooLarge",
    "RpcError",
    "RpcSpec",
    "RpcTimeout",
    "ServiceUnavailable",
    "Unauthorized",
    "Forbidden",
]
