"""Assembling the event reader: a link to the cloud broker, the reader, a periodic flush."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agata_common.config import CloudSettings
from microservice_interconnect.event_reader import EventReader
from microservice_interconnect.link import AmqpLink

logger = logging.getLogger(__name__)

NAME = "event_reader"
FLUSH_INTERVAL_S = 1.0
FLUSH_SHARE = 0.05
"""At most this share of a core goes to rewriting the file: once a write takes more than
``FLUSH_SHARE * FLUSH_INTERVAL_S`` (a long experiment's many events), the flushes space out."""


@dataclass
class RunningEventReader:
    """A started event reader; ``stop`` writes the file one last time."""

    link: AmqpLink
    reader: EventReader
    flusher: threading.Thread
    stopping: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        """Stop flushing, write every event received, disconnect."""
        self.stopping.set()
        self.flusher.join()
        count = self.reader.flush()
        self.link.close()
        logger.info("wrote %d events to %s", count, self.reader.output)


def flush_pause_s(write_s: float) -> float:
    """The wait before the next flush, after one that took ``write_s`` seconds."""
    return max(FLUSH_INTERVAL_S, write_s / FLUSH_SHARE)


def start(config: CloudSettings, output: Path | None = None) -> RunningEventReader:
    """Collect events from the configured exchange into ``output`` (default ``[events] output``),
    flushing every second (less often once the file takes long to write)."""
    link = AmqpLink(config.server_broker, name=NAME)
    reader = EventReader(link, config.events.exchange, output or Path(config.events.output))
    stopping = threading.Event()

    def flush_periodically() -> None:
        pause = FLUSH_INTERVAL_S
        while not stopping.wait(pause):
            began = time.monotonic()
            reader.flush()
            pause = flush_pause_s(time.monotonic() - began)

    flusher = threading.Thread(target=flush_periodically, name="events-flush", daemon=True)
    link.start()
    flusher.start()
    return RunningEventReader(link, reader, flusher, stopping)
