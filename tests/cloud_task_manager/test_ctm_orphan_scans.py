"""A lease tick looks for orphaned runs only when one may have appeared."""

from __future__ import annotations

import pytest

from cloud_task_manager.replicas import OrphanScans

pytestmark = pytest.mark.unit


def test_the_first_tick_scans_and_a_steady_set_of_replicas_scans_every_nth_tick() -> None:
    scans = OrphanScans(every=3)
    due = []
    for _ in range(7):
        due.append(scans.due({"a", "b"}))
        if due[-1]:
            scans.done()
    assert due == [True, False, False, True, False, False, True]


def test_a_replica_that_left_makes_the_next_tick_scan() -> None:
    scans = OrphanScans(every=100)
    assert scans.due({"a", "b"})
    scans.done()
    assert not scans.due({"a", "b", "c"})
    assert scans.due({"a", "b"}), "c was seen alive and is gone"
    scans.done()
    assert not scans.due({"a", "b"})


def test_a_scan_that_failed_is_due_again_at_the_next_tick() -> None:
    scans = OrphanScans(every=100)
    assert scans.due({"a"})
    scans.done()
    assert scans.due(set())  # a left; the scan raises, so done() is not called
    assert scans.due(set())
    scans.done()
    assert not scans.due(set())
