"""Flower Apps end to end on real processes: every service as ``python -m``, two devices."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from experiments.processes import free_port
from experiments.stack import TASKS_DIR, Api, Stack

NUMPY_APP = TASKS_DIR / "app_numpy"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = Stack(tmp_path / "stack", client_count=2,
                    client_params={"request_interval": "2", "task_retry_s": "300"},
                    cloud_overrides={"AGATA_CLOUD_TASK_MANAGER_DEVICE_REJOIN_S": "2"})
    try:
        yield started
    finally:
        codes = started.stop()
        assert all(code == 0 for code in codes.values()), codes


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def ended(api: Api, task_id: str) -> dict[str, Any]:
    return wait_for(lambda: (task := api.get(f"/api/tasks/{task_id}"))["status"] != "running"
                    and task, 90, f"task {task_id} to end")


def reports(api: Api, task_id: str) -> list[dict[str, Any]]:
    return api.get(f"/api/tasks/{task_id}/reports")["reports"]


def final_reports(api: Api, task_id: str, count: int) -> list[dict[str, Any]]:
    """The devices' final reports (finished or failed), once there are ``count`` of them."""

    def final() -> list[dict[str, Any]] | None:
        found = [r for r in reports(api, task_id) if r["status"] in ("finished", "failed")]
        return found if len(found) >= count else None

    return wait_for(final, 20, f"{count} final reports of {task_id}")


def test_an_unmodified_app_trains_on_two_devices_with_their_own_partitions(stack: Stack) -> None:
    api = stack.start_cloud()
    devices = stack.start_clients()
    stack.create_task("numpy", NUMPY_APP, free_port(), devices=2,
                      server_arguments={"num-server-rounds": 3})
    assert api.get("/api/tasks/numpy")["kind"] == "flower_app"
    api.post("/rpc_exec_start_server_task", {"task_id": "numpy"})
    task = ended(api, "numpy")
    assert task["status"] == "finished", task

    rounds = api.get("/api/tasks/numpy/metrics")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for entry in rounds:
        metrics = entry["metrics"]
        assert {"train.loss", "evaluate.distance"} <= set(metrics), metrics
        own = {device: metrics[f"train.loss@{device}"] for device in devices}
        # partition p pulls towards p + 1: the two devices see different losses, and the
        # aggregate is weighted by num-examples (10 and 20) as FedAvg does
        assert len(set(own.values())) == 2, own
        low, high = sorted(own.values())
        assert low < metrics["train.loss"] < high
    finals = final_reports(api, "numpy", 2)
    assert sorted(r["status"] for r in finals) == ["finished", "finished"], finals
    assert sorted(r["client_id"] for r in finals) == sorted(devices)


def test_run_config_overrides_are_typed_and_unknown_keys_refused(stack: Stack) -> None:
    api = stack.start_cloud()
    stack.create_task("cfg", NUMPY_APP, free_port(), devices=2,
                      server_arguments={"num-rounds": 2})
    with pytest.raises(Exception) as info:
        api.post("/rpc_exec_start_server_task", {"task_id": "cfg"})
    assert "num-rounds" in str(info.value) and "num-server-rounds" in str(info.value)
    with pytest.raises(Exception) as info:
        api.post("/rpc_exec_start_server_task",
                 {"task_id": "cfg", "server_arguments": {"vector-size": "big"}})
    assert "vector-size" in str(info.value)
    assert api.get("/api/tasks/cfg")["status"] == "created"


def test_a_raising_client_app_fails_the_devices_and_the_run_says_why(stack: Stack) -> None:
    api = stack.start_cloud()
    stack.start_clients()
    stack.create_task("boom", NUMPY_APP, free_port(), devices=2,
                      server_arguments={"fail-on-round": 2})
    api.post("/rpc_exec_start_server_task", {"task_id": "boom"})
    task = ended(api, "boom")
    assert task["status"] == "failed", task
    assert "missing" in task["status_reason"], task
    failures = final_reports(api, "boom", 2)
    assert [r["status"] for r in failures] == ["failed", "failed"], failures
    assert all("told to fail on round 2" in r["reason"] for r in failures), failures
    rounds = api.get("/api/tasks/boom/metrics")["rounds"]
    assert rounds[0]["round"] == 1 and "train.loss" in rounds[0]["metrics"]


def test_a_raising_server_app_fails_the_task_with_its_exception(stack: Stack) -> None:
    api = stack.start_cloud()
    stack.start_clients()
    stack.create_task("srv", NUMPY_APP, free_port(), devices=2,
                      server_arguments={"fail-on-round": -1})
    api.post("/rpc_exec_start_server_task", {"task_id": "srv"})
    task = ended(api, "srv")
    assert task["status"] == "failed", task
    assert "told to fail before round 1" in task["status_reason"], task
