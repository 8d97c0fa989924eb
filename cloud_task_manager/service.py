"""The cloud task manager: task records, selection, files and the task servers' lives."""

from __future__ import annotations

import base64
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from agata_common.database import utcnow
from agata_contracts.criteria import Criteria, compile_criteria
from agata_contracts.tasks import (
    CLIENT_REQUESTING_TASK,
    CREATE_TASK,
    DOWNLOAD_TASK_FILE,
    GET_CLIENT_TASK_REPORTS,
    GET_TASK_BY_ID,
    GET_TASK_METRICS,
    LIST_TASKS,
    REPORT_CLIENT_TASK,
    START_SERVER_TASK,
    STOP_SERVER_TASK,
    UPDATE_TASK,
    UPLOAD_TASK_FILE,
    ClientRequestingTaskRequest,
    ClientTaskReport,
    ClientTaskReports,
    CreateTaskRequest,
    DownloadTaskFileRequest,
    ListTasksRequest,
    ReportClientTaskRequest,
    RoundMetrics,
    StartTaskRequest,
    Task,
    TaskEvent,
    TaskFile,
    TaskFileContent,
    TaskIdRequest,
    TaskList,
    TaskMetrics,
    TaskMetricsRequest,
    TaskOffer,
    TaskOffers,
    TaskStatus,
    UpdateTaskRequest,
    UploadTaskFileRequest,
)
from agata_contracts.users import UserInfo
from cloud_task_manager.models import (
    Base,
    ClientReportRecord,
    FileRecord,
    RoundMetricRecord,
    TaskRecord,
)
from cloud_task_manager.storage import Credentials, TaskStorage
from cloud_task_manager.task_server import (
    SERVER_SCRIPT,
    ServerLaunch,
    ServerProcesses,
    kill_orphan,
)
from microservice_interconnect import BadRequest, Conflict, NotFound, Unauthorized
from microservice_interconnect.events import register_event
from microservice_interconnect.service import rpc
from task_daemon_lib.messages import (
    INFO_FINISHED,
    ErrorMessage,
    InfoMessage,
    PrintMessage,
    ReportMessage,
    StatsMessage,
    TriggerMessage,
)
from task_daemon_lib.runner import ChildOutcome

logger = logging.getLogger(__name__)

ClientLookup = Callable[[str], UserInfo]
"""Fetches a client's stats by id (raises ``NotFound`` for an unknown client)."""

SHUTDOWN_REASON = "the cloud task manager was shut down"
RESTART_REASON = "the cloud task manager restarted while this task was running; start it again"


def to_task(record: TaskRecord) -> Task:
    """The operator's view of a task record: no credential, no pid."""
    return Task(
        id=record.id,
        host=record.host,
        port=record.port,
        selection_criteria=record.selection_criteria,
        server_arguments=dict(record.server_arguments or {}),
        client_arguments=dict(record.client_arguments or {}),
        tags=list(record.tags or []),
        files=[TaskFile(name=f.name, size=f.size, sha256=f.sha256) for f in record.files],
        status=TaskStatus(record.status),
        status_reason=record.status_reason,
        runs=record.runs,
        created=record.created,
        modified=record.modified,
        started_at=record.started_at,
        ended_at=record.ended_at,
    )


class CloudTaskManager:
    """Tasks over a SQLAlchemy engine, files in a task storage, servers as child processes."""

    def __init__(
        self,
        engine: Engine,
        storage: TaskStorage,
        credentials: Credentials,
        lookup_client: ClientLookup,
        *,
        stop_grace_s: float = 5.0,
        max_files_per_task: int = 64,
        notify: Callable[[TaskEvent], None] | None = None,
    ) -> None:
        self.engine = engine
        self.storage = storage
        self.credentials = credentials
        self.lookup_client = lookup_client
        self.max_files_per_task = max_files_per_task
        self.notify = notify
        Base.metadata.create_all(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._transition = threading.Lock()
        self._criteria: dict[tuple[str, str], Criteria] = {}
        self._shutting_down = False
        self.servers = ServerProcesses(
            stop_grace_s=stop_grace_s, on_report=self._on_report, on_exit=self._on_exit
        )
        self.reconcile()

    # -- helpers -----------------------------------------------------------------------------

    def _get(self, session: Session, task_id: str) -> TaskRecord:
        record = session.get(TaskRecord, task_id)
        if record is None:
            raise NotFound(f"task {task_id!r} does not exist")
        return record

    def reconcile(self) -> int:
        """Tasks recorded as running whose server is not ours become failed; return how many.

        A server left running by an earlier manager process is killed first: its report
        channel died with that process, so nothing could follow it any more.
        """
        count = 0
        with self._sessions.begin() as session:
            stale = session.scalars(
                select(TaskRecord).where(TaskRecord.status == TaskStatus.RUNNING.value)
            ).all()
            for record in stale:
                if self.servers.is_running(record.id):
                    continue
                if record.server_pid:
                    kill_orphan(record.server_pid, self.storage.task_dir(record.id))
                record.status = TaskStatus.FAILED.value
                record.status_reason = RESTART_REASON
                record.server_pid = None
                record.ended_at = record.modified = utcnow()
                count += 1
        if count:
            logger.warning("reconciled %d task(s) left running by an earlier manager", count)
        return count

    # -- operator RPCs -------------------------------------------------------------------

    @rpc(CREATE_TASK)
    def create_task(self, request: CreateTaskRequest) -> Task:
        """Store a new task (its criteria were checked by the contract)."""
        task_id = request.task_id or secrets.token_hex(4)
        nonce = self.credentials.new_nonce()
        now = utcnow()
        record = TaskRecord(
            id=task_id,
            host=request.host,
            port=request.port,
            selection_criteria=request.selection_criteria,
            server_arguments=request.server_arguments,
            client_arguments=request.client_arguments,
            tags=request.tags,
            status=TaskStatus.CREATED.value,
            runs=0,
            credential_nonce=nonce,
            credential_hash=Credentials.digest(self.credentials.credential(task_id, nonce)),
            created=now,
            modified=now,
        )
        try:
            with self._sessions.begin() as session:
                session.add(record)
        except IntegrityError:
            raise Conflict(f"task {task_id!r} already exists") from None
        self.storage.task_dir(task_id)
        register_event("cloud_task_manager", "rpc_exec_create_task", f"created {task_id}")
        logger.info("task %s created (%s:%d)", task_id, request.host, request.port)
        return self.get_task_by_id(TaskIdRequest(task_id=task_id))

    @rpc(GET_TASK_BY_ID)
    def get_task_by_id(self, request: TaskIdRequest) -> Task:
        """One task."""
        with Session(self.engine) as session:
            return to_task(self._get(session, request.task_id))

    @rpc(LIST_TASKS)
    def list_tasks(self, request: ListTasksRequest) -> TaskList:
        """A page of tasks, newest first."""
        query = select(TaskRecord)
        count = select(func.count()).select_from(TaskRecord)
        if request.status is not None:
            query = query.where(TaskRecord.status == request.status.value)
            count = count.where(TaskRecord.status == request.status.value)
        with Session(self.engine) as session:
            total = session.scalar(count) or 0
            records = session.scalars(
                query.order_by(TaskRecord.created.desc(), TaskRecord.id)
                .limit(request.limit).offset(request.offset)
            ).all()
            return TaskList(tasks=[to_task(r) for r in records], total=total)

    @rpc(UPDATE_TASK)
    def update_task(self, request: UpdateTaskRequest) -> Task:
        """Change the fields given; host and port only while the task is not running."""
        changes = request.model_dump(exclude={"task_id"}, exclude_none=True)
        with self._transition, self._sessions.begin() as session:
            record = self._get(session, request.task_id)
            moving = {k for k in ("host", "port") if k in changes
                      and changes[k] != getattr(record, k)}
            if moving and record.status == TaskStatus.RUNNING.value:
                raise Conflict(
                    f"task {request.task_id!r} is running; stop it before changing "
                    f"{' and '.join(sorted(moving))}"
                )
            for field, value in changes.items():
                setattr(record, field, value)
            record.modified = utcnow()
            session.flush()
            return to_task(record)

    @rpc(START_SERVER_TASK)
    def start_server_task(self, request: StartTaskRequest) -> Task:
        """Start the task's Flower server as a child process."""
        register_event("cloud_task_manager", "rpc_exec_start_server_task", "received")
        with self._transition:
            with self._sessions.begin() as session:
                record = self._get(session, request.task_id)
                if record.status == TaskStatus.RUNNING.value:
                    raise Conflict(f"task {request.task_id!r} is already running")
                folder = self.storage.task_dir(record.id)
                if not (folder / SERVER_SCRIPT).is_file():
                    raise Conflict(
                        f"task {request.task_id!r} has no {SERVER_SCRIPT}; upload it first"
                    )
                arguments = dict(record.server_arguments or {})
                arguments.update(request.server_arguments or {})
                record.runs += 1
                launch = ServerLaunch(record.id, record.runs, folder, record.host, record.port,
                                      arguments)
                record.status = TaskStatus.RUNNING.value
                record.status_reason = None
                record.started_at = record.modified = utcnow()
                record.ended_at = None
            try:
                pid = self.servers.start(launch)
            except OSError as exc:
                self._finish_run(launch, TaskStatus.FAILED, f"server could not start: {exc}")
                raise Conflict(f"task {request.task_id!r}: server could not start: {exc}") from None
            self._set_pid(launch, pid)
        self._announce(launch, TaskStatus.RUNNING)
        register_event("cloud_task_manager", "rpc_exec_start_server_task",
                       f"server started {request.task_id}")
        return self.get_task_by_id(TaskIdRequest(task_id=request.task_id))

    @rpc(STOP_SERVER_TASK)
    def stop_server_task(self, request: TaskIdRequest) -> Task:
        """Stop the task's server: terminate, then kill after the grace period."""
        with self._sessions.begin() as session:
            record = self._get(session, request.task_id)
            if not self.servers.is_running(record.id):
                if record.status == TaskStatus.RUNNING.value:
                    record.status = TaskStatus.STOPPED.value
                    record.ended_at = record.modified = utcnow()
                    record.status_reason = "stopped by the operator"
                    return to_task(record)
                raise Conflict(f"task {request.task_id!r} is not running ({record.status})")
        self.servers.stop(request.task_id)
        return self.get_task_by_id(request)

    @rpc(GET_TASK_METRICS)
    def get_task_metrics(self, request: TaskMetricsRequest) -> TaskMetrics:
        """Per-round metrics of the latest run (or the run asked for)."""
        with Session(self.engine) as session:
            record = self._get(session, request.task_id)
            run = request.run or record.runs
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

    @rpc(UPLOAD_TASK_FILE)
    def upload_task_file(self, request: UploadTaskFileRequest) -> TaskFile:
        """Store a file of the task, replacing one of the same name."""
        with self._sessions.begin() as session:
            record = self._get(session, request.task_id)
            existing = {f.name: f for f in record.files}
            if request.filename not in existing and len(existing) >= self.max_files_per_task:
                raise BadRequest(
                    f"task {request.task_id!r} already has {len(existing)} files (the limit)"
                )
            stored = self.storage.write(record.id, request.filename, request.content)
            row = existing.get(stored.name)
            if row is None:
                row = FileRecord(task_id=record.id, name=stored.name, size=stored.size,
                                 sha256=stored.sha256)
                record.files.append(row)
            else:
                row.size, row.sha256, row.uploaded = stored.size, stored.sha256, utcnow()
            record.modified = utcnow()
        logger.info("task %s: stored %s (%d bytes)", request.task_id, stored.name, stored.size)
        return TaskFile(name=stored.name, size=stored.size, sha256=stored.sha256)

    @rpc(GET_CLIENT_TASK_REPORTS)
    def get_client_task_reports(self, request: TaskIdRequest) -> ClientTaskReports:
        """What clients reported about a task, newest first (at most 500)."""
        with Session(self.engine) as session:
            self._get(session, request.task_id)
            rows = session.scalars(
                select(ClientReportRecord)
                .where(ClientReportRecord.task_id == request.task_id)
                .order_by(ClientReportRecord.reported_at.desc(), ClientReportRecord.id.desc())
                .limit(500)
            ).all()
            return ClientTaskReports(reports=[_report(r) for r in rows])

    # -- client RPCs ---------------------------------------------------------------------

    def _compiled(self, task_id: str, source: str) -> Criteria:
        key = (task_id, source)
        criteria = self._criteria.get(key)
        if criteria is None:
            criteria = compile_criteria(source)
            if len(self._criteria) > 10_000:
                self._criteria.clear()
            self._criteria[key] = criteria
        return criteria

    @rpc(CLIENT_REQUESTING_TASK)
    def client_requesting_task(self, request: ClientRequestingTaskRequest) -> TaskOffers:
        """Running tasks whose criteria the client's stored stats match."""
        register_event("cloud_task_manager", "rpc_exec_client_requesting_task", "received")
        client = self.lookup_client(request.client_id)
        attributes = client.criteria_attributes()
        with Session(self.engine) as session:
            running = session.scalars(
                select(TaskRecord).where(TaskRecord.status == TaskStatus.RUNNING.value)
                .order_by(TaskRecord.started_at, TaskRecord.id)
            ).all()
            offers = [
                TaskOffer(
                    task_id=record.id,
                    run=record.runs,
                    host=record.host,
                    port=record.port,
                    client_arguments=dict(record.client_arguments or {}),
                    tags=list(record.tags or []),
                    files=[TaskFile(name=f.name, size=f.size, sha256=f.sha256)
                           for f in record.files],
                    download_credential=self.credentials.credential(record.id,
                                                                    record.credential_nonce),
                )
                for record in running
                if self._compiled(record.id, record.selection_criteria).matches(attributes)
            ]
        return TaskOffers(tasks=offers)

    @rpc(DOWNLOAD_TASK_FILE)
    def download_task_file(self, request: DownloadTaskFileRequest) -> TaskFileContent:
        """A task file for the operator, or for a client holding the task's credential."""
        with Session(self.engine) as session:
            record = self._get(session, request.task_id)
            if not request.operator and not (
                request.credential
                and Credentials.matches(request.credential, record.credential_hash)
            ):
                raise Unauthorized(f"wrong or missing download credential for task "
                                   f"{request.task_id!r}")
            known = {f.name: f for f in record.files}
        if request.filename not in known:
            raise NotFound(f"task {request.task_id!r} has no file {request.filename!r}")
        content = self.storage.read(request.task_id, request.filename)
        row = known[request.filename]
        return TaskFileContent(name=row.name, size=len(content), sha256=row.sha256,
                               content=base64.b64encode(content))

    @rpc(REPORT_CLIENT_TASK)
    def report_client_task(self, request: ReportClientTaskRequest) -> ClientTaskReport:
        """Record how a task went on a client (the operator sees which client failed, why)."""
        with self._sessions.begin() as session:
            self._get(session, request.task_id)
            row = ClientReportRecord(task_id=request.task_id, client_id=request.client_id,
                                     status=request.status.value, reason=request.reason,
                                     reported_at=utcnow())
            session.add(row)
            session.flush()
            report = _report(row)
        log = logger.warning if request.status.value == "failed" else logger.info
        log("client %s reports task %s %s%s", request.client_id, request.task_id,
            request.status.value, f": {request.reason}" if request.reason else "")
        return report

    # -- server process callbacks (reader threads) ---------------------------------------

    def _set_pid(self, launch: ServerLaunch, pid: int) -> None:
        with self._sessions.begin() as session:
            record = session.get(TaskRecord, launch.task_id)
            if record is not None and record.runs == launch.run:
                record.server_pid = pid

    def _on_report(self, launch: ServerLaunch, message: ReportMessage) -> None:
        if isinstance(message, StatsMessage):
            self._store_round(launch, message)
        elif isinstance(message, ErrorMessage):
            logger.warning("task %s server reported an error: %s", launch.task_id,
                           message.exception)
        elif isinstance(message, InfoMessage):
            logger.info("task %s server: %s", launch.task_id, message.info)
            if message.info == INFO_FINISHED:
                register_event("cloud_task_manager", "task_server", f"finished {launch.task_id}")
        elif isinstance(message, PrintMessage):
            logger.info("task %s server says: %s", launch.task_id, message.message)
        elif isinstance(message, TriggerMessage):
            self._trigger(launch, message)

    def _store_round(self, launch: ServerLaunch, message: StatsMessage) -> None:
        metrics = {k: v for k, v in message.metrics.items() if math.isfinite(v)}
        if len(metrics) != len(message.metrics):
            logger.warning("task %s round %d: dropped non-finite metrics", launch.task_id,
                           message.round)
        reported = datetime.fromtimestamp(message.time, tz=utcnow().tzinfo)
        with self._sessions.begin() as session:
            row = session.scalars(
                select(RoundMetricRecord).where(
                    RoundMetricRecord.task_id == launch.task_id,
                    RoundMetricRecord.run == launch.run,
                    RoundMetricRecord.round == message.round,
                )
            ).first()
            if row is None:
                session.add(RoundMetricRecord(task_id=launch.task_id, run=launch.run,
                                              round=message.round, metrics=metrics,
                                              reported_at=reported))
            else:
                row.metrics = {**row.metrics, **metrics}
                row.reported_at = reported
        logger.info("task %s round %d: %s", launch.task_id, message.round,
                    ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    def _trigger(self, launch: ServerLaunch, message: TriggerMessage) -> None:
        script = self.storage.script(launch.task_id, message.trigger_name)
        if script is None:
            logger.warning("task %s: trigger %r refused (not a script name in the task folder)",
                           launch.task_id, message.trigger_name)
            return
        try:
            self.servers.run_trigger(launch.task_id, script, message.trigger_arguments)
        except OSError as exc:
            logger.warning("task %s: trigger %s could not start: %s", launch.task_id,
                           script.name, exc)

    def _on_exit(self, launch: ServerLaunch, outcome: ChildOutcome) -> None:
        status = TaskStatus(outcome.status)
        reason = outcome.reason
        if status is TaskStatus.STOPPED:
            reason = SHUTDOWN_REASON if self._shutting_down else "stopped by the operator"
        self._finish_run(launch, status, reason)
        register_event("cloud_task_manager", "task_server", f"{status.value} {launch.task_id}")
        log = logger.warning if status is TaskStatus.FAILED else logger.info
        log("task %s server %s%s", launch.task_id, status.value, f": {reason}" if reason else "")

    def _finish_run(self, launch: ServerLaunch, status: TaskStatus, reason: str | None) -> None:
        with self._sessions.begin() as session:
            record = session.get(TaskRecord, launch.task_id)
            if record is None or record.runs != launch.run:
                return
            record.status = status.value
            record.status_reason = reason
            record.server_pid = None
            record.ended_at = record.modified = utcnow()
        self._announce(launch, status)

    def _announce(self, launch: ServerLaunch, status: TaskStatus) -> None:
        if self.notify is None:
            return
        try:
            self.notify(TaskEvent(task_id=launch.task_id, status=status, run=launch.run,
                                  time=time.time()))
        except Exception as exc:
            logger.warning("task %s: could not announce %s: %s", launch.task_id,
                           status.value, exc)

    def shutdown(self) -> None:
        """Stop every task server; their tasks are recorded as stopped."""
        self._shutting_down = True
        self.servers.stop_all()


def _report(row: ClientReportRecord) -> ClientTaskReport:
    return ClientTaskReport(task_id=row.task_id, client_id=row.client_id,
                            status=row.status, reason=row.reason, reported_at=row.reported_at)
