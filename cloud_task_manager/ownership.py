"""Run ownership between replicas: taking over the runs of replicas that are gone, and fencing
off the runs another replica took from this one."""

from __future__ import annotations

import logging

from agata_contracts.tasks import TaskStatus
from cloud_task_manager.recovery import RunRecovery
from cloud_task_manager.serving import ServedRuns

logger = logging.getLogger(__name__)


class RunOwnership:
    """Claims the runs of gone replicas for this one, and gives up those it lost."""

    def __init__(self, served: ServedRuns, recovery: RunRecovery) -> None:
        self.served = served
        self.recovery = recovery

    def take_over(self, alive: set[str]) -> int:
        """Recover the runs of replicas no longer alive (their lease ran out, or they left);
        return how many this replica claimed. Runs another replica claimed first are left."""
        served = self.served
        taken = 0
        for task_id, owner in served.run_records.orphaned_runs(alive):
            if not served.run_records.claim(task_id, owner, lease_s=served.timings.lease_s):
                continue
            taken += 1
            logger.warning("task %s: replica %s is gone; this replica (%s) takes its run over",
                           task_id, owner, served.replica_id)
            self.recovery.recover_or_fail(task_id, previous=owner)
        return taken

    def fence(self) -> None:
        """Stop serving runs another replica now owns (it thought this one dead): their
        servers end without this replica recording anything."""
        served = self.served
        with served.transition:
            serving = {task_id: launch for task_id, launch in served.launches.items()
                       if served.servers.is_running(task_id)}
            if not serving:
                return
            rows = served.run_records.rows(serving)
            for task_id, launch in serving.items():
                row = rows.get(task_id)
                if (row is not None and row.owner in (None, served.replica_id)
                        and row.run == launch.run and row.status == TaskStatus.RUNNING.value):
                    continue
                logger.warning("task %s run %d: %s; stopping the server here", task_id,
                               launch.run, "the task is gone" if row is None else
                               f"replica {row.owner} owns run {row.run} ({row.status}) now")
                served.fenced.add((task_id, launch.run))
                served.servers.request_stop(task_id)
