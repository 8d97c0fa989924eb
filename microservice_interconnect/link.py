"""One AMQP connection per process and broker, kept alive on an asyncio loop.

The link owns the connection; RPC services, RPC clients and the event publisher attach to it as
*users*: each is told when the connection is up (and opens its own channels) and when it is
lost. A lost connection is re-opened with exponential back-off, and every user is set up again.
The loop is either the caller's (the gateway's aiohttp loop) or a private I/O thread, so a slow
RPC handler running elsewhere never delays heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from typing import Any, Protocol

import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

from microservice_interconnect.settings import BrokerSettings

logger = logging.getLogger(__name__)

MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0


class LinkUser(Protocol):
    """Something that needs channels on the link."""

    async def on_connected(self, link: AmqpLink) -> None:
        """Open channels, declare queues, start consumers."""

    def on_disconnected(self) -> None:
        """Forget channels; fail what waits on them."""


class AmqpLink:
    """A self-healing AMQP connection running on one asyncio loop."""

    def __init__(
        self,
        broker: BrokerSettings,
        *,
        name: str,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.broker = broker
        self.name = name
        self._owns_loop = loop is None
        self.loop = loop if loop is not None else asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._connection: AsyncioConnection | None = None
        self._users: list[LinkUser] = []
        self._closing = False
        self._started = False
        self._backoff = MIN_BACKOFF_S
        self._reconnect_handle: asyncio.TimerHandle | None = None
        self._closed = asyncio.Event() if not self._owns_loop else None
        self._closed_thread = threading.Event()
        self.connected = False
        self.connect_count = 0
        self._nodes = broker.nodes()
        self._node = 0

    @property
    def closing(self) -> bool:
        """Whether the link is shutting down (disconnections are then expected)."""
        return self._closing

    @property
    def address(self) -> str:
        """host:port/vhost of the node in use, for messages."""
        host, port = self._nodes[self._node]
        return f"{host}:{port}{self.broker.virtual_host}"

    def add_user(self, user: LinkUser) -> None:
        """Attach a user; if already connected it is set up at once."""

        def attach() -> None:
            self._users.append(user)
            if self.connected and self._connection is not None:
                self.loop.create_task(self._setup_user(user, self._connection))

        self.call_soon(attach)

    def start(self) -> AmqpLink:
        """Start connecting (and the I/O thread when the link owns its loop)."""
        if self._started:
            return self
        self._started = True
        if self._owns_loop:
            self._thread = threading.Thread(
                target=self._run_loop, name=f"amqp-{self.name}", daemon=True
            )
            self._thread.start()
        self.call_soon(self._connect)
        return self

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback`` on the link's loop, from any thread (dropped once it is closed)."""
        try:
            if self._in_loop_thread():
                self.loop.call_soon(callback, *args)
            else:
                self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            logger.debug("%s: loop closed; dropped %r", self.name, callback)

    def _in_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def run_coroutine(self, coroutine: Any) -> ThreadFuture[Any]:
        """Schedule a coroutine on the link's loop from another thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    # -- connection lifecycle (loop thread only) --------------------------------------------

    def _parameters(self) -> pika.ConnectionParameters:
        broker = self.broker
        host, port = self._nodes[self._node]
        return pika.ConnectionParameters(
            host=host,
            port=port,
            virtual_host=broker.virtual_host,
            credentials=pika.PlainCredentials(broker.username, broker.password),
            heartbeat=broker.heartbeat_s,
            socket_timeout=broker.connect_timeout_s,
            stack_timeout=broker.connect_timeout_s * 2,
            blocked_connection_timeout=60,
            client_properties={"connection_name": self.name},
        )

    def _connect(self) -> None:
        self._reconnect_handle = None
        if self._closing:
            return
        try:
            AsyncioConnection(
                self._parameters(),
                on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_close,
                custom_ioloop=self.loop,
            )
        except Exception:
            logger.exception("%s: cannot start connecting to %s", self.name, self.address)
            self._schedule_reconnect()

    def _on_open(self, connection: AsyncioConnection) -> None:
        self._connection = connection
        self.connected = True
        self.connect_count += 1
        if self.connect_count > 1:
            logger.info("%s: reconnected to broker %s", self.name, self.address)
        else:
            logger.info("%s: connected to broker %s", self.name, self.address)
        for user in list(self._users):
            self.loop.create_task(self._setup_user(user, connection))

    async def _setup_user(self, user: LinkUser, connection: AsyncioConnection) -> None:
        try:
            await asyncio.wait_for(user.on_connected(self), self.broker.connect_timeout_s * 2)
        except Exception as exc:
            if self._is_current(connection) and not self._closing:
                logger.error("%s: setting up %r failed (%s); reconnecting", self.name, user, exc)
                with contextlib.suppress(Exception):
                    connection.close(reply_text="set-up failed")

    def _is_current(self, connection: AsyncioConnection) -> bool:
        return connection is self._connection

    def _on_open_error(self, _connection: AsyncioConnection, error: BaseException) -> None:
        logger.warning(
            "%s: broker %s unreachable (%s); retrying in %.1f s",
            self.name, self.address, error or "connection refused", self._backoff,
        )
        self._schedule_reconnect()

    def _on_close(self, connection: AsyncioConnection, reason: BaseException) -> None:
        was_connected = self.connected
        self.connected = False
        self._connection = None
        for user in list(self._users):
            try:
                user.on_disconnected()
            except Exception:
                logger.exception("%s: %r failed to handle the disconnection", self.name, user)
        if self._closing:
            self._mark_closed()
            return
        if was_connected:
            self._backoff = MIN_BACKOFF_S
            logger.warning("%s: lost broker %s (%s); reconnecting", self.name, self.address, reason)
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        self._node = (self._node + 1) % len(self._nodes)  # a cluster: try the next node
        if self._closing:
            self._mark_closed()
            return
        delay = self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
        self._reconnect_handle = self.loop.call_later(delay, self._connect)

    def _mark_closed(self) -> None:
        if self._closed is not None:
            self._closed.set()
        self._closed_thread.set()

    # -- helpers for users -------------------------------------------------------------------

    async def open_channel(self, on_close: Callable[[Channel, BaseException], None] | None = None
                           ) -> Channel:
        """Open a channel; an unexpected channel close restarts the whole connection."""
        connection = self._connection
        if connection is None:
            raise ConnectionError("not connected")
        future: asyncio.Future[Channel] = self.loop.create_future()
        connection.channel(on_open_callback=lambda ch: _resolve(future, ch))
        channel = await future

        def closed(ch: Channel, reason: BaseException) -> None:
            if on_close is not None:
                on_close(ch, reason)
            if self._is_current(connection) and connection.is_open and not self._closing:
                logger.warning("%s: channel closed (%s); reconnecting", self.name, reason)
                with contextlib.suppress(Exception):
                    connection.close(reply_text="channel lost")

        channel.add_on_close_callback(closed)
        return channel

    # -- shutdown ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection from the link's loop (for links on a caller's loop)."""
        self._begin_close()
        if self._closed is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), 5)

    def _begin_close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._reconnect_handle is not None:
            self._reconnect_handle.cancel()
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        elif self._connection is None or self._connection.is_closed:
            self._mark_closed()

    def close(self, timeout: float = 5.0) -> None:
        """Close the connection and stop the I/O thread (from any thread but the loop's)."""
        if not self._started or self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self._begin_close)
        self._closed_thread.wait(timeout)
        if self._owns_loop and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def await_callback(loop: asyncio.AbstractEventLoop, method: Callable[..., Any], *args: Any,
                   **kwargs: Any) -> asyncio.Future[Any]:
    """Call a pika method that takes ``callback=`` and return a future of its reply frame."""
    future: asyncio.Future[Any] = loop.create_future()
    method(*args, callback=lambda frame: _resolve(future, frame), **kwargs)
    return future
