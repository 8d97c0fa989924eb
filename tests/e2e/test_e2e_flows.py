"""The whole loop on real processes: RabbitMQ, every service as ``python -m``, Flower tasks."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

from experiments.processes import free_port
from experiments.stack import TASKS_DIR, Api, Stack
from task_daemon_lib.runner import ChildProcess, python_argv

DIGITS = TASKS_DIR / "task_digits"


def extra_flower_client(folder: Path, port: int, partition: int) -> ChildProcess:
    """A second legacy Flower client run straight from the task files (AGATA's manual client)."""
    child = ChildProcess(
        python_argv(folder / "client.py", "--host", "127.0.0.1", "--port", str(port),
                    "--client-id", "manual", "--partition-id", str(partition),
                    "--num-partitions", "2"),
        cwd=folder, name="manual flower client")
    child.start()
    return child


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = Stack(tmp_path / "stack", client_count=1,
                    client_params={"request_interval": "2", "task_retry_s": "60",
                                   "heartbeat_s": "0.5"},
                    cloud_overrides={"AGATA_USER_MANAGER_LOST_AFTER_S": "2",
                                     "AGATA_USER_MANAGER_CACHE_TTL_S": "0"})
    try:
        yield started
    finally:
        codes = started.stop()
        assert all(code == 0 for code in codes.values()), codes



def create(stack: Stack, task_id: str, source: Path, **fields: object) -> int:
    port = free_port()
    stack.create_task(task_id, source, port, **fields)  # type: ignore[arg-type]
    return port


def reports(api: Api, task_id: str) -> list[dict[str, object]]:
    return api.get(f"/api/tasks/{task_id}/reports")["reports"]


def test_task_reaches_client_trains_reports_every_round_and_finishes(stack: Stack) -> None:
    api = stack.start_cloud()
    stack.start_clients()
    port = create(stack, "digits", DIGITS, server_arguments={"num-rounds": 2, "min-clients": 2},
                  client_arguments={"num-partitions": 2})
    api.post("/rpc_exec_start_server_task", {"task_id": "digits"})
    manual = extra_flower_client(DIGITS, port, partition=1)
    try:
        wait_for(lambda: api.get("/api/tasks/digits")["status"] != "running", 120,
                 "the task to end")
    finally:
        manual.stop(2)
    task = api.get("/api/tasks/digits")
    assert task["status"] == "finished", task
    rounds = api.get("/api/tasks/digits/metrics")["rounds"]
    assert [r["round"] for r in rounds if r["round"] > 0] == [1, 2]
    assert all({"loss", "accuracy"} <= set(r["metrics"]) for r in rounds)
    assert rounds[-1]["metrics"]["accuracy"] > 0.5
    statuses = wait_for(lambda: {r["status"] for r in reports(api, "digits")} >= {"finished"}
                        and {r["status"] for r in reports(api, "digits")}, 20,
                        "the client's finished report")
    assert "started" in statuses


def test_failing_task_makes_the_client_switch_to_a_healthy_one(stack: Stack) -> None:
    api = stack.start_cloud()
    stack.start_clients()
    create(stack, "E", TASKS_DIR / "task_error")
    port_c = create(stack, "C", DIGITS, server_arguments={"num-rounds": 2, "min-clients": 2},
                    client_arguments={"num-partitions": 2})
    api.post("/rpc_exec_start_server_task", {"task_id": "E"})
    api.post("/rpc_exec_start_server_task", {"task_id": "C"})
    manual = extra_flower_client(DIGITS, port_c, partition=1)
    try:
        failed = wait_for(lambda: [r for r in reports(api, "E") if r["status"] == "failed"], 60,
                          "E's failure report")
        assert "simulated task failure" in str(failed[0]["reason"])
        assert failed[0]["client_id"] == "device-0"
        wait_for(lambda: [r for r in reports(api, "C") if r["status"] == "started"], 30,
                 "the client to start C")
        wait_for(lambda: api.get("/api/tasks/C")["status"] != "running", 120, "C to end")
    finally:
        manual.stop(2)
        api.post("/rpc_exec_stop_server_task", {"task_id": "E"})
    assert api.get("/api/tasks/C")["status"] == "finished"
    assert len([r for r in reports(api, "E") if r["status"] == "started"]) == 1, \
        "E is quarantined: the client did not start it again"


def test_corrupted_download_is_refused_and_the_task_quarantined(stack: Stack) -> None:
    api = stack.start_cloud()
    create(stack, "bad", TASKS_DIR / "task_error")
    # The stored bytes change behind the recorded sha256: in the database, which holds task
    # files, and in the manager's cached copy (else it repairs the copy from the database).
    stored = stack.out_dir / "cloud" / "tasks" / "task_bad" / "client.py"
    tampered = stored.read_bytes() + b"\nimport os; os.system('echo tampered')\n"
    stored.write_bytes(tampered)
    with contextlib.closing(sqlite3.connect(stack.out_dir / "cloud" / "tasks.db")) as database:
        with database:
            changed = database.execute(
                "UPDATE task_file_contents SET content = ? WHERE task_id = ? AND name = ?",
                (tampered, "bad", "client.py")).rowcount
    assert changed == 1
    api.post("/rpc_exec_start_server_task", {"task_id": "bad"})
    try:
        stack.start_clients()
        failed = wait_for(lambda: [r for r in reports(api, "bad") if r["status"] == "failed"], 30,
                          "the client's failure report")
        assert "corrupted download refused" in str(failed[0]["reason"])
        time.sleep(4)
        attempts = [r for r in reports(api, "bad") if r["status"] == "failed"]
        assert len(attempts) == 1, "quarantined: not retried before the back-off ends"
        assert not [r for r in reports(api, "bad") if r["status"] == "started"]
        client_dir = stack.out_dir / "device-0" / "client_tasks"
        assert not list(client_dir.glob("task_bad/*/client.py")), "nothing unverified kept"
    finally:
        api.post("/rpc_exec_stop_server_task", {"task_id": "bad"})


def _client_processes(folder: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(folder) in command and "client.py" in command and state != "Z":
            pids.append(int(entry.name))
    return pids


def test_sigterm_stops_the_client_task_manager_and_its_task_clients(stack: Stack) -> None:
    api = stack.start_cloud()
    stack.start_clients()
    create(stack, "waits", DIGITS, server_arguments={"num-rounds": 2, "min-clients": 2})
    api.post("/rpc_exec_start_server_task", {"task_id": "waits"})
    client_tasks = stack.out_dir / "device-0" / "client_tasks"
    try:
        wait_for(lambda: _client_processes(client_tasks), 30, "the task's client process")
        assert stack.processes is not None
        assert stack.processes.stop("client0_task_manager") == 0
        wait_for(lambda: not _client_processes(client_tasks), 10,
                 "the task's client to be stopped with its manager")
    finally:
        api.post("/rpc_exec_stop_server_task", {"task_id": "waits"})


def test_a_device_heartbeats_and_is_shown_lost_once_it_is_gone(stack: Stack) -> None:
    api = stack.start_cloud()
    (device,) = stack.start_clients()
    first = api.get(f"/api/clients/{device}")
    assert first["online"]
    # no stats change: only heartbeats move last_seen
    wait_for(lambda: api.get(f"/api/clients/{device}")["last_seen"] > first["last_seen"], 10,
             "a heartbeat")
    assert stack.processes is not None
    stack.processes.stop("client0_task_manager")
    lost = wait_for(lambda: not (client := api.get(f"/api/clients/{device}"))["online"]
                    and client, 15, "the device to be shown lost")
    assert lost["last_seen"] >= first["last_seen"]
