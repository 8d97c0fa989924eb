"""Runs kept on a device: each task's newest runs within a count and a size; older runs'
folders (downloaded files, results) go when a run of the task ends, never a running one."""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from support import RecordedEvents

from agata_common.config import Settings
from agata_common.retention import RetentionPolicy
from agata_contracts.results import UPLOAD_RESULT
from agata_contracts.tasks import (
    REPORT_CLIENT_TASK,
    DownloadTaskFileRequest,
    TaskFile,
    TaskFileContent,
    TaskKind,
    TaskOffer,
)
from client_task_manager.identity import ClientIdentity
from client_task_manager.left_runs import offer_file
from client_task_manager.manager import ClientTaskManager
from client_task_manager.run_retention import DeviceRunRetention
from client_task_manager.scheduler import Policy, TaskBook
from microservice_interconnect.spec import RpcSpec

CLIENT = b"from task_daemon_lib import TaskReporter\nTaskReporter().send_info('Finished')\n"


def run_on_disk(work_dir: Path, task_id: str, run: int, size: int) -> Path:
    folder = work_dir / f"task_{task_id}" / f"run_{run}"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"w" * size)
    return folder


def test_the_oldest_runs_go_beyond_the_count_or_the_size_never_a_running_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="client_task_manager.run_retention")
    events = RecordedEvents()
    retention = DeviceRunRetention(tmp_path, RetentionPolicy(3, 1000), events)
    folders = {run: run_on_disk(tmp_path, "t", run, 100) for run in (1, 2, 3, 4, 5)}
    results = tmp_path / "results" / "task_t" / "run_2"
    results.mkdir(parents=True)
    offer_file(results).write_text("{}")
    other = run_on_disk(tmp_path, "other", 1, 100)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"s" * 10_000)
    (folders[5] / "link.bin").symlink_to(secret)  # not counted, not followed

    assert retention.prune("t", running=[2]) == [1]
    assert sorted(p.name for p in (tmp_path / "task_t").iterdir()) == ["run_2", "run_3",
                                                                       "run_4", "run_5"]
    assert retention.prune("t") == [2]
    assert not results.exists() and not offer_file(results).exists()
    assert other.exists() and secret.exists()
    big = run_on_disk(tmp_path, "t", 6, 850)
    # runs 6 and 5 make 950 bytes (the link to 10000 is not counted); with run 4 it would
    # pass 1000: run 4 goes, and every older one
    assert retention.prune("t") == [3, 4]
    assert big.exists() and folders[5].exists()
    assert [e[2] for e in events.seen] == ["pruned t runs 1", "pruned t runs 2",
                                           "pruned t runs 3,4"]
    assert "task t: removed the folders of run(s) 3,4 from this device" in caplog.text


def test_a_device_keeps_only_its_newest_runs_of_a_task(tmp_path: Path,
                                                       settings: Settings) -> None:
    sha = hashlib.sha256(CLIENT).hexdigest()
    current: list[TaskOffer] = []
    sent: list[tuple[str, Any]] = []

    def offers(client_id: str) -> list[TaskOffer]:
        return list(current)

    def fetch(request: DownloadTaskFileRequest) -> TaskFileContent:
        return TaskFileContent(name=request.filename, size=len(CLIENT), sha256=sha,
                               content=base64.b64encode(CLIENT))

    def send_report(spec: RpcSpec[Any, Any], report: BaseModel) -> None:
        sent.append((spec.name, report))

    work_dir = tmp_path / "client_tasks"
    events = RecordedEvents()
    manager = ClientTaskManager(
        ClientIdentity(settings.client_params, tmp_path / "client_info"),
        TaskBook(Policy.ONE, 1, 60.0, 600.0),
        query_offers=offers, fetch_file=fetch, send_report=send_report,
        work_dir=work_dir, request_interval_s=3600,
        retention=DeviceRunRetention(work_dir, RetentionPolicy(2, 10**6), events))
    manager.start()
    try:
        for run in (1, 2, 3, 4):
            current[:] = [TaskOffer(task_id="keep", run=run, host="127.0.0.1", port=1,
                                    client_arguments={}, tags=[],
                                    files=[TaskFile(name="client.py", size=len(CLIENT),
                                                    sha256=sha)],
                                    kind=TaskKind.SCRIPT, download_credential="c" * 64)]
            manager.poll_now()
            deadline = time.monotonic() + 30
            while len(finished(sent)) < run:
                assert time.monotonic() < deadline, sent
                time.sleep(0.05)
        kept = sorted(p.name for p in (work_dir / "task_keep").iterdir())
        assert kept == ["run_3", "run_4"]
        assert [e[2] for e in events.seen] == ["pruned keep runs 1", "pruned keep runs 2"]
        assert sum(name == UPLOAD_RESULT.name for name, _ in sent) == 4  # each run's log
    finally:
        manager.stop()


def finished(sent: list[tuple[str, Any]]) -> list[Any]:
    return [r for name, r in sent
            if name == REPORT_CLIENT_TASK.name and r.status == "finished"]
