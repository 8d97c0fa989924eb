"""``python -m microservice_interconnect.event_reader``: collect events into ``events.json``.

Binds a private queue to the events exchange and writes every event it receives, as a JSON
array sorted by time, to the output file: after each quiet moment and when stopped by
SIGINT/SIGTERM. Writes are atomic, so the file is valid JSON whenever it is read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from pika.channel import Channel
from pika.spec import Basic, BasicProperties

from agata_common.config import ConfigError, Settings, settings
from agata_common.process import configure_logging, wait_for_stop_signal
from microservice_interconnect.events import event_sort_key
from microservice_interconnect.link import AmqpLink, await_callback

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0


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


def run(config: Settings, output: Path) -> int:
    """Collect until SIGINT/SIGTERM, flushing every second; write the file at the end."""
    link = AmqpLink(config.server_broker, name="event_reader")
    reader = EventReader(link, config.events.exchange, output)
    link.start()
    stop_flusher = threading.Event()

    def flusher() -> None:
        while not stop_flusher.wait(FLUSH_INTERVAL_S):
            reader.flush()

    thread = threading.Thread(target=flusher, name="events-flush", daemon=True)
    thread.start()
    wait_for_stop_signal()
    stop_flusher.set()
    thread.join()
    count = reader.flush()
    link.close()
    logger.info("wrote %d events to %s", count, output)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="events file (default: [events] output)")
    args = parser.parse_args(argv)
    configure_logging("event_reader")
    try:
        config = settings()
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    return run(config, args.output or Path(config.events.output))


if __name__ == "__main__":
    sys.exit(main())
