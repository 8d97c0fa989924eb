"""Shared by the interconnect tests: a cuttable TCP proxy and broker housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

import pika

from agata_common.config import BrokerSettings


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def blocking_connection(broker: BrokerSettings) -> pika.BlockingConnection:
    """A plain pika connection to the real broker (never through a proxy)."""
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1",
        port=5672,
        virtual_host=broker.virtual_host,
        credentials=pika.PlainCredentials(broker.username, broker.password),
    ))


def delete_queues(broker: BrokerSettings, names: list[str]) -> None:
    """Best-effort removal of test queues (services leave their queues behind)."""
    with contextlib.suppress(Exception):
        connection = blocking_connection(broker)
        try:
            for name in names:
                channel = connection.channel()
                with contextlib.suppress(Exception):
                    channel.queue_delete(name)
        finally:
            with contextlib.suppress(Exception):
                connection.close()


class TcpProxy:
    """Forwards a local port to the broker; can cut every connection and refuse new ones."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self.target = target
        self.refusing = False
        self.accepted = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    def start(self) -> TcpProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(5)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, upstream_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, upstream_writer),
                                 self._pipe(upstream_reader, writer), return_exceptions=True)
        finally:
            self._pairs.discard(pair)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    def _cut_now(self) -> int:
        pairs = list(self._pairs)
        for downstream, upstream in pairs:
            downstream.transport.abort()
            upstream.transport.abort()
        return len(pairs)

    def cut(self) -> int:
        """Abort every proxied connection (both sides); return how many were cut."""
        return asyncio.run_coroutine_threadsafe(self._acut(), self._loop).result(5)

    async def _acut(self) -> int:
        return self._cut_now()

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            self._cut_now()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()
