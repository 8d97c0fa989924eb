"""Sessions of Flower's CLI in the user manager: a login hands its tokens over once, after an
operator approved it; codes and tokens are kept only as hashes; tokens expire, a refresh
replaces both, revoking refuses them; the RPCs over the broker answer the same, on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from support import Cloud

from agata_common.database import make_engine
from agata_contracts.cli_sessions import (
    APPROVE_CLI_LOGIN,
    BEGIN_CLI_LOGIN,
    POLL_CLI_LOGIN,
    VERIFY_CLI_TOKEN,
    ApproveCliLoginRequest,
    PollCliLoginRequest,
    RefreshCliSessionRequest,
    RevokeCliSessionsRequest,
    VerifyCliTokenRequest,
    normal_user_code,
)
from microservice_interconnect import Empty, NotFound, Unauthorized
from user_manager.cli_sessions import CliSessionRegistry
from user_manager.models import Base, CliLoginRecord, CliSessionRecord


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def registry(tmp_path: Path) -> tuple[CliSessionRegistry, Clock]:
    engine = make_engine("", tmp_path / "users.db")
    Base.metadata.create_all(engine)
    clock = Clock()
    return CliSessionRegistry(engine, clock=clock), clock


def test_flwr_cli_login_hands_tokens_once_after_approval_and_keeps_only_hashes(
        registry: tuple[CliSessionRegistry, Clock]) -> None:
    sessions, clock = registry
    pending = sessions.begin_cli_login(Empty())
    poll = PollCliLoginRequest(device_code=pending.device_code)
    assert sessions.poll_cli_login(poll).access_token == ""  # waiting for the operator
    typed = pending.user_code.lower().replace("-", " ")
    assert sessions.approve_cli_login(ApproveCliLoginRequest(user_code=typed)).user_code == \
        pending.user_code
    tokens = sessions.poll_cli_login(poll)
    assert tokens.access_token and tokens.refresh_token and tokens.session_id
    with pytest.raises(Unauthorized):  # the login is spent
        sessions.poll_cli_login(poll)
    with Session(sessions.engine) as session:
        kept = repr([(row.access_sha256, row.refresh_sha256)
                     for row in session.scalars(select(CliSessionRecord))])
    assert tokens.access_token not in kept and tokens.refresh_token not in kept
    verify = VerifyCliTokenRequest(access_token=tokens.access_token)
    assert sessions.verify_cli_token(verify).session_id == tokens.session_id
    with pytest.raises(Unauthorized):
        sessions.verify_cli_token(VerifyCliTokenRequest(access_token="x" * 43))

    clock.advance(sessions.access_ttl_s)  # the access token expired: a refresh renews both
    with pytest.raises(Unauthorized):
        sessions.verify_cli_token(verify)
    renewed = sessions.refresh_cli_session(
        RefreshCliSessionRequest(refresh_token=tokens.refresh_token))
    assert renewed.session_id == tokens.session_id
    assert sessions.verify_cli_token(VerifyCliTokenRequest(
        access_token=renewed.access_token)).session_id == tokens.session_id
    with pytest.raises(Unauthorized):  # the old refresh token went with the old pair
        sessions.refresh_cli_session(RefreshCliSessionRequest(refresh_token=tokens.refresh_token))
    listed = sessions.list_cli_sessions(Empty()).sessions
    assert [s.session_id for s in listed] == [tokens.session_id]

    revoked = sessions.revoke_cli_sessions(RevokeCliSessionsRequest(session_id=tokens.session_id))
    assert revoked.revoked == 1
    with pytest.raises(Unauthorized):
        sessions.verify_cli_token(VerifyCliTokenRequest(access_token=renewed.access_token))
    with pytest.raises(Unauthorized):
        sessions.refresh_cli_session(RefreshCliSessionRequest(
            refresh_token=renewed.refresh_token))
    with pytest.raises(NotFound):
        sessions.revoke_cli_sessions(RevokeCliSessionsRequest(session_id=tokens.session_id))


def test_flwr_cli_logins_expire_and_unknown_codes_are_refused(
        registry: tuple[CliSessionRegistry, Clock]) -> None:
    sessions, clock = registry
    pending = sessions.begin_cli_login(Empty())
    other = "BCDF-GHJK" if pending.user_code != "BCDF-GHJK" else "ZZZZ-ZZZZ"
    for code in (other, "not a code", "AEIO-UAEI"):
        with pytest.raises(NotFound):
            sessions.approve_cli_login(ApproveCliLoginRequest(user_code=code))
    with pytest.raises(Unauthorized):
        sessions.poll_cli_login(PollCliLoginRequest(device_code="y" * 43))
    clock.advance(sessions.login_ttl_s)
    with pytest.raises(NotFound):
        sessions.approve_cli_login(ApproveCliLoginRequest(user_code=pending.user_code))
    with pytest.raises(Unauthorized):
        sessions.poll_cli_login(PollCliLoginRequest(device_code=pending.device_code))
    sessions.begin_cli_login(Empty())  # drops the expired login
    with Session(sessions.engine) as session:
        assert len(session.scalars(select(CliLoginRecord)).all()) == 1
    assert normal_user_code("kmtr qxbd") == "KMTR-QXBD" and normal_user_code("KMT") == ""


def test_flwr_cli_session_rpcs_over_the_broker(cloud_on_each_db: Cloud) -> None:
    call = cloud_on_each_db.client.call
    pending = call(BEGIN_CLI_LOGIN, {})
    call(APPROVE_CLI_LOGIN, {"user_code": pending.user_code})
    tokens = call(POLL_CLI_LOGIN, {"device_code": pending.device_code})
    assert call(VERIFY_CLI_TOKEN, {"access_token": tokens.access_token}).session_id == \
        tokens.session_id
    with pytest.raises(Unauthorized):
        call(VERIFY_CLI_TOKEN, {"access_token": tokens.refresh_token})
