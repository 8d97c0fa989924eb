"""Delivering a durable outbox queue (:mod:`microservice_interconnect.outbox`) in order.

``OutboxWorker`` consumes that queue one message at a time (prefetch 1, manual acks) and hands
each to a ``deliver`` function on a worker thread. A message is acked only once it was delivered
(or found undeliverable for good, in which case a copy goes to ``<queue>.rejected``); while the
other side is away the worker keeps the *same* message unacked and tries it again after an
exponential back-off, so nothing behind it overtakes it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from pika.channel import Channel
from pika.spec import Basic, BasicProperties

from microservice_interconnect import wire
from microservice_interconnect.errors import ServiceUnavailable
from microservice_interconnect.link import AmqpLink, await_callback
from microservice_interconnect.outbox import (
    PERSISTENT,
    Confirms,
    ConnectionLostError,
    decode_message,
)

logger = logging.getLogger(__name__)

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
PROBE_INTERVAL_S = 0.25
"""How often a back-off asks the probe whether the destination is back."""
OUTAGE_LOG_INTERVAL_S = 60.0
REJECTED_SUFFIX = ".rejected"


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
        self._confirms = Confirms()
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
            raise ConnectionLostError()
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
                if isinstance(exc, ConnectionLostError):
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
