"""Task start/end events for clients, by long poll: ``GET /api/client/task_events``.

The gateway subscribes to the cloud task manager's task-event exchange and keeps the latest
events with a growing cursor; a client gateway asks for events after its cursor and the
request is answered as soon as one arrives (or empty after the timeout).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import deque

from agata_contracts.tasks import TaskEvent

KEPT_EVENTS = 1000


class TaskEventFeed:
    """The latest task events, numbered; waiters wake when one arrives (event-loop only)."""

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(8)
        self.cursor = 0
        self._events: deque[tuple[int, TaskEvent]] = deque(maxlen=KEPT_EVENTS)
        self._arrived = asyncio.Event()
        self.closed = False

    def add(self, event: TaskEvent) -> None:
        """Record an event and wake every waiter."""
        self.cursor += 1
        self._events.append((self.cursor, event))
        self._arrived.set()
        self._arrived = asyncio.Event()

    def close(self) -> None:
        """Answer every waiting long poll now (the gateway is shutting down)."""
        self.closed = True
        self._arrived.set()

    def after(self, cursor: int) -> list[TaskEvent]:
        """Events numbered above ``cursor``."""
        return [event for number, event in self._events if number > cursor]

    async def wait(self, cursor: int, timeout: float, epoch: str = ""
                   ) -> tuple[int, list[TaskEvent], bool]:
        """(new cursor, events after ``cursor``, reset) once there are some or on timeout.

        ``reset`` is true when the cursor is unknown here: it belongs to another epoch (the
        gateway restarted since), or the caller fell more than KEPT_EVENTS behind. The caller
        should then look at everything again. An empty ``epoch`` means "this one".
        """
        oldest = self._events[0][0] if self._events else self.cursor + 1
        if (epoch and epoch != self.epoch) or cursor > self.cursor or cursor < oldest - 1:
            return self.cursor, [], True
        if self.cursor == cursor and not self.closed:
            arrived = self._arrived
            try:
                await asyncio.wait_for(arrived.wait(), timeout)
            except TimeoutError:
                return self.cursor, [], False
        return self.cursor, self.after(cursor), False
