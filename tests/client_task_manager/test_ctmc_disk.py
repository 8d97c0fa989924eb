"""A device's full disk: no new task while its data folder is under the floor (said once in its
log), a download that runs out of space reported "disk full" instead of failing the loop, and
tasks taken again once space is back (its data folder on a small tmpfs, where one can be
mounted)."""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from support import small_tmpfs, wait_for

from agata_common.config import Settings
from agata_common.disk import DiskSpace
from agata_contracts.tasks import (
    REPORT_CLIENT_TASK,
    ClientTaskStatus,
    DownloadTaskFileRequest,
    TaskFile,
    TaskFileContent,
    TaskKind,
    TaskOffer,
)
from client_task_manager.disk_gate import DiskGate, disk_full_reason, refusal
from client_task_manager.identity import ClientIdentity
from client_task_manager.manager import ClientTaskManager
from client_task_manager.scheduler import Policy, TaskBook
from microservice_interconnect.spec import RpcSpec

MIB = 1 << 20


def space(free_mb: float, floor_mb: float = 100) -> DiskSpace:
    return DiskSpace(Path("/data"), int(free_mb * MIB), 1000 * MIB, int(floor_mb * MIB))


@pytest.mark.unit
def test_a_device_under_its_floor_takes_no_new_task() -> None:
    assert refusal(space(500)) is None
    assert refusal(None) is None  # a disk that cannot be asked stops nothing
    why = refusal(space(42))
    assert why is not None and why.startswith("taking no new task: disk full: 42 MiB free")


@pytest.mark.unit
def test_errors_for_want_of_space_become_a_disk_full_reason() -> None:
    error = OSError(errno.ENOSPC, "No space left on device")
    assert disk_full_reason(error, "its files") == \
        "disk full: its files: [Errno 28] No space left on device"
    child = "OSError: [Errno 28] No space left on device: 'model.npz'"
    assert disk_full_reason(child) == f"disk full: {child}"
    assert disk_full_reason("disk full: already said") == "disk full: already said"
    assert disk_full_reason(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full_reason("ValueError: bad shard") is None


@pytest.mark.unit
def test_the_gate_says_once_when_the_disk_fills_and_once_when_space_is_back(
        caplog: pytest.LogCaptureFixture) -> None:
    free = [500.0, 42.0, 40.0, 300.0]
    gate = DiskGate(Path("/data"), 100, space=lambda folder, floor_mb: space(free.pop(0)))
    with caplog.at_level(logging.INFO, "client_task_manager.disk_gate"):
        assert [gate.refusal() is None for _ in range(4)] == [True, False, False, True]
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2, said
    assert "taking no new task: disk full" in said[0] and "taking tasks again" in said[1]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs for the device's data folder (skipped where it cannot be mounted)."""
    with small_tmpfs(tmp_path / "device-disk", 8) as folder:
        yield folder


class Cloud:
    """What the device asks the cloud: the offers, their files, and the reports it sends."""

    def __init__(self) -> None:
        self.offers: list[TaskOffer] = []
        self.contents: dict[str, bytes] = {}
        self.fetched: list[str] = []
        self.reports: list[Any] = []
        self.lock = threading.Lock()

    def offer(self, task_id: str, content: bytes) -> None:
        self.contents[task_id] = content
        self.offers = [*self.offers, TaskOffer(
            task_id=task_id, run=1, host="127.0.0.1", port=8000, client_arguments={}, tags=[],
            files=[TaskFile(name="data.bin", size=len(content),
                            sha256=hashlib.sha256(content).hexdigest())],
            kind=TaskKind.SCRIPT, download_credential="c" * 64)]

    def fetch(self, request: DownloadTaskFileRequest) -> TaskFileContent:
        content = self.contents[request.task_id]
        with self.lock:
            self.fetched.append(request.task_id)
        return TaskFileContent(name=request.filename, size=len(content),
                               sha256=hashlib.sha256(content).hexdigest(),
                               content=base64.b64encode(content))

    def send(self, spec: RpcSpec[Any, Any], report: BaseModel) -> None:
        if spec.name == REPORT_CLIENT_TASK.name:
            with self.lock:
                self.reports.append(report)

    def failures(self, task_id: str) -> list[str]:
        with self.lock:
            return [r.reason for r in self.reports
                    if r.task_id == task_id and r.status is ClientTaskStatus.FAILED]


def test_a_full_disk_stops_new_tasks_and_a_download_out_of_space_is_reported(
        small_disk: Path, tmp_path: Path, settings: Settings) -> None:
    cloud = Cloud()
    manager = ClientTaskManager(
        ClientIdentity(settings.client_params, tmp_path / "client_info"),
        TaskBook(Policy.ONE, 1, 60.0, 600.0),
        query_offers=lambda client_id: cloud.offers, fetch_file=cloud.fetch,
        send_report=cloud.send, work_dir=small_disk / "client_tasks", request_interval_s=0.1,
        disk=DiskGate(small_disk, 2))
    manager.start()
    try:
        cloud.offer("big", b"\1" * (10 * MIB))  # more than the disk holds
        reason = wait_for(lambda: cloud.failures("big"), 30, "the big download's report")[0]
        assert reason.startswith("disk full: download failed: [Errno 28]"), reason
        assert not (small_disk / "client_tasks" / "task_big" / "run_1").exists()

        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (7 * MIB))  # under the 2 MiB floor
        cloud.offer("small", b"small")
        assert wait_for(lambda: manager.disk is not None and manager.disk._refused, 10,
                        "the device to see its disk full")
        threading.Event().wait(1.0)  # ten polls
        assert "small" not in cloud.fetched, "a task was taken on a full disk"
        filler.unlink()
        wait_for(lambda: "small" in cloud.fetched, 10, "the task taken once space is back")
    finally:
        manager.stop()
