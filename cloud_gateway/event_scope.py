"""Which task events a device is told: only those of tasks it may take.

The feed holds every task's events; before a device's long poll is answered, the events are
narrowed to the device's own view with the RPC the device itself polls,
``rpc_exec_client_requesting_task`` (the cloud task manager answers it from its in-memory
snapshot of running tasks and clients: no database read). It is called once per answer that
carries events and once at a device's first long poll here, never for a poll that times out
empty. A task's start reaches the devices it offers itself to (they match its selection
criteria now); its end reaches the devices this gateway has seen it offered to, remembered per
device (the latest ``MAX_TASKS_PER_DEVICE`` task ids of at most ``MAX_DEVICES`` devices). A
device no task fits learns nothing; events are hints, so a device whose end event was seen by
another gateway only waits for its next regular poll.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

from agata_contracts.tasks import TaskEvent, TaskStatus

OfferedTasks = Callable[[str], Awaitable[set[str]]]
"""The ids of the running tasks a device is offered now (empty for an unknown device)."""
MAX_DEVICES = 100_000
MAX_TASKS_PER_DEVICE = 64


class EventScope:
    """Narrows task events to one device's tasks; remembers what each device was offered."""

    def __init__(self, offered: OfferedTasks, max_devices: int = MAX_DEVICES) -> None:
        self.offered = offered
        self.max_devices = max_devices
        self._seen_offered: OrderedDict[str, dict[str, None]] = OrderedDict()

    def remember(self, client_id: str, task_ids: set[str]) -> None:
        """Tasks the device is offered now, added to those offered before (the oldest dropped
        beyond the bound; the device not asked for longest is forgotten first)."""
        known = self._seen_offered.pop(client_id, {})
        for task_id in sorted(task_ids):
            known.pop(task_id, None)
            known[task_id] = None
        while len(known) > MAX_TASKS_PER_DEVICE:
            del known[next(iter(known))]
        self._seen_offered[client_id] = known
        while len(self._seen_offered) > self.max_devices:
            self._seen_offered.popitem(last=False)

    async def prime(self, client_id: str) -> None:
        """Learn a device's offers at its first long poll here, so the end of a task it took
        before (by its regular poll) reaches it."""
        if client_id not in self._seen_offered:
            self.remember(client_id, await self.offered(client_id))

    async def events_for(self, client_id: str, events: list[TaskEvent]) -> list[TaskEvent]:
        """The events of tasks ``client_id`` may take: offered now, or (an end) offered to it
        before."""
        if not events:
            return []
        now = await self.offered(client_id)
        self.remember(client_id, now)
        before = self._seen_offered[client_id]
        return [event for event in events
                if event.task_id in now
                or (event.status is not TaskStatus.RUNNING and event.task_id in before)]
