"""The interconnect's own settings: a broker, RPC behaviour, experiment events.

An application composes these into its configuration; the library never reads a file or the
environment itself.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SettingsSection(BaseModel):
    """A frozen settings section that ignores unknown keys (the loader warns about them)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class BrokerSettings(SettingsSection):
    """A RabbitMQ broker and the queue-name prefix that keeps one side apart from the other.

    ``host`` names one node, or a cluster's nodes separated by commas (``host`` or
    ``host:port`` each; ``port`` is the default): every connection attempt takes the next
    node, so a link moves to another node when its node goes. ``durable_queue_type`` is the
    type the durable queues (outboxes) are declared with: ``quorum`` replicates them across a
    cluster (choose it before their first declaration: a queue keeps its type).
    """

    host: str = Field("localhost", pattern=r"^[A-Za-z0-9.\-\[\]:]+(, ?[A-Za-z0-9.\-\[\]:]+)*$")
    port: int = Field(5672, ge=1, le=65535)
    username: str = "guest"
    password: str = "guest"  # noqa: S105 (RabbitMQ's stock local-only account)
    password_file: str = ""
    """A 0600 file holding ``password`` (the application's loader reads it)."""
    virtual_host: str = "/"
    queue_prefix: str = ""
    heartbeat_s: int = Field(30, ge=0, le=600)
    connect_timeout_s: float = Field(5.0, gt=0)
    durable_queue_type: Literal["classic", "quorum"] = "classic"

    def nodes(self) -> list[tuple[str, int]]:
        """The nodes of ``host``, each with its port (``name:port``, ``[v6]:port`` or a bare
        name or address, which takes ``port``)."""
        found = []
        for item in (part.strip() for part in self.host.split(",")):
            name, colon, port = item.rpartition(":")
            bracketed = name.startswith("[") and name.endswith("]")
            if colon and port.isdigit() and (bracketed or ":" not in name):
                found.append((name.strip("[]"), int(port)))
            else:
                found.append((item.strip("[]"), self.port))
        return found

    def durable_arguments(self) -> dict[str, str]:
        """The arguments durable queues are declared with."""
        return {"x-queue-type": "quorum"} if self.durable_queue_type == "quorum" else {}


class RpcSettings(SettingsSection):
    """RPC behaviour common to every caller and service."""

    timeout_s: float = Field(10.0, gt=0, le=3600)
    reconnect_wait_s: float = Field(0.05, ge=0, le=3600)
    handler_threads: int = Field(8, ge=1, le=256)
    prefetch: int = Field(32, ge=1, le=10000)


class EventSettings(SettingsSection):
    """Experiment events: AGATA's ``register_events`` switch and where the reader writes."""

    register_events: bool = False
    exchange: str = "agata.events"
    output: str = "events.json"
