"""The interconnect's own settings: a broker, RPC behaviour, experiment events.

An application composes these into its configuration; the library never reads a file or the
environment itself.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SettingsSection(BaseModel):
    """A frozen settings section that ignores unknown keys (the loader warns about them)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class BrokerSettings(SettingsSection):
    """A RabbitMQ broker and the queue-name prefix that keeps one side apart from the other."""

    host: str = "localhost"
    port: int = Field(5672, ge=1, le=65535)
    username: str = "guest"
    password: str = "guest"  # noqa: S105 (RabbitMQ's stock local-only account)
    virtual_host: str = "/"
    queue_prefix: str = ""
    heartbeat_s: int = Field(30, ge=0, le=600)
    connect_timeout_s: float = Field(5.0, gt=0)


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
