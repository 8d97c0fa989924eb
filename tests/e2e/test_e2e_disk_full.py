"""A full disk is an incident, not an outage (real processes): the cloud's data folder on a small
tmpfs, filled during a run; the services stay up, the run pauses saying "disk full", /health
says so, and the run resumes from its checkpoint once space is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import small_tmpfs, wait_for

from experiments.stack import TASKS_DIR, Stack

NUMPY_APP = TASKS_DIR / "app_numpy"
CHUNK = b"\0" * (1 << 20)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs for the cloud's data folder (skipped where it cannot be mounted)."""
    with small_tmpfs(tmp_path / "cloud-disk", 64) as folder:
        yield folder


def fill(folder: Path) -> Path:
    """Write a file until the disk refuses more; return it."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as output:
        try:
            while True:
                output.write(CHUNK)
        except OSError:
            pass
    return filler


def rounds(stack: Stack, task_id: str) -> int:
    assert stack.api is not None
    found = stack.api.get(f"/api/tasks/{task_id}/metrics")["rounds"]
    return max((r["round"] for r in found), default=0)


def test_a_full_disk_pauses_the_run_and_space_back_resumes_it(tmp_path: Path,
                                                              small_disk: Path) -> None:
    stack = Stack(tmp_path / "stack", client_count=2,
                  client_params={"request_interval": "1", "task_retry_s": "300"},
                  cloud_overrides={"AGATA_STORAGE_DATA_DIR": str(small_disk),
                                   "AGATA_STORAGE_MIN_FREE_MB": "8"})
    try:
        api = stack.start_cloud()
        stack.start_clients()
        stack.create_task("full", NUMPY_APP, None, devices=2, server_arguments={
            "num-server-rounds": 2000, "train-delay-s": 0.1})
        api.post("/rpc_exec_start_server_task", {"task_id": "full"})
        wait_for(lambda: rounds(stack, "full") >= 3, 90, "three rounds")
        # the run's checkpoints are the manager's, outside the results folder the app writes
        assert list((small_disk / "run-state" / "task_full" / "run_1").glob("checkpoint-*"))
        assert not list((small_disk / "results-work").rglob("checkpoint-*"))
        filler = fill(small_disk)
        paused: dict[str, Any] = wait_for(
            lambda: "disk full" in ((t := api.get("/api/tasks/full"))["status_reason"] or "")
            and t, 30, "the run to pause for the full disk")
        assert paused["status"] == "running", paused
        health = api.get("/health", auth=False)
        assert health["disk"] == "full" and "disk full" in health["disk_detail"], health
        assert stack.processes is not None
        assert all(p.poll() is None for p in stack.processes.processes.values()), \
            {n: p.returncode for n, p in stack.processes.processes.items()}
        recorded = rounds(stack, "full")
        filler.unlink()
        resumed = wait_for(lambda: ((t := api.get("/api/tasks/full"))["status_reason"] or "")
                           .startswith("resumed") and t, 30, "the run to resume")
        assert "disk was full" in resumed["status_reason"], resumed
        wait_for(lambda: rounds(stack, "full") > recorded, 60, "training after the pause")
        assert api.get("/health", auth=False)["disk"] == "ok"
        assert api.get("/api/tasks/full")["status"] == "running"
        api.post("/rpc_exec_stop_server_task", {"task_id": "full"})
    finally:
        stack.stop()
