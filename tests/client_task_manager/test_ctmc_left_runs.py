"""Runs an earlier client task manager left when it died: the reports their task processes
kept on disk before sending them are read back, and reported by the next manager process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agata_common.config import Settings
from agata_contracts.lifecycle import NO_LIFECYCLE
from agata_contracts.results import UPLOAD_RESULT
from agata_contracts.tasks import REPORT_CLIENT_TASK, ClientTaskStatus, TaskKind, TaskOffer
from client_task_manager.identity import ClientIdentity
from client_task_manager.left_runs import left_runs, offer_file
from client_task_manager.lifecycle import RunResults
from client_task_manager.manager import ClientTaskManager
from client_task_manager.scheduler import Policy, TaskBook
from microservice_interconnect.spec import RpcSpec
from task_daemon_lib.messages import REPORT_SPOOL_ENV

REPO = Path(__file__).resolve().parents[2]


def offer(task_id: str, run: int = 1) -> TaskOffer:
    return TaskOffer(task_id=task_id, run=run, host="127.0.0.1", port=8000, client_arguments={},
                     tags=[], files=[], kind=TaskKind.FLOWER_APP,
                     download_credential="c" * 64)


def left_by_a_task(work_dir: Path, task_id: str, body: str) -> Path:
    """A run's folder as a manager killed mid-run leaves it: its offer kept, and what its task
    process reported (a real reporter, told where to spool by the environment)."""
    results = RunResults.prepare(work_dir, offer(task_id), "device-7", NO_LIFECYCLE)
    results.log("stdout", f"log of {task_id}")
    results.log.close()
    script = ("from task_daemon_lib import TaskReporter\n"
              "reporter = TaskReporter()\n" + body)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(REPO),
                        REPORT_SPOOL_ENV: str(results.spool)})
    return results.folder


def test_left_runs_say_how_their_processes_ended(tmp_path: Path) -> None:
    left_by_a_task(tmp_path, "done", 'reporter.send_stats(1, loss=0.5)\n'
                                     'reporter.send_info("Finished")\n')
    left_by_a_task(tmp_path, "broke", 'reporter.send_error(ValueError("bad shard"))\n')
    left_by_a_task(tmp_path, "cut", 'reporter.send_stats(1, loss=0.5)\n')
    stray = tmp_path / "results" / "task_stray" / "run_1"
    stray.mkdir(parents=True)
    found = {run.offer.task_id: run.ended for run in left_runs(tmp_path)}
    assert found == {"done": (ClientTaskStatus.FINISHED, None),
                     "broke": (ClientTaskStatus.FAILED, "ValueError: bad shard"),
                     "cut": None}
    assert not stray.exists(), "a folder without its offer is removed"
    assert oct(offer_file(tmp_path / "results" / "task_done" / "run_1").stat().st_mode
               & 0o777) == "0o600"


def test_the_next_manager_reports_what_the_dead_one_could_not(tmp_path: Path,
                                                              settings: Settings) -> None:
    work_dir = tmp_path / "client_tasks"
    for task_id, body in (("broke", 'reporter.send_error(ValueError("bad shard"))\n'),
                          ("done", 'reporter.send_info("Finished")\n'),
                          ("cut", 'reporter.send_stats(3, loss=0.1)\n')):
        left_by_a_task(work_dir, task_id, body)
    sent: list[tuple[str, Any]] = []

    def send_report(spec: RpcSpec[Any, Any], report: BaseModel) -> None:
        sent.append((spec.name, report))

    manager = ClientTaskManager(
        ClientIdentity(settings.client_params, tmp_path / "client_info"),
        TaskBook(Policy.ONE, 1, 60.0, 600.0),
        query_offers=lambda client_id: [], fetch_file=lambda request: None,  # type: ignore
        send_report=send_report, work_dir=work_dir, request_interval_s=3600)
    manager.start()
    try:
        reports = {r.task_id: (r.status, r.reason) for name, r in sent
                   if name == REPORT_CLIENT_TASK.name}
        assert reports == {"broke": (ClientTaskStatus.FAILED, "ValueError: bad shard"),
                           "done": (ClientTaskStatus.FINISHED, None)}
        uploads = sorted((r.task_id, r.name) for name, r in sent if name == UPLOAD_RESULT.name)
        assert uploads == [("broke", "output-device-7.txt"), ("done", "output-device-7.txt")]
        assert not list((work_dir / "results").glob("task_*/run_*")), "folders are left"
    finally:
        manager.stop()
