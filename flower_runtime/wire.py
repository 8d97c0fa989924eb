"""What travels between a run's ServerApp host and a device's ClientApp worker.

One websocket per device. Text frames carry JSON control messages (the device's hello, the
host's welcome or refusal, the end of the run); binary frames carry Flower ``Message`` objects
as their protobuf bytes, so any app's records cross unchanged.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from flwr.app import Message
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agata_contracts.common import ClientId

PATH = "/flower"
"""The websocket's path on the host's port."""
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
"""The largest Flower message accepted either way (model weights included)."""


class Hello(BaseModel):
    """A device asking to join the run."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["hello"] = "hello"
    client_id: ClientId
    credential: str = Field(min_length=1, max_length=256)
    node_config: dict[str, bool | int | float | str] = Field(default_factory=dict,
                                                              max_length=64)


class Welcome(BaseModel):
    """The host's answer: who the device is in this run and the run's config."""

    type: Literal["welcome"] = "welcome"
    run_id: int
    node_id: int
    node_config: dict[str, bool | int | float | str]
    run_config: dict[str, bool | int | float | str]


class Refusal(BaseModel):
    """The host will not take this device (wrong credential, run full, run over)."""

    type: Literal["refused"] = "refused"
    reason: str


class RunEnded(BaseModel):
    """The ServerApp returned or failed: the device's part is over."""

    type: Literal["ended"] = "ended"
    status: Literal["completed", "failed"]
    reason: str | None = None


class WireError(ValueError):
    """A frame that is not what the protocol allows."""


def message_bytes(message: Message) -> bytes:
    """A Flower message as protobuf bytes."""
    data: bytes = message_to_proto(message).SerializeToString()
    return data


def message_from_bytes(data: bytes) -> Message:
    """A Flower message from protobuf bytes; ``WireError`` when they are not one."""
    proto = ProtoMessage()
    try:
        proto.ParseFromString(data)
        return message_from_proto(proto)
    except Exception as exc:
        raise WireError(f"not a Flower message: {exc}") from None


def control(model: BaseModel) -> str:
    """A control message as a text frame."""
    return model.model_dump_json()


def parse_control(text: str, *models: type[BaseModel]) -> Any:
    """The first of ``models`` that ``text`` is; ``WireError`` otherwise."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise WireError("control frame is not JSON") from None
    kind = raw.get("type") if isinstance(raw, dict) else None
    for model in models:
        if model.model_fields["type"].default == kind:
            try:
                return model.model_validate(raw)
            except ValidationError as exc:
                raise WireError(f"bad {kind} frame: {exc.errors()[0]['msg']}") from None
    raise WireError(f"unexpected control frame {kind!r}")
