"""Run deadlines: a timer per served run that stops it when it is still going at its deadline,
and the reason its end is then recorded with."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from cloud_task_manager.run_records import RunRecords
from cloud_task_manager.task_server import ServerLaunch
from microservice_interconnect.events import EventRecorder

logger = logging.getLogger(__name__)

SERVICE = "cloud_task_manager"


class RunDeadlines:
    """The armed deadline of each served run."""

    def __init__(self, transition: threading.Lock, run_records: RunRecords,
                 request_stop: Callable[[str], None], events: EventRecorder) -> None:
        self._transition = transition
        self._run_records = run_records
        self._request_stop = request_stop
        self._events = events
        self._armed: dict[str, tuple[ServerLaunch, threading.Timer]] = {}
        self._forced_ends: dict[tuple[str, int], str] = {}

    def arm(self, launch: ServerLaunch, deadline_s: float) -> None:
        """End the run when it is still going ``deadline_s`` from now (caller holds the
        transition lock)."""
        timer = threading.Timer(deadline_s, self._passed, (launch, deadline_s))
        timer.name = f"deadline-{launch.task_id}"
        timer.daemon = True
        previous = self._armed.pop(launch.task_id, None)
        if previous is not None:
            previous[1].cancel()
        self._armed[launch.task_id] = (launch, timer)
        timer.start()

    def disarm(self, launch: ServerLaunch) -> str | None:
        """Cancel the run's timer (its server ended); the reason to record when its deadline
        ended it, else None."""
        armed = self._armed.get(launch.task_id)
        if armed is not None and armed[0] is launch:
            armed[1].cancel()
            self._armed.pop(launch.task_id, None)
        return self._forced_ends.pop((launch.task_id, launch.run), None)

    def disarm_all(self) -> None:
        """Cancel every timer (the servers are being stopped)."""
        with self._transition:
            timers, self._armed = list(self._armed.values()), {}
        for _, timer in timers:
            timer.cancel()

    def _passed(self, launch: ServerLaunch, deadline_s: float) -> None:
        with self._transition:
            rounds = self._run_records.rounds_if_running(launch.task_id, launch.run)
            if rounds is None:
                return
            reason = (f"the run passed its deadline of {deadline_s:g} s after {rounds} "
                      "round(s) and was stopped")
            self._forced_ends[(launch.task_id, launch.run)] = reason
            logger.warning("task %s: %s", launch.task_id, reason)
            self._events.register_event(SERVICE, "deadline", f"deadline {launch.task_id}")
            self._request_stop(launch.task_id)
