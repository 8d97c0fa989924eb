"""The user manager's RPCs and their messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agata_contracts.common import MAX_OFFSET, ClientId, SensorName
from agata_contracts.criteria import CLIENT_ATTRIBUTES
from agata_contracts.rpc import Audience, RpcSpec

SERVICE = "user_manager"

CLIENT_STATS = tuple(name for name in CLIENT_ATTRIBUTES if name != "id")
"""The stats a client reports; with its ``id`` they are what selection criteria can read."""


class UpdateUserInfoRequest(BaseModel):
    """A client's stats. Fields left out keep their stored value (or a default when new)."""

    model_config = ConfigDict(extra="forbid")

    user_id: ClientId
    data_qnt: int | None = Field(None, ge=0, le=10**12, description="Samples the client holds.")
    avg_acc_contrib: float | None = Field(
        None, ge=-1, le=1, description="Average accuracy contribution per round."
    )
    avg_disconnection_per_round: float | None = Field(
        None, ge=0, le=10**6, description="Average disconnections per round."
    )
    sensors: list[SensorName] | None = Field(None, max_length=64, description="Sensor names.")


class GetUserInfoRequest(BaseModel):
    """Which client to look up."""

    model_config = ConfigDict(extra="forbid")

    user_id: ClientId


class UserInfo(BaseModel):
    """A client as the registry knows it."""

    id: str
    data_qnt: int
    avg_acc_contrib: float | None
    avg_disconnection_per_round: float | None
    sensors: list[str]
    created: datetime
    modified: datetime
    last_seen: datetime
    online: bool = Field(description="Heard from within the user manager's lost_after_s; a "
                         "device sends update_user_info with its id alone as its heartbeat.")
    enrolled: bool = Field(False, description="The device joined with a join token and "
                           "proves itself with its own secret.")
    revoked: bool = Field(False, description="Its credential was revoked: it is refused.")

    def criteria_attributes(self) -> dict[str, Any]:
        """What selection criteria may read of this client: its id and its stats."""
        return self.model_dump(include=set(CLIENT_ATTRIBUTES))


class ListUsersRequest(BaseModel):
    """Paging through clients, most recently seen first."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class UserList(BaseModel):
    """A page of clients and how many there are in all."""

    users: list[UserInfo]
    total: int


UPDATE_USER_INFO: RpcSpec[UpdateUserInfoRequest, UserInfo] = RpcSpec(
    "rpc_exec_update_user_info", SERVICE, UpdateUserInfoRequest, UserInfo,
    "Register a client or update its stats (upsert); with the id alone, a heartbeat.",
    frozenset({Audience.CLIENT, Audience.OPERATOR}),
)
GET_USER_INFO: RpcSpec[GetUserInfoRequest, UserInfo] = RpcSpec(
    "rpc_exec_get_user_info", SERVICE, GetUserInfoRequest, UserInfo,
    "One client's stats.",
    frozenset({Audience.CLIENT, Audience.OPERATOR}),
)
LIST_USERS: RpcSpec[ListUsersRequest, UserList] = RpcSpec(
    "rpc_exec_list_users", SERVICE, ListUsersRequest, UserList, "Clients, most recently seen first."
)

RPCS = (UPDATE_USER_INFO, GET_USER_INFO, LIST_USERS)
