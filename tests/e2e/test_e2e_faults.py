"""Faults on real processes, through the scenarios of ``experiments.faults``: a device's task
manager killed with ``kill -9`` leaves no task process behind and never holds two places in
the run; a device that vanishes ends the run within its round timeout, naming it; a cloud task
manager killed mid-run leaves no server behind, and its run resumes after its last checkpoint
(or starts again from round 0 when the app does not declare ``resume``) and finishes with every
round and every report its server kept."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from experiments import faults
from experiments.stack import TASKS_DIR

ROUNDS = 20


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


def test_a_killed_cloud_task_manager_leaves_no_server_behind_and_its_run_resumes(
        tmp_path: Path) -> None:
    figures = faults.manager_kill(tmp_path, rounds=ROUNDS)
    assert figures["manager_kill_orphans"] == 0, figures
    done = figures["manager_kill_rounds_done_before"]
    resumed = re.match(r"finished \(resumed after round (\d+) from its checkpoint",
                       figures["manager_kill_end"])
    assert resumed, figures["manager_kill_end"]
    # the kill may fall between a round's training report and its checkpoint: that round is
    # trained again after the restart, never lost
    assert int(resumed.group(1)) in (done - 1, done), figures
    assert figures["manager_kill_rounds_lost"] == 0, figures
    assert figures["reports_checked"] >= ROUNDS, figures  # train and evaluate reports
    assert figures["reports_lost"] == 0, figures
    assert figures["reports_duplicated"] == 0, figures
    assert figures["manager_kill_rounds_redone"] <= 1, figures


def test_an_app_that_does_not_declare_resume_starts_again_from_round_0(tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(TASKS_DIR / "app_digits", app)
    manifest = app / "pyproject.toml"
    manifest.write_text(re.sub(r"(?m)^resume = true.*$", "", manifest.read_text()))
    figures = faults.manager_kill(tmp_path / "run", rounds=ROUNDS, app=app)
    assert figures["manager_kill_end"].startswith(
        "finished (started again from round 0 (the app does not declare [tool.agata] "
        "resume = true)"), figures
    assert figures["manager_kill_rounds_lost"] == 0, figures
