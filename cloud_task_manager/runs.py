"""The run controller: the one owner of a task's run, from start to exit.

Start, stop, update, exit, shutdown and recovery all go through here. Transitions that an
operator asks for are serialized by one lock, so the record and the process never disagree for
longer than it takes a child to exit: a stop that arrives while a start is spawning waits for the
spawn and then stops the new server.

A run this process finds recorded as running without its server (the manager before it died)
is recovered: the reports its server kept are read back, and a Flower App's run is started
again under the same run number, from its last checkpoint when the app declares
``[tool.agata] resume = true`` (see ``agata_contracts.checkpoints``), else from round 0.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from agata_common.database import database_now, utcnow
from agata_common.paths import own_folder
from agata_contracts.checkpoints import SPOOL_FILE, STATE_DIR, checkpoint_name
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
from cloud_task_manager.doors import DataPlane, address, allocate_port
from cloud_task_manager.models import ReplicaRecord, TaskRecord
from cloud_task_manager.records import TaskRecords, to_task
from cloud_task_manager.results import RunResultsStore
from cloud_task_manager.run_states import CheckpointCopier, PendingCheckpoint, RunStates
from cloud_task_manager.storage import TaskStorage
from cloud_task_manager.task_server import (
    ServerLaunch,
    ServerProcesses,
    kill_orphan,
)
from flower_runtime.manifest import ManifestError, fuse_run_config, read_manifest
from microservice_interconnect import BadRequest, Conflict, ServiceUnavailable
from microservice_interconnect.events import NO_EVENTS, EventRecorder
from task_daemon_lib.executors import Executor
from task_daemon_lib.messages import (
    INFO_FINISHED,
    CheckpointMessage,
    ErrorMessage,
    InfoMessage,
    PrintMessage,
    ReportMessage,
    StatsMessage,
    TriggerMessage,
)
from task_daemon_lib.runner import ChildOutcome
from task_daemon_lib.spool import read_spool
from task_daemon_lib.warm import WarmPool

logger = logging.getLogger(__name__)

SERVICE = "cloud_task_manager"
SHUTDOWN_REASON = "the cloud task manager was shut down"
STOPPED_REASON = "stopped by the operator"
RESTART_REASON = "the cloud task manager restarted while this task was running; start it again"
FINISHED_AWAY_REASON = "finished while the cloud task manager was away"
DEFAULT_MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024

Announce = Callable[[TaskEvent], None]
"""Tells the world a task started or ended (a broadcast; must not raise into the caller)."""


COLUMN_OF_FIELD = {"port": "own_port"}
"""Task fields kept under another attribute of the row."""


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
        states: RunStates | None = None,
        replica_id: str = "local",
        forward_stop: Callable[[str, str], Task] | None = None,
        alive_replicas: Callable[[], set[str]] | None = None,
        lease_s: float = 6.0,
        data_plane: DataPlane | None = None,
    ) -> None:
        self.records = records
        self.data_plane = data_plane or DataPlane()
        self.replica_id = replica_id
        self.forward_stop = forward_stop
        self.alive_replicas = alive_replicas
        self.lease_s = lease_s
        self.states = states or RunStates(records.engine, DEFAULT_MAX_CHECKPOINT_BYTES)
        self.checkpoints = CheckpointCopier(lambda pending: self.states.keep_checkpoint_file(
            pending.path, pending.task_id, pending.run, pending.rounds_done,
            owner=pending.owner))
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
        self._handing_over = False
        self._fenced: set[tuple[str, int]] = set()
        self._launches: dict[str, ServerLaunch] = {}
        self._deadlines: dict[str, tuple[ServerLaunch, threading.Timer]] = {}
        self._forced_ends: dict[tuple[str, int], str] = {}

    # -- operator transitions ------------------------------------------------------------

    def start(self, task_id: str, overrides: Mapping[str, ArgumentValue] | None) -> Task:
        """Start a run of the task's server; 409 when it runs already or has no server."""
        image = self.results.lifecycle(task_id).image
        with self._transition:
            if self._shutting_down:
                raise ServiceUnavailable("the cloud task manager is shutting down; start the "
                                         "task again in a moment")
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
                RunStates.begin(session, record.id, record.runs, arguments)
                deadline_s = float(record.deadline_s or self.default_deadline_s)
                launch = self._launch(record, folder, kind, arguments, image,
                                      self.results.scratch(record.id, record.runs))
                record.status = TaskStatus.RUNNING.value
                record.status_reason = None
                record.owner = self.replica_id
                record.started_at = record.modified = utcnow()
                record.ended_at = None
            try:
                pid = self._spawn(launch)
            except OSError as exc:
                self._finish_run(launch, TaskStatus.FAILED, f"server could not start: {exc}")
                raise Conflict(f"task {task_id!r}: server could not start: {exc}") from None
            self._set_pid(launch, pid)
            self._arm_deadline(launch, deadline_s)
        self._announce(launch, TaskStatus.RUNNING)
        self.events.register_event(SERVICE, "rpc_exec_start_server_task",
                                   f"server started {task_id}")
        return self.records.task(task_id)

    def _launch(self, record: TaskRecord, folder: Path, kind: TaskKind,
                arguments: Mapping[str, ArgumentValue], image: str | None, results_dir: Path,
                *, resume: bool = False) -> ServerLaunch:
        """The launch of the record's current run, its door (where its server listens)
        chosen now and kept on the record."""
        if kind is TaskKind.FLOWER_APP:
            host, port = self.data_plane.run_host, allocate_port(self.data_plane.run_host)
        else:
            host, port = record.host, record.own_port or allocate_port(record.host)
        record.door = address(host, port)
        return ServerLaunch(record.id, record.runs, folder, host, port,
                            dict(arguments), kind, record.devices,
                            self.records.run_credential(record) or "",
                            self.device_join_s, self.device_rejoin_s, results_dir, image,
                            resume, self.data_plane.max_message_mb)

    def _spawn(self, launch: ServerLaunch) -> int:
        """Start the launch's server (caller holds the transition lock); its pid."""
        self._fenced = {fenced for fenced in self._fenced if fenced[0] != launch.task_id}
        pid = self.servers.start(launch)
        self._launches[launch.task_id] = launch
        return pid

    def _run_config(self, task_id: str,
                    arguments: Mapping[str, ArgumentValue]) -> dict[str, ArgumentValue]:
        """The app's run config with the task's server arguments over it (400 when a key is
        unknown or a value does not fit)."""
        try:
            manifest = read_manifest(self.storage.read(task_id, APP_MANIFEST))
            return fuse_run_config(manifest.run_config, arguments)
        except ManifestError as exc:
            raise BadRequest(f"task {task_id!r}: {exc}") from None

    def stop(self, task_id: str, *, forward: bool = True) -> Task:
        """Stop the task's server: terminate, then kill after the grace period. A run another
        live replica owns is stopped by that replica (``forward``)."""
        with self._transition:
            if not self.servers.is_running(task_id):
                with self.records.transaction() as session:
                    record = self.records.get(session, task_id)
                    if record.status != TaskStatus.RUNNING.value:
                        raise Conflict(f"task {task_id!r} is not running ({record.status})")
                    owner = record.owner
                    if not forward and owner not in (None, self.replica_id):
                        raise Conflict(f"task {task_id!r} is run by replica {owner}, not "
                                       f"{self.replica_id}")
                    elsewhere = (forward and owner is not None and owner != self.replica_id
                                 and self.forward_stop is not None
                                 and self.alive_replicas is not None
                                 and owner in self.alive_replicas())
                    if not elsewhere:
                        record.status = TaskStatus.STOPPED.value
                        record.ended_at = record.modified = utcnow()
                        record.status_reason = STOPPED_REASON
                        return to_task(record)
            else:
                self.servers.stop(task_id)
                return self.records.task(task_id)
        assert owner is not None and self.forward_stop is not None
        logger.info("task %s: stop handed to its owner, replica %s", task_id, owner)
        return self.forward_stop(owner, task_id)

    def update(self, request: UpdateTaskRequest) -> Task:
        """Change the fields given; host and port only while the task is not running."""
        changes = {COLUMN_OF_FIELD.get(k, k): v for k, v in request.model_dump(
            exclude={"task_id"}, exclude_none=True).items()}
        with self._transition, self.records.transaction() as session:
            record = self.records.get(session, request.task_id)
            moving = {k.replace("own_", "") for k in ("host", "own_port") if k in changes
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
        """Recover every task recorded as running whose server is not ours; return how many.

        A server left running by an earlier manager process is killed first: its report
        channel died with that process. Its run is then settled from the reports it kept
        (finished or failed while we were away), or started again (a Flower App's run), or
        recorded failed (a script task's: its devices cannot rejoin a new server).
        """
        with self._transition, self.records.transaction() as session:
            stale = [(record.id, record.server_pid) for record in session.scalars(
                select(TaskRecord).where(TaskRecord.status == TaskStatus.RUNNING.value,
                                         or_(TaskRecord.owner.is_(None),
                                             TaskRecord.owner == self.replica_id))
            ).all() if not self.servers.is_running(record.id)]
        stale = [(task_id, pid) for task_id, pid in stale if self._claim(task_id)]
        for task_id, pid in stale:
            if pid:
                kill_orphan(pid, self.storage.task_dir(task_id))
            try:
                self._recover(task_id)
            except Exception:
                logger.exception("task %s: could not recover its run", task_id)
                self._fail_stale(task_id, RESTART_REASON)
        if stale:
            logger.warning("recovered %d task(s) left running by an earlier manager", len(stale))
        return len(stale)

    def take_over(self, alive: set[str]) -> int:
        """Recover the runs of replicas no longer alive (their lease ran out, or they left);
        return how many this replica claimed. Runs another replica claimed first are left."""
        with Session(self.records.engine) as session:  # a read: no change to announce
            orphaned = [(record.id, record.owner) for record in session.scalars(
                select(TaskRecord).where(TaskRecord.status == TaskStatus.RUNNING.value,
                                         TaskRecord.owner.is_not(None),
                                         TaskRecord.owner != self.replica_id))
                        if record.owner not in alive]
        taken = 0
        for task_id, owner in orphaned:
            if not self._claim(task_id, owner):
                continue
            taken += 1
            logger.warning("task %s: replica %s is gone; this replica (%s) takes its run over",
                           task_id, owner, self.replica_id)
            try:
                self._recover(task_id, previous=owner)
            except Exception:
                logger.exception("task %s: could not take its run over", task_id)
                self._fail_stale(task_id, RESTART_REASON)
        return taken

    def fence(self) -> None:
        """Stop serving runs another replica now owns (it thought this one dead): their
        servers end without this replica recording anything."""
        with self._transition:
            serving = {task_id: launch for task_id, launch in self._launches.items()
                       if self.servers.is_running(task_id)}
            if not serving:
                return
            with Session(self.records.engine) as session:  # a read: no change to announce
                records = {record.id: record for record in session.scalars(
                    select(TaskRecord).where(TaskRecord.id.in_(serving)))}
            for task_id, launch in serving.items():
                record = records.get(task_id)
                if (record is not None and record.owner in (None, self.replica_id)
                        and record.runs == launch.run
                        and record.status == TaskStatus.RUNNING.value):
                    continue
                logger.warning("task %s run %d: %s; stopping the server here", task_id,
                               launch.run, "the task is gone" if record is None else
                               f"replica {record.owner} owns run {record.runs} "
                               f"({record.status}) now")
                self._fenced.add((task_id, launch.run))
                self.servers.request_stop(task_id)

    def _claim(self, task_id: str, owner: str | None = None) -> bool:
        """Make this replica the owner of the task's running run if ``owner`` (None: this
        replica or nobody) still owns it; one compare-and-set update."""
        if owner is None:
            held = or_(TaskRecord.owner.is_(None), TaskRecord.owner == self.replica_id)
        else:  # and its lease still ran out: a replica back in time keeps its run
            renewed = select(ReplicaRecord.id).where(
                ReplicaRecord.id == owner,
                ReplicaRecord.seen_at > database_now(self.records.engine)
                - timedelta(seconds=self.lease_s))
            held = and_(TaskRecord.owner == owner, ~renewed.exists())
        with self.records.transaction() as session:
            changed = session.execute(
                update(TaskRecord)
                .where(TaskRecord.id == task_id,
                       TaskRecord.status == TaskStatus.RUNNING.value, held)
                .values(owner=self.replica_id))
            return bool(getattr(changed, "rowcount", 0))

    def _recover(self, task_id: str, *, previous: str | None = None) -> None:
        """Settle or restart a run without a server. Its spool is read back only when this
        replica ran it last; a run taken over from another replica starts from the
        database alone, and whatever an earlier tenure here left in its state folder goes.
        ``previous`` names the replica it is taken over from (None: this replica's own run)."""
        with self._transition:
            if self._shutting_down:
                return
            with self.records.transaction() as session:
                record = self.records.get(session, task_id)
                if record.status != TaskStatus.RUNNING.value or self.servers.is_running(task_id):
                    return
                run = record.runs
                kind = kind_of(f.name for f in record.files)
                state = self.states.get(task_id, run)
                if state is None or kind is not TaskKind.FLOWER_APP:
                    self._fail_record(record, RESTART_REASON)
                    return
                left_s = (float(record.deadline_s or self.default_deadline_s)
                          - (utcnow() - (record.started_at or utcnow())).total_seconds())
            scratch = self.results.scratch(task_id, run, keep=True)
            lifecycle = self.results.lifecycle(task_id)
            state_dir = scratch / STATE_DIR
            if previous is not None:
                own_folder(state_dir, empty=True)
            with self.records.transaction() as session:
                record = self.records.get(session, task_id)
                launch = self._launch(record, self.storage.task_dir(task_id), kind,
                                      state.arguments, lifecycle.image, scratch)
            ended = self._replay_spool(launch, state_dir / SPOOL_FILE)
            if ended is not None:
                self._end_with_results(launch, *ended)
                return
            if left_s <= 0:
                self._finish_run(launch, TaskStatus.FAILED, "the run passed its deadline while "
                                 "the cloud task manager was away")
                return
            resume, reason = self.states.restart_point(
                launch.task_id, state, lifecycle.resume, state_dir,
                "the cloud task manager restarted during the run" if previous is None
                else f"its replica {previous} stopped answering and replica {self.replica_id} "
                     "took the run over")
            launch = dataclasses.replace(launch, resume=resume)
            with self.records.transaction() as session:
                record = self.records.get(session, task_id)
                record.status_reason = reason
                record.modified = utcnow()
            logger.warning("task %s run %d: %s", task_id, run, reason)
            try:
                pid = self._spawn(launch)
            except OSError as exc:
                self._finish_run(launch, TaskStatus.FAILED, f"server could not start: {exc}")
                return
            self._set_pid(launch, pid)
            self._arm_deadline(launch, left_s)
        self.events.register_event(SERVICE, "recover", f"{task_id}: {reason}")

    def _replay_spool(self, launch: ServerLaunch,
                      spool: Path) -> tuple[TaskStatus, str | None] | None:
        """Store the rounds the run's server reported (again: storing is idempotent); how the
        run ended when the server had ended it, else None."""
        reading = read_spool(spool)
        if isinstance(reading, str):
            logger.warning("task %s: its report spool %s", launch.task_id, reading)
            return None
        for message in reading.stats:
            self._store_round(launch, message)
        if reading.error is not None:
            return TaskStatus.FAILED, reading.error
        return (TaskStatus.FINISHED, FINISHED_AWAY_REASON) if reading.finished else None

    def _end_with_results(self, launch: ServerLaunch, status: TaskStatus,
                          reason: str | None) -> None:
        """Keep the results the run's server left, then record the run's end."""
        self.checkpoints.forget(launch.task_id, launch.run)
        if launch.results_dir is not None:
            try:
                self.results.collect_server(launch.task_id, launch.run, launch.results_dir)
            except Exception:
                logger.exception("task %s run %d: server results not collected",
                                 launch.task_id, launch.run)
        self._finish_run(launch, status, reason)

    def _fail_stale(self, task_id: str, reason: str) -> None:
        with self.records.transaction() as session:
            record = session.get(TaskRecord, task_id)
            if record is not None and record.status == TaskStatus.RUNNING.value:
                self._fail_record(record, reason)

    @staticmethod
    def _fail_record(record: TaskRecord, reason: str) -> None:
        record.status = TaskStatus.FAILED.value
        record.status_reason = reason
        record.server_pid = None
        record.ended_at = record.modified = utcnow()

    def shutdown(self, *, handover: bool = False) -> None:
        """Stop every task server; their tasks are recorded as stopped, or (``handover``:
        another replica lives) left running for another replica to take over."""
        self._shutting_down = True
        self._handing_over = handover
        with self._transition:
            timers, self._deadlines = list(self._deadlines.values()), {}
        for _, timer in timers:
            timer.cancel()
        self.servers.stop_all()
        self.checkpoints.close()

    # -- server process callbacks (reader threads) ---------------------------------------

    def _set_pid(self, launch: ServerLaunch, pid: int) -> None:
        with self.records.transaction(changes_tasks=False) as session:
            record = session.get(TaskRecord, launch.task_id)
            if record is not None and record.runs == launch.run:
                record.server_pid = pid

    def _on_report(self, launch: ServerLaunch, message: ReportMessage) -> None:
        if (launch.task_id, launch.run) in self._fenced:
            return  # another replica runs this run now: it records
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
        elif isinstance(message, CheckpointMessage):
            self._keep_checkpoint(launch, message.round)

    def _keep_checkpoint(self, launch: ServerLaunch, rounds_done: int) -> None:
        """Store the checkpoint file the server reported, read safely (no link, within the
        size limit): the database copy is what a restarted run starts from."""
        if launch.results_dir is None:
            return
        self.checkpoints.submit(PendingCheckpoint(
            launch.results_dir / STATE_DIR / checkpoint_name(rounds_done), launch.task_id,
            launch.run, rounds_done, self.replica_id))

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
        if self._launches.get(launch.task_id) is launch:
            del self._launches[launch.task_id]
        armed = self._deadlines.get(launch.task_id)
        if armed is not None and armed[0] is launch:
            armed[1].cancel()
            self._deadlines.pop(launch.task_id, None)
        if (launch.task_id, launch.run) in self._fenced or (
                self._handing_over and outcome.status == TaskStatus.STOPPED.value):
            self._fenced.discard((launch.task_id, launch.run))
            logger.info("task %s server %s; its run is left to another replica",
                        launch.task_id, outcome.status)
            return
        status = TaskStatus(outcome.status)
        reason = outcome.reason
        forced = self._forced_ends.pop((launch.task_id, launch.run), None)
        if forced is not None and status is not TaskStatus.FINISHED:
            status, reason = TaskStatus.FAILED, forced
        elif status is TaskStatus.STOPPED:
            reason = SHUTDOWN_REASON if self._shutting_down else STOPPED_REASON
        self._end_with_results(launch, status, reason)
        self.servers.prepare_spare()
        self.events.register_event(SERVICE, "task_server", f"{status.value} {launch.task_id}")
        log = logger.warning if status is TaskStatus.FAILED else logger.info
        log("task %s server %s%s", launch.task_id, status.value, f": {reason}" if reason else "")

    def _finish_run(self, launch: ServerLaunch, status: TaskStatus, reason: str | None) -> None:
        with self.records.transaction() as session:
            record = session.get(TaskRecord, launch.task_id)
            if record is None or record.runs != launch.run or record.owner not in (
                    None, self.replica_id) or record.status != TaskStatus.RUNNING.value:
                return
            record.status = status.value
            if reason is not None or status is not TaskStatus.FINISHED:
                record.status_reason = reason  # a finished run keeps its "resumed after" note
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
