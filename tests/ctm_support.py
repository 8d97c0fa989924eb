"""Shared by the cloud task manager tests: tasks with a server script, and waiting."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from support import Cloud

from agata_common.database import make_engine
from agata_contracts.tasks import CREATE_TASK, UPLOAD_TASK_FILE, CreateTaskRequest, Task
from cloud_task_manager.records import TaskRecords
from cloud_task_manager.storage import Credentials

SLEEPING_SERVER = """\
import time
from task_daemon_lib import TaskReporter

TaskReporter()
time.sleep(120)
"""


def upload(cloud: Cloud, task_id: str, name: str, content: bytes | str) -> Any:
    data = content.encode() if isinstance(content, str) else content
    return cloud.client.call(UPLOAD_TASK_FILE, {"task_id": task_id, "filename": name,
                                                "content": base64.b64encode(data).decode()})


def new_task(cloud: Cloud, task_id: str, server: str | None = None, **fields: Any) -> Task:
    task = cloud.client.call(CREATE_TASK, {"task_id": task_id, "port": 8000, **fields})
    if server is not None:
        upload(cloud, task_id, "server.py", server)
    return task


def wait_for(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@contextmanager
def one_task_database(database_url: str, tmp_path: Path,
                      task_id: str) -> Iterator[tuple[Engine, TaskRecords]]:
    """A task manager's schema on ``database_url`` holding one task, shared by the replicas a
    test builds over it."""
    engine = make_engine(database_url, tmp_path / "unused.db")
    records = TaskRecords(engine, Credentials(b"k" * 32))
    records.create_schema()
    records.create(CreateTaskRequest(task_id=task_id, port=8000))
    try:
        yield engine, records
    finally:
        engine.dispose()
