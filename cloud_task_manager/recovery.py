"""Crash recovery: a run recorded as running without its server is settled from the reports its
server kept, or started again under the same run number (a Flower App's, from its last
checkpoint when the app declares ``[tool.agata] resume = true``, see
``agata_contracts.checkpoints``), or recorded failed (a script task's)."""

from __future__ import annotations

import dataclasses
import logging

from agata_common.database import utcnow
from agata_contracts.checkpoints import SPOOL_FILE
from agata_contracts.tasks import TaskKind, TaskStatus, kind_of
from cloud_task_manager.run_records import fail_record
from cloud_task_manager.run_states import RunStates
from cloud_task_manager.serving import SERVICE, ServedRuns
from cloud_task_manager.storage import TaskStorage
from cloud_task_manager.task_server import kill_orphan

logger = logging.getLogger(__name__)

RESTART_REASON = "the cloud task manager restarted while this task was running; start it again"


class RunRecovery:
    """Recovers the runs this replica finds without their server."""

    def __init__(self, served: ServedRuns, storage: TaskStorage, states: RunStates) -> None:
        self.served = served
        self.storage = storage
        self.states = states

    def reconcile(self) -> int:
        """Recover every task recorded as running here whose server is not ours; how many.

        A server left running by an earlier manager process is killed first: its report
        channel died with that process.
        """
        served = self.served
        with served.transition:
            stale = served.run_records.stale_runs(served.servers.is_running)
        stale = [(task_id, pid) for task_id, pid in stale if served.run_records.claim(task_id)]
        for task_id, pid in stale:
            if pid:
                kill_orphan(pid, self.storage.task_dir(task_id),
                            served.results.scratch_path(task_id, 1).parent)
            self.recover_or_fail(task_id)
        if stale:
            logger.warning("recovered %d task(s) left running by an earlier manager", len(stale))
        return len(stale)

    def recover_or_fail(self, task_id: str, *, previous: str | None = None,
                        cause: str | None = None) -> None:
        """Recover the task's run; record it failed when that goes wrong."""
        try:
            self.recover(task_id, previous=previous, cause=cause)
        except Exception:
            logger.exception("task %s: could not %s", task_id, "recover its run"
                             if previous is None else "take its run over")
            self.served.run_records.fail_running(task_id, RESTART_REASON)

    def recover(self, task_id: str, *, previous: str | None = None,
                cause: str | None = None) -> None:
        """Settle or restart a run without a server. Its spool is read back only when this
        replica ran it last; a run taken over from another replica starts from the
        database alone, and whatever an earlier tenure here left in its state folder goes.
        ``previous`` names the replica it is taken over from (None: this replica's own run);
        ``cause`` says why its server is gone (default: this manager restarted)."""
        served = self.served
        records = served.records
        with served.transition:
            if served.shutting_down:
                return
            with records.transaction() as session:
                record = records.get(session, task_id)
                if record.status != TaskStatus.RUNNING.value or served.servers.is_running(task_id):
                    return
                run = record.runs
                kind = kind_of(f.name for f in record.files)
                state = self.states.get(task_id, run)
                if state is None or kind is not TaskKind.FLOWER_APP:
                    fail_record(record, RESTART_REASON)
                    return
                left_s = (float(record.deadline_s or served.timings.default_deadline_s)
                          - (utcnow() - (record.started_at or utcnow())).total_seconds())
            scratch = served.results.scratch(task_id, run, keep=True)
            lifecycle = served.results.lifecycle(task_id)
            state_dir = served.results.state_folder(task_id, run, keep=previous is None)
            with records.transaction() as session:
                record = records.get(session, task_id)
                launch = served.launch(record, self.storage.task_dir(task_id), kind,
                                       state.arguments, lifecycle.image, scratch)
            ended = served.reports.replay_spool(launch, state_dir / SPOOL_FILE)
            if ended is not None:
                served.end_with_results(launch, *ended)
                return
            if left_s <= 0:
                served.finish_run(launch, TaskStatus.FAILED, "the run passed its deadline "
                                  "while the cloud task manager was away")
                return
            resume, reason = self.states.restart_point(
                launch.task_id, state, lifecycle.resume, state_dir,
                cause if cause is not None
                else "the cloud task manager restarted during the run" if previous is None
                else f"its replica {previous} stopped answering and replica "
                     f"{served.replica_id} took the run over", served.results.kept)
            launch = dataclasses.replace(launch, resume=resume)
            with records.transaction() as session:
                record = records.get(session, task_id)
                record.status_reason = reason
                record.modified = utcnow()
            logger.warning("task %s run %d: %s", task_id, run, reason)
            if served.serve(launch, left_s) is not None:
                return
        served.events.register_event(SERVICE, "recover", f"{task_id}: {reason}")
