"""A throw-away PostgreSQL database for an experiment or a test (created, then dropped)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

ADMIN_URL = os.environ.get(
    "AGATA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
"""Where databases are created (``AGATA_TEST_POSTGRES_URL``; a superuser's URL)."""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL does not answer at :data:`ADMIN_URL`."""


@contextmanager
def temporary_database(admin_url: str = ADMIN_URL) -> Iterator[str]:
    """The URL of a new, empty database; dropped (its connections closed) on the way out."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(admin_url)
    dsn = (f"host={admin.host} port={admin.port or 5432} user={admin.username or 'postgres'} "
           f"dbname={admin.database or 'postgres'}")
    if admin.password:
        dsn += f" password={admin.password}"
    try:
        connection = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        raise PostgresUnavailable(
            f"PostgreSQL not answering at {admin.host}:{admin.port}: {exc}") from None
    name = f"agata_test_{uuid.uuid4().hex[:12]}"
    with connection:
        connection.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
