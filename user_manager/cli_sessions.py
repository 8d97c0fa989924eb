"""Sessions of Flower's CLI (``flwr login``), kept where every gateway finds them: a login's
device code, then each session's access and refresh tokens, all as SHA-256 hashes only (they
are 256-bit random values, so a fast hash is enough), each with its expiry.

A login waits ``login_ttl_s`` for an operator's approval and hands its tokens over once; an
access token lasts ``access_ttl_s``, a refresh token ``refresh_ttl_s``, and a refresh replaces
both. Revoking deletes the session: its tokens are refused at the next call, by every gateway.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from agata_common.database import utcnow
from agata_contracts.cli_sessions import (
    APPROVE_CLI_LOGIN,
    BEGIN_CLI_LOGIN,
    LIST_CLI_SESSIONS,
    POLL_CLI_LOGIN,
    REFRESH_CLI_SESSION,
    REVOKE_CLI_SESSIONS,
    USER_CODE_ALPHABET,
    USER_CODE_LENGTH,
    VERIFY_CLI_TOKEN,
    ApproveCliLoginRequest,
    ApprovedCliLogin,
    CliSession,
    CliSessions,
    CliTokens,
    PendingCliLogin,
    PollCliLoginRequest,
    RefreshCliSessionRequest,
    RevokeCliSessionsRequest,
    RevokedCliSessions,
    VerifiedCliSession,
    VerifyCliTokenRequest,
    normal_user_code,
)
from microservice_interconnect import Empty, NotFound, ServiceUnavailable, Unauthorized
from microservice_interconnect.service import rpc
from user_manager.devices import digest
from user_manager.models import CliLoginRecord, CliSessionRecord

logger = logging.getLogger(__name__)

MAX_PENDING = 256
"""The most logins waiting for approval at once (anyone may begin one)."""


def new_user_code() -> str:
    """A short code shown to the operator, e.g. ``KMTR-QXBD``."""
    letters = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
    return f"{letters[:4]}-{letters[4:]}"


class CliSessionRegistry:
    """Logins and sessions of Flower's CLI (a service of the user manager)."""

    def __init__(self, engine: Engine, *, login_ttl_s: int = 600, access_ttl_s: int = 3600,
                 refresh_ttl_s: int = 7 * 24 * 3600,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.login_ttl_s = login_ttl_s
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self.clock = clock
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @rpc(BEGIN_CLI_LOGIN)
    def begin_cli_login(self, _: Empty) -> PendingCliLogin:
        """A new login waiting for an operator (expired logins and sessions are dropped)."""
        now = self.clock()
        device_code = secrets.token_urlsafe(32)
        with self._sessions.begin() as session:
            session.execute(delete(CliLoginRecord).where(CliLoginRecord.expires_at <= now))
            session.execute(delete(CliSessionRecord)
                            .where(CliSessionRecord.refresh_expires_at <= now))
            waiting = session.scalar(select(func.count()).select_from(CliLoginRecord))
            if (waiting or 0) >= MAX_PENDING:
                raise ServiceUnavailable("too many flwr logins are waiting for approval; try "
                                         "again later")
            user_code = new_user_code()
            while session.scalar(select(CliLoginRecord.device_sha256)
                                 .where(CliLoginRecord.user_code == user_code)) is not None:
                user_code = new_user_code()
            session.add(CliLoginRecord(device_sha256=digest(device_code), user_code=user_code,
                                       created=now,
                                       expires_at=now + timedelta(seconds=self.login_ttl_s)))
        return PendingCliLogin(device_code=device_code, user_code=user_code,
                               expires_in=self.login_ttl_s)

    @rpc(APPROVE_CLI_LOGIN)
    def approve_cli_login(self, request: ApproveCliLoginRequest) -> ApprovedCliLogin:
        """The waiting login showing this code is approved; 404 when none is."""
        code = normal_user_code(request.user_code)
        with self._sessions.begin() as session:
            approved = session.execute(
                update(CliLoginRecord)
                .where(CliLoginRecord.user_code == code,
                       CliLoginRecord.expires_at > self.clock())
                .values(approved_at=self.clock()))
            if not code or getattr(approved, "rowcount", 0) != 1:
                raise NotFound("no flwr login is waiting with that code (it may have expired)")
        logger.info("flwr login %s approved", code)
        return ApprovedCliLogin(user_code=code)

    @rpc(POLL_CLI_LOGIN)
    def poll_cli_login(self, request: PollCliLoginRequest) -> CliTokens:
        """The session's tokens once the login was approved (then the login is spent), empty
        while it waits; 401 for a login that is unknown, spent or expired."""
        now = self.clock()
        key = digest(request.device_code)
        with self._sessions.begin() as session:
            login = session.get(CliLoginRecord, key)
            if login is None or login.expires_at <= now:
                raise Unauthorized("this flwr login is unknown or expired; run flwr login "
                                   "again")
            if login.approved_at is None:
                return CliTokens()
            # spend the login with one conditional delete: of two polls racing, one wins
            spent = session.execute(delete(CliLoginRecord).where(
                CliLoginRecord.device_sha256 == key, CliLoginRecord.approved_at.is_not(None)))
            if getattr(spent, "rowcount", 0) != 1:
                raise Unauthorized("this flwr login was already used; run flwr login again")
            tokens = self._tokens(secrets.token_hex(8))
            session.add(CliSessionRecord(
                session_id=tokens.session_id, created=now, **self._hashes(tokens, now)))
        logger.info("flwr CLI session %s opened", tokens.session_id)
        return tokens

    def _tokens(self, session_id: str) -> CliTokens:
        return CliTokens(session_id=session_id, access_token=secrets.token_urlsafe(32),
                         refresh_token=secrets.token_urlsafe(32))

    def _hashes(self, tokens: CliTokens, now: datetime) -> dict[str, object]:
        return {"access_sha256": digest(tokens.access_token),
                "access_expires_at": now + timedelta(seconds=self.access_ttl_s),
                "refresh_sha256": digest(tokens.refresh_token),
                "refresh_expires_at": now + timedelta(seconds=self.refresh_ttl_s)}

    @rpc(REFRESH_CLI_SESSION)
    def refresh_cli_session(self, request: RefreshCliSessionRequest) -> CliTokens:
        """New tokens for the session of a valid refresh token; the old pair stops working."""
        now = self.clock()
        old = digest(request.refresh_token)
        with self._sessions.begin() as session:
            session_id = session.scalar(select(CliSessionRecord.session_id).where(
                CliSessionRecord.refresh_sha256 == old,
                CliSessionRecord.refresh_expires_at > now))
            tokens = self._tokens(session_id or "")
            renewed = session.execute(update(CliSessionRecord).where(
                CliSessionRecord.refresh_sha256 == old,
                CliSessionRecord.refresh_expires_at > now).values(**self._hashes(tokens, now)))
            if session_id is None or getattr(renewed, "rowcount", 0) != 1:
                raise Unauthorized("this flwr CLI session is unknown, expired or revoked; run "
                                   "flwr login")
        return tokens

    @rpc(VERIFY_CLI_TOKEN, inline=True)
    def verify_cli_token(self, request: VerifyCliTokenRequest) -> VerifiedCliSession:
        """The session of a valid access token; 401 otherwise."""
        with Session(self.engine) as session:
            found = session.scalar(select(CliSessionRecord.session_id).where(
                CliSessionRecord.access_sha256 == digest(request.access_token),
                CliSessionRecord.access_expires_at > self.clock()))
        if found is None:
            raise Unauthorized("the flwr CLI token is unknown, expired or revoked; run flwr "
                               "login")
        return VerifiedCliSession(session_id=found)

    @rpc(LIST_CLI_SESSIONS)
    def list_cli_sessions(self, _: Empty) -> CliSessions:
        """Every live session, oldest first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(CliSessionRecord).where(
                CliSessionRecord.refresh_expires_at > self.clock())
                .order_by(CliSessionRecord.created)).all()
        return CliSessions(sessions=[CliSession(session_id=row.session_id, created=row.created,
                                                expires_at=row.refresh_expires_at)
                                     for row in rows])

    @rpc(REVOKE_CLI_SESSIONS)
    def revoke_cli_sessions(self, request: RevokeCliSessionsRequest) -> RevokedCliSessions:
        """One session's tokens (every session's without an id) refused from now on."""
        statement = delete(CliSessionRecord)
        if request.session_id is not None:
            statement = statement.where(CliSessionRecord.session_id == request.session_id)
        with self._sessions.begin() as session:
            revoked = int(getattr(session.execute(statement), "rowcount", 0))
        if request.session_id is not None and not revoked:
            raise NotFound(f"no flwr CLI session {request.session_id!r}")
        logger.warning("%d flwr CLI session(s) revoked", revoked)
        return RevokedCliSessions(revoked=revoked)
