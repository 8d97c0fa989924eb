"""Baseline: the tables as migrations found them (before elastic runs, which are 0002).

An empty database gets them all. A database of a release before migrations (made by
``create_all``, then patched by hand-written ``ALTER TABLE``) gets the tables it lacks, the
``tasks`` columns added after the first release, and an optional ``port``; its rows stay.

Revision ID: 0001
"""

from __future__ import annotations

import logging
import re
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

logger = logging.getLogger(__name__)

ADDED_COLUMNS = {"devices": "INTEGER NOT NULL DEFAULT 2", "deadline_s": "INTEGER",
                 "previous_nonce": "VARCHAR(64)", "owner": "VARCHAR(64)",
                 "door": "VARCHAR(300)"}
"""Columns of ``tasks`` added after the first release, with their SQL definitions."""


def _time(name: str, *, nullable: bool = False, index: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, index=index)


def _task_id(*, primary_key: bool = False) -> sa.Column[Any]:
    return sa.Column("task_id", sa.String(64), sa.ForeignKey("tasks.id", ondelete="CASCADE"),
                     nullable=False, primary_key=primary_key, index=not primary_key)


def _row_id() -> sa.Column[Any]:
    return sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True)


def _tables() -> list[tuple[str, list[SchemaItem]]]:
    """Today's tables, ``tasks`` first (the others refer to it)."""
    text = sa.Text()
    return [
        ("tasks", [
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("host", sa.String(253), nullable=False),
            sa.Column("port", sa.Integer(), nullable=True),
            sa.Column("selection_criteria", text, nullable=False),
            sa.Column("server_arguments", sa.JSON(), nullable=False),
            sa.Column("client_arguments", sa.JSON(), nullable=False),
            sa.Column("tags", sa.JSON(), nullable=False),
            sa.Column("devices", sa.Integer(), server_default="2", nullable=False),
            sa.Column("deadline_s", sa.Integer(), nullable=True),
            sa.Column("status", sa.String(16), index=True, nullable=False),
            sa.Column("status_reason", text, nullable=True),
            sa.Column("runs", sa.Integer(), nullable=False),
            sa.Column("server_pid", sa.Integer(), nullable=True),
            sa.Column("owner", sa.String(64), nullable=True),
            sa.Column("door", sa.String(300), nullable=True),
            sa.Column("credential_hash", sa.String(64), nullable=False),
            sa.Column("credential_nonce", sa.String(64), nullable=False),
            sa.Column("previous_nonce", sa.String(64), nullable=True),
            _time("created", index=True), _time("modified"),
            _time("started_at", nullable=True), _time("ended_at", nullable=True),
        ]),
        ("task_files", [
            _row_id(), _task_id(), sa.Column("name", sa.String(128), nullable=False),
            sa.Column("size", sa.Integer(), nullable=False),
            sa.Column("sha256", sa.String(64), nullable=False), _time("uploaded"),
            sa.UniqueConstraint("task_id", "name"),
        ]),
        ("task_round_metrics", [
            _row_id(), _task_id(), sa.Column("run", sa.Integer(), nullable=False),
            sa.Column("round", sa.Integer(), nullable=False),
            sa.Column("metrics", sa.JSON(), nullable=False), _time("reported_at"),
            sa.UniqueConstraint("task_id", "run", "round"),
        ]),
        ("client_task_reports", [
            _row_id(), _task_id(),
            sa.Column("client_id", sa.String(64), index=True, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("reason", text, nullable=True), _time("reported_at"),
        ]),
        ("run_results", [
            _row_id(), _task_id(), sa.Column("run", sa.Integer(), nullable=False),
            sa.Column("path", sa.String(700), nullable=False),
            sa.Column("client_id", sa.String(64), nullable=True),
            sa.Column("size", sa.Integer(), nullable=False),
            sa.Column("sha256", sa.String(64), nullable=False), _time("stored_at"),
            sa.UniqueConstraint("task_id", "run", "path"),
        ]),
        ("run_states", [
            _task_id(primary_key=True), sa.Column("run", sa.Integer(), nullable=False),
            sa.Column("arguments", sa.JSON(), nullable=False),
            sa.Column("checkpoint_round", sa.Integer(), nullable=True),
            sa.Column("checkpoint", sa.LargeBinary(), nullable=True),
            _time("checkpoint_at", nullable=True),
        ]),
        ("replicas", [
            sa.Column("id", sa.String(64), primary_key=True), _time("seen_at"),
            _time("started_at"),
        ]),
        ("task_file_contents", [
            _row_id(), _task_id(), sa.Column("name", sa.String(512), nullable=False),
            sa.Column("sha256", sa.String(64), nullable=False),
            sa.Column("content", sa.LargeBinary(), nullable=False),
            sa.UniqueConstraint("task_id", "name"),
        ]),
        ("run_result_contents", [
            _row_id(), _task_id(), sa.Column("run", sa.Integer(), nullable=False),
            sa.Column("path", sa.String(700), nullable=False),
            sa.Column("sha256", sa.String(64), nullable=False),
            sa.Column("content", sa.LargeBinary(), nullable=False),
            sa.UniqueConstraint("task_id", "run", "path"),
        ]),
    ]


def upgrade() -> None:
    """Create the tables the database lacks; complete an older ``tasks`` table."""
    connection = op.get_bind()
    existing = set(sa.inspect(connection).get_table_names())
    for name, items in _tables():
        if name not in existing:
            op.create_table(name, *items)
    if "tasks" in existing:
        logger.info("a database of a release before migrations: completing its tables")
        _complete_tasks(connection)


def downgrade() -> None:
    """The baseline is the oldest schema: there is nothing to go back to."""
    raise NotImplementedError("cannot downgrade below the baseline")


def _complete_tasks(connection: sa.Connection) -> None:
    """Add the columns a release before migrations may lack; make ``port`` optional."""
    columns = {column["name"]: column for column in sa.inspect(connection).get_columns("tasks")}
    for name, definition in ADDED_COLUMNS.items():
        if name not in columns:
            op.execute(f"ALTER TABLE tasks ADD COLUMN {name} {definition}")
    if "port" in columns and not columns["port"]["nullable"]:
        _drop_not_null(connection, "port")


def _drop_not_null(connection: sa.Connection, column: str) -> None:
    if connection.dialect.name != "sqlite":
        op.alter_column("tasks", column, nullable=True, existing_type=sa.Integer())
        return
    # SQLite has no ALTER COLUMN, and rebuilding ``tasks`` would cascade deletes to its
    # children; its documented way to drop a NOT NULL constraint (which changes nothing on
    # disk) is to edit the table's definition and bump the schema version.
    definition = connection.execute(sa.text(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'")).scalar_one()
    relaxed, count = re.subn(rf"(\b{column}\s+INTEGER)\s+NOT\s+NULL", r"\1", definition,
                             flags=re.IGNORECASE)
    if count != 1:
        raise RuntimeError(f"cannot make tasks.{column} optional: its definition in "
                           f"{definition!r} is not '{column} INTEGER NOT NULL'")
    version = int(connection.execute(sa.text("PRAGMA schema_version")).scalar_one())
    connection.execute(sa.text("PRAGMA writable_schema = ON"))
    connection.execute(sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' "
                               "AND name = 'tasks'"), {"sql": relaxed})
    connection.execute(sa.text(f"PRAGMA schema_version = {version + 1}"))
    connection.execute(sa.text("PRAGMA writable_schema = OFF"))
