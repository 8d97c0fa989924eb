"""Shared by the cloud task manager tests: tasks with a server script, and waiting."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

from support import Cloud

from agata_contracts.tasks import CREATE_TASK, UPLOAD_TASK_FILE, Task

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
