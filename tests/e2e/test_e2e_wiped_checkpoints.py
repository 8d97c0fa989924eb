"""Checkpoints out of the app's reach (real processes, through ``experiments.faults``'
``wiped_checkpoints`` scenario): the host frozen, every checkpoint in its run's state folder
deleted or overwritten as the app's own code could, then ``kill -9`` of the cloud task manager;
the restarted manager resumes from the copy it kept in its own folder, says so, and the run
finishes with every round."""

from __future__ import annotations

import re
from pathlib import Path

from experiments import fault_runs


def test_a_wiped_state_folder_resumes_from_the_managers_kept_copy(tmp_path: Path) -> None:
    figures = fault_runs.wiped_checkpoints(tmp_path)
    kept = figures["wiped_checkpoints_kept_round"]
    assert kept >= figures["wiped_checkpoints_newest_round"] - 1 and kept >= 5, figures
    assert re.match(rf"resumed after round {kept} from its checkpoint \(.*taken from the copy "
                    r"the manager kept", figures["wiped_checkpoints_reason"]), figures
    assert figures["wiped_checkpoints_rounds_lost"] <= (
        figures["wiped_checkpoints_newest_round"] - kept), figures
    assert figures["wiped_checkpoints_end"].startswith("finished"), figures
    assert figures["wiped_checkpoints_rounds_missing"] == 0, figures
