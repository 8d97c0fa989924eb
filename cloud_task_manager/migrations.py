"""What an older database of the cloud task manager needs to match today's tables: columns
added to ``tasks`` after the first release, and columns that have since become optional."""

from __future__ import annotations

import re

from sqlalchemy import Connection, inspect, text

ADDED_COLUMNS = {"devices": "INTEGER NOT NULL DEFAULT 2", "deadline_s": "INTEGER",
                 "previous_nonce": "VARCHAR(64)", "owner": "VARCHAR(64)",
                 "door": "VARCHAR(300)", "min_devices": "INTEGER",
                 "run_devices": "JSON"}
"""Columns of ``tasks`` added after the first release, with their SQL definitions."""
NULLABLE_COLUMNS = ("port",)
"""Columns of ``tasks`` once required, now optional (a task's own port: issue 21)."""


def upgrade_tasks_table(connection: Connection) -> None:
    """Add the missing columns of ``tasks`` and drop NOT NULL from those now optional."""
    columns = {column["name"]: column for column in inspect(connection).get_columns("tasks")}
    for name, definition in ADDED_COLUMNS.items():
        if name not in columns:
            connection.execute(text(f"ALTER TABLE tasks ADD COLUMN {name} {definition}"))
    for name in NULLABLE_COLUMNS:
        if name in columns and not columns[name]["nullable"]:
            _drop_not_null(connection, name)


def _drop_not_null(connection: Connection, column: str) -> None:
    if connection.dialect.name != "sqlite":
        connection.execute(text(f"ALTER TABLE tasks ALTER COLUMN {column} DROP NOT NULL"))
        return
    # SQLite has no ALTER COLUMN; its documented way to drop a NOT NULL constraint (which
    # changes nothing on disk) is to edit the table's definition and bump the schema version.
    definition = connection.execute(text(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'")).scalar_one()
    relaxed, count = re.subn(rf"(\b{column}\s+INTEGER)\s+NOT\s+NULL", r"\1", definition,
                             flags=re.IGNORECASE)
    if count != 1:
        raise RuntimeError(f"cannot make tasks.{column} optional: its definition in "
                           f"{definition!r} is not '{column} INTEGER NOT NULL'")
    version = int(connection.execute(text("PRAGMA schema_version")).scalar_one())
    connection.execute(text("PRAGMA writable_schema = ON"))
    connection.execute(text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' "
                            "AND name = 'tasks'"), {"sql": relaxed})
    connection.execute(text(f"PRAGMA schema_version = {version + 1}"))
    connection.execute(text("PRAGMA writable_schema = OFF"))
