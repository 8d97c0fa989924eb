"""Baseline: the tables of the last release before migrations.

An empty database gets them all; a database of a release before migrations (made by
``create_all``) gets the tables it lacks, and its rows stay.

Revision ID: 0001
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

logger = logging.getLogger(__name__)


def _time(name: str, *, nullable: bool = False, index: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, index=index)


def _hash(name: str, *, primary_key: bool = False, nullable: bool = False,
          unique: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.String(64), primary_key=primary_key, nullable=nullable,
                     unique=unique)


def _tables() -> list[tuple[str, list[SchemaItem]]]:
    """Today's tables."""
    return [
        ("clients", [
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("data_qnt", sa.Integer(), nullable=False),
            sa.Column("avg_acc_contrib", sa.Float(), nullable=True),
            sa.Column("avg_disconnection_per_round", sa.Float(), nullable=True),
            sa.Column("sensors", sa.JSON(), nullable=False),
            _time("created"), _time("modified"), _time("last_seen", index=True),
        ]),
        ("device_credentials", [
            _hash("client_id", primary_key=True), _hash("secret_sha256", nullable=False),
            _time("created"), _time("revoked_at", nullable=True),
        ]),
        ("join_tokens", [
            _hash("token_sha256", primary_key=True), _hash("client_id", nullable=True),
            _time("created"), _time("expires_at"), _time("used_at", nullable=True),
        ]),
        ("cli_logins", [
            _hash("device_sha256", primary_key=True),
            sa.Column("user_code", sa.String(16), unique=True, nullable=False),
            _time("created"), _time("expires_at", index=True),
            _time("approved_at", nullable=True),
        ]),
        ("cli_sessions", [
            sa.Column("session_id", sa.String(32), primary_key=True),
            _hash("access_sha256", unique=True, nullable=False), _time("access_expires_at"),
            _hash("refresh_sha256", unique=True, nullable=False),
            _time("refresh_expires_at", index=True), _time("created"),
        ]),
    ]


def upgrade() -> None:
    """Create the tables the database lacks."""
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "clients" in existing:
        logger.info("a database of a release before migrations: completing its tables")
    for name, items in _tables():
        if name not in existing:
            op.create_table(name, *items)


def downgrade() -> None:
    """The baseline is the oldest schema: there is nothing to go back to."""
    raise NotImplementedError("cannot downgrade below the baseline")
