"""``python -m experiments.flower_app`` runs an unmodified app (only ``num-server-rounds`` in its
config, its final model saved where it works) on both runtimes: ours keeps the saved model as a
result of the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import REPO_ROOT

PLAIN_APP = REPO_ROOT / "tests" / "apps" / "app_plain"


def test_an_app_declaring_only_its_rounds_runs_on_both_runtimes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "experiments.flower_app", str(PLAIN_APP), "--clients", "2",
         "--rounds", "2", "--json", "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["run_config"] == {"num-server-rounds": 2}
    assert figures["status"] == "completed", figures
    assert figures["flower_status"] == "finished:completed", figures
    assert [r["round"] for r in figures["rounds"]] == [1, 2]
    assert "final_model.npz" in figures["results"]["server"], figures["results"]
    assert figures["model_bytes_moved"] > 0, figures  # what the run's host says it moved
