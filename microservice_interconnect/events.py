"""Experiment events: AGATA's ``register_event(service, function, event)``.

A process gets one ``EventRecorder`` from its runtime and hands it to whatever records events.
With ``[events] register_events`` on it publishes on the process's link, fire-and-forget (it never
blocks or raises into the caller); off, it does nothing. Events go to a fanout exchange;
``python -m event_reader`` collects them into ``events.json``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import BaseModel

from microservice_interconnect.broadcast import Broadcaster
from microservice_interconnect.link import AmqpLink
from microservice_interconnect.settings import EventSettings

logger = logging.getLogger(__name__)


class Event(BaseModel):
    """One step of an experiment, as AGATA records it."""

    time: float
    service: str
    function: str
    event: str


class EventRecorder:
    """Records experiment events on a fanout exchange, or nowhere when switched off."""

    def __init__(self, publisher: Broadcaster[Event] | None = None) -> None:
        self._publisher = publisher

    @classmethod
    def on_link(cls, link: AmqpLink, settings: EventSettings) -> EventRecorder:
        """A recorder publishing on ``link`` when ``settings`` switch events on."""
        if not settings.register_events:
            return cls()
        return cls(Broadcaster(link, settings.exchange))

    @property
    def enabled(self) -> bool:
        """Whether events go anywhere."""
        return self._publisher is not None

    def register_event(self, service: str, function: str, event: str, *,
                       at: float | None = None) -> None:
        """Record one event (a no-op when switched off); never blocks or raises."""
        if self._publisher is None:
            return
        try:
            self._publisher.publish(Event(time=time.time() if at is None else at,
                                          service=service, function=function, event=event))
        except Exception as exc:
            logger.debug("register_event failed: %s", exc)


NO_EVENTS = EventRecorder()
"""A recorder that records nothing, for parts run without a runtime (tests, tools)."""


def event_sort_key(event: dict[str, Any]) -> float:
    """Events are ordered by their time."""
    return float(event.get("time", 0.0))
