"""The user manager's schema changes: Alembic revisions in ``versions/``, run on every start
(:func:`upgrade`).

A new revision is a file in ``versions/`` (copy the newest one) whose ``down_revision`` is the
newest's ``revision``; ``tests/user_manager/test_um_migrations.py`` checks that the revisions
build exactly the tables of ``user_manager/models.py``.
"""

from __future__ import annotations

from sqlalchemy import Engine

from agata_common.migrate import upgrade_schema

SCRIPT_LOCATION = "user_manager:migrations"
VERSION_TABLE = "alembic_version_user_manager"
"""Where the database's revision is kept (its own table: the cloud task manager may share the
database)."""
LOCK_KEY = 0x4147415455  # "AGATU": the advisory lock held while the schema is upgraded


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest schema: every table of an empty one; a database of a
    release before migrations (tables but no version) gets the tables it lacks."""
    upgrade_schema(engine, SCRIPT_LOCATION, VERSION_TABLE, LOCK_KEY)
