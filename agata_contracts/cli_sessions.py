"""Sessions of Flower's CLI (``flwr login``): a device-code login an operator approves, then
an access token and a refresh token, kept by the user manager as SHA-256 hashes only.

The gateway serves Flower's side of it (see ``cloud_gateway.flwr_login``); these RPCs are
internal: the gateway decides who may call them (anyone may begin a login and poll it, an
operator approves, lists and revokes, a CLI refreshes with its refresh token).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from agata_contracts.rpc import Audience, Empty, RpcSpec
from agata_contracts.users import SERVICE

CLI_SECRET: Final = Field(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
USER_CODE_ALPHABET: Final = "BCDFGHJKLMNPQRSTVWXZ"
"""Letters a person reads back without confusion (no vowels: no words, no 0/O or 1/I)."""
USER_CODE_LENGTH: Final = 8


def normal_user_code(text: str) -> str:
    """A user code as typed (any case, with or without its dash) in its one spelling, e.g.
    ``KMTR-QXBD``; empty when it cannot be one."""
    letters = "".join(c for c in text.upper() if c.isalpha())
    if len(letters) != USER_CODE_LENGTH or set(letters) - set(USER_CODE_ALPHABET):
        return ""
    return f"{letters[:4]}-{letters[4:]}"


class PendingCliLogin(BaseModel):
    """A login waiting for an operator: the CLI's secret device code and the code shown."""

    device_code: str
    user_code: str
    expires_in: int = Field(description="Seconds the login waits for its approval.")


class ApproveCliLoginRequest(BaseModel):
    """An operator approves the login that shows this code."""

    model_config = ConfigDict(extra="forbid")

    user_code: str = Field(min_length=1, max_length=32)


class ApprovedCliLogin(BaseModel):
    """The login approved (its CLI gets its tokens at its next poll)."""

    user_code: str


class PollCliLoginRequest(BaseModel):
    """The CLI asking whether its login was approved."""

    model_config = ConfigDict(extra="forbid")

    device_code: str = CLI_SECRET


class CliTokens(BaseModel):
    """A session's tokens, handed over once; all empty while the login waits."""

    session_id: str = ""
    access_token: str = ""
    refresh_token: str = ""


class RefreshCliSessionRequest(BaseModel):
    """New tokens for a session, for its refresh token (the old pair stops working)."""

    model_config = ConfigDict(extra="forbid")

    refresh_token: str = CLI_SECRET


class VerifyCliTokenRequest(BaseModel):
    """Whether an access token is a live session's."""

    model_config = ConfigDict(extra="forbid")

    access_token: str = CLI_SECRET


class VerifiedCliSession(BaseModel):
    """The session an access token belongs to."""

    session_id: str


class CliSession(BaseModel):
    """A live session as operators see it (never a token)."""

    session_id: str
    created: datetime
    expires_at: datetime = Field(description="When its refresh token expires.")


class CliSessions(BaseModel):
    """Every live session, oldest first."""

    sessions: list[CliSession]


class RevokeCliSessionsRequest(BaseModel):
    """Which session's tokens are refused from now on; every session's without an id."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(None, min_length=1, max_length=64)


class RevokedCliSessions(BaseModel):
    """How many sessions were revoked."""

    revoked: int


_INTERNAL = frozenset({Audience.INTERNAL})

BEGIN_CLI_LOGIN: RpcSpec[Empty, PendingCliLogin] = RpcSpec(
    "rpc_exec_begin_cli_login", SERVICE, Empty, PendingCliLogin,
    "Start a flwr login: a device code for the CLI, a user code for the operator.", _INTERNAL)
APPROVE_CLI_LOGIN: RpcSpec[ApproveCliLoginRequest, ApprovedCliLogin] = RpcSpec(
    "rpc_exec_approve_cli_login", SERVICE, ApproveCliLoginRequest, ApprovedCliLogin,
    "An operator approves a waiting flwr login by its user code.", _INTERNAL)
POLL_CLI_LOGIN: RpcSpec[PollCliLoginRequest, CliTokens] = RpcSpec(
    "rpc_exec_poll_cli_login", SERVICE, PollCliLoginRequest, CliTokens,
    "The CLI's tokens once its login was approved (once), empty while it waits.", _INTERNAL)
REFRESH_CLI_SESSION: RpcSpec[RefreshCliSessionRequest, CliTokens] = RpcSpec(
    "rpc_exec_refresh_cli_session", SERVICE, RefreshCliSessionRequest, CliTokens,
    "New tokens for a session's refresh token.", _INTERNAL)
VERIFY_CLI_TOKEN: RpcSpec[VerifyCliTokenRequest, VerifiedCliSession] = RpcSpec(
    "rpc_exec_verify_cli_token", SERVICE, VerifyCliTokenRequest, VerifiedCliSession,
    "The session of a valid access token (401 otherwise).", _INTERNAL)
LIST_CLI_SESSIONS: RpcSpec[Empty, CliSessions] = RpcSpec(
    "rpc_exec_list_cli_sessions", SERVICE, Empty, CliSessions,
    "Every live flwr CLI session.", _INTERNAL)
REVOKE_CLI_SESSIONS: RpcSpec[RevokeCliSessionsRequest, RevokedCliSessions] = RpcSpec(
    "rpc_exec_revoke_cli_sessions", SERVICE, RevokeCliSessionsRequest, RevokedCliSessions,
    "Refuse one flwr CLI session's tokens, or every session's, at once.", _INTERNAL)

RPCS = (BEGIN_CLI_LOGIN, APPROVE_CLI_LOGIN, POLL_CLI_LOGIN, REFRESH_CLI_SESSION,
        VERIFY_CLI_TOKEN, LIST_CLI_SESSIONS, REVOKE_CLI_SESSIONS)
