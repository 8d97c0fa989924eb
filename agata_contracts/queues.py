"""Names of the queues and exchanges the services share, each after its broker's prefix.

RPC queues are named by their ``RpcSpec``; these are the others.
"""

from __future__ import annotations

from typing import Final

TASK_EVENTS_EXCHANGE: Final = "task_events"
"""Fan-out exchange carrying ``TaskEvent``: on the cloud broker, and relayed on each device's."""
CLIENT_CHANGES_EXCHANGE: Final = "client_changes"
"""Fan-out exchange on the cloud broker carrying a ``UserInfo`` whenever a client's stats change
(heartbeats alone do not), so readers can keep clients in memory."""
OUTBOX_QUEUE: Final = "outbox"
"""Durable queue on a device's broker holding reports until the cloud has them."""
EVENTS_EXCHANGE: Final = "agata.events"
"""Default fan-out exchange of experiment events (``[events] exchange``)."""


def task_events_exchange(prefix: str) -> str:
    """The task-events exchange on a broker whose names start with ``prefix``."""
    return f"{prefix}{TASK_EVENTS_EXCHANGE}"


def client_changes_exchange(prefix: str) -> str:
    """The client-changes exchange on a broker whose names start with ``prefix``."""
    return f"{prefix}{CLIENT_CHANGES_EXCHANGE}"


def outbox_queue(prefix: str) -> str:
    """The device's outbox queue on a broker whose names start with ``prefix``."""
    return f"{prefix}{OUTBOX_QUEUE}"
