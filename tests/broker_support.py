"""Broker accounts made by a test on the machine's RabbitMQ, and their removal (never guest,
never the ``/`` virtual host)."""

from __future__ import annotations

import pika
import pika.exceptions

from agata_cli.broker_roles import drop_roles

__all__ = ["connect", "drop_roles", "refused"]


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
