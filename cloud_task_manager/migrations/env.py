"""Alembic's entry point for the cloud task manager's revisions."""

from agata_common.migrate import run_migrations

run_migrations()
