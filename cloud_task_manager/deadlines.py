"""Run deadlines: a timer per served run that stops it when it is still going at its deadline,
and the reason its end is then recorded with; from its round times so far, an early word when a
run will not make its deadline; and the early end of a run that waits under its minimum of
devices past the moment its remaining rounds, at its pace so far, could still fit before its
deadline (the time spent waiting counts; a resumed run has the time left, not the whole
deadline)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from agata_contracts.run_devices import Roster, RunDevice
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
    first_round_at: float | None = None
    last_round: int | None = None
    paced_round: int | None = None
    paced_at: float | None = None
    """The last round the run ended with its minimum of devices, and when."""
    short: Roster | None = None
    """The run's devices while it is under its minimum (None: it has its minimum)."""
    short_timer: threading.Timer | None = None
    given_up: bool = False

    def round_ended(self, round_number: int, now: float) -> None:
        """Count a round; while the run has its minimum of devices, it sets the pace (a round
        that waited on a device gone does not)."""
        if self.first_round is None:
            self.first_round, self.first_round_at = round_number, now
        self.last_round = round_number
        if self.short is None:
            self.paced_round, self.paced_at = round_number, now

    def round_pace_s(self) -> float | None:
        """Seconds a round from the first round this serving saw to the last it ended with its
        minimum of devices (the wait for devices to join and for lost ones left out); None
        before two such rounds."""
        if (self.first_round is None or self.paced_round is None or self.first_round_at is None
                or self.paced_at is None or self.paced_round <= self.first_round):
            return None
        return (self.paced_at - self.first_round_at) / (self.paced_round - self.first_round)

    def rounds_left(self) -> int | None:
        """Rounds still to train (the app declares ``num-server-rounds``), else None."""
        total = self.launch.arguments.get("num-server-rounds")
        if (not isinstance(total, int) or isinstance(total, bool)
                or self.last_round is None):
            return None
        return max(total - self.last_round, 0)

    def left_s(self, now: float) -> float:
        """Seconds left before the deadline."""
        return self.armed_at + self.deadline_s - now


def projected_miss(pace_s: float, rounds_left: int, left_s: float) -> str | None:
    """Why a run at ``pace_s`` a round with ``rounds_left`` to go will miss a deadline
    ``left_s`` away, or None when it will make it."""
    needed_s = pace_s * rounds_left
    if needed_s <= left_s:
        return None
    return (f"will miss its deadline: at {pace_s:.3g} s a round, its {rounds_left} round(s) "
            f"left need about {needed_s:.0f} s, and {max(left_s, 0):.0f} s are left")


def hopeless_in_s(pace_s: float, rounds_left: int, left_s: float) -> float:
    """How long a run short of devices may still wait before its ``rounds_left`` rounds at
    ``pace_s`` a round no longer fit in the ``left_s`` seconds before its deadline (0: they do
    not fit now)."""
    return max(left_s - pace_s * rounds_left, 0.0)


def present_devices(roster: Roster) -> list[RunDevice]:
    """The devices in the run now."""
    return [device for device in roster.devices if device.left is None]


def missing_devices(roster: Roster, min_devices: int) -> str | None:
    """Who a run under its minimum of devices misses, naming the devices gone and the rounds
    (as the host's ``DevicesMissing`` does); None when it has its minimum."""
    present = present_devices(roster)
    if len(present) >= min_devices:
        return None
    latest: dict[int, RunDevice] = {}
    for device in roster.devices:
        latest[device.partition_id] = device
    taken = {device.partition_id for device in present}
    gone = "; ".join(f"{d.client_id} (partition {d.partition_id}) left after round "
                     f"{d.left_after_round}: {d.why_left}"
                     for p, d in sorted(latest.items()) if p not in taken)
    after = max([d.left_after_round or 0 for d in roster.devices]
                + [d.joined_after_round + d.rounds_trained for d in present], default=0)
    return (f"{min_devices - len(present)} of {min_devices} device(s) missing (the run has "
            f"{len(present)}, needs at least {min_devices}, after round {after})"
            + (f"; gone: {gone}" if gone else ""))


def short_of_devices_reason(missing: str, pace_s: float, rounds_left: int, left_s: float,
                            deadline_at: float) -> str:
    """Why a run short of devices was failed before its deadline."""
    when = datetime.fromtimestamp(deadline_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"the run was failed early: it could no longer meet its deadline ({when}) "
            f"while waiting for its devices: {missing}; at {pace_s:.3g} s a round its "
            f"{rounds_left} round(s) left need about {pace_s * rounds_left:.0f} s, and "
            f"{max(left_s, 0):.0f} s were left")


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
        self._short_lock = threading.Lock()

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
        if pace is None or pace.launch is not launch:
            return None
        now = time.monotonic()
        with self._short_lock:
            pace.round_ended(round_number, now)
            self._watch_short(pace)
        total = launch.arguments.get("num-server-rounds")
        if (pace.warned or pace.first_round is None or not isinstance(total, int)
                or isinstance(total, bool)):
            return None
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
            pace = self._paces.pop(launch.task_id, None)
            if pace is not None:
                self._stop_watching(pace)
        return self._forced_ends.pop((launch.task_id, launch.run), None)

    def disarm_all(self) -> None:
        """Cancel every timer (the servers are being stopped)."""
        with self._transition:
            timers, self._armed = list(self._armed.values()), {}
            paces, self._paces = list(self._paces.values()), {}
        for _, timer in timers:
            timer.cancel()
        for pace in paces:
            self._stop_watching(pace)

    def devices_changed(self, launch: ServerLaunch, roster: Roster) -> None:
        """The run's devices changed: while it is under its minimum with partitions open (not
        ended), watch whether it can still meet its deadline."""
        pace = self._paces.get(launch.task_id)
        if pace is None or pace.launch is not launch:
            return
        short = (roster.vacancies > 0  # none once the run is over: its devices leave then
                 and missing_devices(roster, launch.min_devices or launch.devices) is not None)
        with self._short_lock:
            pace.short = roster if short else None
            self._watch_short(pace)

    def _watch_short(self, pace: _Pace) -> None:
        """(Re)arm the check of a run short of devices for the moment its rounds stop
        fitting; none while it has its minimum or its pace is unknown (caller holds the short
        lock)."""
        if pace.short_timer is not None:
            pace.short_timer.cancel()
            pace.short_timer = None
        pace_s, rounds_left = pace.round_pace_s(), pace.rounds_left()
        if pace.short is None or pace.given_up or pace_s is None or rounds_left is None:
            return
        wait_s = hopeless_in_s(pace_s, rounds_left, pace.left_s(time.monotonic()))
        pace.short_timer = threading.Timer(wait_s, self._check_short, (pace,))
        pace.short_timer.name = f"short-{pace.launch.task_id}"
        pace.short_timer.daemon = True
        pace.short_timer.start()

    def _stop_watching(self, pace: _Pace) -> None:
        with self._short_lock:
            pace.short = None
            if pace.short_timer is not None:
                pace.short_timer.cancel()
                pace.short_timer = None

    def _check_short(self, pace: _Pace) -> None:
        """The moment a run short of devices could no longer make its deadline came: fail it
        when it is still short and its rounds still do not fit, else watch on."""
        launch = pace.launch
        with self._transition:
            with self._short_lock:
                if (self._paces.get(launch.task_id) is not pace or pace.short is None
                        or threading.current_thread() is not pace.short_timer):
                    return
                pace_s, rounds_left = pace.round_pace_s(), pace.rounds_left()
                now = time.monotonic()
                left_s = pace.left_s(now)
                missing = missing_devices(pace.short, launch.min_devices or launch.devices)
                if (pace_s is None or rounds_left is None or missing is None
                        or hopeless_in_s(pace_s, rounds_left, left_s) > 0):
                    self._watch_short(pace)
                    return
                pace.short_timer = None
                pace.given_up = True
            if self._run_records.rounds_if_running(launch.task_id, launch.run) is None:
                return
            reason = short_of_devices_reason(missing, pace_s, rounds_left, left_s,
                                             time.time() + left_s)
            self._forced_ends[(launch.task_id, launch.run)] = reason
            logger.warning("task %s run %d: %s", launch.task_id, launch.run, reason)
            self._events.register_event(SERVICE, "deadline", f"short {launch.task_id}")
            self._request_stop(launch.task_id)

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
