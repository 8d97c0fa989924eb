"""How devices leave runs, on real processes: a device a full run did not need, and devices whose
run ended (stopped, then started again at once), leave without a failure, within a second."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from experiments.stack import TASKS_DIR, Stack

NUMPY_APP = TASKS_DIR / "app_numpy"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = Stack(tmp_path / "stack", client_count=3,
                    client_params={"request_interval": "1", "task_retry_s": "300"})
    try:
        yield started
    finally:
        started.stop()


def reports(stack: Stack, task_id: str) -> list[dict[str, Any]]:
    assert stack.api is not None
    return stack.api.get(f"/api/tasks/{task_id}/reports")["reports"]


def workers_of(stack: Stack) -> int:
    """Device workers that joined a run and have not exited yet, by the devices' logs."""
    joined = exited = 0
    for index in range(stack.client_count):
        log = (stack.out_dir / "logs" / f"client{index}_task_manager.log").read_text()
        joined += log.count("client says: joined run")
        exited += log.count("task_daemon_lib.lines: Flower worker ended")
    return joined - exited


def test_a_device_a_full_run_did_not_need_is_not_failed(stack: Stack) -> None:
    api = stack.start_cloud()
    stack.start_clients()
    stack.create_task("pair", NUMPY_APP, None, devices=2, server_arguments={
        "num-server-rounds": 400, "train-delay-s": 0.05})
    api.post("/rpc_exec_start_server_task", {"task_id": "pair"})
    left = wait_for(lambda: [r for r in reports(stack, "pair") if r["status"] == "stopped"], 60,
                    "the device the run did not need to leave it")
    assert "has all its devices" in left[0]["reason"], left
    assert not [r for r in reports(stack, "pair") if r["status"] == "failed"]
    api.post("/rpc_exec_stop_server_task", {"task_id": "pair"})


def test_a_runs_end_reaches_its_workers_at_once_and_a_quick_restart_fails_nobody(
        stack: Stack) -> None:
    api = stack.start_cloud()
    stack.start_clients()
    stack.create_task("quick", NUMPY_APP, None, devices=3, server_arguments={
        "num-server-rounds": 400, "train-delay-s": 0.05})
    api.post("/rpc_exec_start_server_task", {"task_id": "quick"})
    wait_for(lambda: workers_of(stack) == 3, 60, "three workers in the run")
    stopped_at = time.monotonic()
    api.post("/rpc_exec_stop_server_task", {"task_id": "quick"})
    wait_for(lambda: workers_of(stack) == 0, 10, "the run's workers to exit", interval=0.02)
    assert time.monotonic() - stopped_at < 1.5, "workers outlived their run"
    api.post("/rpc_exec_start_server_task", {"task_id": "quick"})
    wait_for(lambda: api.get("/api/tasks/quick/metrics?run=2")["rounds"], 60,
             "the second run to train")
    assert not [r for r in reports(stack, "quick") if r["status"] == "failed"], \
        reports(stack, "quick")
    api.post("/rpc_exec_stop_server_task", {"task_id": "quick"})
