"""What it takes to start a task's latest run again: its arguments and its last checkpoint.

Kept in the database, not on this process's disk, so that whichever manager process starts the
run again (this one after a restart, or another replica) finds it. Writes here do not go through
:meth:`TaskRecords.transaction`: a checkpoint a round changes no offer to devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from agata_common.database import utcnow
from agata_common.paths import own_folder, write_new_file
from agata_common.run_results import read_regular
from agata_contracts.checkpoints import RESUME_FILE
from cloud_task_manager.models import RunStateRecord, TaskRecord


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

    def save_checkpoint(self, task_id: str, run: int, rounds_done: int, content: bytes, *,
                        owner: str | None = None) -> bool:
        """Keep the checkpoint when it belongs to the task's latest run, is newer than the one
        kept and (``owner``) that replica still owns the run; False when it was not kept."""
        if len(content) > self.max_checkpoint_bytes:
            return False
        with self._sessions.begin() as session:
            changed = session.execute(
                update(RunStateRecord)
                .where(RunStateRecord.task_id == task_id, RunStateRecord.run == run,
                       or_(RunStateRecord.checkpoint_round.is_(None),
                           RunStateRecord.checkpoint_round < rounds_done),
                       *([select(TaskRecord.id).where(TaskRecord.id == task_id,
                                                      TaskRecord.owner == owner).exists()]
                         if owner is not None else []))
                .values(checkpoint_round=rounds_done, checkpoint=content,
                        checkpoint_at=utcnow())
            )
            return bool(getattr(changed, "rowcount", 0))

    def keep_checkpoint_file(self, path: Path, task_id: str, run: int, rounds_done: int, *,
                             owner: str) -> str | None:
        """Keep the checkpoint file a run's server left at ``path`` (in a folder task code can
        write: read without following a link, within the size limit); why not, or None."""
        if path.parent.is_symlink():
            return "its folder is a link"
        content = read_regular(path, self.max_checkpoint_bytes)
        if isinstance(content, str):
            return content
        if len(content) > self.max_checkpoint_bytes:
            return "over the checkpoint size limit"
        if not self.save_checkpoint(task_id, run, rounds_done, content, owner=owner):
            return "not newer than the one kept, or the run is no longer this replica's"
        return None

    def restart_point(self, task_id: str, state: RunState, resumable: bool, state_dir: Path,
                      cause: str) -> tuple[bool, str]:
        """Where a run starts again, and the task's reason saying so: after its checkpoint
        (written as ``resume.npz`` in a state folder of its own), or from round 0 (the folder
        emptied: its spool was read back, its checkpoints are stale)."""
        if resumable and state.checkpoint is not None and state.checkpoint_round is not None:
            write_new_file(own_folder(state_dir) / RESUME_FILE, state.checkpoint)
            return True, (f"resumed after round {state.checkpoint_round} from its checkpoint: "
                          f"{cause}")
        own_folder(state_dir, empty=True)
        with self._sessions.begin() as session:
            self.begin(session, task_id, state.run, state.arguments)
        why = ("the app does not declare [tool.agata] resume = true" if not resumable
               else "no checkpoint was kept yet")
        return False, f"started again from round 0 ({why}): {cause}"

    def get(self, task_id: str, run: int) -> RunState | None:
        """The state of the task's run ``run``; None when the latest run is another one."""
        with self._sessions() as session:
            row = session.get(RunStateRecord, task_id)
            if row is None or row.run != run:
                return None
            return RunState(row.run, dict(row.arguments or {}), row.checkpoint_round,
                            row.checkpoint)
