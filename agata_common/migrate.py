"""Bringing a service's database to its newest schema with Alembic, once per start.

Each service owns its database and ships its revisions inside its package
(``<package>/migrations``, whose ``env.py`` calls :func:`run_migrations`). Every revision the
database has not had yet runs in one transaction, under a lock: cloud task manager replicas
starting together on one PostgreSQL database take turns (an advisory lock), the later ones
finding nothing left to do; on SQLite the transaction takes the file's write lock first
(``BEGIN IMMEDIATE``). Each service keeps its own version table, so two services may share
one database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import (
    Connection,
    Engine,
    column,
    create_engine,
    event,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.pool import NullPool

logger = logging.getLogger(__name__)


def upgrade_schema(engine: Engine, script_location: str, version_table: str,
                   lock_key: int) -> None:
    """Run the revisions of ``script_location`` (``package:folder``) the database has not had
    yet, up to the newest, in one transaction; ``lock_key`` is the PostgreSQL advisory lock
    that serializes processes upgrading the same database."""
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["version_table"] = version_table
    with _locked(engine, lock_key) as connection:
        before = _version(connection, version_table)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        after = _version(connection, version_table)
    if before != after:
        logger.info("database schema (%s) upgraded from %s to %s", version_table,
                    before or "none", after)


def run_migrations() -> None:
    """The body of a service's ``env.py``: run the revisions on the connection and in the
    transaction :func:`upgrade_schema` opened."""
    attributes: dict[str, Any] = context.config.attributes
    connection = attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("migrations run through agata_common.migrate.upgrade_schema only")
    context.configure(connection=connection, version_table=attributes["version_table"],
                      transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


def _version(connection: Connection, version_table: str) -> str | None:
    """The database's revision, None when it has none (empty, or made before migrations)."""
    if not inspect(connection).has_table(version_table):
        return None
    version = connection.scalar(select(column("version_num")).select_from(table(version_table)))
    return str(version) if version is not None else None


@contextmanager
def _locked(engine: Engine, lock_key: int) -> Iterator[Connection]:
    """A connection in a transaction that no other process upgrading the database holds."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
            yield connection
        return
    # pysqlite opens transactions lazily and never before DDL: an engine of its own that
    # begins every transaction itself, taking the write lock first.
    locking = create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 30})

    @event.listens_for(locking, "connect")
    def _manual_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(locking, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with locking.begin() as connection:
            yield connection
    finally:
        locking.dispose()
