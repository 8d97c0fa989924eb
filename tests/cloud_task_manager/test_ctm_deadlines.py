"""Deadlines of runs short of devices: when a run waiting under its minimum can no longer fit
its remaining rounds before its deadline, and the reason it is then failed with."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import cast

import pytest

from agata_contracts.run_devices import Roster, RunDevice
from agata_contracts.tasks import TaskKind
from cloud_task_manager.deadlines import (
    RunDeadlines,
    hopeless_in_s,
    missing_devices,
    short_of_devices_reason,
)
from cloud_task_manager.run_records import RunRecords
from cloud_task_manager.task_server import ServerLaunch
from microservice_interconnect.events import EventRecorder

pytestmark = pytest.mark.unit

STILL = RunDevice(client_id="device-1", partition_id=1, joined=1.0, rounds_trained=7)
GONE = RunDevice(client_id="device-0", partition_id=0, joined=1.0, rounds_trained=7,
                 left=9.0, left_after_round=7, why_left="did not answer round 8 within 3 s")
BOTH = Roster(devices=[GONE.model_copy(update={"left": None, "left_after_round": None,
                                                "why_left": None}), STILL])
SHORT = Roster(devices=[GONE, STILL], vacancies=1, lost=True)


def test_a_short_run_may_wait_as_long_as_its_rounds_still_fit() -> None:
    assert hopeless_in_s(0.5, 10, 8.0) == pytest.approx(3.0)
    assert hopeless_in_s(0.5, 10, 5.0) == 0.0
    assert hopeless_in_s(2.0, 100, 30.0) == 0.0
    assert hopeless_in_s(1.0, 0, -1.0) == 0.0  # past its deadline: no more waiting


def test_who_a_run_misses_names_the_devices_gone_and_the_round() -> None:
    assert missing_devices(BOTH, 2) is None
    assert missing_devices(SHORT, 1) is None  # it goes on with one
    missing = missing_devices(SHORT, 2)
    assert missing is not None
    assert missing.startswith("1 of 2 device(s) missing (the run has 1, needs at least 2, "
                              "after round 7)"), missing
    assert "gone: device-0 (partition 0) left after round 7: did not answer round 8" in missing
    replaced = Roster(devices=[GONE.model_copy(update={"replaced_by": "device-2"}), STILL,
                               RunDevice(client_id="device-2", partition_id=0, joined=9.5,
                                         joined_after_round=7)])
    assert missing_devices(replaced, 2) is None


def test_the_reason_says_the_deadline_the_devices_and_the_rounds() -> None:
    reason = short_of_devices_reason("1 of 2 device(s) missing", 0.25, 40, 6.4, 0.0)
    assert "could no longer meet its deadline (1970-01-01 00:00:00 UTC)" in reason
    assert "1 of 2 device(s) missing" in reason
    assert "its 40 round(s) left need about 10 s, and 6 s were left" in reason


class Runs:
    """The run records as the deadlines see them: the run is running."""

    def rounds_if_running(self, task_id: str, run: int) -> int | None:
        return 3


class Stops:
    """Records the runs asked to stop."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.task_ids: list[str] = []

    def __call__(self, task_id: str) -> None:
        self.task_ids.append(task_id)
        self.asked.set()


def served(rounds: int, deadline_s: float) -> tuple[RunDeadlines, ServerLaunch, Stops]:
    """A run of two devices (minimum two) armed with ``deadline_s``, three rounds done at
    0.1 s or more a round."""
    stops = Stops()
    deadlines = RunDeadlines(threading.Lock(), cast(RunRecords, Runs()), stops,
                             EventRecorder())
    launch = ServerLaunch("t", 1, Path("."), "127.0.0.1", 1, {"num-server-rounds": rounds},
                          TaskKind.FLOWER_APP, devices=2, min_devices=2)
    deadlines.arm(launch, deadline_s)
    deadlines.devices_changed(launch, BOTH)
    for number in (1, 2, 3):
        deadlines.round_done(launch, number)
        time.sleep(0.1)
    return deadlines, launch, stops


def test_a_short_run_that_cannot_fit_its_rounds_is_failed_at_once() -> None:
    deadlines, launch, stops = served(1000, 60.0)
    deadlines.devices_changed(launch, SHORT)
    assert stops.asked.wait(5), "the run short of devices was not failed"
    assert stops.task_ids == ["t"]
    reason = deadlines.disarm(launch)
    assert reason is not None and "could no longer meet its deadline" in reason
    assert "device-0 (partition 0)" in reason and "997 round(s) left" in reason


def test_devices_leaving_a_run_that_ends_do_not_fail_it() -> None:
    deadlines, launch, stops = served(1000, 60.0)
    over = GONE.model_copy(update={"why_left": "the run ended"})
    deadlines.devices_changed(launch, Roster(devices=[over, STILL], vacancies=0))
    assert not stops.asked.wait(1.0), "a run whose devices left as it ended was failed"
    assert deadlines.disarm(launch) is None


def test_a_short_run_is_failed_once_its_wait_has_eaten_the_time_its_rounds_need() -> None:
    deadlines, launch, stops = served(13, 6.0)
    deadlines.devices_changed(launch, SHORT)
    assert not stops.asked.is_set(), "10 rounds at about 0.1 s fit in the 5 s left"
    assert stops.asked.wait(10), "the wait never counted against the deadline"
    reason = deadlines.disarm(launch)
    assert reason is not None and "10 round(s) left" in reason


def test_a_run_whose_devices_come_back_is_not_failed_early() -> None:
    deadlines, launch, stops = served(13, 3.0)
    deadlines.devices_changed(launch, SHORT)
    deadlines.devices_changed(launch, BOTH)
    assert stops.asked.wait(10), "the run's deadline did not end it"
    reason = deadlines.disarm(launch)
    assert reason is not None and reason.startswith("the run passed its deadline of 3 s"), reason
    rounds_unknown, launch, stops = served(13, 2.0)
    rounds_unknown.devices_changed(launch, SHORT)
    rounds_unknown.disarm(launch)
    assert not stops.asked.wait(2.5), "a disarmed run's watch went on"


def test_rounds_ended_short_of_devices_do_not_set_the_pace() -> None:
    from cloud_task_manager.deadlines import _Pace

    launch = ServerLaunch("t", 1, Path("."), "127.0.0.1", 1, {"num-server-rounds": 10},
                          TaskKind.FLOWER_APP, devices=2, min_devices=2)
    pace = _Pace(launch, armed_at=0.0, deadline_s=100.0)
    pace.round_ended(1, 20.0)  # the first round waited for the devices to join
    assert pace.round_pace_s() is None
    pace.round_ended(3, 21.0)
    pace.short = SHORT
    pace.round_ended(4, 24.0)  # waited on the device that left
    assert pace.round_pace_s() == pytest.approx(0.5)
    assert pace.rounds_left() == 6
    assert pace.left_s(30.0) == pytest.approx(70.0)
