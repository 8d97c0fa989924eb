"""Device credentials: one-time join tokens, each device's own secret, revocation.

Only SHA-256 hashes of tokens and secrets are stored (both are 256-bit random values, so a fast
hash is enough); a secret is shown once, to the device that joins.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from agata_common.database import utcnow
from agata_contracts.devices import (
    ENROLL_CLIENT,
    JOIN,
    REVOKE_CLIENT,
    VERIFY_DEVICE,
    DeviceCredential,
    Enrollment,
    EnrollRequest,
    JoinRequest,
    RevokedDevice,
    RevokeRequest,
    VerifiedDevice,
    VerifyDeviceRequest,
)
from agata_contracts.users import UserInfo
from microservice_interconnect import Conflict, NotFound, Unauthorized
from microservice_interconnect.service import rpc
from user_manager.models import Client, DeviceCredentialRecord, JoinTokenRecord

logger = logging.getLogger(__name__)


def digest(value: str) -> str:
    """What is stored for a token or a secret."""
    return hashlib.sha256(value.encode()).hexdigest()


class DeviceRegistry:
    """Enrolls devices, checks their secrets, revokes them (the user manager's second service).

    ``announce`` tells the other services (the gateways drop a revoked device at once).
    """

    def __init__(self, engine: Engine, describe: Callable[[Session, str], UserInfo],
                 announce: Callable[[UserInfo], None] | None = None) -> None:
        self.engine = engine
        self.describe = describe
        self.announce = announce
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @rpc(ENROLL_CLIENT)
    def enroll_client(self, request: EnrollRequest) -> Enrollment:
        """A new one-time join token (for ``client_id``, or for the first device to use it)."""
        token = secrets.token_urlsafe(32)
        expires = utcnow() + timedelta(seconds=request.ttl_s)
        with self._sessions.begin() as session:
            session.add(JoinTokenRecord(token_sha256=digest(token), client_id=request.client_id,
                                        created=utcnow(), expires_at=expires))
        logger.info("join token issued for %s (valid %d s)", request.client_id or "any device",
                    request.ttl_s)
        return Enrollment(client_id=request.client_id, join_token=token, expires_at=expires)

    @rpc(JOIN)
    def join(self, request: JoinRequest) -> DeviceCredential:
        """Spend a join token: the device gets its own secret (shown this once)."""
        now = utcnow()
        secret = secrets.token_urlsafe(32)
        with self._sessions.begin() as session:
            token = session.get(JoinTokenRecord, digest(request.join_token))
            if token is None or token.used_at is not None or token.expires_at <= now:
                raise Unauthorized("the join token is unknown, used or expired; ask the operator "
                                   "for a new one (agata clients enroll)")
            if token.client_id is not None and token.client_id != request.client_id:
                raise Unauthorized(f"this join token is for device {token.client_id!r}, not "
                                   f"{request.client_id!r}")
            credential = session.get(DeviceCredentialRecord, request.client_id)
            if token.client_id is None and (credential is not None or session.get(
                    Client, request.client_id) is not None):
                raise Conflict(f"device {request.client_id!r} exists already; an operator "
                               "brings it (back) with a token naming it")
            # spend the token with one conditional write: of two joins racing for it, one wins
            spent = session.execute(
                update(JoinTokenRecord)
                .where(JoinTokenRecord.token_sha256 == token.token_sha256,
                       JoinTokenRecord.used_at.is_(None))
                .values(used_at=now))
            if getattr(spent, "rowcount", 0) != 1:
                raise Unauthorized("the join token is unknown, used or expired; ask the operator "
                                   "for a new one (agata clients enroll)")
            if credential is None:
                session.add(DeviceCredentialRecord(client_id=request.client_id,
                                                   secret_sha256=digest(secret), created=now))
            else:
                credential.secret_sha256, credential.created = digest(secret), now
                credential.revoked_at = None
            if session.get(Client, request.client_id) is None:
                session.add(Client(id=request.client_id, data_qnt=0, sensors=[], created=now,
                                   modified=now, last_seen=now))
            session.flush()
            info = self.describe(session, request.client_id)
        logger.info("device %s joined", request.client_id)
        self._announce(info)
        return DeviceCredential(client_id=request.client_id, secret=secret)

    @rpc(VERIFY_DEVICE, inline=True)
    def verify_device(self, request: VerifyDeviceRequest) -> VerifiedDevice:
        """The device, when the secret is its own and it is not revoked; 401 otherwise."""
        with Session(self.engine) as session:
            credential = session.get(DeviceCredentialRecord, request.client_id)
        if (credential is None or credential.revoked_at is not None
                or not hmac.compare_digest(credential.secret_sha256, digest(request.secret))):
            raise Unauthorized(f"device {request.client_id!r}: unknown, revoked, or a wrong "
                               "secret")
        return VerifiedDevice(client_id=request.client_id)

    @rpc(REVOKE_CLIENT)
    def revoke_client(self, request: RevokeRequest) -> RevokedDevice:
        """The device's credential stops working at once (every gateway is told)."""
        now = utcnow()
        with self._sessions.begin() as session:
            credential = session.get(DeviceCredentialRecord, request.client_id,
                                     with_for_update=True)
            if credential is None:
                raise NotFound(f"device {request.client_id!r} is not enrolled")
            if credential.revoked_at is None:
                credential.revoked_at = now
            revoked_at = credential.revoked_at
            session.flush()
            info = self.describe(session, request.client_id)
        logger.warning("device %s revoked", request.client_id)
        self._announce(info)
        return RevokedDevice(client_id=request.client_id, revoked_at=revoked_at)

    def _announce(self, info: UserInfo) -> None:
        if self.announce is not None:
            try:
                self.announce(info)
            except Exception as exc:
                logger.warning("could not announce device %s: %s", info.id, exc)
