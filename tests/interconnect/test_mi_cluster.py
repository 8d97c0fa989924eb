"""A broker given as a cluster's nodes: the link moves to the next node when its node goes;
durable queues can be declared as quorum queues (replicated across a cluster's nodes)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pika
import pytest
from interconnect.mi_helpers import TcpProxy, blocking_connection, delete_queues, wait_until

from microservice_interconnect.link import AmqpLink
from microservice_interconnect.outbox import Outbox
from microservice_interconnect.settings import BrokerSettings


def test_nodes_are_read_with_their_ports() -> None:
    broker = BrokerSettings(host="rabbit-1, rabbit-2:5673,[::1]:5674,10.0.0.7", port=5671)
    assert broker.nodes() == [("rabbit-1", 5671), ("rabbit-2", 5673), ("::1", 5674),
                              ("10.0.0.7", 5671)]
    assert BrokerSettings().nodes() == [("localhost", 5672)]
    with pytest.raises(ValueError):
        BrokerSettings(host="rabbit-1;rm -rf /")


@pytest.fixture
def two_nodes() -> Iterator[tuple[TcpProxy, TcpProxy]]:
    """Two ways to the one broker, standing for two nodes of a cluster."""
    first, second = TcpProxy().start(), TcpProxy().start()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def test_a_link_moves_to_the_next_node_when_its_node_goes(
        two_nodes: tuple[TcpProxy, TcpProxy]) -> None:
    first, second = two_nodes
    broker = BrokerSettings(host=f"127.0.0.1:{first.port},127.0.0.1:{second.port}",
                            connect_timeout_s=2)
    link = AmqpLink(broker, name="cluster-test")
    link.start()
    try:
        assert wait_until(lambda: link.connected, 10)
        assert link.address.endswith(f":{first.port}/")
        first.refusing = True
        first.cut()
        assert wait_until(lambda: link.connected and link.connect_count == 2, 15), link.address
        assert link.address.endswith(f":{second.port}/")
        assert second.open_connections == 1
    finally:
        link.close()


async def test_durable_queues_can_be_quorum_queues() -> None:
    broker = BrokerSettings(host="127.0.0.1", durable_queue_type="quorum")
    queue = f"test-quorum-{uuid.uuid4().hex[:8]}"
    link = AmqpLink(broker, name="quorum-test")
    outbox = Outbox(link, queue)
    link.start()
    try:
        assert await asyncio.to_thread(wait_until, lambda: link.connected, 10)
        await asyncio.sleep(0.5)
        connection = blocking_connection(broker)
        try:
            channel = connection.channel()
            channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
            with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="x-queue-type"):
                connection.channel().queue_declare(queue, durable=True)
        finally:
            connection.close()
        assert outbox.queue == queue
    finally:
        link.close()
        delete_queues(broker, [queue])
