"""A damaged newest checkpoint costs at most the rounds since the previous one (real processes,
through ``experiments.faults``' ``bad_checkpoint`` scenario): the host frozen, its newest
checkpoint file truncated and the database's copy cut in half, then ``kill -9`` of the cloud
task manager; the restarted manager resumes from the previous whole checkpoint, says it skipped
the damaged one, and the run finishes with every round."""

from __future__ import annotations

import re
from pathlib import Path

from experiments import fault_runs


def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_one(tmp_path: Path) -> None:
    figures = fault_runs.bad_checkpoint(tmp_path)
    newest = figures["bad_checkpoint_newest_round"]
    assert re.match(rf"resumed after round {newest - 1} from its checkpoint \(its newer "
                    rf"checkpoint after round {newest} is damaged and was skipped\)",
                    figures["bad_checkpoint_reason"]), figures
    assert figures["bad_checkpoint_rounds_lost"] == 1, figures
    assert figures["bad_checkpoint_end"].startswith("finished"), figures
    assert figures["bad_checkpoint_rounds_missing"] == 0, figures
