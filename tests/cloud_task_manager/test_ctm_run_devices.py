"""A task's min_devices and its run's devices over RabbitMQ on SQLite: the minimum checked
against devices, the devices a run's server reports kept and read back."""

from __future__ import annotations

import time

import pytest
from ctm_support import upload
from support import Cloud

from agata_contracts.run_devices import GET_RUN_DEVICES
from agata_contracts.tasks import CREATE_TASK, START_SERVER_TASK, STOP_SERVER_TASK, UPDATE_TASK
from microservice_interconnect import BadRequest

ROSTER_SERVER = """\
import time
from task_daemon_lib import TaskReporter

reporter = TaskReporter()
seat = {"client_id": "device-0", "partition_id": 0, "joined": 1.0, "left": 2.0,
        "left_after_round": 3, "why_left": "did not answer round 4 within 5 s",
        "rounds_trained": 3, "replaced_by": "device-2"}
spare = {"client_id": "device-2", "partition_id": 0, "joined": 2.5, "joined_after_round": 3,
         "replaced": "device-0"}
reporter.send_roster({"devices": [seat, spare], "lost": False,
                      "change": "device device-2 replaced device device-0 (partition 0, after "
                                "round 3)"})
time.sleep(120)
"""


def test_min_devices_is_kept_and_never_above_devices(cloud: Cloud) -> None:
    client = cloud.client
    task = client.call(CREATE_TASK, {"task_id": "elastic", "devices": 3, "min_devices": 2})
    assert (task.devices, task.min_devices) == (3, 2)
    assert client.call(CREATE_TASK, {"task_id": "rigid"}).min_devices is None
    with pytest.raises(BadRequest):
        client.call(CREATE_TASK, {"task_id": "bad", "devices": 2, "min_devices": 3})
    with pytest.raises(BadRequest) as info:
        client.call(UPDATE_TASK, {"task_id": "elastic", "devices": 1})
    assert "min_devices (2) is more than devices (1)" in info.value.message
    changed = client.call(UPDATE_TASK, {"task_id": "elastic", "min_devices": 1})
    assert (changed.devices, changed.min_devices) == (3, 1)


def test_the_devices_a_runs_server_reports_are_read_back(cloud: Cloud) -> None:
    client = cloud.client
    client.call(CREATE_TASK, {"task_id": "roster", "devices": 2})
    before = client.call(GET_RUN_DEVICES, {"task_id": "roster"})
    assert (before.run, before.devices, before.min_devices, before.seats) == (0, 2, 2, [])
    upload(cloud, "roster", "server.py", ROSTER_SERVER)
    client.call(START_SERVER_TASK, {"task_id": "roster"})
    deadline = time.monotonic() + 15
    while not (devices := client.call(GET_RUN_DEVICES, {"task_id": "roster"})).seats:
        assert time.monotonic() < deadline, "the run's devices were not kept"
        time.sleep(0.05)
    assert devices.run == 1
    lost, spare = devices.seats
    assert (lost.client_id, lost.replaced_by, lost.left_after_round) == ("device-0", "device-2", 3)
    assert (spare.client_id, spare.replaced, spare.left) == ("device-2", "device-0", None)
    client.call(STOP_SERVER_TASK, {"task_id": "roster"})
