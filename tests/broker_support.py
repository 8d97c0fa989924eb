"""Broker accounts made by a test on the machine's RabbitMQ, and their removal (never guest,
never the ``/`` virtual host)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

import pika
import pika.exceptions

from agata_cli.broker_roles import BrokerRole

RABBITMQCTL_TIMEOUT_S = 120


def drop_roles(roles: Iterable[BrokerRole]) -> None:
    """Delete the roles' virtual hosts and users (all at once: each rabbitmqctl takes seconds)."""
    commands = []
    for role in roles:
        assert role.virtual_host != "/" and role.user != "guest"
        commands += [["rabbitmqctl", "--quiet", "delete_vhost", role.virtual_host],
                     ["rabbitmqctl", "--quiet", "delete_user", role.user]]
    running = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for command in dict.fromkeys(tuple(c) for c in commands)]
    for process in running:
        process.wait(RABBITMQCTL_TIMEOUT_S)


def connect(user: str, password: str, virtual_host: str) -> pika.BlockingConnection:
    """A connection to the machine's broker as ``user`` (raises when refused)."""
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", 5672, virtual_host, pika.PlainCredentials(user, password),
        connection_attempts=1, socket_timeout=5))


def refused(user: str, password: str, virtual_host: str) -> bool:
    """Whether the broker refuses ``user`` on ``virtual_host``."""
    try:
        connect(user, password, virtual_host).close()
    except pika.exceptions.AMQPConnectionError:
        return True
    return False
