"""Helpers for the client gateway tests: settings, waiting, broker peeks, a running task."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Callable, Iterator

import pika
from support import CLIENT_TOKEN, Cloud, free_port

from agata_common.config import BrokerSettings, Settings
from agata_contracts.tasks import (
    CREATE_TASK,
    START_SERVER_TASK,
    STOP_SERVER_TASK,
    UPLOAD_TASK_FILE,
    Task,
)
from microservice_interconnect import Conflict

SLEEPING_SERVER = b"""\
import time
from task_daemon_lib import TaskReporter

TaskReporter()
time.sleep(30)
"""


def client_settings(base: Settings, cloud_url: str, **params: object) -> Settings:
    """``base`` with the client gateway pointed at ``cloud_url`` with the client token."""
    update = {"cloud_url": cloud_url, "client_token": CLIENT_TOKEN, **params}
    return base.model_copy(update={"client_params": base.client_params.model_copy(update=update)})


def closed_port_url() -> str:
    """A URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (blocking)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


async def await_until(predicate: Callable[[], bool], timeout: float,
                      interval: float = 0.05) -> bool:
    """``wait_until`` for async tests: the predicate runs in a thread, the loop keeps going."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(interval)
    return await asyncio.to_thread(predicate)


class Broker:
    """Plain pika access to the client broker, for looking into queues."""

    def __init__(self, broker: BrokerSettings) -> None:
        self.settings = broker

    @contextlib.contextmanager
    def channel(self) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
        connection = pika.BlockingConnection(pika.ConnectionParameters(
            host=self.settings.host, port=self.settings.port,
            virtual_host=self.settings.virtual_host,
            credentials=pika.PlainCredentials(self.settings.username, self.settings.password)))
        try:
            yield connection.channel()
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def counts(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue; (-1, -1) when it does not exist."""
        try:
            with self.channel() as channel:
                frame = channel.queue_declare(queue, passive=True)
                return frame.method.message_count, frame.method.consumer_count
        except pika.exceptions.ChannelClosedByBroker:
            return -1, -1

    def publish_raw(self, queue: str, body: bytes) -> None:
        with self.channel() as channel:
            channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))

    def take_all(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        """Every message of a queue (acked: they are gone afterwards)."""
        taken = []
        with self.channel() as channel:
            while True:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return taken
                taken.append((properties, body))

    def delete(self, queues: list[str]) -> None:
        with contextlib.suppress(Exception), self.channel() as channel:
            for queue in queues:
                channel.queue_delete(queue)


def start_sleeping_task(cloud: Cloud, files: dict[str, bytes] | None = None) -> Task:
    """Create a task with a server.py that sleeps 30 s (plus ``files``) and start it."""
    task = cloud.client.call(CREATE_TASK, {"port": free_port()})
    for name, content in {"server.py": SLEEPING_SERVER, **(files or {})}.items():
        cloud.client.call(UPLOAD_TASK_FILE, {"task_id": task.id, "filename": name,
                                             "content": base64.b64encode(content).decode()})
    return cloud.client.call(START_SERVER_TASK, {"task_id": task.id})


def stop_task(cloud: Cloud, task_id: str) -> None:
    """Stop a task's server if it still runs."""
    with contextlib.suppress(Conflict):
        cloud.client.call(STOP_SERVER_TASK, {"task_id": task_id})
