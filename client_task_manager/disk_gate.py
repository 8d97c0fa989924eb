"""A device's full disk: while the free space of its data folder is under ``[storage]
min_free_mb`` it takes no new task (its log says so once when that begins and once when it
ends; the tasks it runs go on), and a run it could not write for want of space is reported
with a reason that begins "disk full" instead of failing the loop.

A device's stats have no field for it (an older cloud refuses a field it does not know), so the
cloud learns of a full disk from the reports of the runs it cut short.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from agata_common.disk import DISK_FULL, DiskSpace, disk_space, is_disk_full_error, says_disk_full
from microservice_interconnect.events import NO_EVENTS, EventRecorder

logger = logging.getLogger(__name__)

SERVICE = "client_task_manager"

SpaceOf = Callable[[Path, float], DiskSpace | None]
"""The disk of a folder against a floor in MiB (``agata_common.disk.disk_space``)."""


def refusal(space: DiskSpace | None) -> str | None:
    """Why a device whose data folder's disk is ``space`` takes no new task; None when it
    may (a disk that cannot be asked does not stop it)."""
    if space is None or not space.full:
        return None
    return f"taking no new task: {space.describe()}"


def disk_full_reason(error: BaseException | str, what: str = "") -> str | None:
    """The reason to report for a run cut short by ``error`` when it says the disk is out
    of space (``what`` could not be written), beginning "disk full"; None when it does not."""
    text = str(error)
    full = (is_disk_full_error(error) if isinstance(error, BaseException)
            else says_disk_full(text))
    if not full:
        return None
    if text.startswith(DISK_FULL):
        return text
    return f"{DISK_FULL}: {what}{': ' if what else ''}{text}"


class DiskGate:
    """Whether the device takes new tasks, from its data folder's disk."""

    def __init__(self, data_dir: Path, min_free_mb: float, *, space: SpaceOf = disk_space,
                 events: EventRecorder = NO_EVENTS) -> None:
        self.data_dir = data_dir
        self.min_free_mb = min_free_mb
        self._space = space
        self._events = events
        self._refused: str | None = None

    def refusal(self) -> str | None:
        """Why no new task is taken now, else None (a change is logged once)."""
        why = refusal(self._space(self.data_dir, self.min_free_mb))
        if why is not None and self._refused is None:
            logger.error("%s; the tasks running go on, and tasks are taken again once space "
                         "is freed", why)
            self._events.register_event(SERVICE, "disk", "disk full")
        elif why is None and self._refused is not None:
            logger.warning("space is free again in %s: taking tasks again", self.data_dir)
            self._events.register_event(SERVICE, "disk", "disk ok")
        self._refused = why
        return why
