"""Device identity: enrollment with a one-time join token, each device's own secret, revocation.

An operator enrolls a device (``agata clients enroll``, the web interface, or
``POST /api/clients/enroll``) and hands the join token to it; the device exchanges the token
once for its own secret (``POST /api/client/join``), keeps it 0600, and from then on proves
who it is with ``Authorization: Bearer <client_id>:<secret>``. The cloud keeps only hashes of
join tokens and secrets. The gateway binds every client route to that id: a body naming another
device is refused (403).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from agata_contracts.common import ClientId
from agata_contracts.rpc import Audience, RpcSpec
from agata_contracts.users import SERVICE

MAX_JOIN_TTL_S: Final = 30 * 24 * 3600
SECRET_FIELD: Final = Field(min_length=32, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")


class EnrollRequest(BaseModel):
    """A new one-time join token, for one named device or for whichever device uses it first."""

    model_config = ConfigDict(extra="forbid")

    client_id: ClientId | None = Field(None, description="The device the token is for; empty: "
                                       "the device names itself when it joins.")
    ttl_s: int = Field(3600, ge=60, le=MAX_JOIN_TTL_S,
                       description="Seconds the token can be used (once).")


class Enrollment(BaseModel):
    """A join token, shown once (the cloud keeps only its hash)."""

    client_id: str | None
    join_token: str
    expires_at: datetime


class JoinRequest(BaseModel):
    """A device exchanging its join token for its own secret."""

    model_config = ConfigDict(extra="forbid")

    join_token: str = SECRET_FIELD
    client_id: ClientId


class DeviceCredential(BaseModel):
    """A device's own secret, returned once, at join (the cloud keeps only its hash)."""

    client_id: str
    secret: str


class VerifyDeviceRequest(BaseModel):
    """Whether a presented device secret is that device's, and the device not revoked."""

    model_config = ConfigDict(extra="forbid")

    client_id: ClientId
    secret: str = SECRET_FIELD


class VerifiedDevice(BaseModel):
    """A device whose secret checked out."""

    client_id: str


class RevokeRequest(BaseModel):
    """Which device loses its credential."""

    model_config = ConfigDict(extra="forbid")

    client_id: ClientId


class RevokedDevice(BaseModel):
    """A device whose credential no longer works (enroll it again to bring it back)."""

    client_id: str
    revoked_at: datetime


_OPERATOR = frozenset({Audience.OPERATOR})
_INTERNAL = frozenset({Audience.INTERNAL})

ENROLL_CLIENT: RpcSpec[EnrollRequest, Enrollment] = RpcSpec(
    "rpc_exec_enroll_client", SERVICE, EnrollRequest, Enrollment,
    "Create a one-time join token for a device.", _OPERATOR)
JOIN: RpcSpec[JoinRequest, DeviceCredential] = RpcSpec(
    "rpc_exec_join", SERVICE, JoinRequest, DeviceCredential,
    "A device exchanges its join token for its own secret.", _INTERNAL)
VERIFY_DEVICE: RpcSpec[VerifyDeviceRequest, VerifiedDevice] = RpcSpec(
    "rpc_exec_verify_device", SERVICE, VerifyDeviceRequest, VerifiedDevice,
    "Check a device's secret (the gateway, for every device request it has not seen lately).",
    _INTERNAL)
REVOKE_CLIENT: RpcSpec[RevokeRequest, RevokedDevice] = RpcSpec(
    "rpc_exec_revoke_client", SERVICE, RevokeRequest, RevokedDevice,
    "Revoke a device's credential, at once.", _OPERATOR)

RPCS = (ENROLL_CLIENT, JOIN, VERIFY_DEVICE, REVOKE_CLIENT)
