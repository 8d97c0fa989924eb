"""A running task seen from the device: its files through the client gateway, its events."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time

import pytest
from cg_helpers import await_until, start_sleeping_task, stop_task
from support import Cloud, Gateway

from agata_contracts.queues import task_events_exchange
from agata_contracts.tasks import (
    CLIENT_REQUESTING_TASK,
    DOWNLOAD_TASK_FILE,
    TaskEvent,
)
from agata_contracts.users import UPDATE_USER_INFO
from microservice_interconnect import NotFound, Unauthorized
from microservice_interconnect.broadcast import Subscriber

DATA = bytes(range(256)) * 40


async def test_download_with_the_offered_credential(gateway: Gateway, cloud: Cloud, start_cg,
                                                    device) -> None:
    await asyncio.to_thread(start_cg, gateway.url)
    client = device.runtime.client
    task = await asyncio.to_thread(start_sleeping_task, cloud, {"weights.bin": DATA})
    try:
        await asyncio.to_thread(client.call, UPDATE_USER_INFO, {"user_id": "dev-d"})
        offers = await asyncio.to_thread(client.call, CLIENT_REQUESTING_TASK,
                                         {"client_id": "dev-d"})
        (offer,) = offers.tasks
        assert offer.task_id == task.id and offer.download_credential

        content = await asyncio.to_thread(client.call, DOWNLOAD_TASK_FILE, {
            "task_id": task.id, "filename": "weights.bin",
            "credential": offer.download_credential, "client_id": "dev-d"}, 30)
        assert content.content == DATA and content.size == len(DATA)
        assert content.sha256 == hashlib.sha256(DATA).hexdigest() == next(
            f.sha256 for f in offer.files if f.name == "weights.bin")
        assert content.name == "weights.bin"
        # the reply travels base64-encoded, as the cloud's own
        assert content.model_dump(mode="json")["content"] == base64.b64encode(DATA).decode()

        with pytest.raises(Unauthorized):
            await asyncio.to_thread(client.call, DOWNLOAD_TASK_FILE, {
                "task_id": task.id, "filename": "weights.bin", "credential": "wrong",
                "client_id": "dev-d"})
        with pytest.raises(NotFound):
            await asyncio.to_thread(client.call, DOWNLOAD_TASK_FILE, {
                "task_id": task.id, "filename": "nothing.bin",
                "credential": offer.download_credential, "client_id": "dev-d"})
    finally:
        await asyncio.to_thread(stop_task, cloud, task.id)


async def test_task_events_reach_the_client_broker(gateway: Gateway, cloud: Cloud, start_cg,
                                                   device) -> None:
    received: list[tuple[float, TaskEvent]] = []
    lock = threading.Lock()

    def on_event(event: TaskEvent) -> None:
        with lock:
            received.append((time.monotonic(), event))

    exchange = task_events_exchange(device.settings.client_broker.queue_prefix)
    subscriber = Subscriber(device.runtime.link, exchange,
                            TaskEvent, on_event)
    running = await asyncio.to_thread(start_cg, gateway.url)
    assert await await_until(lambda: subscriber.connected and running.relay.synced.is_set(), 10)
    # a device is told only of the tasks it may take: this one is known, and the task takes all
    await asyncio.to_thread(device.runtime.client.call, UPDATE_USER_INFO,
                            {"user_id": running.relay.client_id})

    task = await asyncio.to_thread(start_sleeping_task, cloud)
    started = time.monotonic()

    def seen(status: str) -> list[float]:
        with lock:
            return [at for at, event in received
                    if event.task_id == task.id and event.status.value == status]

    try:
        assert await await_until(lambda: bool(seen("running")), 1.0, interval=0.01), received
        assert seen("running")[0] - started < 1.0
    finally:
        await asyncio.to_thread(stop_task, cloud, task.id)
    assert await await_until(lambda: bool(seen("stopped")), 5, interval=0.02), received
    assert running.relay.relayed >= 2
