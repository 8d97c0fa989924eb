"""Collecting experiment events into ``events.json``.

``EventReader`` binds a private queue to the events exchange and keeps every event it receives;
``flush`` writes them, as a JSON array sorted by time, atomically, so the file is valid JSON
whenever it is read. ``python -m event_reader`` is the process around it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from pika.channel import Channel
from pika.spec import Basic, BasicProperties

from microservice_interconnect.events import event_sort_key
from microservice_interconnect.link import AmqpLink, await_callback

logger = logging.getLogger(__name__)


def write_events(path: Path, events: list[dict[str, Any]]) -> None:
    """Write events sorted by time as a JSON array, atomically."""
    ordered = sorted(events, key=event_sort_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".events-")
    with os.fdopen(handle, "w", encoding="utf-8") as output:
        json.dump(ordered, output, indent=1)
    os.replace(temporary, path)


class EventReader:
    """Consumes the events exchange and keeps every event in memory."""

    def __init__(self, link: AmqpLink, exchange: str, output: Path) -> None:
        self.link = link
        self.exchange = exchange
        self.output = output
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._dirty = False
        link.add_user(self)

    def __repr__(self) -> str:
        return f"EventReader({self.exchange})"

    async def on_connected(self, link: AmqpLink) -> None:
        """Bind an exclusive queue to the exchange and consume it."""
        channel = await link.open_channel()
        await await_callback(link.loop, channel.exchange_declare, self.exchange,
                             exchange_type="fanout", durable=False)
        frame = await await_callback(link.loop, channel.queue_declare, "", exclusive=True)
        queue = frame.method.queue
        await await_callback(link.loop, channel.queue_bind, queue, self.exchange)
        await await_callback(link.loop, channel.basic_consume, queue, self._on_event,
                             auto_ack=True)
        self.ready.set()
        logger.info("collecting events from exchange %s into %s", self.exchange, self.output)

    def on_disconnected(self) -> None:
        """Events published while disconnected are lost; say so."""
        self.ready.clear()
        if not self.link.closing:
            logger.warning("event reader disconnected; events sent meanwhile are lost")

    def _on_event(self, _channel: Channel, _method: Basic.Deliver, _props: BasicProperties,
                  body: bytes) -> None:
        try:
            event = json.loads(body)
        except ValueError:
            logger.warning("ignored a malformed event: %r", body[:200])
            return
        if not isinstance(event, dict):
            return
        with self._lock:
            self.events.append(event)
            self._dirty = True

    def flush(self) -> int:
        """Write the file if anything new arrived; return the number of events."""
        with self._lock:
            if not self._dirty and self.output.exists():
                return len(self.events)
            snapshot = list(self.events)
            self._dirty = False
        write_events(self.output, snapshot)
        return len(snapshot)
