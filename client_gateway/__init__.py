"""The client device's bridge to the cloud: client RPCs forwarded over HTTP, durable reports,
task events relayed from the cloud's long poll onto the client broker.

Only the names below are imported by the client side's other services, so this module stays
free of the gateway's own dependencies.
"""

from __future__ import annotations

from agata_common.config import Settings
from cloud_task_manager.contracts import TASK_EVENTS_EXCHANGE

OUTBOX_SUFFIX = "outbox"


def outbox_queue(settings: Settings) -> str:
    """The durable queue on the client broker holding reports for the cloud."""
    return f"{settings.client_broker.queue_prefix}{OUTBOX_SUFFIX}"


def task_events_exchange(settings: Settings) -> str:
    """The fanout exchange on the client broker carrying the cloud's ``TaskEvent``s."""
    return f"{settings.client_broker.queue_prefix}{TASK_EVENTS_EXCHANGE}"


__all__ = ["outbox_queue", "task_events_exchange"]
