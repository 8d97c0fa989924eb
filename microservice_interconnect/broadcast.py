"""Fan-out notifications: one publisher, any number of listeners, nothing kept for absentees.

Used for "something changed, look again" signals (a task started or ended), where a missed
message only delays a listener until its next poll.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

import pika
from pika.channel import Channel
from pika.spec import Basic, BasicProperties
from pydantic import BaseModel, ValidationError

from microservice_interconnect import wire
from microservice_interconnect.link import AmqpLink, await_callback

logger = logging.getLogger(__name__)

MessageT = TypeVar("MessageT", bound=BaseModel)


async def _declare(link: AmqpLink, exchange: str) -> Channel:
    channel = await link.open_channel()
    await await_callback(link.loop, channel.exchange_declare, exchange, exchange_type="fanout",
                         durable=False)
    return channel


class Broadcaster(Generic[MessageT]):
    """Publishes messages of one model on a fanout exchange; drops them while disconnected."""

    def __init__(self, link: AmqpLink, exchange: str) -> None:
        self.link = link
        self.exchange = exchange
        self._channel: Channel | None = None
        link.add_user(self)

    def __repr__(self) -> str:
        return f"Broadcaster({self.exchange})"

    async def on_connected(self, link: AmqpLink) -> None:
        """Declare the exchange."""
        self._channel = await _declare(link, self.exchange)

    def on_disconnected(self) -> None:
        """Forget the channel."""
        self._channel = None

    def publish(self, message: MessageT) -> None:
        """Send a message (from any thread); never blocks or raises."""
        self.link.call_soon(self._publish, message.model_dump_json().encode())

    def _publish(self, body: bytes) -> None:
        channel = self._channel
        if channel is None or not channel.is_open:
            logger.debug("%s: dropped (not connected)", self.exchange)
            return
        try:
            channel.basic_publish(self.exchange, "", body,
                                  pika.BasicProperties(content_type=wire.CONTENT_TYPE))
        except Exception as exc:
            logger.debug("%s: dropped (%s)", self.exchange, exc)


class Subscriber(Generic[MessageT]):
    """Receives a fanout exchange's messages on a private queue and hands them to a callback.

    The callback runs on the link's loop: keep it short (set an event, queue work).
    """

    def __init__(self, link: AmqpLink, exchange: str, model: type[MessageT],
                 callback: Callable[[MessageT], None]) -> None:
        self.link = link
        self.exchange = exchange
        self.model = model
        self.callback = callback
        self.connected = False
        self.connections = 0
        """How many times it has (re)connected: messages sent between two connections are
        missed, so what was built from earlier messages is stale once this changes."""
        link.add_user(self)

    def __repr__(self) -> str:
        return f"Subscriber({self.exchange})"

    async def on_connected(self, link: AmqpLink) -> None:
        """Bind a private, exclusive queue to the exchange and consume it."""
        channel = await _declare(link, self.exchange)
        frame = await await_callback(link.loop, channel.queue_declare, "", exclusive=True)
        queue = frame.method.queue
        await await_callback(link.loop, channel.queue_bind, queue, self.exchange)
        await await_callback(link.loop, channel.basic_consume, queue, self._on_message,
                             auto_ack=True)
        self.connections += 1
        self.connected = True

    def on_disconnected(self) -> None:
        """Messages sent meanwhile are missed; the listener's poll covers for them."""
        self.connected = False

    def _on_message(self, _channel: Channel, _method: Basic.Deliver, _props: BasicProperties,
                    body: bytes) -> None:
        try:
            message = self.model.model_validate_json(body)
        except ValidationError as exc:
            logger.warning("%s: ignored a malformed message: %s", self.exchange, exc)
            return
        try:
            self.callback(message)
        except Exception:
            logger.exception("%s: listener failed", self.exchange)
