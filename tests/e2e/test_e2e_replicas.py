"""Two cloud task manager replicas on one PostgreSQL, with two user managers and two gateways,
every service a real process, two devices: a replica owns the runs it started; stopped with
SIGTERM while another lives, it hands them over; each replica owning a run, one killed with
kill -9 has its run taken over once its lease runs out while the other's run does not notice;
each handed-over run resumes after its checkpoint under the same run number; stops reach the
owner wherever they land, through either gateway."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import _postgres_database, wait_for

from experiments.processes import free_port, wait_for_http
from experiments.stack import TASKS_DIR, Api, Stack

LEASE_S = 3.0
TASKS = {"a": "device-0", "b": "device-1"}


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database (the test is skipped when PostgreSQL does not answer)."""
    yield from _postgres_database()


def task(api: Api, task_id: str) -> dict[str, Any]:
    return api.get(f"/api/tasks/{task_id}")


def rounds(api: Api, task_id: str) -> int:
    return max((r["round"] for r in api.get(f"/api/tasks/{task_id}/metrics")["rounds"]),
               default=0)


def training(api: Api, task_id: str, past: int, timeout: float = 60) -> int:
    """Wait until the run records a round after ``past``; return the rounds it has."""
    return wait_for(lambda: (n := rounds(api, task_id)) > past and n, timeout,
                    f"task {task_id} to train past round {past}", interval=0.1)


def kill(stack: Stack, name: str) -> None:
    assert stack.processes is not None
    process = stack.processes.processes[name]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_replicas_own_hand_over_and_take_over_runs(tmp_path: Path, postgres_url: str) -> None:
    stack = Stack(tmp_path / "stack", client_count=2,
                  client_params={"request_interval": "1", "task_retry_s": "1",
                                 "task_retry_max_s": "2"},
                  cloud_overrides={"AGATA_CLOUD_TASK_MANAGER_DATABASE_URL": postgres_url,
                                   "AGATA_USER_MANAGER_DATABASE_URL": postgres_url,
                                   "AGATA_CLOUD_TASK_MANAGER_REPLICA_LEASE_S": str(LEASE_S),
                                   "AGATA_CLOUD_TASK_MANAGER_WARM_HOSTS": "1"})
    first, second = Stack.replica_name(0), Stack.replica_name(1)
    try:
        api = stack.start_cloud()  # the first replica alone
        # a second user manager on the same database and a second gateway: devices enroll,
        # join and poll through either user manager; operators call either gateway
        assert stack.processes is not None
        stack.processes.start("user_manager_2", "user_manager")
        port = free_port()
        stack.processes.environ = {**stack.cloud_env, "AGATA_SERVER_GATEWAY_PORT": str(port)}
        stack.processes.start("cloud_gateway_2", "cloud_gateway")
        stack.processes.environ = stack.cloud_env
        other_gateway = Api(f"http://127.0.0.1:{port}", api.token)
        wait_for_http(f"http://127.0.0.1:{port}/health", 30)
        # device-1 reaches the cloud, and its runs, through the second gateway
        stack.client_envs[1]["AGATA_CLIENT_PARAMS_CLOUD_URL"] = other_gateway.url
        stack.start_clients()
        assert other_gateway.get("/api/clients")["total"] == 2
        for task_id, device in TASKS.items():
            stack.create_task(task_id, TASKS_DIR / "app_numpy", free_port(), devices=1,
                              selection_criteria=f"id == '{device}'",
                              server_arguments={"num-server-rounds": 100000, "min-nodes": 1,
                                                "train-delay-s": 0.05})
        api.post("/rpc_exec_start_server_task", {"task_id": "a"})
        training(api, "a", 2)
        owner_first = task(api, "a")["replica"]
        assert owner_first

        # SIGTERM while another replica lives: the run is handed over, not stopped
        stack.start_replica(1)
        assert stack.processes is not None
        assert stack.processes.stop(first) == 0
        wait_for(lambda: task(api, "a")["replica"] not in (None, owner_first), 30,
                 "the second replica to take run a over", interval=0.1)
        training(api, "a", rounds(api, "a"))
        a = task(api, "a")
        owner_second = a["replica"]
        assert (a["status"], a["runs"]) == ("running", 1), a
        assert a["status_reason"].startswith("resumed after round"), a

        # each replica owns a run: b is started until the first replica, back, takes it
        stack.start_replica(0)
        for attempt in range(20):  # RabbitMQ hands the starts to the two replicas in turn
            started = other_gateway.post("/rpc_exec_start_server_task", {"task_id": "b"})
            if started["replica"] == owner_first:
                break
            other_gateway.post("/rpc_exec_stop_server_task", {"task_id": "b"})
        assert task(api, "b")["replica"] == owner_first, "b never started on the first replica"
        training(api, "b", rounds(api, "b"))
        # each gateway relays its own device to its run, whichever replica owns the run
        logs = stack.out_dir / "logs"
        assert f"device device-1 joined run {task(api, 'b')['runs']} of task b through this " \
            "gateway" in (logs / "cloud_gateway_2.log").read_text()
        assert "device device-0 joined run 1 of task a through this gateway" in \
            (logs / "cloud_gateway.log").read_text()
        b_run = task(api, "b")["runs"]

        # the first replica dies: its run is taken over once its lease runs out, while the
        # other replica's run does not notice
        a_before = task(api, "a")
        recorded = rounds(api, "b")
        kill(stack, first)
        wait_for(lambda: task(api, "b")["replica"] == owner_second, 30,
                 "the second replica to take run b over", interval=0.1)
        training(api, "b", rounds(api, "b"))
        b = task(api, "b")
        assert (b["status"], b["runs"]) == ("running", b_run), b
        resumed = re.match(r"resumed after round (\d+) ", b["status_reason"])
        # at most the round in flight at the kill is trained again
        assert resumed and int(resumed.group(1)) >= recorded - 1, b
        a_after = task(api, "a")
        assert {k: a_after[k] for k in ("status", "runs", "replica", "status_reason")} == {
            k: a_before[k] for k in ("status", "runs", "replica", "status_reason")}, a_after
        training(api, "a", rounds(api, "a"))

        # stops reach the owner (the second replica), wherever they land
        stack.start_replica(0)
        assert other_gateway.get("/api/tasks")["total"] == api.get("/api/tasks")["total"] == 2
        for task_id, gateway in zip(TASKS, (api, other_gateway), strict=True):
            stopped = gateway.post("/rpc_exec_stop_server_task", {"task_id": task_id})
            assert stopped["status"] == "stopped", stopped
        for task_id in TASKS:
            assert task(api, task_id)["status"] == "stopped"
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes
    for name in (first, second):
        log = (tmp_path / "stack" / "logs" / f"{name}.log").read_text()
        assert "Traceback" not in log, log
