"""Elastic runs on real processes: a device of the run freezes and an idle device takes its
partition by the next round; a device that hibernates (SIGSTOP, then SIGCONT) comes back to its
own partition and the run carries on; a run left under its minimum that can no longer meet its
deadline fails at once, not at the end of its rejoin grace."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from experiments.fault_devices import (
    elastic_stack,
    frozen,
    in_run,
    seats,
    wait_spare,
)
from experiments.stack import TASKS_DIR, Api, Stack

NUMPY_APP = TASKS_DIR / "app_numpy"
RUN = {"train-delay-s": 0.05, "min-nodes": 2}
PATIENT_REJOIN_S = 600
"""A rejoin grace far longer than the deadline of the run that loses a device."""


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[Stack]:
    stack = elastic_stack(tmp_path / "trio", 3)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Stack]:
    stack = elastic_stack(tmp_path / "pair", 2)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def patient_pair(tmp_path: Path) -> Iterator[Stack]:
    stack = elastic_stack(tmp_path / "patient", 2,
                          AGATA_CLOUD_TASK_MANAGER_DEVICE_REJOIN_S=str(PATIENT_REJOIN_S))
    try:
        yield stack
    finally:
        stack.stop()


def start(stack: Stack, task_id: str, rounds: int) -> Api:
    api = stack.api
    assert api is not None
    stack.create_task(task_id, NUMPY_APP, None, devices=2,
                      server_arguments={**RUN, "num-server-rounds": rounds})
    api.post("/rpc_exec_start_server_task", {"task_id": task_id})
    wait_for(lambda: len(api.get(f"/api/tasks/{task_id}/metrics")["rounds"]) >= 2, 60,
             "round 2")
    return api


def both_in(api: Api, task_id: str) -> list[str]:
    """The run's two devices, once both are in."""
    members: list[str] = wait_for(lambda: len(in_run(api, task_id)) == 2 and in_run(
        api, task_id), 30, "two devices in the run")
    return members


def seat_of(api: Api, task_id: str, client_id: str) -> list[dict[str, Any]]:
    return [s for s in seats(api, task_id) if s["client_id"] == client_id]


def server_says(stack: Stack, text: str) -> bool:
    log = stack.out_dir / "logs" / "cloud_task_manager.log"
    return text in log.read_text(errors="replace")


def failed_reports(api: Api, task_id: str) -> list[dict[str, Any]]:
    reports = api.get(f"/api/tasks/{task_id}/reports")["reports"]
    return [r for r in reports if r["status"] == "failed"]


def test_an_idle_device_replaces_one_that_vanished(trio: Stack) -> None:
    api = start(trio, "trio", 2000)  # still going once the third device has a warm worker
    members = both_in(api, "trio")
    ids = [f"device-{i}" for i in range(3)]
    third = next(client for client in ids if client not in members)
    wait_spare(trio, ids.index(third), 2)
    victim = members[0]
    partition = seat_of(api, "trio", victim)[0]["partition_id"]
    with frozen(trio, ids.index(victim)):
        replacement = wait_for(lambda: [s for s in seat_of(api, "trio", third)
                                        if s["rounds_trained"] >= 1], 30,
                               f"{third} to train in place of {victim}")[0]
    assert replacement["replaced"] == victim and replacement["partition_id"] == partition
    lost = seat_of(api, "trio", victim)[0]
    assert lost["replaced_by"] == third and "did not answer round" in lost["why_left"]
    assert server_says(trio, f"device {third} replaced device {victim} (partition {partition}")
    assert api.get("/api/tasks/trio")["status"] == "running"
    api.post("/rpc_exec_stop_server_task", {"task_id": "trio"})
    assert not failed_reports(api, "trio")


def test_a_hibernating_device_comes_back_to_its_partition(pair: Stack) -> None:
    api = start(pair, "pair", 150)
    victim = both_in(api, "pair")[0]
    partition = seat_of(api, "pair", victim)[0]["partition_id"]
    with frozen(pair, int(victim.rsplit("-", 1)[1])):
        wait_for(lambda: seat_of(api, "pair", victim)[0]["left"] is not None, 30,
                 f"the run to let {victim} go")
    back = wait_for(lambda: [s for s in seat_of(api, "pair", victim) if s["rejoined"]], 30,
                    f"{victim} to come back")[0]
    assert back["partition_id"] == partition
    assert server_says(pair, f"device {victim} came back (partition {partition}")
    task = api.wait_until_ended("pair", 60)
    assert task["status"] == "finished", task
    assert not failed_reports(api, "pair")


def test_a_run_short_of_devices_fails_once_it_cannot_meet_its_deadline(
        patient_pair: Stack) -> None:
    api = patient_pair.api
    assert api is not None
    deadline_s = 90
    patient_pair.create_task("short", NUMPY_APP, None, devices=2, deadline_s=deadline_s,
                             server_arguments={**RUN, "num-server-rounds": 3000})
    api.post("/rpc_exec_start_server_task", {"task_id": "short"})
    started = time.monotonic()
    wait_for(lambda: len(api.get("/api/tasks/short/metrics")["rounds"]) >= 3, 60, "round 3")
    victim = both_in(api, "short")[0]
    with frozen(patient_pair, int(victim.rsplit("-", 1)[1])):
        vanished = time.monotonic()
        task = api.wait_until_ended("short", deadline_s)
        failed_after_s = time.monotonic() - vanished
    assert task["status"] == "failed", task
    reason = task["status_reason"]
    assert "could no longer meet its deadline" in reason, reason
    assert f"gone: {victim} (partition" in reason and "round(s) left" in reason, reason
    assert time.monotonic() - started < deadline_s, "the deadline, not the vacancy, ended it"
    assert failed_after_s < PATIENT_REJOIN_S / 10, failed_after_s
