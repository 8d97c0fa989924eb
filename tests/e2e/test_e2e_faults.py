"""Faults on real processes, through the scenarios of ``experiments.faults``: a device's task
manager killed with ``kill -9`` leaves no task process behind and never holds two places in
the run; a device that vanishes ends the run within its round timeout, naming it."""

from __future__ import annotations

from pathlib import Path

from experiments import faults


def test_a_killed_device_leaves_no_orphan_and_no_double(tmp_path: Path) -> None:
    figures = faults.device_kill(tmp_path)
    assert figures["device_kill_orphans"] == 0, figures
    assert figures["device_kill_duplicate_clients"] == 0, figures


def test_a_vanished_device_ends_the_run_within_its_round_timeout(tmp_path: Path) -> None:
    figures = faults.vanished_device(tmp_path)
    assert figures["vanished_device_status"] == "failed", figures
    assert "device-1" in figures["vanished_device_reason"], figures
    # the round timeout is 5 s; the rest is the test machine's slack
    assert figures["vanished_device_end_s"] < faults.REJOIN_S + 10, figures


def test_a_killed_cloud_task_manager_leaves_no_server_behind(tmp_path: Path) -> None:
    figures = faults.manager_kill(tmp_path)
    assert figures["manager_kill_orphans"] == 0, figures
