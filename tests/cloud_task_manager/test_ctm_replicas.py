"""Two cloud task manager replicas (real processes, each with its own data directory) on one
PostgreSQL database behind one gateway: a file uploaded through either is downloaded through
both, always with the same bytes; a run's results stored by the replica that ran it are served
by the other, also once that one is gone; a device's polls, answered by both from memory, show a
start, a criteria change and a stop made through either at once."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker
from support import (
    CLIENT_TOKEN,
    OPERATOR_TOKEN,
    _postgres_database,
    isolated_environ,
    wait_for,
)

from agata_cli.client import Gateway
from agata_contracts.tasks import READ_TASK_FILE
from experiments.processes import ProcessGroup, free_port, wait_for_http

TASK = "replicated"
DOWNLOADS = 20
MODEL = bytes(range(256)) * 400
RESULT_SERVER = f"""import os
from pathlib import Path
results = Path(os.environ["AGATA_RESULTS_DIR"])
(results / "metrics").mkdir()
(results / "metrics" / "final.json").write_text('{{"accuracy": 0.9}}')
(results / "model.bin").write_bytes(bytes(range(256)) * {len(MODEL) // 256})
""".encode()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database (the test is skipped when PostgreSQL does not answer)."""
    yield from _postgres_database()


def consumers(queue: str) -> int:
    """How many consumers RabbitMQ has on ``queue`` (0 while it does not exist)."""
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", 5672, credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=5, blocked_connection_timeout=5))
    try:
        return int(connection.channel().queue_declare(queue, passive=True)
                   .method.consumer_count)
    except ChannelClosedByBroker:
        return 0
    finally:
        connection.close()


def local_copy(data_dir: Path, name: str) -> bytes | None:
    path = data_dir / "tasks" / f"task_{TASK}" / name
    return path.read_bytes() if path.is_file() else None


def download_many(api: Gateway, name: str, expected: bytes) -> None:
    for attempt in range(DOWNLOADS):
        content = api.download(f"/download/{TASK}/{name}")
        assert hashlib.sha256(content).hexdigest() == hashlib.sha256(expected).hexdigest(), (
            f"download {attempt} differs")


@dataclass
class Replicas:
    """Two replicas and a gateway, as real processes."""

    api: Gateway
    processes: ProcessGroup
    data_dirs: dict[str, Path]
    device: Gateway
    """Speaks for any device (the shared client token the tests enable)."""


@contextmanager
def running_replicas(tmp_path: Path, postgres_url: str) -> Iterator[Replicas]:
    """Two replicas on ``postgres_url`` and a gateway; each stops cleanly, without tracebacks
    (a replica the test stopped itself is checked by the test)."""
    environ = {**os.environ, **isolated_environ(
        tmp_path,
        AGATA_CLOUD_TASK_MANAGER_DATABASE_URL=postgres_url,
        AGATA_CLOUD_TASK_MANAGER_DOWNLOAD_SECRET="replicas-share-this-secret",
        AGATA_CLOUD_TASK_MANAGER_WARM_HOSTS="0")}
    queue = f"{environ['AGATA_SERVER_BROKER_QUEUE_PREFIX']}{READ_TASK_FILE.name}"
    data_dirs = {name: tmp_path / name for name in ("replica_a", "replica_b")}
    processes = ProcessGroup(environ, tmp_path / "logs")
    try:
        processes.start("user_manager", "user_manager")
        # One after the other: both would create the schema at once otherwise.
        for count, (name, data_dir) in enumerate(data_dirs.items(), start=1):
            processes.environ = {**environ, "AGATA_STORAGE_DATA_DIR": str(data_dir)}
            processes.start(name, "cloud_task_manager")
            wait_for(lambda wanted=count: consumers(queue) >= wanted, 60,
                     f"{name} to consume {queue}", interval=0.2)
        processes.environ = environ
        processes.start("cloud_gateway", "cloud_gateway")
        url = f"http://127.0.0.1:{environ['AGATA_SERVER_GATEWAY_PORT']}"
        wait_for_http(f"{url}/health", 30)
        yield Replicas(Gateway(url, OPERATOR_TOKEN, timeout_s=15), processes, data_dirs,
                       Gateway(url, CLIENT_TOKEN, timeout_s=15))
    finally:
        codes = processes.stop_all()
    assert all(code == 0 for code in codes.values()), codes
    for name in data_dirs:
        log = (tmp_path / "logs" / f"{name}.log").read_text()
        assert "Traceback" not in log, log
        assert "download_secret is not set" not in log, log


def test_files_are_served_identically_by_every_replica(tmp_path: Path,
                                                        postgres_url: str) -> None:
    with running_replicas(tmp_path, postgres_url) as replicas:
        api, data_dirs = replicas.api, replicas.data_dirs
        api.post("/rpc_exec_create_task", {"task_id": TASK, "port": 8000})
        first = bytes(range(256)) * 300 + b"first"
        (tmp_path / "model.bin").write_bytes(first)
        api.upload(TASK, tmp_path / "model.bin", "data/model.bin")
        download_many(api, "data/model.bin", first)
        # RabbitMQ hands the queue's messages to its two consumers in turn: both served.
        for data_dir in data_dirs.values():
            assert local_copy(data_dir, "data/model.bin") == first, data_dir

        second = b"second version, shorter"
        (tmp_path / "model.bin").write_bytes(second)
        api.upload(TASK, tmp_path / "model.bin", "data/model.bin")
        download_many(api, "data/model.bin", second)
        for data_dir in data_dirs.values():
            (data_dir / "tasks" / f"task_{TASK}" / "data" / "model.bin").write_bytes(b"rot")
        download_many(api, "data/model.bin", second)
        for data_dir in data_dirs.values():
            assert local_copy(data_dir, "data/model.bin") == second, data_dir


def test_results_are_served_identically_by_every_replica(tmp_path: Path,
                                                          postgres_url: str) -> None:
    expected = {"server/metrics/final.json": b'{"accuracy": 0.9}', "server/model.bin": MODEL}
    with running_replicas(tmp_path, postgres_url) as replicas:
        api = replicas.api
        api.post("/rpc_exec_create_task", {"task_id": TASK, "port": free_port()})
        (tmp_path / "server.py").write_bytes(RESULT_SERVER)
        api.upload(TASK, tmp_path / "server.py")
        api.post("/rpc_exec_start_server_task", {"task_id": TASK})
        wait_for(lambda: expected.keys() <= {
            item["path"] for item in api.get(f"/api/tasks/{TASK}/results")["files"]}, 60,
            "the server's results", interval=0.2)
        # Only the replica that ran the server had its scratch folder (and so its files).
        (runner,) = [name for name, data_dir in replicas.data_dirs.items()
                     if (data_dir / "results-work" / f"task_{TASK}").is_dir()]

        def download_results(times: int) -> None:
            for attempt in range(times):
                for path, content in expected.items():
                    got = api.download(f"/api/tasks/{TASK}/runs/1/results/{path}")
                    assert got == content, f"download {attempt} of {path} differs"
            archive = api.download(f"/api/tasks/{TASK}/runs/0/results.zip")
            with zipfile.ZipFile(io.BytesIO(archive)) as unpacked:
                for path, content in expected.items():
                    assert unpacked.read(f"task-{TASK}-run-1/{path}") == content

        download_results(DOWNLOADS // 2)  # RabbitMQ hands the reads to both replicas in turn
        assert replicas.processes.stop(runner) == 0
        download_results(DOWNLOADS // 2)  # the other replica alone, from the database
        for data_dir in replicas.data_dirs.values():
            assert not (data_dir / "results").exists(), "results are kept in the database"


WAITING_SERVER = b"""import time
from task_daemon_lib import TaskReporter
TaskReporter().send_info("Started")
time.sleep(600)
"""
POLLS = 12


def test_polls_answered_by_every_replica_see_changes_at_once(tmp_path: Path,
                                                             postgres_url: str) -> None:
    with running_replicas(tmp_path, postgres_url) as replicas:
        api, device = replicas.api, replicas.device
        device.post("/rpc_exec_update_user_info", {"user_id": "dev-1", "data_qnt": 50})
        api.post("/rpc_exec_create_task", {"task_id": TASK, "port": free_port(),
                                           "selection_criteria": "data_qnt >= 10"})
        (tmp_path / "server.py").write_bytes(WAITING_SERVER)
        api.upload(TASK, tmp_path / "server.py")

        def offered() -> list[set[tuple[str, int]]]:
            """What the next polls offer (RabbitMQ hands them to both replicas in turn)."""
            return [{(t["task_id"], t["run"]) for t in device.post(
                        "/rpc_exec_client_requesting_task", {"client_id": "dev-1"})["tasks"]}
                    for _ in range(POLLS)]

        assert offered() == [set()] * POLLS  # both replicas hold a snapshot without the task
        for run in (1, 2):
            api.post("/rpc_exec_start_server_task", {"task_id": TASK})
            assert offered() == [{(TASK, run)}] * POLLS, f"run {run} started"
            api.post("/rpc_exec_update_task", {"task_id": TASK,
                                               "selection_criteria": "data_qnt >= 60"})
            assert offered() == [set()] * POLLS, "criteria now exclude the device"
            api.post("/rpc_exec_update_task", {"task_id": TASK,
                                               "selection_criteria": "data_qnt >= 10"})
            assert offered() == [{(TASK, run)}] * POLLS, "criteria include it again"
            api.post("/rpc_exec_stop_server_task", {"task_id": TASK})
            assert offered() == [set()] * POLLS, f"run {run} stopped"
