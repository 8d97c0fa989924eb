"""Experiment events: ``register_event(service, function, event)`` and the reader behind them.

Publishing is fire-and-forget on the process's link: it never blocks or raises into the caller,
and does nothing at all unless ``[events] register_events`` is on. Events go to a fanout
exchange; ``python -m microservice_interconnect.event_reader`` collects them into
``events.json``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydantic import BaseModel

from agata_common.config import EventSettings, settings
from microservice_interconnect.broadcast import Broadcaster
from microservice_interconnect.link import AmqpLink

logger = logging.getLogger(__name__)


class Event(BaseModel):
    """One step of an experiment, as AGATA records it."""

    time: float
    service: str
    function: str
    event: str


class EventPublisher(Broadcaster[Event]):
    """Publishes events on the events exchange; drops them (with a debug line) while away."""


_lock = threading.Lock()
_publisher: EventPublisher | None = None
_enabled: bool | None = None


def configure_events(link: AmqpLink | None, events: EventSettings) -> None:
    """Make ``register_event`` publish on ``link`` (called once per process at start-up)."""
    global _publisher, _enabled
    with _lock:
        _enabled = events.register_events
        if events.register_events and link is not None and _publisher is None:
            _publisher = EventPublisher(link, events.exchange)


def _default_publisher() -> EventPublisher | None:
    global _publisher, _enabled
    with _lock:
        if _enabled is None:
            config = settings()
            _enabled = config.events.register_events
            if _enabled and _publisher is None:
                link = AmqpLink(config.server_broker, name="events").start()
                _publisher = EventPublisher(link, config.events.exchange)
        return _publisher if _enabled else None


def register_event(service: str, function: str, event: str, *, at: float | None = None) -> None:
    """Record an experiment event; a no-op unless ``[events] register_events`` is on."""
    try:
        publisher = _default_publisher()
        if publisher is None:
            return
        publisher.publish(Event(time=time.time() if at is None else at, service=service,
                                function=function, event=event))
    except Exception as exc:
        logger.debug("register_event failed: %s", exc)


def reset_for_tests(enabled: bool | None = None) -> None:
    """Forget the configured publisher (tests only)."""
    global _publisher, _enabled
    with _lock:
        _publisher = None
        _enabled = enabled


def event_sort_key(event: dict[str, Any]) -> float:
    """Events are ordered by their time."""
    return float(event.get("time", 0.0))
