"""RPC client: direct reply-to on the process's link, correlation ids, per-call timeouts.

Usable from plain threads (``call``) and from asyncio code (``acall``), whichever loop it runs
on. A call made before the link first connected waits for it, up to its timeout; once the link
has been up, a call made while the broker is away waits only ``reconnect_wait_s`` (a brief
blip) and then fails fast with ``ServiceUnavailable``, so callers answer 503 at once instead of
hanging for the whole timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pika
from pika.channel import Channel
from pika.spec import Basic, BasicProperties
from pydantic import BaseModel, ValidationError

from agata_contracts.rpc import RequestT, ResponseT, RpcSpec
from microservice_interconnect import wire
from microservice_interconnect.errors import RpcError, RpcTimeout, ServiceUnavailable
from microservice_interconnect.link import AmqpLink, await_callback

logger = logging.getLogger(__name__)

REPLY_TO = "amq.rabbitmq.reply-to"


class RpcClient:
    """Calls RPCs by name over one channel of the link, replies on direct reply-to."""

    def __init__(self, link: AmqpLink, *, timeout_s: float = 10.0, queue_prefix: str = "",
                 reconnect_wait_s: float = 0.05) -> None:
        self.link = link
        self.timeout_s = timeout_s
        self.reconnect_wait_s = reconnect_wait_s
        self._was_ready = False
        self.queue_prefix = queue_prefix
        self._channel: Channel | None = None
        self._ready: asyncio.Event | None = None
        self._pending: dict[str, _Waiter] = {}
        self._ids = itertools.count()
        self._id_prefix = f"{os.getpid():x}.{os.urandom(3).hex()}."
        link.add_user(self)

    def __repr__(self) -> str:
        return f"RpcClient({self.link.name})"

    def _ready_event(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    async def on_connected(self, link: AmqpLink) -> None:
        """Open the reply channel and start consuming direct replies."""
        channel = await link.open_channel()
        channel.add_on_return_callback(self._on_return)
        await await_callback(
            link.loop, channel.basic_consume, REPLY_TO, self._on_reply, auto_ack=True
        )
        self._channel = channel
        self._was_ready = True
        self._ready_event().set()

    def on_disconnected(self) -> None:
        """Fail every call waiting for a reply: it can no longer arrive."""
        self._channel = None
        self._ready_event().clear()
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.fail(
                ServiceUnavailable(
                    f"connection to broker {self.link.address} was lost before the reply"
                )
            )

    def _on_reply(self, _channel: Channel, _method: Basic.Deliver, props: BasicProperties,
                  body: bytes) -> None:
        waiter = self._pending.pop(props.correlation_id or "", None)
        if waiter is not None:
            waiter.resolve(body)

    def _on_return(self, _channel: Channel, method: Basic.Return, props: BasicProperties,
                   _body: bytes) -> None:
        waiter = self._pending.pop(props.correlation_id or "", None)
        if waiter is not None:
            waiter.fail(
                ServiceUnavailable(f"no service is serving {method.routing_key} (queue missing)")
            )

    def _publish(self, name: str, body: bytes, timeout: float, waiter: _Waiter) -> None:
        """Publish one request (loop thread); the waiter learns the reply or the failure."""
        channel = self._channel
        if channel is None or not channel.is_open:
            waiter.fail(ServiceUnavailable(
                f"{name}: broker {self.link.address} unreachable (waited {timeout:.1f} s)"))
            return
        correlation_id = f"{self._id_prefix}{next(self._ids)}"
        waiter.correlation_id = correlation_id
        self._pending[correlation_id] = waiter
        properties = BasicProperties(
            reply_to=REPLY_TO,
            correlation_id=correlation_id,
            content_type=wire.CONTENT_TYPE,
            expiration=str(max(int(timeout * 1000), 1)),
        )
        try:
            channel.basic_publish("", f"{self.queue_prefix}{name}", body, properties,
                                  mandatory=True)
        except pika.exceptions.AMQPError as exc:
            self._pending.pop(correlation_id, None)
            waiter.fail(ServiceUnavailable(f"{name}: cannot publish to the broker ({exc})"))

    def _send_when_ready(self, name: str, body: bytes, timeout: float, waiter: _Waiter) -> None:
        """Publish now, or once the link is back if the broker is away (loop thread)."""
        ready = self._ready_event()
        if ready.is_set():
            self._publish(name, body, timeout, waiter)
            return
        started = self.link.loop.time()
        wait = min(timeout, self.reconnect_wait_s) if self._was_ready else timeout

        async def publish_when_ready() -> None:
            try:
                await asyncio.wait_for(ready.wait(), wait)
            except TimeoutError:
                waiter.fail(ServiceUnavailable(
                    f"{name}: broker {self.link.address} unreachable"
                    f"{' (connection lost; reconnecting)' if self._was_ready else ''}"))
                return
            left = max(timeout - (self.link.loop.time() - started), 0.001)
            self._publish(name, body, left, waiter)

        self.link.loop.create_task(publish_when_ready())

    def _timed_out(self, name: str, timeout: float, waiter: _Waiter) -> RpcError:
        """The error for a call out of time: the broker's absence if it was never published."""
        if waiter.correlation_id is None:
            return ServiceUnavailable(
                f"{name}: broker {self.link.address} unreachable (waited {timeout:.1f} s)")
        return _timeout(name, timeout)

    def _forget(self, waiter: _Waiter) -> None:
        if waiter.correlation_id is not None:
            self._pending.pop(waiter.correlation_id, None)

    async def acall_raw(self, name: str, body: bytes, timeout: float | None = None) -> bytes:
        """Send a JSON body to RPC ``name``; return the raw reply envelope."""
        timeout = self.timeout_s if timeout is None else timeout
        if asyncio.get_running_loop() is self.link.loop:
            future: asyncio.Future[bytes] = self.link.loop.create_future()
            waiter = _Waiter(future)
            self._send_when_ready(name, body, timeout, waiter)
            try:
                async with asyncio.timeout(timeout):
                    return await future
            except TimeoutError:
                raise self._timed_out(name, timeout, waiter) from None
            finally:
                self._forget(waiter)
        thread_future: ThreadFuture[bytes] = ThreadFuture()
        thread_waiter = _Waiter(thread_future)
        self.link.call_soon(self._send_when_ready, name, body, timeout, thread_waiter)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.wrap_future(thread_future)
        except TimeoutError:
            raise self._timed_out(name, timeout, thread_waiter) from None
        finally:
            self.link.call_soon(self._forget, thread_waiter)

    def call_raw(self, name: str, body: bytes, timeout: float | None = None) -> bytes:
        """Blocking ``acall_raw`` for plain threads (never from the link's own loop)."""
        timeout = self.timeout_s if timeout is None else timeout
        future: ThreadFuture[bytes] = ThreadFuture()
        waiter = _Waiter(future)
        self.link.call_soon(self._send_when_ready, name, body, timeout, waiter)
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise self._timed_out(name, timeout, waiter) from None
        finally:
            self.link.call_soon(self._forget, waiter)

    async def acall(self, spec: RpcSpec[RequestT, ResponseT], request: RequestT | dict[str, Any],
                    timeout: float | None = None) -> ResponseT:
        """Call a declared RPC from asyncio code; raise ``RpcError`` on a non-200 reply."""
        body = await self.acall_raw(spec.name, _encode(spec, request), timeout)
        return _decode(spec, body)

    def call(self, spec: RpcSpec[RequestT, ResponseT], request: RequestT | dict[str, Any],
             timeout: float | None = None) -> ResponseT:
        """Call a declared RPC from a plain thread; raise ``RpcError`` on a non-200 reply."""
        return _decode(spec, self.call_raw(spec.name, _encode(spec, request), timeout))


class _Waiter:
    """Where one call's reply goes: an asyncio future on the link's loop or a thread future."""

    __slots__ = ("correlation_id", "future")

    def __init__(self, future: asyncio.Future[bytes] | ThreadFuture[bytes]) -> None:
        self.future = future
        self.correlation_id: str | None = None

    def resolve(self, body: bytes) -> None:
        # a thread future may be cancelled from another thread between the check and the set
        with contextlib.suppress(InvalidStateError, asyncio.InvalidStateError):
            if not self.future.done():
                self.future.set_result(body)

    def fail(self, error: BaseException) -> None:
        with contextlib.suppress(InvalidStateError, asyncio.InvalidStateError):
            if not self.future.done():
                self.future.set_exception(error)


def _timeout(name: str, timeout: float) -> RpcTimeout:
    return RpcTimeout(f"{name}: no reply within {timeout:.1f} s (is the service running?)")


def _encode(spec: RpcSpec[Any, Any], request: BaseModel | dict[str, Any]) -> bytes:
    if isinstance(request, dict):
        try:
            model: BaseModel = spec.request.model_validate(request)
        except ValidationError as exc:
            raise wire.bad_request_from(exc, f"request for {spec.name}") from None
    else:
        model = request
    return model.model_dump_json().encode()


def _decode(spec: RpcSpec[Any, ResponseT], body: bytes) -> ResponseT:
    status, result, envelope = wire.split_reply(body)
    wire.raise_for_envelope(status, envelope)
    try:
        return spec.response.model_validate(result)
    except ValidationError as exc:
        raise RpcError(f"{spec.name}: reply does not match its contract: {exc}") from None
