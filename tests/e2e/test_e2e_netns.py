"""One Flower App run across hosts: the cloud and each device in a network namespace of its own,
each with its own RabbitMQ node, so nothing can lean on 127.0.0.1.

The devices know the cloud only by its address (their ``cloud_url`` and the task's ``host``);
their loopback holds nothing of the cloud, and the machine's own broker (root namespace) is out
of their reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from support import wait_for

from experiments.netns import netns_unavailable
from experiments.netns_stack import HostsStack, netns_stack
from experiments.processes import free_port
from experiments.rabbit_nodes import rabbitmq_unavailable
from experiments.stack import TASKS_DIR, Api

NUMPY_APP = TASKS_DIR / "app_numpy"
MACHINE_BROKER_PORT = 5672


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[HostsStack]:
    reason = netns_unavailable() or rabbitmq_unavailable()
    if reason:
        pytest.skip(reason)
    with netns_stack(tmp_path / "stack", devices=2,
                     client_params={"request_interval": "2", "task_retry_s": "300"},
                     cloud_overrides={"AGATA_CLOUD_TASK_MANAGER_DEVICE_JOIN_S": "30"}) as started:
        yield started
        codes = started.stack.stop()
        assert all(code == 0 for code in codes.values()), codes



def final_reports(api: Api, task_id: str, count: int) -> list[dict[str, Any]]:
    """The devices' final reports (finished or failed), once there are ``count`` of them."""

    def final() -> list[dict[str, Any]] | None:
        found = [r for r in api.get(f"/api/tasks/{task_id}/reports")["reports"]
                 if r["status"] in ("finished", "failed")]
        return found if len(found) >= count else None

    return wait_for(final, 20, f"{count} final reports of {task_id}")


def test_a_flower_app_runs_across_hosts_that_know_the_cloud_only_by_its_address(
        hosts: HostsStack) -> None:
    stack, cloud = hosts.stack, hosts.cloud
    api = stack.start_cloud()
    gateway_port = urlsplit(api.url).port
    assert api.url == f"http://{cloud.address}:{gateway_port}"
    devices = stack.start_clients()
    for index, env in enumerate(stack.client_envs):
        assert env["AGATA_CLIENT_PARAMS_CLOUD_URL"] == api.url
        assert env["AGATA_CLIENT_BROKER_HOST"] == hosts.devices[index].address
    assert stack.cloud_env["AGATA_SERVER_BROKER_HOST"] == cloud.address

    # a device reaches the cloud's gateway at the cloud's address, and nothing of the cloud
    # (gateway, its broker, the machine's broker) on its own loopback
    cloud_broker = hosts.brokers["cloud"]
    for device in hosts.devices:
        assert device.connects(cloud.address, gateway_port), device
        for port in (gateway_port, cloud_broker.port, MACHINE_BROKER_PORT):
            assert not device.connects("127.0.0.1", port), (device, port)

    port = free_port()
    stack.create_task("numpy", NUMPY_APP, port, devices=2,
                      server_arguments={"num-server-rounds": 2})
    task = api.get("/api/tasks/numpy")
    assert (task["kind"], task["host"], task["port"]) == ("flower_app", cloud.address, port)
    api.post("/rpc_exec_start_server_task", {"task_id": "numpy"})
    task = wait_for(lambda: (found := api.get("/api/tasks/numpy"))["status"] != "running"
                    and found, 45, "the run to end")
    assert task["status"] == "finished", task

    rounds = api.get("/api/tasks/numpy/metrics")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for entry in rounds:
        metrics = entry["metrics"]
        own = {device: metrics[f"train.loss@{device}"] for device in devices}
        # partition p pulls towards p + 1: distinct partitions give distinct losses
        assert len(set(own.values())) == 2, own
    joined = [line for index in range(2)
              for line in (stack.out_dir / "logs" / f"client{index}_task_manager.log")
              .read_text().splitlines() if "joined run" in line]
    assert sorted('"partition-id": 0' in line for line in joined) == [False, True], joined
    assert all('"num-partitions": 2' in line for line in joined), joined
    finals = final_reports(api, "numpy", 2)
    assert sorted(r["status"] for r in finals) == ["finished", "finished"], finals
    assert sorted(r["client_id"] for r in finals) == sorted(devices)
