"""A durable, ordered outbox on the broker: reports that must reach the other side eventually.

``Outbox.send`` puts ``{"rpc": <name>, "body": <request>}`` as a persistent message on a durable
queue and returns once the broker has *confirmed* it (publisher confirms), so a report handed
over survives a crash of the sender, of the forwarder and of the broker itself.

:mod:`microservice_interconnect.outbox_worker` delivers the queue's messages on the other side.

Delivery is at-least-once: a message delivered just before a connection loss (or published again
after a lost confirm) can arrive twice, so what is sent this way should be idempotent or tolerate
a repeat (an upsert of stats, a status report).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pika
from pika.channel import Channel
from pika.spec import Basic, BasicProperties
from pydantic import BaseModel

from agata_contracts.rpc import RpcSpec
from microservice_interconnect import wire
from microservice_interconnect.errors import ServiceUnavailable
from microservice_interconnect.link import AmqpLink, await_callback

logger = logging.getLogger(__name__)

PERSISTENT = 2


class ConnectionLostError(Exception):
    """The channel went away before the broker confirmed a message."""


# -- message format ---------------------------------------------------------------------------


def encode_message(rpc_name: str, request: BaseModel) -> bytes:
    """The outbox message for one request: ``{"rpc": name, "body": <request JSON>}``."""
    return (b'{"rpc":' + json.dumps(rpc_name).encode() + b',"body":'
            + request.model_dump_json().encode() + b"}")


def decode_message(body: bytes) -> tuple[str, bytes]:
    """(RPC name, request JSON) of an outbox message; ``ValueError`` when it is malformed."""
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    name = message.get("rpc")
    if not isinstance(name, str) or not name:
        raise ValueError("no 'rpc' name")
    if not isinstance(message.get("body"), dict):
        raise ValueError("no 'body' object")
    return name, wire.dumps(message["body"])


def _as_request(spec: RpcSpec[Any, Any], request: BaseModel | dict[str, Any]) -> BaseModel:
    if isinstance(request, dict):
        validated: BaseModel = spec.request.model_validate(request)
        return validated
    if not isinstance(request, spec.request):
        raise TypeError(f"{spec.name} takes {spec.request.__name__}, "
                        f"not {type(request).__name__}")
    checked: BaseModel = request
    return checked


def _loop_is_current(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


# -- sending ----------------------------------------------------------------------------------


class Confirms:
    """Publisher confirms on one channel: its delivery tags and the futures awaiting them."""

    def __init__(self) -> None:
        self.channel: Channel | None = None
        self._next_tag = 1
        self._unconfirmed: dict[int, asyncio.Future[bool]] = {}

    async def enable(self, link: AmqpLink, channel: Channel) -> None:
        """Put ``channel`` in confirm mode; tags start again at 1."""
        await await_callback(link.loop, channel.confirm_delivery,
                             lambda frame: self._on_confirm(channel, frame))
        self.channel = channel
        self._next_tag = 1

    def publish(self, loop: asyncio.AbstractEventLoop, routing_key: str, body: bytes,
                properties: BasicProperties) -> asyncio.Future[bool]:
        """Publish on the confirming channel; the future says whether the broker took it."""
        channel = self.channel
        if channel is None or not channel.is_open:
            raise ConnectionLostError()
        tag = self._next_tag
        self._next_tag += 1
        confirmed: asyncio.Future[bool] = loop.create_future()
        self._unconfirmed[tag] = confirmed
        channel.basic_publish("", routing_key, body, properties)
        return confirmed

    def lost(self) -> None:
        """The channel is gone: every waiting publish learns it."""
        self.channel = None
        pending, self._unconfirmed = self._unconfirmed, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionLostError())

    def _on_confirm(self, channel: Channel, frame: Any) -> None:
        if channel is not self.channel:
            return
        method = frame.method
        tags = ([t for t in self._unconfirmed if t <= method.delivery_tag] if method.multiple
                else [method.delivery_tag])
        for tag in tags:
            future = self._unconfirmed.pop(tag, None)
            if future is not None and not future.done():
                future.set_result(isinstance(method, Basic.Ack))


class Outbox:
    """Puts requests on a durable queue; each ``send`` returns once the broker confirmed it."""

    def __init__(self, link: AmqpLink, queue: str) -> None:
        self.link = link
        self.queue = queue
        self._confirms = Confirms()
        self._ready: asyncio.Event | None = None
        link.add_user(self)

    def __repr__(self) -> str:
        return f"Outbox({self.queue})"

    def _ready_event(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    async def on_connected(self, link: AmqpLink) -> None:
        """Open a confirming channel and declare the durable queue."""
        channel = await link.open_channel(on_close=self._channel_closed)
        await await_callback(link.loop, channel.queue_declare, self.queue, durable=True,
                             arguments=link.broker.durable_arguments())
        await self._confirms.enable(link, channel)
        self._ready_event().set()

    def on_disconnected(self) -> None:
        """Forget the channel; sends waiting for a confirm publish again once reconnected."""
        self._lost()

    def _channel_closed(self, channel: Channel, _reason: BaseException) -> None:
        if channel is self._confirms.channel:
            self._lost()

    def _lost(self) -> None:
        self._ready_event().clear()
        self._confirms.lost()

    async def _send(self, body: bytes, what: str, timeout: float) -> None:
        """Publish and wait for the confirm, publishing again after a reconnect (loop only)."""
        loop = self.link.loop
        deadline = loop.time() + timeout
        properties = BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=wire.CONTENT_TYPE,
            message_id=uuid.uuid4().hex,
            timestamp=int(time.time()),
        )
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ServiceUnavailable(
                    f"{what}: broker {self.link.address} unreachable (waited {timeout:.1f} s)")
            ready = self._ready_event()
            if not ready.is_set():
                try:
                    await asyncio.wait_for(ready.wait(), remaining)
                except TimeoutError:
                    raise ServiceUnavailable(
                        f"{what}: broker {self.link.address} unreachable "
                        f"(waited {timeout:.1f} s)") from None
                continue
            try:
                confirmed = self._confirms.publish(loop, self.queue, body, properties)
            except ConnectionLostError:
                self._lost()
                continue
            except pika.exceptions.AMQPError as exc:
                logger.warning("%s: publish failed (%s); trying again", what, exc)
                self._lost()
                continue
            try:
                acked = await asyncio.wait_for(confirmed, remaining)
            except TimeoutError:
                raise ServiceUnavailable(
                    f"{what}: broker {self.link.address} did not confirm within "
                    f"{timeout:.1f} s") from None
            except ConnectionLostError:
                logger.warning("%s: connection lost before the broker confirmed; "
                               "publishing again once reconnected", what)
                continue
            if not acked:
                raise ServiceUnavailable(f"{what}: broker {self.link.address} refused the message")
            return

    def _prepare(self, spec: RpcSpec[Any, Any], request: BaseModel | dict[str, Any]
                 ) -> tuple[bytes, str]:
        body = encode_message(spec.name, _as_request(spec, request))
        return body, f"outbox {self.queue} ({spec.name})"

    async def asend(self, spec: RpcSpec[Any, Any], request: BaseModel | dict[str, Any],
                    timeout: float = 10.0) -> None:
        """``send`` for asyncio code, on the link's loop or any other."""
        body, what = self._prepare(spec, request)
        if _loop_is_current(self.link.loop):
            await self._send(body, what, timeout)
            return
        future = self.link.run_coroutine(self._send(body, what, timeout))
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), timeout + 1)
        except TimeoutError:
            raise ServiceUnavailable(f"{what}: link {self.link.name} is not running") from None

    def send(self, spec: RpcSpec[Any, Any], request: BaseModel | dict[str, Any],
             timeout: float = 10.0) -> None:
        """Queue a request durably (from any thread but the link's loop).

        Returns once the broker confirmed the persistent message; raises ``ServiceUnavailable``
        when the broker cannot be reached, or does not confirm, within ``timeout`` seconds.
        """
        if _loop_is_current(self.link.loop):
            raise RuntimeError("Outbox.send blocks: use asend on the link's loop")
        body, what = self._prepare(spec, request)
        future = self.link.run_coroutine(self._send(body, what, timeout))
        try:
            future.result(timeout + 1)
        except FutureTimeout:
            future.cancel()
            raise ServiceUnavailable(f"{what}: link {self.link.name} is not running") from None
