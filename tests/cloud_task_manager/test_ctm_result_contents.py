"""Run results kept in the database: two result stores with their own data directories on one
database (SQLite and PostgreSQL) behave like two cloud task manager replicas."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ctm_support import one_task_database
from sqlalchemy import Engine, delete, func, insert, select

from agata_contracts.credentials import device_credential
from agata_contracts.results import MAX_RESULT_FILE_BYTES, MAX_RESULT_FILES, UploadResultRequest
from cloud_task_manager.models import ResultRecord, TaskRecord
from cloud_task_manager.records import TaskRecords
from cloud_task_manager.result_contents import ResultContentRecord
from cloud_task_manager.results import RunResultsStore
from cloud_task_manager.storage import TaskStorage
from microservice_interconnect import BadRequest, NotFound

TASK = "shared"
DEVICE = "dev-a"


@dataclass
class Replicas:
    """Two result stores on one database, each with its own data directory."""

    engine: Engine
    records: TaskRecords
    a: RunResultsStore
    b: RunResultsStore


def store(records: TaskRecords, data_dir: Path, engine: Engine) -> RunResultsStore:
    return RunResultsStore(records, TaskStorage(data_dir, 1024 * 1024, engine), data_dir)


@pytest.fixture
def replicas(database_url: str, tmp_path: Path) -> Iterator[Replicas]:
    with one_task_database(database_url, tmp_path, TASK) as (engine, records):
        with records.transaction() as session:
            records.get(session, TASK).runs = 1
        yield Replicas(engine, records, store(records, tmp_path / "replica_a", engine),
                       store(records, tmp_path / "replica_b", engine))


def upload(replicas: Replicas, results: RunResultsStore, name: str, content: bytes) -> None:
    with replicas.records.transaction() as session:
        run_credential = replicas.records.run_credential(replicas.records.get(session, TASK), 1)
    assert run_credential is not None
    results.upload(UploadResultRequest(
        task_id=TASK, run=1, client_id=DEVICE, name=name,
        content=base64.b64encode(content), credential=device_credential(run_credential, DEVICE)))


def read(results: RunResultsStore, path: str) -> bytes:
    found = results.read(TASK, 0, path)
    content = found.content
    assert found.size == len(content)
    assert found.sha256 == hashlib.sha256(content).hexdigest()
    return content


def archived(results: RunResultsStore) -> dict[str, bytes]:
    made = results.archive(TASK, 0)
    with zipfile.ZipFile(io.BytesIO(made.content)) as archive:
        files = {name.removeprefix(f"task-{TASK}-run-1/"): archive.read(name)
                 for name in archive.namelist()}
    assert made.files == len(files)
    return files


def contents_in_database(engine: Engine) -> dict[str, bytes]:
    with engine.connect() as connection:
        rows = connection.execute(select(ResultContentRecord.path, ResultContentRecord.content)
                                  .where(ResultContentRecord.task_id == TASK))
        return {path: bytes(content) for path, content in rows}


def legacy_result(replicas: Replicas, results: RunResultsStore, path: str, recorded: bytes,
                  on_disk: bytes) -> None:
    """A result as stored before the database kept results' bytes: a row, and a file in the
    results folder of the replica that stored it."""
    local = results.root / f"task_{TASK}" / "run_1" / path
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(on_disk)
    with replicas.engine.begin() as connection:
        connection.execute(insert(ResultRecord).values(
            task_id=TASK, run=1, path=path, client_id=None, size=len(recorded),
            sha256=hashlib.sha256(recorded).hexdigest()))


def test_a_result_stored_through_one_replica_is_listed_read_and_archived_by_another(
        replicas: Replicas, tmp_path: Path) -> None:
    scratch = replicas.a.scratch(TASK, 1)
    model = bytes(range(256)) * 1000
    (scratch / "model.bin").write_bytes(model)
    (scratch / "plots").mkdir()
    (scratch / "plots" / "loss.csv").write_text("round,loss\n1,0.5\n")
    assert replicas.a.collect_server(TASK, 1, scratch) == 2
    upload(replicas, replicas.a, "metrics/final.json", b'{"accuracy": 0.9}')
    expected = {"server/model.bin": model, "server/plots/loss.csv": b"round,loss\n1,0.5\n",
                "devices/dev-a/metrics/final.json": b'{"accuracy": 0.9}'}

    listing = replicas.b.list(TASK, 0)
    assert listing == replicas.a.list(TASK, 1)
    assert {item.path: item.sha256 for item in listing.files} == {
        path: hashlib.sha256(content).hexdigest() for path, content in expected.items()}
    assert listing.total_bytes == sum(len(content) for content in expected.values())
    for path, content in expected.items():
        assert read(replicas.b, path) == content
        assert read(replicas.a, path) == content
    assert archived(replicas.b) == expected
    assert archived(replicas.a) == expected
    assert contents_in_database(replicas.engine) == expected
    # The database holds the bytes; neither replica keeps a local copy of stored results.
    assert not replicas.a.root.exists() and not replicas.b.root.exists()


def test_a_result_replaced_through_one_replica_is_served_anew_by_the_other(
        replicas: Replicas) -> None:
    upload(replicas, replicas.a, "log.txt", b"first")
    assert read(replicas.b, "devices/dev-a/log.txt") == b"first"
    upload(replicas, replicas.b, "log.txt", b"second, longer")
    assert read(replicas.a, "devices/dev-a/log.txt") == b"second, longer"
    assert archived(replicas.a) == {"devices/dev-a/log.txt": b"second, longer"}
    assert [item.size for item in replicas.a.list(TASK, 1).files] == [14]


def test_a_result_stored_only_on_disk_is_served_and_copied_into_the_database(
        replicas: Replicas) -> None:
    legacy_result(replicas, replicas.a, "server/old.txt", b"from before", b"from before")
    legacy_result(replicas, replicas.a, "server/older.txt", b"archived", b"archived")
    with pytest.raises(NotFound, match="missing from storage"):
        replicas.b.read(TASK, 1, "server/old.txt")  # only replica A has it, for now

    assert read(replicas.a, "server/old.txt") == b"from before"
    assert contents_in_database(replicas.engine) == {"server/old.txt": b"from before"}
    assert read(replicas.b, "server/old.txt") == b"from before"

    assert archived(replicas.a) == {"server/old.txt": b"from before",
                                    "server/older.txt": b"archived"}
    assert contents_in_database(replicas.engine) == {"server/old.txt": b"from before",
                                                     "server/older.txt": b"archived"}
    assert archived(replicas.b) == {"server/old.txt": b"from before",
                                    "server/older.txt": b"archived"}


def test_a_tampered_local_copy_is_not_served(replicas: Replicas) -> None:
    legacy_result(replicas, replicas.a, "server/model.bin", b"as recorded", b"as edited!!")
    with pytest.raises(NotFound, match="missing from storage"):
        replicas.a.read(TASK, 1, "server/model.bin")
    with pytest.raises(NotFound, match="missing from storage"):
        replicas.a.archive(TASK, 1)
    assert contents_in_database(replicas.engine) == {}
    # Once the result is stored again, the database's bytes win over the stale local copy.
    scratch = replicas.b.scratch(TASK, 1)
    (scratch / "model.bin").write_bytes(b"stored again")
    replicas.b.collect_server(TASK, 1, scratch)
    assert read(replicas.a, "server/model.bin") == b"stored again"


def test_paths_and_limits_are_checked_as_on_disk(replicas: Replicas) -> None:
    upload(replicas, replicas.a, "a", b"file")
    upload(replicas, replicas.a, "x/y", b"file in a folder")
    with pytest.raises(BadRequest, match="a is a file, not a folder"):
        upload(replicas, replicas.b, "a/b", b"under a file")
    with pytest.raises(BadRequest, match="x is a folder, not a file"):
        upload(replicas, replicas.b, "x", b"over a folder")
    with pytest.raises(BadRequest, match="limit"):
        upload(replicas, replicas.b, "big.bin", b"x" * (MAX_RESULT_FILE_BYTES + 1))
    for index in range(MAX_RESULT_FILES - 2):
        upload(replicas, replicas.b if index % 2 else replicas.a, f"f{index}", b"-")
    with pytest.raises(BadRequest, match="the limit"):
        upload(replicas, replicas.a, "one-too-many", b"-")
    upload(replicas, replicas.b, "a", b"replacing a file is allowed at the limit")
    assert read(replicas.a, "devices/dev-a/a") == b"replacing a file is allowed at the limit"
    with pytest.raises(NotFound):
        replicas.a.read(TASK, 1, "devices/dev-a/../../escape")
    assert len(contents_in_database(replicas.engine)) == MAX_RESULT_FILES


def test_results_bytes_go_with_their_task(replicas: Replicas) -> None:
    upload(replicas, replicas.a, "log.txt", b"bye")
    with replicas.engine.begin() as connection:
        connection.execute(delete(TaskRecord).where(TaskRecord.id == TASK))
        assert connection.scalar(select(func.count()).select_from(ResultContentRecord)) == 0
