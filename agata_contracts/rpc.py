"""Declaring RPCs: each one is a name, a pydantic request model and a response model.

Services implement specs (``@rpc(SPEC)``), clients call them (``client.call(SPEC, request)``),
the gateway routes and documents them and checks who may call them (``Audience``): one
declaration serves every side. Standard library and pydantic only: the transport
(``microservice_interconnect``) consumes these types, the contracts do not import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

RequestT = TypeVar("RequestT", bound=BaseModel)
ResponseT = TypeVar("ResponseT", bound=BaseModel)


class Audience(StrEnum):
    """Who may call an RPC through the cloud gateway."""

    OPERATOR = "operator"
    CLIENT = "client"
    INTERNAL = "internal"


class Empty(BaseModel):
    """A request or response without fields."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class RpcSpec(Generic[RequestT, ResponseT]):
    """One RPC: its AGATA name, owning service, models, audience and a one-line summary."""

    name: str
    service: str
    request: type[RequestT]
    response: type[ResponseT]
    summary: str
    audiences: frozenset[Audience] = field(default_factory=lambda: frozenset({Audience.OPERATOR}))

    def queue(self, prefix: str = "") -> str:
        """The AMQP queue this RPC is served on (AGATA: the RPC's own name)."""
        return f"{prefix}{self.name}"
