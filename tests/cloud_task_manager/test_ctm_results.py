"""Devices' result uploads on the cloud task manager (real broker, real database): each device
with its own credential for the run, taken for the latest run and the one before it (a task may
start again before the last results of its previous run arrived), never for older runs."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from support import Cloud

from agata_contracts.results import LIST_RESULTS, UPLOAD_RESULT
from agata_contracts.tasks import (
    CLIENT_REQUESTING_TASK,
    CREATE_TASK,
    START_SERVER_TASK,
    STOP_SERVER_TASK,
    UPLOAD_TASK_FILE,
)
from agata_contracts.users import UPDATE_USER_INFO
from microservice_interconnect import Forbidden

SLEEPING_SERVER = b"import time\nfrom task_daemon_lib import TaskReporter\n" \
                  b"TaskReporter()\ntime.sleep(120)\n"


def credential_of(cloud: Cloud, client_id: str) -> str:
    (offer,) = cloud.client.call(CLIENT_REQUESTING_TASK, {"client_id": client_id}).tasks
    return offer.download_credential


def upload(cloud: Cloud, run: int, client_id: str, credential: str, name: str) -> Any:
    return cloud.client.call(UPLOAD_RESULT, {
        "task_id": "res", "run": run, "client_id": client_id, "name": name,
        "content": base64.b64encode(name.encode()).decode(), "credential": credential})


def new_run(cloud: Cloud) -> None:
    cloud.client.call(START_SERVER_TASK, {"task_id": "res"})


def test_results_are_taken_for_the_latest_run_and_the_one_before(cloud: Cloud) -> None:
    cloud.client.call(CREATE_TASK, {"task_id": "res", "port": 8000})
    cloud.client.call(UPLOAD_TASK_FILE, {"task_id": "res", "filename": "server.py",
                                         "content": base64.b64encode(SLEEPING_SERVER).decode()})
    for device in ("dev-a", "dev-b"):
        cloud.client.call(UPDATE_USER_INFO, {"user_id": device})
    new_run(cloud)
    first = credential_of(cloud, "dev-a")
    assert credential_of(cloud, "dev-b") != first
    assert upload(cloud, 1, "dev-a", first, "one.txt").path == "devices/dev-a/one.txt"
    with pytest.raises(Forbidden):  # dev-a's credential is worth nothing to dev-b
        upload(cloud, 1, "dev-b", first, "framed.txt")

    cloud.client.call(STOP_SERVER_TASK, {"task_id": "res"})
    new_run(cloud)
    second = credential_of(cloud, "dev-a")
    upload(cloud, 1, "dev-a", first, "late.txt")   # run 1's last results still arrive
    upload(cloud, 2, "dev-a", second, "two.txt")
    with pytest.raises(Forbidden):
        upload(cloud, 2, "dev-a", first, "wrong-run.txt")

    cloud.client.call(STOP_SERVER_TASK, {"task_id": "res"})
    new_run(cloud)
    with pytest.raises(Forbidden):   # two runs later, run 1 is closed
        upload(cloud, 1, "dev-a", first, "too-late.txt")
    cloud.client.call(STOP_SERVER_TASK, {"task_id": "res"})

    def device_files(run: int) -> list[str]:
        listing = cloud.client.call(LIST_RESULTS, {"task_id": "res", "run": run})
        return [f.path for f in listing.files if f.client_id is not None]

    assert device_files(1) == ["devices/dev-a/late.txt", "devices/dev-a/one.txt"]
    assert device_files(2) == ["devices/dev-a/two.txt"]
