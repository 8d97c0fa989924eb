"""The run controller's reads and writes of task rows: which runs a replica owns, claims and
ends, each one short transaction."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from agata_common.database import database_now, utcnow
from agata_contracts.tasks import TaskStatus
from cloud_task_manager.models import ReplicaRecord, TaskRecord
from cloud_task_manager.records import TaskRecords


@dataclass(frozen=True)
class RunRow:
    """Who owns a task's latest run, and how it stands."""

    owner: str | None
    run: int
    status: str


def fail_record(record: TaskRecord, reason: str) -> None:
    """Record the row's run as failed for ``reason``."""
    record.status = TaskStatus.FAILED.value
    record.status_reason = reason
    record.server_pid = None
    record.ended_at = record.modified = utcnow()


class RunRecords:
    """Run ownership and run ends in the ``tasks`` table, as seen by one replica."""

    def __init__(self, records: TaskRecords, replica_id: str) -> None:
        self.records = records
        self.replica_id = replica_id

    def stale_runs(self, serving: Callable[[str], bool]) -> list[tuple[str, int | None]]:
        """Tasks recorded as running here (or by nobody) whose server this replica is not
        ``serving``, with the pid their server had."""
        with self.records.transaction() as session:
            return [(record.id, record.server_pid) for record in session.scalars(
                select(TaskRecord).where(TaskRecord.status == TaskStatus.RUNNING.value,
                                         or_(TaskRecord.owner.is_(None),
                                             TaskRecord.owner == self.replica_id))
            ).all() if not serving(record.id)]

    def orphaned_runs(self, alive: Collection[str]) -> list[tuple[str, str]]:
        """Running tasks owned by another replica that is not ``alive``, with that owner."""
        with Session(self.records.engine) as session:  # a read: no change to announce
            return [(record.id, record.owner) for record in session.scalars(
                select(TaskRecord).where(TaskRecord.status == TaskStatus.RUNNING.value,
                                         TaskRecord.owner.is_not(None),
                                         TaskRecord.owner != self.replica_id))
                    if record.owner is not None and record.owner not in alive]

    def rows(self, task_ids: Collection[str]) -> dict[str, RunRow]:
        """The current run of each task of ``task_ids`` that still exists."""
        with Session(self.records.engine) as session:  # a read: no change to announce
            return {record.id: RunRow(record.owner, record.runs, record.status)
                    for record in session.scalars(
                        select(TaskRecord).where(TaskRecord.id.in_(task_ids)))}

    def claim(self, task_id: str, owner: str | None = None, *, lease_s: float = 0.0) -> bool:
        """Make this replica the owner of the task's running run if ``owner`` (None: this
        replica or nobody) still owns it and, for another replica, its lease of ``lease_s``
        ran out; one compare-and-set update."""
        if owner is None:
            held = or_(TaskRecord.owner.is_(None), TaskRecord.owner == self.replica_id)
        else:  # and its lease still ran out: a replica back in time keeps its run
            renewed = select(ReplicaRecord.id).where(
                ReplicaRecord.id == owner,
                ReplicaRecord.seen_at > database_now(self.records.engine)
                - timedelta(seconds=lease_s))
            held = and_(TaskRecord.owner == owner, ~renewed.exists())
        with self.records.transaction() as session:
            changed = session.execute(
                update(TaskRecord)
                .where(TaskRecord.id == task_id,
                       TaskRecord.status == TaskStatus.RUNNING.value, held)
                .values(owner=self.replica_id))
            return bool(getattr(changed, "rowcount", 0))

    def fail_running(self, task_id: str, reason: str) -> None:
        """Record the task's run failed for ``reason`` if it is still running."""
        with self.records.transaction() as session:
            record = session.get(TaskRecord, task_id)
            if record is not None and record.status == TaskStatus.RUNNING.value:
                fail_record(record, reason)

    def set_pid(self, task_id: str, run: int, pid: int) -> None:
        """Keep the pid of the run's server (while it is the task's current run)."""
        with self.records.transaction(changes_tasks=False) as session:
            record = session.get(TaskRecord, task_id)
            if record is not None and record.runs == run:
                record.server_pid = pid

    def rounds_if_running(self, task_id: str, run: int) -> int | None:
        """How many rounds the run reported when it is the task's current, running run;
        None when it is not."""
        with self.records.transaction() as session:
            record = session.get(TaskRecord, task_id)
            if not (record is not None and record.runs == run
                    and record.status == TaskStatus.RUNNING.value):
                return None
            return self.records.rounds_done(session, task_id, run)

    def end_run(self, task_id: str, run: int, status: TaskStatus, reason: str | None) -> bool:
        """Record the run's end when it is still the current run, running, and this replica's
        (or nobody's); whether it was."""
        with self.records.transaction() as session:
            record = session.get(TaskRecord, task_id)
            if record is None or record.runs != run or record.owner not in (
                    None, self.replica_id) or record.status != TaskStatus.RUNNING.value:
                return False
            record.status = status.value
            if reason is not None or status is not TaskStatus.FINISHED:
                record.status_reason = reason  # a finished run keeps its "resumed after" note
            record.server_pid = None
            record.ended_at = record.modified = utcnow()
        return True

    def note(self, task_id: str, run: int, reason: str) -> None:
        """Add a warning to the reason of the task's running run ``run`` (after what the
        reason already says, such as where the run resumed)."""
        with self.records.transaction() as session:
            record = session.get(TaskRecord, task_id)
            if (record is not None and record.runs == run
                    and record.status == TaskStatus.RUNNING.value):
                record.status_reason = (f"{record.status_reason}; {reason}"
                                        if record.status_reason else reason)
                record.modified = utcnow()

    def pause(self, task_id: str, run: int, reason: str) -> bool:
        """Leave the run recorded running, its server gone, saying why (the next start of this
        replica resumes it); whether it was still this replica's running run."""
        with self.records.transaction() as session:
            record = session.get(TaskRecord, task_id)
            if record is None or record.runs != run or record.owner not in (
                    None, self.replica_id) or record.status != TaskStatus.RUNNING.value:
                return False
            record.status_reason = reason
            record.server_pid = None
            record.modified = utcnow()
        return True
