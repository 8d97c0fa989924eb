"""Alembic's entry point for the user manager's revisions."""

from agata_common.migrate import run_migrations

run_migrations()
