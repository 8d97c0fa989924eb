"""A run outlives its ServerApp host and its manager's clean shutdown (real processes): a host
killed with SIGKILL is started again from its last good checkpoint, a SIGTERM of the manager
pauses the run until it starts again; the devices rejoin, and no round is lost."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from experiments.fault_runs import host_pid
from experiments.stack import TASKS_DIR, Stack

NUMPY_APP = TASKS_DIR / "app_numpy"
ROUNDS = 30
"""Enough rounds (0.1 s of training each) that a run is still going when it is hit at round 3."""
DEADLINE_S = 8


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = Stack(tmp_path / "stack", client_count=2,
                    client_params={"request_interval": "1", "task_retry_s": "300"})
    try:
        yield started
    finally:
        started.stop()


def rounds(stack: Stack, task_id: str) -> int:
    assert stack.api is not None
    found = stack.api.get(f"/api/tasks/{task_id}/metrics")["rounds"]
    return max((r["round"] for r in found), default=0)


def test_a_killed_host_is_started_again_from_its_checkpoint(stack: Stack) -> None:
    api = stack.start_cloud()
    stack.start_clients()
    stack.create_task("sturdy", NUMPY_APP, None, devices=2, server_arguments={
        "num-server-rounds": ROUNDS, "train-delay-s": 0.1})
    api.post("/rpc_exec_start_server_task", {"task_id": "sturdy"})
    wait_for(lambda: rounds(stack, "sturdy") >= 3, 90, "three rounds")
    pid = wait_for(lambda: host_pid(stack.out_dir, "sturdy"), 10, "the host's pid")
    recorded = rounds(stack, "sturdy")
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    task: dict[str, Any] = wait_for(
        lambda: (t := api.get("/api/tasks/sturdy"))["status_reason"] and t, 20,
        "the run to be started again")
    assert task["status"] == "running", task
    assert "ServerApp host died (killed by signal SIGKILL)" in task["status_reason"], task
    resumed = re.match(r"resumed after round (\d+)", task["status_reason"])
    assert resumed and int(resumed.group(1)) >= recorded - 1, task
    wait_for(lambda: rounds(stack, "sturdy") > recorded, 30, "training after the restart")
    assert time.monotonic() - killed_at < 30
    ended = wait_for(lambda: (t := api.get("/api/tasks/sturdy"))["status"] != "running" and t,
                     120, "the run to end")
    assert ended["status"] == "finished", ended
    assert rounds(stack, "sturdy") == ROUNDS


def test_a_clean_shutdown_pauses_a_run_and_the_next_start_resumes_it(stack: Stack) -> None:
    api = stack.start_cloud()
    stack.start_clients()
    stack.create_task("paused", NUMPY_APP, None, devices=2, server_arguments={
        "num-server-rounds": ROUNDS, "train-delay-s": 0.1})
    api.post("/rpc_exec_start_server_task", {"task_id": "paused"})
    wait_for(lambda: rounds(stack, "paused") >= 3, 90, "three rounds")
    assert stack.processes is not None
    recorded = rounds(stack, "paused")
    assert stack.processes.stop(Stack.replica_name(0)) == 0  # SIGTERM
    log = (stack.out_dir / "logs" / f"{Stack.replica_name(0)}.log").read_text()
    assert "task paused run 1 paused until this manager starts again" in log
    stack.start_replica(0)
    task = wait_for(lambda: (t := api.get("/api/tasks/paused"))["status_reason"].startswith(
        "resumed") and t, 30, "the run to resume")
    resumed = re.match(r"resumed after round (\d+)", task["status_reason"])
    assert resumed and int(resumed.group(1)) >= recorded - 1, task
    ended = wait_for(lambda: (t := api.get("/api/tasks/paused"))["status"] != "running" and t,
                     120, "the run to end")
    assert ended["status"] == "finished", ended
    assert rounds(stack, "paused") == ROUNDS


def test_a_run_that_will_miss_its_deadline_says_so_before_it_is_stopped(stack: Stack) -> None:
    api = stack.start_cloud()
    stack.start_clients()
    stack.create_task("late", NUMPY_APP, None, devices=2, deadline_s=DEADLINE_S,
                      server_arguments={"num-server-rounds": 500, "train-delay-s": 0.1})
    api.post("/rpc_exec_start_server_task", {"task_id": "late"})
    warned = wait_for(lambda: (t := api.get("/api/tasks/late"))["status_reason"] and t, 30,
                      "the run's early word")
    assert warned["status"] == "running", warned
    assert warned["status_reason"].startswith("will miss its deadline"), warned
    ended = wait_for(lambda: (t := api.get("/api/tasks/late"))["status"] != "running" and t,
                     40, "the deadline")
    assert ended["status"] == "failed", ended
    assert f"deadline of {DEADLINE_S} s" in ended["status_reason"], ended
