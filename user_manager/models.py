"""The user manager's tables: every table of its database is declared here (its schema
changes are Alembic revisions in ``user_manager/migrations``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Float, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agata_common.database import UtcDateTime, utcnow


class Base(DeclarativeBase):
    """Declarative base of the user manager's schema."""


class Client(Base):
    """A client device and its latest stats."""

    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data_qnt: Mapped[int] = mapped_column(Integer, default=0)
    avg_acc_contrib: Mapped[float | None] = mapped_column(Float, nullable=True)
    avg_disconnection_per_round: Mapped[float | None] = mapped_column(Float, nullable=True)
    sensors: Mapped[list[str]] = mapped_column(JSON, default=list)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    modified: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class DeviceCredentialRecord(Base):
    """A device's own credential: the hash of its secret, and whether it was revoked."""

    __tablename__ = "device_credentials"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class JoinTokenRecord(Base):
    """A one-time join token, by the hash of its text."""

    __tablename__ = "join_tokens"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class CliLoginRecord(Base):
    """A ``flwr login`` waiting for an operator, by the hash of its device code."""

    __tablename__ = "cli_logins"

    device_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_code: Mapped[str] = mapped_column(String(16), unique=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class CliSessionRecord(Base):
    """A session of Flower's CLI: the hashes of its access and refresh tokens."""

    __tablename__ = "cli_sessions"

    session_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    access_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    access_expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    refresh_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    refresh_expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
