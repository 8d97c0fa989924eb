"""Run deadlines: a timer per served run that stops it when it is still going at its deadline,
and the reason its end is then recorded with; and, from its round times so far, an early word
when a run will not make its deadline."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cloud_task_manager.run_records import RunRecords
from cloud_task_manager.task_server import ServerLaunch
from microservice_interconnect.events import EventRecorder

logger = logging.getLogger(__name__)

SERVICE = "cloud_task_manager"


@dataclass
class _Pace:
    """A served run's progress against its deadline."""

    launch: ServerLaunch
    armed_at: float
    deadline_s: float
    first_round: int | None = None
    warned: bool = False


def projected_miss(pace_s: float, rounds_left: int, left_s: float) -> str | None:
    """Why a run at ``pace_s`` a round with ``rounds_left`` to go will miss a deadline
    ``left_s`` away, or None when it will make it."""
    needed_s = pace_s * rounds_left
    if needed_s <= left_s:
        return None
    return (f"will miss its deadline: at {pace_s:.3g} s a round, its {rounds_left} round(s) "
            f"left need about {needed_s:.0f} s, and {max(left_s, 0):.0f} s are left")


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
        self._paces: dict[str, _Pace] = {}

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
        self._paces[launch.task_id] = _Pace(launch, time.monotonic(), deadline_s)
        timer.start()

    def round_done(self, launch: ServerLaunch, round_number: int) -> str | None:
        """A round of the run ended: once, when its pace so far says it will miss its
        deadline (its app declares ``num-server-rounds``), why; else None."""
        pace = self._paces.get(launch.task_id)
        total = launch.arguments.get("num-server-rounds")
        if (pace is None or pace.launch is not launch or pace.warned
                or not isinstance(total, int) or isinstance(total, bool)):
            return None
        if pace.first_round is None:
            pace.first_round = round_number
        done_here = round_number - pace.first_round + 1
        elapsed_s = time.monotonic() - pace.armed_at
        if done_here < 2:
            return None
        why = projected_miss(elapsed_s / done_here, total - round_number,
                             pace.deadline_s - elapsed_s)
        if why is not None:
            pace.warned = True
            logger.warning("task %s run %d %s", launch.task_id, launch.run, why)
            self._events.register_event(SERVICE, "deadline", f"late {launch.task_id}")
        return why

    def disarm(self, launch: ServerLaunch) -> str | None:
        """Cancel the run's timer (its server ended); the reason to record when its deadline
        ended it, else None."""
        armed = self._armed.get(launch.task_id)
        if armed is not None and armed[0] is launch:
            armed[1].cancel()
            self._armed.pop(launch.task_id, None)
            self._paces.pop(launch.task_id, None)
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
