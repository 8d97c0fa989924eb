"""The outbox itself across broker connection losses (a cuttable proxy in front of RabbitMQ)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from cg_helpers import Broker, wait_until
from interconnect.mi_helpers import TcpProxy

from agata_common.config import Settings
from agata_contracts.users import UPDATE_USER_INFO
from microservice_interconnect.link import AmqpLink
from microservice_interconnect.outbox import Outbox
from microservice_interconnect.outbox_worker import DeliveryResult, OutboxWorker


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    started = TcpProxy().start()
    yield started
    started.stop()


@pytest.fixture
def queue(settings: Settings) -> Iterator[str]:
    name = f"{settings.client_broker.queue_prefix}outbox-loss"
    yield name
    Broker(settings.client_broker).delete([name, f"{name}.rejected"])


def _link(settings: Settings, name: str, port: int | None = None) -> AmqpLink:
    broker = settings.client_broker
    if port is not None:
        broker = broker.model_copy(update={"host": "127.0.0.1", "port": port})
    return AmqpLink(broker, name=name).start()


def test_worker_keeps_order_across_a_broker_connection_loss(settings: Settings, proxy: TcpProxy,
                                                            queue: str) -> None:
    failing = threading.Event()
    failing.set()
    attempts: list[int] = []
    delivered: list[int] = []

    def deliver(rpc_name: str, body: bytes) -> DeliveryResult:
        assert rpc_name == UPDATE_USER_INFO.name
        assert threading.current_thread() is not threading.main_thread()
        value = json.loads(body)["data_qnt"]
        attempts.append(value)
        if failing.is_set():
            return DeliveryResult.retry("cloud away")
        delivered.append(value)
        return DeliveryResult.DELIVERED

    sender_link = _link(settings, "test_sender")
    worker_link = _link(settings, "test_worker", proxy.port)
    worker = OutboxWorker(worker_link, queue, deliver, min_backoff_s=0.05, max_backoff_s=0.2)
    try:
        outbox = Outbox(sender_link, queue)
        for value in (1, 2, 3):
            outbox.send(UPDATE_USER_INFO, {"user_id": "dev-l", "data_qnt": value})
        assert wait_until(lambda: len(attempts) >= 3, 5)
        assert set(attempts) == {1}, "only the first message is tried while it fails"

        assert proxy.cut() >= 1
        assert wait_until(lambda: worker_link.connect_count >= 2 and worker.ready.is_set(), 10)
        failing.clear()
        assert wait_until(lambda: len(delivered) >= 3, 10), delivered
        assert delivered == [1, 2, 3]
        broker = Broker(settings.client_broker)
        assert wait_until(lambda: broker.counts(queue) == (0, 1), 5), broker.counts(queue)
    finally:
        worker.stop()
        worker_link.close()
        sender_link.close()


def test_send_waits_for_the_broker_to_come_back(settings: Settings, proxy: TcpProxy,
                                                queue: str) -> None:
    link = _link(settings, "test_sender", proxy.port)
    try:
        outbox = Outbox(link, queue)
        outbox.send(UPDATE_USER_INFO, {"user_id": "dev-w", "data_qnt": 1})
        proxy.refusing = True
        proxy.cut()
        outcome: list[float] = []

        def send() -> None:
            started = time.monotonic()
            outbox.send(UPDATE_USER_INFO, {"user_id": "dev-w", "data_qnt": 2}, timeout=10)
            outcome.append(time.monotonic() - started)

        thread = threading.Thread(target=send)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive(), "send returned while the broker was away"
        proxy.refusing = False
        thread.join(10)
        assert outcome and outcome[0] >= 0.5
        assert Broker(settings.client_broker).counts(queue)[0] == 2
    finally:
        link.close()
