"""A full disk pauses the runs it stops from recording, and their resume once space is back.

After every round the manager looks at the free space of its data folder (where the runs'
checkpoints, spools and, with SQLite, the database are): under ``[storage] min_free_mb``, or when
a round could not be stored for want of space, the run's server is stopped and the run left
running, its reason saying "disk full" (held in memory too: the database may be what cannot be
written). A watcher looks every ``poll_s``; once the floor is free again each paused run is
started again from its last good checkpoint, the devices rejoin it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from agata_common.disk import DISK_FULL, disk_space
from cloud_task_manager.records import TaskRecords
from cloud_task_manager.task_server import ServerLaunch

logger = logging.getLogger(__name__)

RESUMED_CAUSE = "its disk was full and space is free again"


def paused_reason(detail: str) -> str:
    """The reason of a run paused for a full disk."""
    return (f"paused: {DISK_FULL} ({detail}); the run resumes from its last checkpoint once "
            "space is freed")


def failed_reason(detail: str) -> str:
    """The reason of a script task's run ended by a full disk (it cannot resume)."""
    return f"{DISK_FULL}: the run could not record its rounds ({detail})"


class DiskPauses:
    """The runs this replica paused for a full disk, and the watcher that resumes them."""

    def __init__(self, records: TaskRecords, data_dir: Path, min_free_mb: float, *,
                 stop: Callable[[str], None], resume: Callable[[str, str], None],
                 poll_s: float = 2.0) -> None:
        self.records = records
        self.data_dir = data_dir
        self.min_free_mb = min_free_mb
        self.poll_s = poll_s
        self._stop = stop
        self._resume = resume
        self._paused: dict[str, int] = {}
        self._details: dict[str, str] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def full(self) -> str | None:
        """Why the data folder's disk counts as full now; None when it does not."""
        space = disk_space(self.data_dir, self.min_free_mb)
        return space.describe() if space is not None and space.full else None

    def after_round(self, launch: ServerLaunch, store_error: BaseException | None) -> bool:
        """A round of the run was reported (``store_error``: why it could not be stored, a
        disk-full error); pause the run when the disk is full; whether it was."""
        detail = self.full() or (f"a round could not be stored: "
                                 f"{getattr(store_error, 'orig', None) or store_error}"
                                 if store_error else None)
        if detail is None:
            return False
        with self._lock:
            if launch.task_id in self._paused:
                return True
            self._paused[launch.task_id] = launch.run
            self._details[launch.task_id] = detail
        reason = paused_reason(detail)
        self.records.held_reasons[launch.task_id] = reason
        logger.error("task %s run %d: %s", launch.task_id, launch.run, reason)
        self._stop(launch.task_id)
        self._start_watching()
        return True

    def pausing(self, launch: ServerLaunch) -> str | None:
        """Why the disk is full, when the run's server exits because it was paused here."""
        with self._lock:
            return (self._details.get(launch.task_id)
                    if self._paused.get(launch.task_id) == launch.run else None)

    def forget(self, task_id: str) -> None:
        """The task's run moved on (resumed, stopped, ended): nothing to resume or hold."""
        with self._lock:
            self._paused.pop(task_id, None)
            self._details.pop(task_id, None)
        self.records.held_reasons.pop(task_id, None)

    def close(self) -> None:
        """Stop watching (the paused runs stay paused: the next start resumes them)."""
        self._closed.set()

    def _start_watching(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._watch, name="disk-pauses", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._closed.wait(self.poll_s):
            if self.full() is not None:
                continue
            with self._lock:
                waiting = list(self._paused)
                if not waiting:
                    self._thread = None
                    return
            for task_id in waiting:
                logger.warning("task %s: space is free again; resuming its run", task_id)
                with self._lock:
                    self._paused.pop(task_id, None)  # its reason shows until it is replaced
                try:
                    self._resume(task_id, RESUMED_CAUSE)
                except Exception:
                    logger.exception("task %s: could not resume after the full disk", task_id)
                finally:
                    self.forget(task_id)
