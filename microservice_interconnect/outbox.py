"""A durable, ordered outbox on the broker: reports that must reach the other side eventually.

``Outbox.send`` puts ``{"rpc": <name>, "body": <request>}`` as a persistent message on a durable
queue and returns once the broker has *confirmed* it (publisher confirms), so a report handed
over survives a crash of the sender, of the forwarder and of the broker itself.

``OutboxWorker`` consumes that queue one message at a time (prefetch 1, manual acks) and hands
each to a ``deliver`` function on a worker thread. A message is acked only once it was delivered
(or found undeliverable for good, in which case a copy goes to ``<queue>.rejected``); while the
other side is away the worker keeps the *same* message unacked and tries it again after an
exponential back-off, so nothing behind it overtakes it.

Delivery is at-least-once: a message delivered just before a connection loss (or published again
after a lost confirm) can arrive twice, so what is sent this way should be idempotent or tolerate
a repeat (an upsert of stats, a status report).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

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
MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
PROBE_INTERVAL_S = 0.25
"""How often a back-off asks the probe whether the destination is back."""
OUTAGE_LOG_INTERVAL_S = 60.0
REJECTED_SUFFIX = ".rejected"


class _ConnectionLostError(Exception):
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


class _Confirms:
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
            raise _ConnectionLostError()
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
                future.set_exception(_ConnectionLostError())

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
        self._confirms = _Confirms()
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
            except _ConnectionLostError:
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
            except _ConnectionLostError:
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


# -- delivering -------------------------------------------------------------------------------


class DeliveryStatus(StrEnum):
    """What became of one delivery attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of ``deliver``: delivered, worth retrying later, or never deliverable."""

    status: DeliveryStatus
    reason: str = ""

    DELIVERED: ClassVar[DeliveryResult]

    @classmethod
    def retry(cls, reason: str) -> DeliveryResult:
        """The other side is away or failed transiently: keep the message, try again later."""
        return cls(DeliveryStatus.RETRY, reason)

    @classmethod
    def rejected(cls, reason: str) -> DeliveryResult:
        """The other side refused the message for good: set it aside."""
        return cls(DeliveryStatus.REJECTED, reason)


DeliveryResult.DELIVERED = DeliveryResult(DeliveryStatus.DELIVERED)

Deliver = Callable[[str, bytes], DeliveryResult]
"""Delivers one request (RPC name, JSON body); runs on the worker thread."""


@dataclass(eq=False)
class _Held:
    """One message taken from the queue and not yet acked."""

    channel: Channel
    delivery_tag: int
    properties: BasicProperties
    body: bytes
    redelivered: bool
    abandoned: threading.Event = field(default_factory=threading.Event)


class OutboxWorker:
    """Delivers an outbox queue's messages in order, one at a time, retrying with back-off.

    With a ``probe`` (a cheap "is the destination back?" check, such as its health route), a
    back-off ends as soon as the probe says yes (it is asked every ``probe_interval_s``), so
    delivery resumes within about that long of the destination's return however long the
    back-off had grown.
    """

    def __init__(self, link: AmqpLink, queue: str, deliver: Deliver, *,
                 min_backoff_s: float = MIN_BACKOFF_S,
                 max_backoff_s: float = MAX_BACKOFF_S,
                 probe: Callable[[], bool] | None = None,
                 probe_interval_s: float = PROBE_INTERVAL_S) -> None:
        self.link = link
        self.queue = queue
        self.rejected_queue = queue + REJECTED_SUFFIX
        self.deliver = deliver
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.probe = probe
        self.probe_interval_s = probe_interval_s
        self.ready = threading.Event()
        self.delivered = 0
        self.rejected = 0
        self._backoff = min_backoff_s
        self._outage_since: float | None = None
        self._outage_logged = 0.0
        self._stopping = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._confirms = _Confirms()
        self._consumer_tag: str | None = None
        self._held: set[_Held] = set()
        self._held_lock = threading.Lock()
        link.add_user(self)

    def __repr__(self) -> str:
        return f"OutboxWorker({self.queue})"

    @property
    def _channel(self) -> Channel | None:
        return self._confirms.channel

    # -- link user (loop thread) ------------------------------------------------------------

    async def on_connected(self, link: AmqpLink) -> None:
        """Declare both queues and start consuming, one unacked message at a time."""
        if self._stopping.is_set():
            return
        channel = await link.open_channel(on_close=self._channel_closed)
        durable = link.broker.durable_arguments()
        await await_callback(link.loop, channel.queue_declare, self.queue, durable=True,
                             arguments=durable)
        await await_callback(link.loop, channel.queue_declare, self.rejected_queue, durable=True,
                             arguments=durable)
        await await_callback(link.loop, channel.basic_qos, prefetch_count=1)
        await self._confirms.enable(link, channel)
        self._consumer_tag = channel.basic_consume(self.queue, self._on_message)
        self.ready.set()
        logger.info("outbox worker consuming %s", self.queue)

    def on_disconnected(self) -> None:
        """The message in hand goes back to the queue on the broker: stop working on it."""
        self._lost()

    def _channel_closed(self, channel: Channel, _reason: BaseException) -> None:
        if channel is self._channel:
            self._lost()

    def _lost(self) -> None:
        self._consumer_tag = None
        self.ready.clear()
        self._abandon_held()
        self._confirms.lost()

    def _abandon_held(self) -> None:
        with self._held_lock:
            for held in self._held:
                held.abandoned.set()

    def _on_message(self, channel: Channel, method: Basic.Deliver, properties: BasicProperties,
                    body: bytes) -> None:
        held = _Held(channel, method.delivery_tag, properties, body, bool(method.redelivered))
        if self._stopping.is_set():
            self._requeue(held)
            return
        with self._held_lock:
            self._held.add(held)
        self._executor.submit(self._work, held)

    def _current(self, held: _Held) -> Channel | None:
        """The held message's channel if it is still this worker's open channel."""
        channel = self._channel
        if channel is not None and held.channel is channel and channel.is_open:
            return channel
        return None

    def _ack(self, held: _Held) -> None:
        if self._current(held) is not None:
            held.channel.basic_ack(held.delivery_tag)
        else:
            logger.warning("outbox %s: a message was handled but the broker connection was lost "
                           "before its ack; it will be delivered again", self.queue)

    def _requeue(self, held: _Held) -> None:
        if self._current(held) is not None:
            held.channel.basic_nack(held.delivery_tag, requeue=True)

    async def _set_aside(self, held: _Held, reason: str) -> None:
        """Copy a rejected message to ``<queue>.rejected`` and wait for the broker's confirm."""
        channel = self._channel
        if channel is None or channel is not held.channel or not channel.is_open:
            raise _ConnectionLostError()
        headers = dict(held.properties.headers or {})
        headers.update({"x-rejected-reason": reason[:2000], "x-original-queue": self.queue,
                        "x-rejected-at": int(time.time())})
        properties = BasicProperties(
            delivery_mode=PERSISTENT,
            content_type=held.properties.content_type or wire.CONTENT_TYPE,
            message_id=held.properties.message_id,
            timestamp=held.properties.timestamp,
            headers=headers,
        )
        confirmed = self._confirms.publish(self.link.loop, self.rejected_queue, held.body,
                                           properties)
        if not await confirmed:
            raise ServiceUnavailable(f"broker refused the copy for {self.rejected_queue}")

    async def _waiting(self) -> int | None:
        channel = self._channel
        if channel is None or not channel.is_open:
            return None
        frame = await await_callback(self.link.loop, channel.queue_declare, self.queue,
                                     passive=True)
        return int(frame.method.message_count)

    # -- the worker thread ------------------------------------------------------------------

    def waiting(self, timeout: float = 5.0) -> int | None:
        """Messages ready in the queue (not counting one in hand), or None if unknown."""
        if not self.link.loop.is_running():
            return None
        try:
            count: int | None = self.link.run_coroutine(self._waiting()).result(timeout)
            return count
        except Exception as exc:
            logger.debug("outbox %s: cannot count messages: %s", self.queue, exc)
            return None

    def _work(self, held: _Held) -> None:
        try:
            self._process(held)
        except Exception:
            logger.exception("outbox %s: handling a message failed; it stays queued", self.queue)
            if not held.abandoned.is_set():
                held.abandoned.wait(self._backoff)
                self.link.call_soon(self._requeue, held)
        finally:
            with self._held_lock:
                self._held.discard(held)

    def _process(self, held: _Held) -> None:
        result: DeliveryResult | None
        try:
            rpc_name, body = decode_message(held.body)
        except ValueError as exc:
            rpc_name = "a malformed message"
            result = DeliveryResult.rejected(f"malformed outbox message: {exc}")
        else:
            result = self._deliver_until_settled(held, rpc_name, body)
            if result is None:
                # stopping (the channel is still open: give it back now) or the connection was
                # lost (the broker has already put it back; nothing to do)
                self.link.call_soon(self._requeue, held)
                return
        self._backoff = self.min_backoff_s
        if result.status is DeliveryStatus.REJECTED:
            logger.error("outbox %s: %s rejected for good (%s); moved to %s", self.queue,
                         rpc_name, result.reason, self.rejected_queue)
            try:
                self.link.run_coroutine(self._set_aside(held, result.reason)).result(10)
            except Exception as exc:
                if isinstance(exc, _ConnectionLostError):
                    return
                logger.error("outbox %s: cannot set %s aside (%s); it goes back to the queue",
                             self.queue, rpc_name, exc or type(exc).__name__)
                held.abandoned.wait(self.max_backoff_s)
                self.link.call_soon(self._requeue, held)
                return
            self.rejected += 1
        else:
            self.delivered += 1
        self.link.call_soon(self._ack, held)

    def _deliver_until_settled(self, held: _Held, rpc_name: str, body: bytes
                               ) -> DeliveryResult | None:
        """Deliver, retrying the same message with back-off; None when it was abandoned."""
        while True:
            if held.abandoned.is_set() or self._stopping.is_set():
                return None
            try:
                result = self.deliver(rpc_name, body)
            except Exception as exc:
                logger.exception("outbox %s: delivering %s failed unexpectedly", self.queue,
                                 rpc_name)
                result = DeliveryResult.retry(f"{type(exc).__name__}: {exc}")
            if result.status is not DeliveryStatus.RETRY:
                self._end_outage(rpc_name)
                return result
            self._note_outage(rpc_name, result.reason)
            self._pause(held, self._backoff)
            self._backoff = min(self._backoff * 2, self.max_backoff_s)

    def _pause(self, held: _Held, seconds: float) -> None:
        """Wait out a back-off, ended early when the message is abandoned or the probe says
        the destination is back."""
        if self.probe is None:
            held.abandoned.wait(seconds)
            return
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if held.abandoned.wait(min(self.probe_interval_s, left)):
                return
            try:
                if self.probe():
                    return
            except Exception as exc:
                logger.debug("outbox %s: probe failed: %s", self.queue, exc)

    def _note_outage(self, rpc_name: str, reason: str) -> None:
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = self._outage_logged = now
            waiting = self.waiting()
            logger.warning(
                "outbox %s: cannot deliver %s (%s); %s message(s) waiting; retrying in %.1f s, "
                "backing off to %.0f s", self.queue, rpc_name, reason,
                "?" if waiting is None else waiting + 1, self._backoff, self.max_backoff_s)
        elif now - self._outage_logged >= OUTAGE_LOG_INTERVAL_S:
            self._outage_logged = now
            waiting = self.waiting()
            logger.warning("outbox %s: still cannot deliver for %.0f s (%s); %s message(s) "
                           "waiting", self.queue, now - self._outage_since, reason,
                           "?" if waiting is None else waiting + 1)
        else:
            logger.debug("outbox %s: retry of %s failed (%s); next in %.1f s", self.queue,
                         rpc_name, reason, self._backoff)

    def _end_outage(self, rpc_name: str) -> None:
        if self._outage_since is None:
            return
        down_for = time.monotonic() - self._outage_since
        self._outage_since = None
        waiting = self.waiting()
        logger.info("outbox %s: delivery resumed after %.1f s (%s went through); %s more "
                    "waiting", self.queue, down_for, rpc_name,
                    "?" if waiting is None else waiting)

    # -- shutdown ---------------------------------------------------------------------------

    async def _cancel_consumer(self) -> None:
        channel, tag = self._channel, self._consumer_tag
        if channel is not None and channel.is_open and tag is not None:
            await await_callback(self.link.loop, channel.basic_cancel, tag)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking messages; the one in hand stays unacked and returns to the queue."""
        self._stopping.set()
        self._abandon_held()
        if self.link.loop.is_running():
            with contextlib.suppress(Exception):
                self.link.run_coroutine(self._cancel_consumer()).result(timeout)
        self._executor.shutdown(wait=True)
        self._abandon_held()
