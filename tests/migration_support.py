"""What the migration tests of each service ask of a database: its revision, the newest
revision, and how its tables differ from the service's models."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData


def head(script_location: str) -> str | None:
    """The newest revision of a service's migrations."""
    config = Config()
    config.set_main_option("script_location", script_location)
    return ScriptDirectory.from_config(config).get_current_head()


def revision(engine: Engine, version_table: str) -> str | None:
    """The revision the database is at."""
    with engine.connect() as connection:
        return MigrationContext.configure(
            connection, opts={"version_table": version_table}).get_current_revision()


def differences(engine: Engine, *metadatas: MetaData) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match the tables of
    ``metadatas`` (tables, columns, types, nullability, indexes, unique constraints), the
    services' version tables aside."""
    wanted = MetaData()
    for metadata in metadatas:
        for table in metadata.tables.values():
            table.to_metadata(wanted)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={
            "compare_type": True, "include_name": _not_a_version_table})
        return list(compare_metadata(context, wanted))


def _not_a_version_table(name: str | None, type_: str, _parents: Any) -> bool:
    return not (type_ == "table" and name is not None and name.startswith("alembic_version"))
