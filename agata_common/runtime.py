"""A service process's AMQP runtime, from the application's configuration."""

from __future__ import annotations

from agata_common.config_cloud import CloudSettings
from agata_common.config_device import DeviceSettings
from microservice_interconnect.runtime import ServiceRuntime


def cloud_runtime(name: str, config: CloudSettings) -> ServiceRuntime:
    """A runtime on the cloud broker (``[server.broker]``)."""
    return ServiceRuntime(name, config.server_broker, rpc=config.rpc, events=config.events)


def device_runtime(name: str, config: DeviceSettings) -> ServiceRuntime:
    """A runtime on the device's broker (``[client.broker]``)."""
    return ServiceRuntime(name, config.client_broker, rpc=config.rpc, events=config.events)
