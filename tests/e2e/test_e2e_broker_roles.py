"""RabbitMQ users per role (``scripts/broker_roles.sh``) on a node of the test's own (never the
machine's broker): the cloud's services work as their role user on the ``agata`` virtual host,
while ``guest`` (what a task process on the machine could try) is refused there."""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from support import OPERATOR_TOKEN, REPO_ROOT, isolated_environ

from experiments.netns import Network, netns_unavailable
from experiments.processes import ProcessGroup
from experiments.rabbit_nodes import (
    RABBITMQ_USER,
    RabbitNode,
    rabbitmq_unavailable,
    start_brokers,
    stop_brokers,
)
from experiments.stack import Api
from task_daemon_lib.runner import task_environ

BROKER_PORT = 5712


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RabbitNode]:
    reason = netns_unavailable() or rabbitmq_unavailable()
    if reason:
        pytest.skip(reason)
    network = Network().start()
    broker = RabbitNode(network.add_host("broker"), BROKER_PORT, tmp_path / "broker-logs")
    try:
        start_brokers([broker])
        yield broker
    finally:
        stop_brokers([broker])
        network.close()


def rabbitmqctl(node: RabbitNode) -> str:
    """The command that manages ``node`` (in its namespace, as the rabbitmq user)."""
    home = pwd.getpwnam(RABBITMQ_USER).pw_dir
    return shlex.join([*node.host.command, "env", f"HOME={home}", "ERL_EPMD_ADDRESS=127.0.0.1",
                       "setpriv", f"--reuid={RABBITMQ_USER}", f"--regid={RABBITMQ_USER}",
                       "--init-groups", "rabbitmqctl", "-n", node.node_name])


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_services_use_their_role_and_guest_is_refused(node: RabbitNode, tmp_path: Path) -> None:
    env_file = tmp_path / "secrets" / "broker.env"
    command = [str(REPO_ROOT / "scripts" / "broker_roles.sh"), "--env-file", str(env_file)]
    environ = {**os.environ, "RABBITMQCTL": rabbitmqctl(node)}
    for _ in range(2):  # safe to run again: the same users and passwords
        done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr
    assert env_file.stat().st_mode & 0o777 == 0o600
    roles = read_env(env_file)
    assert roles["AGATA_SERVER_BROKER_USERNAME"] == "agata-cloud"
    assert roles["AGATA_CLIENT_BROKER_USERNAME"] == "agata-device"
    assert roles["AGATA_SERVER_BROKER_VIRTUAL_HOST"] == "agata"
    assert len(roles["AGATA_SERVER_BROKER_PASSWORD"]) >= 24

    # the cloud's services, as agata-cloud on the agata virtual host, work end to end
    cloud = {**os.environ, **isolated_environ(tmp_path),
             **{k: v for k, v in roles.items() if k.startswith("AGATA_SERVER_BROKER_")},
             **node.overrides("server")}
    processes = ProcessGroup(cloud, tmp_path / "logs")
    try:
        for module in ("user_manager", "cloud_task_manager", "cloud_gateway"):
            processes.start(module, module)
        api = Api(f"http://127.0.0.1:{cloud['AGATA_SERVER_GATEWAY_PORT']}", OPERATOR_TOKEN)
        api.wait_ready(60)
        created = api.post("/api/tasks", {"task_id": "roles", "port": 8123})
        assert created["id"] == "roles"
        service_queue = f"{cloud['AGATA_SERVER_BROKER_QUEUE_PREFIX']}rpc_exec_create_task"

        # guest cannot even open the agata virtual host
        def guest(virtual_host: str) -> pika.BlockingConnection:
            return pika.BlockingConnection(pika.ConnectionParameters(
                host=node.host.address, port=node.port, virtual_host=virtual_host,
                credentials=pika.PlainCredentials("guest", "guest"), connection_attempts=1))

        with pytest.raises(pika.exceptions.AMQPConnectionError):
            guest("agata")
        # and where guest may go, no service listens: a publish there reaches nobody
        connection = guest("/")
        try:
            channel = connection.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as missing:
                channel.queue_declare(service_queue, passive=True)
            assert missing.value.reply_code == 404
        finally:
            connection.close()
    finally:
        processes.stop_all()

    # and a task process is never handed a broker credential
    os.environ["AGATA_SERVER_BROKER_PASSWORD"] = roles["AGATA_SERVER_BROKER_PASSWORD"]
    try:
        assert not any("BROKER" in name for name in task_environ())
    finally:
        del os.environ["AGATA_SERVER_BROKER_PASSWORD"]
