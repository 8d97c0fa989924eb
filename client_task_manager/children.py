"""What a device's task processes tell its manager: their reports and exits, heard on their
reader threads and queued as items the manager's loop handles on its own thread."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypedDict

from agata_contracts.tasks import TaskOffer
from client_task_manager.lifecycle import RunResults
from task_daemon_lib.executors import OnExit, OnMessage, OnOutput, TaskProcess
from task_daemon_lib.messages import (
    INFO_FIRST_TRAIN,
    INFO_RUN_FULL,
    INFO_RUN_OVER,
    ErrorMessage,
    InfoMessage,
    PrintMessage,
    ReportMessage,
    StatsMessage,
)
from task_daemon_lib.runner import ChildOutcome

logger = logging.getLogger(__name__)

Record = Callable[..., None]
"""Registers an experiment event: ``(function, event, at=...)``."""


class ChildCallbacks(TypedDict):
    """Where a run's task process reports, writes and exits to."""

    on_message: OnMessage
    on_output: OnOutput
    on_exit: OnExit


@dataclass
class Running:
    """A run this device takes part in, and its task process."""

    offer: TaskOffer
    child: TaskProcess
    results: RunResults
    handled: bool = False
    left: str | None = None
    """Why the worker left its run without failing (``INFO_RUN_OVER``/``INFO_RUN_FULL``)."""


@dataclass(frozen=True)
class ChildLeft:
    """The run's worker said it leaves the run without failing."""

    task_id: str
    run: int
    info: str


@dataclass(frozen=True)
class ChildError:
    """The run's task process reported an error."""

    task_id: str
    run: int
    reason: str


@dataclass(frozen=True)
class ChildExit:
    """The run's task process exited."""

    task_id: str
    run: int
    outcome: ChildOutcome


ChildItem = ChildLeft | ChildError | ChildExit


class ChildInbox:
    """Turns task processes' reports and exits into queued items and wakes the loop."""

    def __init__(self, wake: threading.Event, record: Record) -> None:
        self._wake = wake
        self._record = record
        self._items: queue.SimpleQueue[ChildItem] = queue.SimpleQueue()

    def callbacks(self, task_id: str, run: int, output: OnOutput) -> ChildCallbacks:
        """The callbacks of run ``run`` of ``task_id``'s task process."""
        return ChildCallbacks(
            on_message=lambda message: self.message(task_id, run, message),
            on_output=output,
            on_exit=lambda outcome: self._put(ChildExit(task_id, run, outcome)),
        )

    def message(self, task_id: str, run: int, message: ReportMessage) -> None:
        """A report of a run's task process (its reader thread)."""
        if isinstance(message, ErrorMessage):
            self._record("task_client", f"client error {task_id}", at=message.time)
            self._put(ChildError(task_id, run, message.exception))
        elif isinstance(message, StatsMessage):
            logger.info("task %s round %d: %s", task_id, message.round, message.metrics)
        elif isinstance(message, InfoMessage):
            logger.info("task %s client: %s", task_id, message.info)
            if message.info == INFO_FIRST_TRAIN:
                self._record("task_client", f"first train {task_id}", at=message.time)
            elif message.info in (INFO_RUN_OVER, INFO_RUN_FULL):
                self._put(ChildLeft(task_id, run, message.info))
        elif isinstance(message, PrintMessage):
            logger.info("task %s client says: %s", task_id, message.message)

    def drain(self) -> Iterator[ChildItem]:
        """The items queued so far, oldest first (the loop's thread)."""
        while True:
            try:
                yield self._items.get_nowait()
            except queue.Empty:
                return

    def _put(self, item: ChildItem) -> None:
        self._items.put(item)
        self._wake.set()
