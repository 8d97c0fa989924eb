"""The run controller: the one owner of a task's run, from start to exit.

Start, stop, update, exit, shutdown and reconcile all go through here. Transitions that an
operator asks for are serialized by one lock, so the record and the process never disagree for
longer than it takes a child to exit: a stop that arrives while a start is spawning waits for the
spawn and then stops the new server.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy import select

from agata_common.database import utcnow
from agata_contracts.common import ArgumentValue
from agata_contracts.tasks import (
    APP_MANIFEST,
    SERVER_SCRIPT,
    Task,
    TaskEvent,
    TaskKind,
    TaskStatus,
    UpdateTaskRequest,
    kind_of,
)
from cloud_task_manager.models import TaskRecord
from cloud_task_manager.records import TaskRecords, to_task
from cloud_task_manager.results import RunResultsStore
from cloud_task_manager.storage import TaskStorage
from cloud_task_manager.task_server import (
    ServerLaunch,
    ServerProcesses,
    kill_orphan,
)
from flower_runtime.manifest import ManifestError, fuse_run_config, read_manifest
from microservice_interconnect import BadRequest, Conflict
from microservice_interconnect.events import NO_EVENTS, EventRecorder
from task_daemon_lib.executors import Executor
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
from task_daemon_lib.warm import WarmPool

logger = logging.getLogger(__name__)

SERVICE = "cloud_task_manager"
SHUTDOWN_REASON = "the cloud task manager was shut down"
STOPPED_REASON = "stopped by the operator"
RESTART_REASON = "the cloud task manager restarted while this task was running; start it again"

Announce = Callable[[TaskEvent], None]
"""Tells the world a task started or ended (a broadcast; must not raise into the caller)."""


class RunController:
    """Starts and stops task servers and records what becomes of them."""

    def __init__(
        self,
        records: TaskRecords,
        storage: TaskStorage,
        results: RunResultsStore,
        *,
        stop_grace_s: float = 5.0,
        device_join_s: float = 300.0,
        device_rejoin_s: float = 30.0,
        default_deadline_s: float = 86400.0,
        announce: Announce | None = None,
        events: EventRecorder = NO_EVENTS,
        warm: WarmPool | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.records = records
        self.storage = storage
        self.results = results
        self.announce = announce
        self.device_join_s = device_join_s
        self.device_rejoin_s = device_rejoin_s
        self.default_deadline_s = default_deadline_s
        self.events = events
        self.servers = ServerProcesses(
            stop_grace_s=stop_grace_s, on_report=self._on_report, on_exit=self._on_exit,
            warm=warm, executor=executor,
        )
        self._transition = threading.Lock()
        self._shutting_down = False
        self._deadlines: dict[str, tuple[ServerLaunch, threading.Timer]] = {}
        self._forced_ends: dict[tuple[str, int], str] = {}

    # -- operator transitions ------------------------------------------------------------

    def start(self, task_id: str, overrides: Mapping[str, ArgumentValue] | None) -> Task:
        """Start a run of the task's server; 409 when it runs already or has no server."""
        image = self.results.lifecycle(task_id).image
        with self._transition:
            with self.records.transaction() as session:
                record = self.records.get(session, task_id)
                if record.status == TaskStatus.RUNNING.value or self.servers.is_running(task_id):
                    raise Conflict(f"task {task_id!r} is already running")
                folder = self.storage.task_dir(record.id)
                kind = kind_of(f.name for f in record.files)
                if kind is None:
                    raise Conflict(f"task {task_id!r} has neither {APP_MANIFEST} (a Flower App) "
                                   f"nor {SERVER_SCRIPT} (a script task); upload its files first")
                arguments = dict(record.server_arguments or {})
                arguments.update(overrides or {})
                if kind is TaskKind.FLOWER_APP:
                    arguments = self._run_config(task_id, arguments)
                record.runs += 1
                self.records.rotate_credential(record)
                deadline_s = float(record.deadline_s or self.default_deadline_s)
                launch = ServerLaunch(record.id, record.runs, folder, record.host, record.port,
                                      arguments, kind, record.devices,
                                      self.records.run_credential(record) or "",
                                      self.device_join_s, self.device_rejoin_s,
                                      self.results.scratch(record.id, record.runs), image)
                record.status = TaskStatus.RUNNING.value
                record.status_reason = None
                record.started_at = record.modified = utcnow()
                record.ended_at = None
            try:
                pid = self.servers.start(launch)
            except OSError as exc:
                self._finish_run(launch, TaskStatus.FAILED, f"server could not start: {exc}")
                raise Conflict(f"task {task_id!r}: server could not start: {exc}") from None
            self._set_pid(launch, pid)
            self._arm_deadline(launch, deadline_s)
        self._announce(launch, TaskStatus.RUNNING)
        self.events.register_event(SERVICE, "rpc_exec_start_server_task",
                                   f"server started {task_id}")
        return self.records.task(task_id)

    def _run_config(self, task_id: str,
                    arguments: Mapping[str, ArgumentValue]) -> dict[str, ArgumentValue]:
        """The app's run config with the task's server arguments over it (400 when a key is
        unknown or a value does not fit)."""
        try:
            manifest = read_manifest(self.storage.read(task_id, APP_MANIFEST))
            return fuse_run_config(manifest.run_config, arguments)
        except ManifestError as exc:
            raise BadRequest(f"task {task_id!r}: {exc}") from None

    def stop(self, task_id: str) -> Task:
        """Stop the task's server: terminate, then kill after the grace period."""
        with self._transition:
            if not self.servers.is_running(task_id):
                with self.records.transaction() as session:
                    record = self.records.get(session, task_id)
                    if record.status != TaskStatus.RUNNING.value:
                        raise Conflict(f"task {task_id!r} is not running ({record.status})")
                    record.status = TaskStatus.STOPPED.value
                    record.ended_at = record.modified = utcnow()
                    record.status_reason = STOPPED_REASON
                    return to_task(record)
            self.servers.stop(task_id)
        return self.records.task(task_id)

    def update(self, request: UpdateTaskRequest) -> Task:
        """Change the fields given; host and port only while the task is not running."""
        changes = request.model_dump(exclude={"task_id"}, exclude_none=True)
        with self._transition, self.records.transaction() as session:
            record = self.records.get(session, request.task_id)
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

    def reconcile(self) -> int:
        """Tasks recorded as running whose server is not ours become failed; return how many.

        A server left running by an earlier manager process is killed first: its report
        channel died with that process, so nothing could follow it any more.
        """
        count = 0
        with self._transition, self.records.transaction() as session:
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

    def shutdown(self) -> None:
        """Stop every task server; their tasks are recorded as stopped."""
        self._shutting_down = True
        with self._transition:
            timers, self._deadlines = list(self._deadlines.values()), {}
        for _, timer in timers:
            timer.cancel()
        self.servers.stop_all()

    # -- server process callbacks (reader threads) ---------------------------------------

    def _set_pid(self, launch: ServerLaunch, pid: int) -> None:
        with self.records.transaction() as session:
            record = session.get(TaskRecord, launch.task_id)
            if record is not None and record.runs == launch.run:
                record.server_pid = pid

    def _on_report(self, launch: ServerLaunch, message: ReportMessage) -> None:
        if isinstance(message, StatsMessage):
            self._store_round(launch, message)
            self.servers.prepare_spare()
        elif isinstance(message, ErrorMessage):
            logger.warning("task %s server reported an error: %s", launch.task_id,
                           message.exception)
        elif isinstance(message, InfoMessage):
            logger.info("task %s server: %s", launch.task_id, message.info)
            if message.info == INFO_FINISHED:
                self.events.register_event(SERVICE, "task_server", f"finished {launch.task_id}")
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
        self.records.store_round(launch.task_id, launch.run, message.round, metrics, reported)
        logger.info("task %s round %d: %s", launch.task_id, message.round,
                    ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    def _trigger(self, launch: ServerLaunch, message: TriggerMessage) -> None:
        script = self.storage.script(launch.task_id, message.trigger_name)
        if script is None:
            logger.warning("task %s: trigger %r refused (not a script name in the task folder)",
                           launch.task_id, message.trigger_name)
            return
        try:
            self.servers.run_trigger(launch.task_id, script, message.trigger_arguments,
                                     launch.results_dir)
        except OSError as exc:
            logger.warning("task %s: trigger %s could not start: %s", launch.task_id,
                           script.name, exc)

    def _arm_deadline(self, launch: ServerLaunch, deadline_s: float) -> None:
        """End the run when it is still going ``deadline_s`` from now (caller holds the
        transition lock)."""
        timer = threading.Timer(deadline_s, self._deadline_passed, (launch, deadline_s))
        timer.name = f"deadline-{launch.task_id}"
        timer.daemon = True
        previous = self._deadlines.pop(launch.task_id, None)
        if previous is not None:
            previous[1].cancel()
        self._deadlines[launch.task_id] = (launch, timer)
        timer.start()

    def _deadline_passed(self, launch: ServerLaunch, deadline_s: float) -> None:
        with self._transition:
            with self.records.transaction() as session:
                record = session.get(TaskRecord, launch.task_id)
                current = (record is not None and record.runs == launch.run
                           and record.status == TaskStatus.RUNNING.value)
                rounds = self.records.rounds_done(session, launch.task_id, launch.run) \
                    if current else 0
            if not current:
                return
            reason = (f"the run passed its deadline of {deadline_s:g} s after {rounds} "
                      "round(s) and was stopped")
            self._forced_ends[(launch.task_id, launch.run)] = reason
            logger.warning("task %s: %s", launch.task_id, reason)
            self.events.register_event(SERVICE, "deadline", f"deadline {launch.task_id}")
            self.servers.request_stop(launch.task_id)

    def _on_exit(self, launch: ServerLaunch, outcome: ChildOutcome) -> None:
        armed = self._deadlines.get(launch.task_id)
        if armed is not None and armed[0] is launch:
            armed[1].cancel()
            self._deadlines.pop(launch.task_id, None)
        status = TaskStatus(outcome.status)
        reason = outcome.reason
        forced = self._forced_ends.pop((launch.task_id, launch.run), None)
        if forced is not None and status is not TaskStatus.FINISHED:
            status, reason = TaskStatus.FAILED, forced
        elif status is TaskStatus.STOPPED:
            reason = SHUTDOWN_REASON if self._shutting_down else STOPPED_REASON
        if launch.results_dir is not None:
            try:
                self.results.collect_server(launch.task_id, launch.run, launch.results_dir)
            except Exception:
                logger.exception("task %s run %d: server results not collected", launch.task_id,
                                 launch.run)
        self._finish_run(launch, status, reason)
        self.servers.prepare_spare()
        self.events.register_event(SERVICE, "task_server", f"{status.value} {launch.task_id}")
        log = logger.warning if status is TaskStatus.FAILED else logger.info
        log("task %s server %s%s", launch.task_id, status.value, f": {reason}" if reason else "")

    def _finish_run(self, launch: ServerLaunch, status: TaskStatus, reason: str | None) -> None:
        with self.records.transaction() as session:
            record = session.get(TaskRecord, launch.task_id)
            if record is None or record.runs != launch.run:
                return
            record.status = status.value
            record.status_reason = reason
            record.server_pid = None
            record.ended_at = record.modified = utcnow()
        self._announce(launch, status)

    def _announce(self, launch: ServerLaunch, status: TaskStatus) -> None:
        if self.announce is None:
            return
        try:
            self.announce(TaskEvent(task_id=launch.task_id, status=status, run=launch.run,
                                    time=time.time()))
        except Exception as exc:
            logger.warning("task %s: could not announce %s: %s", launch.task_id,
                           status.value, exc)
