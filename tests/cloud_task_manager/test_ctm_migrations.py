"""The cloud task manager's schema by Alembic revisions, on each database: an empty one gets
exactly the tables of ``models.py``; one made by a release before migrations is upgraded and
keeps its rows; replicas starting together upgrade it once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ctm_previous_release import RELEASES, build
from migration_support import differences, head, revision
from sqlalchemy import Engine, func, select

from agata_common.database import make_engine
from agata_contracts.tasks import CreateTaskRequest, TaskStatus
from cloud_task_manager import migrations
from cloud_task_manager.file_store import FileStore
from cloud_task_manager.models import Base, ResultRecord
from cloud_task_manager.records import TaskRecords
from cloud_task_manager.storage import Credentials

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
    migrations.upgrade(engine)
    assert at_head(engine)
    migrations.upgrade(engine)  # a second start finds nothing left to do
    assert at_head(engine)


@pytest.mark.parametrize("release", RELEASES)
def test_a_database_of_a_release_before_migrations_is_upgraded_and_keeps_its_rows(
        engine: Engine, release: str) -> None:
    build(engine, release)
    first = release == "first"
    assert revision(engine, migrations.VERSION_TABLE) is None

    records = TaskRecords(engine, Credentials(b"k" * 32))
    records.create_schema()
    assert at_head(engine)

    old = records.task("old")
    assert (old.port, old.status, old.tags, old.devices) == (8090, TaskStatus.FINISHED,
                                                             ["kept"], 2)
    assert old.server_arguments == {"num-server-rounds": 3}
    assert old.min_devices == (1 if release == "last" else None)
    assert [(f.name, f.sha256) for f in old.files] == [("server.py", "a" * 64)]
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(ResultRecord)) == 1
    store = FileStore(engine)
    assert store.digests("old") == ({} if first else {"server.py": "a" * 64})
    assert store.unbacked("old") == ({"server.py": "a" * 64} if first else {})
    assert records.create(CreateTaskRequest(task_id="new")).port is None


UPGRADE = ("import sys; from pathlib import Path; "
           "from agata_common.database import make_engine; "
           "from cloud_task_manager import migrations; "
           "migrations.upgrade(make_engine(sys.argv[1], Path(sys.argv[2])))")
"""A replica's start, as far as the schema goes."""


def test_replicas_starting_together_upgrade_the_database_once(database_url: str,
                                                               tmp_path: Path) -> None:
    replicas = [subprocess.Popen([sys.executable, "-c", UPGRADE, database_url,
                                  str(tmp_path / "tasks.db")],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for _ in range(3)]
    for replica in replicas:
        output, _ = replica.communicate(timeout=60)
        assert replica.returncode == 0, output
    engine = make_engine(database_url, tmp_path / "tasks.db")
    try:
        assert at_head(engine)
    finally:
        engine.dispose()
