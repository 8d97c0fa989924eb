"""The user manager's schema by Alembic revisions, on each database: an empty one gets exactly
the tables of ``models.py``; one made by the release before migrations (``create_all`` of
today's models, which the baseline revision equals) keeps its rows; the cloud task manager
may share the database, each service keeping its own revision."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from migration_support import differences, head, revision
from sqlalchemy import Engine

from agata_common.database import make_engine
from agata_contracts.users import GetUserInfoRequest, UpdateUserInfoRequest
from cloud_task_manager import migrations as task_migrations
from cloud_task_manager.models import Base as TaskBase
from user_manager import migrations
from user_manager.models import Base
from user_manager.service import UserManager

HEAD = head(migrations.SCRIPT_LOCATION)


@pytest.fixture
def engine(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(database_url, tmp_path / "unused.db")
    yield made
    made.dispose()


def at_head(engine: Engine) -> bool:
    return (revision(engine, migrations.VERSION_TABLE) == HEAD
            and differences(engine, Base.metadata) == [])


def test_an_empty_database_gets_exactly_the_tables_of_the_models(engine: Engine) -> None:
    assert HEAD is not None
    UserManager(engine).create_schema()
    assert at_head(engine)
    UserManager(engine).create_schema()  # a second start finds nothing left to do
    assert at_head(engine)


def test_a_database_of_the_release_before_migrations_keeps_its_clients(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    before = UserManager(engine)
    before.update_user_info(UpdateUserInfoRequest(user_id="dev-1", data_qnt=42))
    assert revision(engine, migrations.VERSION_TABLE) is None

    after = UserManager(engine)
    after.create_schema()
    assert at_head(engine)
    assert after.get_user_info(GetUserInfoRequest(user_id="dev-1")).data_qnt == 42


def test_both_services_upgrade_one_shared_database_each_to_its_own_revision(
        engine: Engine) -> None:
    UserManager(engine).create_schema()
    task_migrations.upgrade(engine)
    assert revision(engine, migrations.VERSION_TABLE) == HEAD
    assert revision(engine, task_migrations.VERSION_TABLE) == head(
        task_migrations.SCRIPT_LOCATION)
    assert differences(engine, Base.metadata, TaskBase.metadata) == []
