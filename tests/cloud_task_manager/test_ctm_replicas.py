"""Two cloud task manager replicas (real processes, each with its own data directory) on one
PostgreSQL database behind one gateway: a file uploaded through either is downloaded through
both, always with the same bytes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker
from support import OPERATOR_TOKEN, _postgres_database, isolated_environ, wait_for

from agata_cli.client import Gateway
from agata_contracts.tasks import READ_TASK_FILE
from experiments.processes import ProcessGroup, wait_for_http

TASK = "replicated"
DOWNLOADS = 20


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


def test_files_are_served_identically_by_every_replica(tmp_path: Path,
                                                        postgres_url: str) -> None:
    environ = {**os.environ, **isolated_environ(
        tmp_path,
        AGATA_CLOUD_TASK_MANAGER_DATABASE_URL=postgres_url,
        AGATA_CLOUD_TASK_MANAGER_DOWNLOAD_SECRET="replicas-share-this-secret",
        AGATA_CLOUD_TASK_MANAGER_WARM_HOSTS="0")}
    queue = f"{environ['AGATA_SERVER_BROKER_QUEUE_PREFIX']}{READ_TASK_FILE.name}"
    data_dirs = {name: tmp_path / name for name in ("replica_a", "replica_b")}
    processes = ProcessGroup(environ, tmp_path / "logs")
    try:
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
        api = Gateway(url, OPERATOR_TOKEN, timeout_s=15)

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
    finally:
        codes = processes.stop_all()
    assert codes == {"cloud_gateway": 0, "replica_b": 0, "replica_a": 0}, codes
    for name in data_dirs:
        log = (tmp_path / "logs" / f"{name}.log").read_text()
        assert "Traceback" not in log, log
        assert "download_secret is not set" not in log, log
