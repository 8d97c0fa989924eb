"""Results retention on the cloud: each task keeps the results of its newest runs only.

After results of a task are stored, its runs' sizes are summed from ``run_results`` and the
runs the policy (``[cloud_task_manager] keep_runs``, ``keep_mb_per_task``) gives up are deleted:
their rows and their bytes in one transaction, then this replica's local copies of them
(``<data_dir>/results/task_<id>/run_<n>``, from before the database kept results' bytes). Each
pruning is logged and recorded as an experiment event.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import Engine, delete, func, select

from agata_common.retention import RetentionPolicy
from agata_contracts.common import is_task_id
from cloud_task_manager.models import ResultContentRecord, ResultRecord
from microservice_interconnect.events import NO_EVENTS, EventRecorder

logger = logging.getLogger(__name__)

SERVICE = "cloud_task_manager"


class ResultRetention:
    """Prunes a task's oldest runs' results beyond the policy."""

    def __init__(self, engine: Engine, policy: RetentionPolicy, legacy_root: Path,
                 events: EventRecorder = NO_EVENTS) -> None:
        self.engine = engine
        self.policy = policy
        self.legacy_root = legacy_root
        self.events = events

    def run_sizes(self, task_id: str) -> dict[int, int]:
        """Bytes of results per run of the task."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(ResultRecord.run, func.sum(ResultRecord.size))
                .where(ResultRecord.task_id == task_id).group_by(ResultRecord.run))
            return {int(run): int(size or 0) for run, size in rows}

    def prune(self, task_id: str) -> list[int]:
        """Delete the results of the task's runs beyond the policy; the runs pruned."""
        sizes = self.run_sizes(task_id)
        doomed = self.policy.runs_to_prune(sizes)
        if not doomed:
            return []
        with self.engine.begin() as connection:
            connection.execute(delete(ResultContentRecord).where(
                ResultContentRecord.task_id == task_id, ResultContentRecord.run.in_(doomed)))
            removed = connection.execute(delete(ResultRecord).where(
                ResultRecord.task_id == task_id, ResultRecord.run.in_(doomed)))
        if is_task_id(task_id):
            for run in doomed:
                shutil.rmtree(self.legacy_root / f"task_{task_id}" / f"run_{run}",
                              ignore_errors=True)
        freed = sum(sizes[run] for run in doomed)
        runs = ",".join(str(run) for run in doomed)
        logger.info("task %s: pruned the results of run(s) %s (%d file(s), %d bytes; %s)",
                    task_id, runs, getattr(removed, "rowcount", -1), freed,
                    self.policy.describe())
        self.events.register_event(SERVICE, "results_retention",
                                   f"pruned {task_id} runs {runs}")
        return doomed
