"""Task files kept in the database: two storages with their own data directories on one
database (SQLite and PostgreSQL) behave like two cloud task manager replicas."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ctm_support import one_task_database
from sqlalchemy import Engine, event, insert

from cloud_task_manager.file_store import FileContentRecord
from cloud_task_manager.records import TaskRecords
from cloud_task_manager.storage import Credentials, StoredFile, TaskStorage
from microservice_interconnect import BadRequest, NotFound

TASK = "shared"
MAX_FILE_BYTES = 1024 * 1024


@dataclass
class Replicas:
    """Two storages on one database, each with its own data directory."""

    engine: Engine
    records: TaskRecords
    a: TaskStorage
    b: TaskStorage


@pytest.fixture
def replicas(database_url: str, tmp_path: Path) -> Iterator[Replicas]:
    with one_task_database(database_url, tmp_path, TASK) as (engine, records):
        yield Replicas(engine, records,
                       TaskStorage(tmp_path / "replica_a", MAX_FILE_BYTES, engine),
                       TaskStorage(tmp_path / "replica_b", MAX_FILE_BYTES, engine))


def test_a_file_written_through_one_replica_is_read_and_materialized_by_another(
        replicas: Replicas) -> None:
    content = bytes(range(256)) * 40
    stored = replicas.a.write(TASK, "app/model.bin", content)
    assert stored == StoredFile("app/model.bin", len(content),
                                hashlib.sha256(content).hexdigest())
    assert replicas.b.read(TASK, "app/model.bin") == content
    folder = replicas.b.task_dir(TASK)
    assert folder == replicas.b.root / f"task_{TASK}"
    assert (folder / "app" / "model.bin").read_bytes() == content
    replicas.a.write(TASK, "server.py", b"print('hi')\n")
    assert replicas.b.script(TASK, "server") == folder / "server.py"
    assert (folder / "server.py").read_bytes() == b"print('hi')\n"
    assert replicas.b.script(TASK, "missing") is None
    with pytest.raises(NotFound):
        replicas.b.read(TASK, "missing.py")


def test_a_file_removed_through_one_replica_leaves_the_other_but_task_outputs_stay(
        replicas: Replicas) -> None:
    replicas.a.write(TASK, "data/part.npz", b"partition")
    replicas.a.write(TASK, "server.py", b"pass\n")
    folder = replicas.b.task_dir(TASK)
    (folder / "output.txt").write_text("left by the task's server")
    replicas.a.remove(TASK, "data/part.npz")
    assert not (replicas.a.root / f"task_{TASK}" / "data" / "part.npz").exists()
    replicas.b.task_dir(TASK)
    assert not (folder / "data" / "part.npz").exists()
    assert (folder / "server.py").read_bytes() == b"pass\n"
    assert (folder / "output.txt").read_text() == "left by the task's server"
    with pytest.raises(NotFound):
        replicas.b.read(TASK, "data/part.npz")


def test_a_stale_local_copy_is_served_from_the_database_and_repaired(
        replicas: Replicas) -> None:
    replicas.a.write(TASK, "model.bin", b"version 1")
    copy_a = replicas.a.root / f"task_{TASK}" / "model.bin"
    copy_a.write_bytes(b"edited on disk")
    assert replicas.a.read(TASK, "model.bin") == b"version 1"
    assert copy_a.read_bytes() == b"version 1"

    copy_b = replicas.b.task_dir(TASK) / "model.bin"
    assert copy_b.read_bytes() == b"version 1"
    copy_b.write_bytes(b"version X")  # same size: the stat differs, the copy is hashed again
    assert (replicas.b.task_dir(TASK) / "model.bin").read_bytes() == b"version 1"

    replicas.a.write(TASK, "model.bin", b"version 2, longer")
    assert replicas.b.read(TASK, "model.bin") == b"version 2, longer"
    assert copy_b.read_bytes() == b"version 2, longer"


def test_a_current_folder_is_checked_without_reading_file_contents(
        replicas: Replicas) -> None:
    for index in range(5):
        replicas.a.write(TASK, f"file{index}.bin", bytes([index]) * 1000)
    statements: list[str] = []

    def remember(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(replicas.engine, "before_cursor_execute", remember)
    try:
        replicas.b.task_dir(TASK)
        reading_contents = [s for s in statements if "task_file_contents.content" in s]
        assert len(reading_contents) == 1, statements  # the missing files, in one query
        statements.clear()
        replicas.b.task_dir(TASK)
        replicas.a.task_dir(TASK)
        assert not [s for s in statements if "task_file_contents.content" in s], statements
    finally:
        event.remove(replicas.engine, "before_cursor_execute", remember)


def test_paths_leaving_the_task_folder_are_refused(replicas: Replicas) -> None:
    for name in ("../x", "../../x.py", "/etc/passwd", "a/../b.py", ".hidden"):
        with pytest.raises(BadRequest):
            replicas.a.write(TASK, name, b"x")
        with pytest.raises(BadRequest):
            replicas.a.read(TASK, name)
        with pytest.raises(BadRequest):
            replicas.a.remove(TASK, name)
    for task_id in ("../x", "a/b", ""):
        with pytest.raises(BadRequest):
            replicas.a.task_dir(task_id)
    assert replicas.a.script(TASK, "../evil") is None
    # A row that did not come through the storage is not placed outside the folder either.
    with replicas.engine.begin() as connection:
        connection.execute(insert(FileContentRecord).values(
            task_id=TASK, name="../escape.py", sha256=hashlib.sha256(b"x").hexdigest(),
            content=b"x"))
    folder = replicas.b.task_dir(TASK)
    assert list(folder.iterdir()) == []
    assert not (replicas.b.root / "escape.py").exists()


def test_a_file_of_an_unknown_task_is_refused(replicas: Replicas) -> None:
    with pytest.raises(NotFound):
        replicas.a.write("ghost", "server.py", b"pass\n")
    with pytest.raises(NotFound):
        replicas.b.read("ghost", "server.py")


def test_files_stored_before_the_database_kept_bytes_are_adopted(
        replicas: Replicas) -> None:
    legacy = replicas.a.root / f"task_{TASK}"
    legacy.mkdir()
    (legacy / "server.py").write_bytes(b"old = True\n")
    replicas.records.record_file(TASK, StoredFile(
        "server.py", 11, hashlib.sha256(b"old = True\n").hexdigest()))
    (legacy / "tampered.py").write_bytes(b"not what was recorded")
    replicas.records.record_file(TASK, StoredFile(
        "tampered.py", 3, hashlib.sha256(b"abc").hexdigest()))
    assert (replicas.a.task_dir(TASK) / "server.py").read_bytes() == b"old = True\n"
    assert replicas.b.read(TASK, "server.py") == b"old = True\n"
    with pytest.raises(NotFound):
        replicas.b.read(TASK, "tampered.py")


def test_replicas_share_the_configured_download_secret(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with caplog.at_level(logging.WARNING, logger="cloud_task_manager.storage"):
        shared_a = Credentials.from_config("s" * 32, tmp_path / "a", shared_database=True)
        shared_b = Credentials.from_config("s" * 32, tmp_path / "b", shared_database=True)
        assert not caplog.records
        assert shared_a.credential(TASK, "n") == shared_b.credential(TASK, "n")
        own_a = Credentials.from_config("", tmp_path / "a", shared_database=True)
        own_b = Credentials.from_config("", tmp_path / "b")
    assert own_a.credential(TASK, "n") != own_b.credential(TASK, "n")
    assert len(caplog.records) == 1
    assert "download_secret" in caplog.records[0].getMessage()

