"""What it takes to start a task's latest run again: its arguments and its last checkpoint.

Kept in the database, not on this process's disk, so that whichever manager process starts the
run again (this one after a restart, or another replica) finds it. Writes here do not go through
:meth:`TaskRecords.transaction`: a checkpoint a round changes no offer to devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, or_, update
from sqlalchemy.orm import Session, sessionmaker

from agata_common.database import utcnow
from cloud_task_manager.models import RunStateRecord


@dataclass(frozen=True)
class RunState:
    """A run's arguments and its last checkpoint (None before the first)."""

    run: int
    arguments: dict[str, Any]
    checkpoint_round: int | None
    checkpoint: bytes | None


class RunStates:
    """The ``run_states`` table: one row per task, for its latest run."""

    def __init__(self, engine: Engine, max_checkpoint_bytes: int) -> None:
        self.max_checkpoint_bytes = max_checkpoint_bytes
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @staticmethod
    def begin(session: Session, task_id: str, run: int, arguments: dict[str, Any]) -> None:
        """A new run of the task starts (in the caller's transaction): no checkpoint yet."""
        row = session.get(RunStateRecord, task_id)
        if row is None:
            session.add(RunStateRecord(task_id=task_id, run=run, arguments=arguments))
            return
        row.run = run
        row.arguments = arguments
        row.checkpoint_round = None
        row.checkpoint = None
        row.checkpoint_at = None

    def save_checkpoint(self, task_id: str, run: int, rounds_done: int, content: bytes) -> bool:
        """Keep the checkpoint when it belongs to the task's latest run and is newer than the
        one kept; False when it was not kept."""
        if len(content) > self.max_checkpoint_bytes:
            return False
        with self._sessions.begin() as session:
            changed = session.execute(
                update(RunStateRecord)
                .where(RunStateRecord.task_id == task_id, RunStateRecord.run == run,
                       or_(RunStateRecord.checkpoint_round.is_(None),
                           RunStateRecord.checkpoint_round < rounds_done))
                .values(checkpoint_round=rounds_done, checkpoint=content,
                        checkpoint_at=utcnow())
            )
            return bool(getattr(changed, "rowcount", 0))

    def get(self, task_id: str, run: int) -> RunState | None:
        """The state of the task's run ``run``; None when the latest run is another one."""
        with self._sessions() as session:
            row = session.get(RunStateRecord, task_id)
            if row is None or row.run != run:
                return None
            return RunState(row.run, dict(row.arguments or {}), row.checkpoint_round,
                            row.checkpoint)
