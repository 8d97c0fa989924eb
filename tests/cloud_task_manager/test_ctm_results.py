"""Devices' result uploads on the cloud task manager (real broker, real database): each device
with its own credential for the run, taken for the latest run and the one before it (a task may
start again before the last results of its previous run arrived), never for older runs; a
task's oldest runs' results pruned beyond its retention."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from support import Cloud, RecordedEvents, start_cloud

from agata_common.config import Settings
from agata_contracts.results import LIST_RESULTS, UPLOAD_RESULT
from agata_contracts.tasks import (
    CLIENT_REQUESTING_TASK,
    CREATE_TASK,
    START_SERVER_TASK,
    STOP_SERVER_TASK,
    UPLOAD_TASK_FILE,
)
from agata_contracts.users import UPDATE_USER_INFO
from cloud_task_manager.result_contents import ResultContentRecord
from microservice_interconnect import Forbidden

SLEEPING_SERVER = b"import time\nfrom task_daemon_lib import TaskReporter\n" \
                  b"TaskReporter()\ntime.sleep(120)\n"


def credential_of(cloud: Cloud, client_id: str) -> str:
    (offer,) = cloud.client.call(CLIENT_REQUESTING_TASK, {"client_id": client_id}).tasks
    return offer.download_credential


def upload(cloud: Cloud, run: int, client_id: str, credential: str, name: str) -> Any:
    return cloud.client.call(UPLOAD_RESULT, {
        "task_id": "res", "run": run, "client_id": client_id, "name": name,
        "content": base64.b64encode(name.encode()).decode(), "credential": credential})


def new_run(cloud: Cloud) -> None:
    cloud.client.call(START_SERVER_TASK, {"task_id": "res"})


def test_results_are_taken_for_the_latest_run_and_the_one_before(cloud: Cloud) -> None:
    cloud.client.call(CREATE_TASK, {"task_id": "res", "port": 8000})
    cloud.client.call(UPLOAD_TASK_FILE, {"task_id": "res", "filename": "server.py",
                                         "content": base64.b64encode(SLEEPING_SERVER).decode()})
    for device in ("dev-a", "dev-b"):
        cloud.client.call(UPDATE_USER_INFO, {"user_id": device})
    new_run(cloud)
    first = credential_of(cloud, "dev-a")
    assert credential_of(cloud, "dev-b") != first
    assert upload(cloud, 1, "dev-a", first, "one.txt").path == "devices/dev-a/one.txt"
    with pytest.raises(Forbidden):  # dev-a's credential is worth nothing to dev-b
        upload(cloud, 1, "dev-b", first, "framed.txt")

    cloud.client.call(STOP_SERVER_TASK, {"task_id": "res"})
    new_run(cloud)
    second = credential_of(cloud, "dev-a")
    upload(cloud, 1, "dev-a", first, "late.txt")   # run 1's last results still arrive
    upload(cloud, 2, "dev-a", second, "two.txt")
    with pytest.raises(Forbidden):
        upload(cloud, 2, "dev-a", first, "wrong-run.txt")

    cloud.client.call(STOP_SERVER_TASK, {"task_id": "res"})
    new_run(cloud)
    with pytest.raises(Forbidden):   # two runs later, run 1 is closed
        upload(cloud, 1, "dev-a", first, "too-late.txt")
    cloud.client.call(STOP_SERVER_TASK, {"task_id": "res"})

    def device_files(run: int) -> list[str]:
        listing = cloud.client.call(LIST_RESULTS, {"task_id": "res", "run": run})
        return [f.path for f in listing.files if f.client_id is not None]

    assert device_files(1) == ["devices/dev-a/late.txt", "devices/dev-a/one.txt"]
    assert device_files(2) == ["devices/dev-a/two.txt"]


def raw_upload(cloud: Cloud, run: int, credential: str, name: str, content: bytes) -> None:
    cloud.client.call(UPLOAD_RESULT, {
        "task_id": "res", "run": run, "client_id": "dev-a", "name": name,
        "content": base64.b64encode(content).decode(), "credential": credential})


@pytest.fixture
def small_retention_cloud(make_settings: Callable[..., Settings], tmp_path: Path
                          ) -> Iterator[Cloud]:
    """The cloud services keeping 2 runs and 5000 bytes of results per task."""
    config = make_settings(AGATA_CLOUD_TASK_MANAGER_KEEP_RUNS="2",
                           AGATA_CLOUD_TASK_MANAGER_KEEP_MB_PER_TASK=str(5000 / 2**20))
    started = start_cloud(config, f"sqlite:///{tmp_path / 'cloud.db'}")
    try:
        yield started
    finally:
        started.stop()


def test_a_task_keeps_its_newest_runs_within_its_size_and_prunes_the_oldest(
        small_retention_cloud: Cloud, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloud_task_manager.result_retention")
    cloud = small_retention_cloud
    store = cloud.task_manager.results
    events = store.retention.events = RecordedEvents()
    cloud.client.call(CREATE_TASK, {"task_id": "res", "port": 8000})
    cloud.client.call(UPLOAD_TASK_FILE, {"task_id": "res", "filename": "server.py",
                                         "content": base64.b64encode(SLEEPING_SERVER).decode()})
    cloud.client.call(UPDATE_USER_INFO, {"user_id": "dev-a"})

    def files(run: int) -> list[str]:
        listing = cloud.client.call(LIST_RESULTS, {"task_id": "res", "run": run})
        return [f.path for f in listing.files if f.client_id is not None]

    def stored_runs() -> set[int]:
        with store.records.engine.connect() as connection:
            return {run for (run,) in connection.execute(
                select(ResultContentRecord.run).where(ResultContentRecord.task_id == "res"))}

    legacy = store.root / "task_res" / "run_1" / "devices" / "dev-a" / "old.txt"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"kept on disk by an earlier version")
    for run in (1, 2, 3):
        new_run(cloud)
        raw_upload(cloud, run, credential_of(cloud, "dev-a"), f"r{run}.txt", b"x" * 100)
        cloud.client.call(STOP_SERVER_TASK, {"task_id": "res"})
    # three runs, two kept: the oldest went, its bytes and this replica's copy with it
    assert (files(1), files(2), files(3)) == ([], ["devices/dev-a/r2.txt"],
                                              ["devices/dev-a/r3.txt"])
    assert stored_runs() == {2, 3}
    assert not legacy.parent.exists()
    assert "task res: pruned the results of run(s) 1" in caplog.text
    assert events.seen == [("cloud_task_manager", "results_retention", "pruned res runs 1")]

    # run 4 is over the size on its own: run 3 goes, the newest stays whatever its size
    new_run(cloud)
    credential = credential_of(cloud, "dev-a")
    raw_upload(cloud, 4, credential, "big-1.bin", b"y" * 3000)
    assert (files(2), files(3)) == ([], ["devices/dev-a/r3.txt"])
    raw_upload(cloud, 4, credential, "big-2.bin", b"y" * 3000)
    assert files(3) == [] and files(4) == ["devices/dev-a/big-1.bin", "devices/dev-a/big-2.bin"]
    assert stored_runs() == {4}
    assert [e[2] for e in events.seen] == ["pruned res runs 1", "pruned res runs 2",
                                           "pruned res runs 3"]
    cloud.client.call(STOP_SERVER_TASK, {"task_id": "res"})


def test_a_failed_pruning_keeps_the_results_and_the_upload(
        cloud: Cloud, caplog: pytest.LogCaptureFixture) -> None:
    def broken(task_id: str) -> list[int]:
        raise OperationalError("DELETE", {}, Exception("database is locked"))

    cloud.task_manager.results.retention.prune = broken  # type: ignore[method-assign]
    cloud.client.call(CREATE_TASK, {"task_id": "res", "port": 8000})
    cloud.client.call(UPLOAD_TASK_FILE, {"task_id": "res", "filename": "server.py",
                                         "content": base64.b64encode(SLEEPING_SERVER).decode()})
    cloud.client.call(UPDATE_USER_INFO, {"user_id": "dev-a"})
    new_run(cloud)
    try:
        raw_upload(cloud, 1, credential_of(cloud, "dev-a"), "kept.txt", b"k")
    finally:
        cloud.client.call(STOP_SERVER_TASK, {"task_id": "res"})
    listing = cloud.client.call(LIST_RESULTS, {"task_id": "res", "run": 1})
    assert "devices/dev-a/kept.txt" in [f.path for f in listing.files]
    assert "results retention failed, nothing pruned: OperationalError" in caplog.text
