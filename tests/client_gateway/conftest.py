"""Fixtures for the client gateway tests: a device-side runtime, client gateways, broker peeks."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cg_helpers import Broker, client_settings  # noqa: E402

from agata_common.config import Settings  # noqa: E402
from agata_common.runtime import device_runtime
from agata_contracts.queues import outbox_queue  # noqa: E402
from agata_contracts.tasks import RPCS as TASK_RPCS  # noqa: E402
from agata_contracts.users import RPCS as USER_RPCS  # noqa: E402
from client_gateway import wiring  # noqa: E402
from client_gateway.wiring import RunningClientGateway  # noqa: E402
from microservice_interconnect.runtime import ServiceRuntime  # noqa: E402


@dataclass
class Device:
    """The device side of the tests: a runtime on the client broker (RPC client, link)."""

    settings: Settings
    runtime: ServiceRuntime


@pytest.fixture
def broker(settings: Settings) -> Iterator[Broker]:
    """The client broker; the test's durable and RPC queues are deleted afterwards."""
    peek = Broker(settings.client_broker)
    yield peek
    prefix = settings.client_broker.queue_prefix
    queue = outbox_queue(settings.client_broker.queue_prefix)
    peek.delete([queue, f"{queue}.rejected"]
                + [f"{prefix}{spec.name}" for spec in USER_RPCS + TASK_RPCS])


@pytest.fixture
def device(settings: Settings) -> Iterator[Device]:
    """A runtime on the client broker standing in for the client task manager."""
    runtime = device_runtime("test_device", settings).start()
    try:
        yield Device(settings, runtime)
    finally:
        runtime.stop()


@pytest.fixture
def start_cg(settings: Settings, broker: Broker) -> Iterator[Callable[..., RunningClientGateway]]:
    """Start client gateways (blocking: use ``asyncio.to_thread`` in async tests)."""
    started: list[RunningClientGateway] = []

    def start(cloud_url: str, **params: object) -> RunningClientGateway:
        # short long polls: the cloud gateway's shutdown waits for the one in progress
        gateway = wiring.start(client_settings(settings, cloud_url, **params),
                               poll_timeout_s=1.0)
        started.append(gateway)
        assert gateway.host.ready.wait(10), "client gateway did not come up"
        assert gateway.worker.ready.wait(10), "outbox worker did not come up"
        return gateway

    yield start
    for gateway in started:
        with contextlib.suppress(Exception):
            gateway.stop()


