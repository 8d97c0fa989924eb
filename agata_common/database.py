"""SQLAlchemy engines for the services: a SQLite file by default, PostgreSQL by URL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.types import TypeDecorator

from agata_common.config import ConfigError

logger = logging.getLogger(__name__)


def make_engine(database_url: str, default_sqlite_file: Path) -> Engine:
    """An engine for ``database_url``, or for a SQLite file when the URL is empty."""
    url_text = database_url or f"sqlite:///{default_sqlite_file}"
    try:
        url = make_url(url_text)
    except ArgumentError as exc:
        raise ConfigError(f"database_url is not a valid SQLAlchemy URL: {exc}") from None
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    logger.info("database: %s", url.render_as_string(hide_password=True))
    return engine


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def database_now(engine: Engine) -> datetime:
    """The database server's clock (PostgreSQL, shared by every process using it), or this
    machine's (SQLite lives on one machine)."""
    if engine.dialect.name != "postgresql":
        return utcnow()
    with engine.connect() as connection:
        now = connection.scalar(text("SELECT now()"))
    return now.astimezone(UTC) if isinstance(now, datetime) else utcnow()


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite forgets zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def upsert_builder(engine: Engine) -> Callable[[Any], Any] | None:
    """The dialect's ``INSERT … ON CONFLICT`` builder (PostgreSQL, SQLite); None elsewhere."""
    return {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(engine.dialect.name)
