"""The only code that knows AMQP: one connection per process, RPC services and clients, events."""

from agata_contracts.rpc import Audience, Empty, RpcSpec
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
