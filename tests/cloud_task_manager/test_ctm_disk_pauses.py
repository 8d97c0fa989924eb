"""Pausing runs for a full disk and resuming them once space is back (the logic alone)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cloud_task_manager.disk_pauses import RESUMED_CAUSE, DiskPauses
from cloud_task_manager.task_server import ServerLaunch

pytestmark = pytest.mark.unit


def test_a_full_disk_pauses_a_run_once_and_space_back_resumes_it(tmp_path: Path) -> None:
    records: Any = SimpleNamespace(held_reasons={})
    stopped: list[str] = []
    resumed: list[tuple[str, str]] = []
    done = threading.Event()

    def resume(task_id: str, cause: str) -> None:
        resumed.append((task_id, cause))
        done.set()

    pauses = DiskPauses(records, tmp_path, 2**40, stop=stopped.append, resume=resume,
                        poll_s=0.01)
    launch = ServerLaunch("t", 2, tmp_path, "127.0.0.1", 1, {})
    assert pauses.after_round(launch, None)
    assert pauses.after_round(launch, None)  # already paused: stopped once
    assert stopped == ["t"]
    assert "paused: disk full" in records.held_reasons["t"]
    assert pauses.pausing(launch) is not None
    assert pauses.pausing(ServerLaunch("t", 1, tmp_path, "127.0.0.1", 1, {})) is None
    pauses.min_free_mb = 0  # space is back
    assert done.wait(10)
    assert resumed == [("t", RESUMED_CAUSE)] and "t" not in records.held_reasons
    pauses.close()


def test_a_round_that_could_not_be_stored_pauses_even_above_the_floor(tmp_path: Path) -> None:
    records: Any = SimpleNamespace(held_reasons={})
    pauses = DiskPauses(records, tmp_path, 0, stop=lambda _: None,
                        resume=lambda _t, _c: None, poll_s=60)
    launch = ServerLaunch("t", 1, tmp_path, "127.0.0.1", 1, {})
    assert not pauses.after_round(launch, None)
    assert pauses.after_round(launch, OSError(28, "No space left on device"))
    assert "a round could not be stored" in records.held_reasons["t"]
    pauses.close()
