"""Task records in the database and their contract views: the one place rows become messages."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from agata_common.database import utcnow
from agata_contracts.credentials import is_device_credential
from agata_contracts.tasks import (
    ClientTaskReport,
    ClientTaskStatus,
    CreateTaskRequest,
    RoundMetrics,
    Task,
    TaskFile,
    TaskList,
    TaskMetrics,
    TaskStatus,
    kind_of,
)
from cloud_task_manager import migrations
from cloud_task_manager.models import (
    ClientReportRecord,
    FileRecord,
    RoundMetricRecord,
    TaskRecord,
)
from cloud_task_manager.storage import Credentials, StoredFile
from microservice_interconnect import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)

MAX_CLIENT_REPORTS = 500


def to_task_file(row: FileRecord) -> TaskFile:
    """The contract view of a stored file."""
    return TaskFile(name=row.name, size=row.size, sha256=row.sha256)


def to_task(record: TaskRecord) -> Task:
    """The operator's view of a task record: no credential, no pid."""
    return Task(
        id=record.id,
        host=record.host,
        port=record.own_port,
        selection_criteria=record.selection_criteria,
        server_arguments=dict(record.server_arguments or {}),
        client_arguments=dict(record.client_arguments or {}),
        tags=list(record.tags or []),
        devices=record.devices,
        min_devices=record.min_devices,
        deadline_s=record.deadline_s,
        files=[to_task_file(f) for f in record.files],
        kind=kind_of(f.name for f in record.files),
        status=TaskStatus(record.status),
        status_reason=record.status_reason,
        runs=record.runs,
        replica=record.owner,
        created=record.created,
        modified=record.modified,
        started_at=record.started_at,
        ended_at=record.ended_at,
    )


def to_report(row: ClientReportRecord) -> ClientTaskReport:
    """The contract view of a stored client report."""
    return ClientTaskReport(task_id=row.task_id, client_id=row.client_id,
                            status=ClientTaskStatus(row.status), reason=row.reason,
                            reported_at=row.reported_at)


class TaskRecords:
    """Reads and writes task rows; every method is one short transaction."""

    def __init__(self, engine: Engine, credentials: Credentials) -> None:
        self.engine = engine
        self.credentials = credentials
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._listeners: list[Callable[[], None]] = []
        self.held_reasons: dict[str, str] = {}
        """Reasons of running tasks held in memory while the database cannot take them (its
        disk is full): shown instead of the stored one until the run moves on."""

    def _view(self, record: TaskRecord) -> Task:
        task = to_task(record)
        held = self.held_reasons.get(task.id)
        if held is not None and task.status is TaskStatus.RUNNING:
            return task.model_copy(update={"status_reason": held})
        return task

    def create_schema(self) -> None:
        """Bring the database to the newest schema (``migrations``: Alembic revisions); one
        replica at a time: replicas starting together wait for each other."""
        migrations.upgrade(self.engine)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every committed transaction (to drop what was derived from
        the rows, such as the running tasks' offers)."""
        self._listeners.append(listener)

    @contextmanager
    def transaction(self, *, changes_tasks: bool = True) -> Iterator[Session]:
        """A session whose work is committed at the end (rolled back on an exception); the
        change listeners hear of it unless it wrote nothing a task's offer is made of
        (``changes_tasks=False``: a round's metrics, a client's report, a server's pid)."""
        with self._sessions.begin() as session:
            yield session
        if changes_tasks:
            for listener in self._listeners:
                listener()

    @staticmethod
    def get(session: Session, task_id: str) -> TaskRecord:
        """The task's row, or 404."""
        record = session.get(TaskRecord, task_id)
        if record is None:
            raise NotFound(f"task {task_id!r} does not exist")
        return record

    def task(self, task_id: str) -> Task:
        """One task."""
        with Session(self.engine) as session:
            return self._view(self.get(session, task_id))

    def create(self, request: CreateTaskRequest) -> Task:
        """Store a new task with a fresh download credential (only its hash is kept)."""
        task_id = request.task_id or secrets.token_hex(4)
        nonce = self.credentials.new_nonce()
        now = utcnow()
        record = TaskRecord(
            id=task_id,
            host=request.host,
            own_port=request.port,
            selection_criteria=request.selection_criteria,
            server_arguments=request.server_arguments,
            client_arguments=request.client_arguments,
            tags=request.tags,
            devices=request.devices,
            min_devices=request.min_devices,
            deadline_s=request.deadline_s,
            status=TaskStatus.CREATED.value,
            runs=0,
            credential_nonce=nonce,
            credential_hash=Credentials.digest(self.credentials.credential(task_id, nonce)),
            created=now,
            modified=now,
        )
        try:
            with self.transaction() as session:
                session.add(record)
                session.flush()
                return to_task(record)
        except IntegrityError:
            raise Conflict(f"task {task_id!r} already exists") from None

    def page(self, status: TaskStatus | None, limit: int, offset: int) -> TaskList:
        """A page of tasks, newest first."""
        query = select(TaskRecord)
        count = select(func.count()).select_from(TaskRecord)
        if status is not None:
            query = query.where(TaskRecord.status == status.value)
            count = count.where(TaskRecord.status == status.value)
        with Session(self.engine) as session:
            total = session.scalar(count) or 0
            records = session.scalars(
                query.order_by(TaskRecord.created.desc(), TaskRecord.id)
                .limit(limit).offset(offset)
            ).all()
            return TaskList(tasks=[self._view(r) for r in records], total=total)

    def running(self) -> Sequence[TaskRecord]:
        """Running tasks (detached rows, files loaded), oldest start first."""
        with Session(self.engine) as session:
            return session.scalars(
                select(TaskRecord).where(TaskRecord.status == TaskStatus.RUNNING.value)
                .order_by(TaskRecord.started_at, TaskRecord.id)
            ).all()

    def metrics(self, task_id: str, run: int) -> TaskMetrics:
        """Per-round metrics of one run (0 = the latest)."""
        with Session(self.engine) as session:
            record = self.get(session, task_id)
            run = run or record.runs
            rows = session.scalars(
                select(RoundMetricRecord)
                .where(RoundMetricRecord.task_id == record.id, RoundMetricRecord.run == run)
                .order_by(RoundMetricRecord.round)
            ).all()
            return TaskMetrics(
                task_id=record.id,
                run=run,
                rounds=[RoundMetrics(round=r.round, metrics=r.metrics,
                                     reported_at=r.reported_at) for r in rows],
            )

    @staticmethod
    def rounds_done(session: Session, task_id: str, run: int) -> int:
        """How many rounds of a run have reported metrics."""
        count = session.scalar(select(func.count()).select_from(RoundMetricRecord).where(
            RoundMetricRecord.task_id == task_id, RoundMetricRecord.run == run,
            RoundMetricRecord.round > 0))
        return int(count or 0)

    def store_round(self, task_id: str, run: int, round_number: int,
                    metrics: dict[str, float], reported: datetime) -> None:
        """Record (or extend) one round's metrics."""
        with self.transaction(changes_tasks=False) as session:
            row = session.scalars(
                select(RoundMetricRecord).where(
                    RoundMetricRecord.task_id == task_id,
                    RoundMetricRecord.run == run,
                    RoundMetricRecord.round == round_number,
                )
            ).first()
            if row is None:
                session.add(RoundMetricRecord(task_id=task_id, run=run, round=round_number,
                                              metrics=metrics, reported_at=reported))
            else:
                row.metrics = {**row.metrics, **metrics}
                row.reported_at = reported

    def file_count_allows(self, task_id: str, name: str, limit: int) -> None:
        """Raise a 400 when adding a new file ``name`` would pass ``limit`` files."""
        with Session(self.engine) as session:
            names = {f.name for f in self.get(session, task_id).files}
        if name not in names and len(names) >= limit:
            raise BadRequest(f"task {task_id!r} already has {len(names)} files (the limit)")

    def record_file(self, task_id: str, stored: StoredFile) -> TaskFile:
        """Record a file written into the task folder (replacing a row of the same name)."""
        with self.transaction() as session:
            record = self.get(session, task_id)
            row = next((f for f in record.files if f.name == stored.name), None)
            if row is None:
                row = FileRecord(task_id=record.id, name=stored.name, size=stored.size,
                                 sha256=stored.sha256)
                record.files.append(row)
            else:
                row.size, row.sha256, row.uploaded = stored.size, stored.sha256, utcnow()
            record.modified = utcnow()
            return to_task_file(row)

    def file_names(self, task_id: str) -> set[str]:
        """The paths of a task's files."""
        with Session(self.engine) as session:
            return {f.name for f in self.get(session, task_id).files}

    def require_not_running(self, task_id: str) -> None:
        """409 while the task runs (its files are in use)."""
        with Session(self.engine) as session:
            if self.get(session, task_id).status == TaskStatus.RUNNING.value:
                raise Conflict(f"task {task_id!r} is running; stop it before replacing its files")

    def replace_files(self, task_id: str, stored: list[StoredFile]) -> list[TaskFile]:
        """Make ``stored`` the task's only files (rows of other files are deleted)."""
        with self.transaction() as session:
            record = self.get(session, task_id)
            if record.status == TaskStatus.RUNNING.value:
                raise Conflict(f"task {task_id!r} is running; stop it before replacing its files")
            by_name = {f.name: f for f in record.files}
            keep = {s.name for s in stored}
            for name, stale in by_name.items():
                if name not in keep:
                    record.files.remove(stale)
            for item in stored:
                existing = by_name.get(item.name)
                if existing is None:
                    record.files.append(FileRecord(task_id=record.id, name=item.name,
                                                   size=item.size, sha256=item.sha256))
                else:
                    existing.size, existing.sha256 = item.size, item.sha256
                    existing.uploaded = utcnow()
            record.modified = utcnow()
            session.flush()
            return [to_task_file(row) for row in sorted(record.files, key=lambda f: f.name)]

    def rotate_credential(self, record: TaskRecord) -> None:
        """Give the task a new download credential (at each start: a credential lives as long
        as its run)."""
        record.previous_nonce = record.credential_nonce
        record.credential_nonce = self.credentials.new_nonce()
        record.credential_hash = Credentials.digest(
            self.credentials.credential(record.id, record.credential_nonce))

    def run_credential(self, record: TaskRecord, run: int | None = None) -> str | None:
        """The credential of the record's current run (each device's is derived from it), or
        of ``run`` when it is the current or the one before (results may still come for it);
        None for an older run."""
        if run is None or run == record.runs:
            return self.credentials.credential(record.id, record.credential_nonce)
        if run == record.runs - 1 and record.previous_nonce:
            return self.credentials.credential(record.id, record.previous_nonce)
        return None

    def check_download_credential(self, task_id: str, credential: str | None,
                                  client_id: str | None) -> None:
        """401 unless the task is running and ``credential`` is device ``client_id``'s for the
        current run (404: no such task)."""
        with Session(self.engine) as session:
            record = self.get(session, task_id)
            if not (credential and client_id and is_device_credential(
                    credential, self.run_credential(record) or "", client_id)):
                raise Unauthorized(f"wrong or missing download credential for task {task_id!r} "
                                   "(each device has its own, from its offer)")
            if record.status != TaskStatus.RUNNING.value:
                raise Unauthorized(f"task {task_id!r} is not running: its download credential "
                                   "ended with its run")

    def run_door(self, task_id: str, run: int, client_id: str,
                 credential: str) -> tuple[str, str]:
        """The door address of the task's current run and the run's credential, for device
        ``client_id`` presenting ``credential``: 403 when it is not the device's own for that
        run, 409 when that run is over, 503 while its server is not listening yet."""
        with Session(self.engine) as session:
            record = self.get(session, task_id)
            running = record.status == TaskStatus.RUNNING.value and run == record.runs
            run_credential = self.run_credential(record, run) if run <= record.runs else None
            if run_credential is None or not is_device_credential(credential, run_credential,
                                                                  client_id):
                raise Forbidden(f"wrong run credential for run {run} of task {task_id!r} "
                                f"(each device has its own, from its offer)")
            if not running:
                raise Conflict(f"run {run} of task {task_id!r} is over")
            if not record.door:
                raise ServiceUnavailable(f"the server of task {task_id!r} is not listening "
                                         "yet; try again")
            return record.door, run_credential

    def file_row(self, task_id: str, name: str) -> TaskFile:
        """A task file's row (404 when the task or the file does not exist)."""
        with Session(self.engine) as session:
            record = self.get(session, task_id)
            row = next((f for f in record.files if f.name == name), None)
            if row is None:
                raise NotFound(f"task {task_id!r} has no file {name!r}")
            return to_task_file(row)

    def add_client_report(self, task_id: str, client_id: str, status: ClientTaskStatus,
                          reason: str | None) -> ClientTaskReport:
        """Store what a client reported about a task."""
        with self.transaction(changes_tasks=False) as session:
            self.get(session, task_id)
            row = ClientReportRecord(task_id=task_id, client_id=client_id, status=status.value,
                                     reason=reason, reported_at=utcnow())
            session.add(row)
            session.flush()
            return to_report(row)

    def client_reports(self, task_id: str) -> list[ClientTaskReport]:
        """What clients reported about a task, newest first (at most ``MAX_CLIENT_REPORTS``)."""
        with Session(self.engine) as session:
            self.get(session, task_id)
            rows = session.scalars(
                select(ClientReportRecord)
                .where(ClientReportRecord.task_id == task_id)
                .order_by(ClientReportRecord.reported_at.desc(), ClientReportRecord.id.desc())
                .limit(MAX_CLIENT_REPORTS)
            ).all()
            return [to_report(r) for r in rows]
