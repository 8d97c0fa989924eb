"""SIGTERM of ``agata up`` (Ctrl-C, a service manager) pauses a Flower App's run, and the next
``agata up`` on the same data folder resumes it from its checkpoint (real processes)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from support import wait_for

from experiments.stack import TASKS_DIR
from experiments.up_system import UpSystem


def rounds(system: UpSystem) -> int:
    assert system.api is not None
    found = system.api.get("/api/tasks/lasting/metrics")["rounds"]
    return max((r["round"] for r in found), default=0)


def test_a_run_outlives_a_sigterm_of_agata_up_and_resumes_with_the_next(tmp_path: Path) -> None:
    system = UpSystem(tmp_path / "data", devices=2)
    try:
        api = system.start()
        system.create_task("lasting", TASKS_DIR / "app_numpy", None, devices=2,
                           server_arguments={"num-server-rounds": 400, "train-delay-s": 0.1})
        api.post("/rpc_exec_start_server_task", {"task_id": "lasting"})
        wait_for(lambda: rounds(system) >= 3, 90, "three rounds")
        assert system.stop() == 0
        with sqlite3.connect(tmp_path / "data" / "cloud" / "tasks.db") as database:
            status, reason = database.execute(
                "SELECT status, status_reason FROM tasks WHERE id = 'lasting'").fetchone()
            done = database.execute("SELECT max(round) FROM task_round_metrics WHERE "
                                    "task_id = 'lasting'").fetchone()[0]
        assert status == "running" and reason.startswith("paused"), (status, reason)
        api = system.start()
        task = wait_for(lambda: (t := api.get("/api/tasks/lasting"))["status_reason"]
                        .startswith("resumed") and t, 60, "the run to resume")
        resumed = re.match(r"resumed after round (\d+)", task["status_reason"])
        # a round's metrics are recorded before its checkpoint is written: a stop between the
        # two trains that round again after the restart (never loses it), as after a kill
        assert resumed and int(resumed.group(1)) >= done - 1, (task, done)
        wait_for(lambda: rounds(system) > done, 60, "training after the new agata up")
        api.post("/rpc_exec_stop_server_task", {"task_id": "lasting"})
    finally:
        system.stop()
        system.forget_broker_roles()
