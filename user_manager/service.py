"""The user manager: registers clients and keeps their latest stats."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from agata_common.database import utcnow
from agata_contracts.users import (
    CLIENT_STATS,
    GET_USER_INFO,
    LIST_USERS,
    UPDATE_USER_INFO,
    GetUserInfoRequest,
    ListUsersRequest,
    UpdateUserInfoRequest,
    UserInfo,
    UserList,
)
from microservice_interconnect import NotFound
from microservice_interconnect.service import rpc
from user_manager import migrations
from user_manager.models import Client, DeviceCredentialRecord

logger = logging.getLogger(__name__)

def to_info(client: Client, lost_after_s: float,
            credential: DeviceCredentialRecord | None = None) -> UserInfo:
    """The contract view of a stored client (online when heard from within ``lost_after_s``;
    enrolled and revoked from its credential)."""
    return UserInfo(
        id=client.id,
        data_qnt=client.data_qnt,
        avg_acc_contrib=client.avg_acc_contrib,
        avg_disconnection_per_round=client.avg_disconnection_per_round,
        sensors=list(client.sensors or []),
        created=client.created,
        modified=client.modified,
        last_seen=client.last_seen,
        online=(utcnow() - client.last_seen).total_seconds() <= lost_after_s,
        enrolled=credential is not None,
        revoked=credential is not None and credential.revoked_at is not None,
    )


class ReadCache:
    """Recently read or written clients, kept ``ttl_s`` seconds (0 turns it off).

    Clients poll for their info far more often than they change it; the user manager owns the
    table and refreshes an entry on every write, so the TTL only bounds how stale a read can be
    when several user managers share one database.
    """

    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, UserInfo]] = {}

    def get(self, client_id: str) -> UserInfo | None:
        entry = self._entries.get(client_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, info: UserInfo) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[info.id] = (time.monotonic() + self.ttl_s, info)


class UserManager:
    """Client registry over a SQLAlchemy engine."""

    def __init__(self, engine: Engine, *, cache_ttl_s: float = 2.0,
                 lost_after_s: float = 30.0,
                 announce: Callable[[UserInfo], None] | None = None) -> None:
        self.engine = engine
        self.lost_after_s = lost_after_s
        self.announce = announce
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._cache = ReadCache(cache_ttl_s)

    def create_schema(self) -> None:
        """Bring the database to the newest schema (``migrations``: Alembic revisions)."""
        migrations.upgrade(self.engine)

    @rpc(UPDATE_USER_INFO)
    def update_user_info(self, request: UpdateUserInfoRequest) -> UserInfo:
        """Register the client or update the stats it sent."""
        try:
            info = self._upsert(request)
        except IntegrityError:
            info = self._upsert(request)
        self._cache.put(info)
        if self.announce is not None and info.modified == info.last_seen:
            self.announce(info)  # new, or its stats changed (a heartbeat alone is not news)
        return info

    def _upsert(self, request: UpdateUserInfoRequest) -> UserInfo:
        now = utcnow()
        with self._sessions.begin() as session:
            client = session.get(Client, request.user_id, with_for_update=True)
            sent = request.model_dump(include=set(CLIENT_STATS), exclude_none=True)
            if client is None:
                client = Client(id=request.user_id, data_qnt=0, sensors=[], created=now,
                                modified=now, last_seen=now)
                session.add(client)
                logger.info("new client %s", request.user_id)
            changed = False
            for field, value in sent.items():
                if getattr(client, field) != value:
                    setattr(client, field, value)
                    changed = True
            if changed:
                client.modified = now
            client.last_seen = now
            session.flush()
            return self.describe(session, client.id)

    @rpc(GET_USER_INFO, inline=True)
    def get_user_info(self, request: GetUserInfoRequest) -> UserInfo:
        """One client's stats, or 404 (a cache hit, or one primary-key read: run inline)."""
        cached = self._cache.get(request.user_id)
        if cached is not None:
            return cached
        with Session(self.engine) as session:
            info = self.describe(session, request.user_id)
        self._cache.put(info)
        return info

    def describe(self, session: Session, client_id: str) -> UserInfo:
        """A client as the contracts show it (404 when it is not registered)."""
        client = session.get(Client, client_id)
        if client is None:
            raise NotFound(f"client {client_id!r} is not registered")
        return to_info(client, self.lost_after_s, session.get(DeviceCredentialRecord, client_id))

    def forget(self, info: UserInfo) -> None:
        """Keep the read cache true after the device registry changed a client."""
        self._cache.put(info)

    @rpc(LIST_USERS)
    def list_users(self, request: ListUsersRequest) -> UserList:
        """A page of clients, most recently seen first."""
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(Client)) or 0
            rows = list(session.scalars(
                select(Client).order_by(Client.last_seen.desc(), Client.id)
                .limit(request.limit).offset(request.offset)
            ))
            credentials = {row.client_id: row for row in session.scalars(
                select(DeviceCredentialRecord).where(
                    DeviceCredentialRecord.client_id.in_([c.id for c in rows])))}
            return UserList(users=[to_info(row, self.lost_after_s, credentials.get(row.id))
                                   for row in rows], total=total)
