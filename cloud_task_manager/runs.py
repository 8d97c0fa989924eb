"""The run controller: the one owner of a task's run, from start to exit.

Start, stop, update, exit, shutdown and recovery all go through here. Transitions that an
operator asks for are serialized by one lock, so the record and the process never disagree for
longer than it takes a child to exit: a stop that arrives while a start is spawning waits for the
spawn and then stops the new server.

The controller holds the operator's actions; the runs it serves and how they end are
``serving``'s, their servers' reports ``run_reports``', their deadlines ``deadlines``', crash
recovery ``recovery``'s and the claims between replicas ``ownership``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agata_common.database import utcnow
from agata_contracts.common import ArgumentValue
from agata_contracts.lifecycle import APP_MANIFEST
from agata_contracts.tasks import (
    SERVER_SCRIPT,
    Task,
    TaskKind,
    TaskStatus,
    UpdateTaskRequest,
    check_min_devices,
    kind_of,
)
from cloud_task_manager.disk_pauses import DiskPauses
from cloud_task_manager.doors import DataPlane
from cloud_task_manager.ownership import RunOwnership
from cloud_task_manager.records import TaskRecords, to_task
from cloud_task_manager.recovery import RESTART_REASON, RunRecovery
from cloud_task_manager.results import RunResultsStore
from cloud_task_manager.run_states import RunStates
from cloud_task_manager.serving import (
    SERVICE,
    SHUTDOWN_REASON,
    STOPPED_REASON,
    Announce,
    RunTimings,
    ServedRuns,
)
from cloud_task_manager.storage import TaskStorage
from cloud_task_manager.task_server import ServerProcesses
from flower_runtime.manifest import ManifestError, fuse_run_config, read_manifest
from microservice_interconnect import BadRequest, Conflict, ServiceUnavailable
from microservice_interconnect.events import NO_EVENTS, EventRecorder
from task_daemon_lib.executors import Executor
from task_daemon_lib.warm import WarmPool

__all__ = ["RESTART_REASON", "SHUTDOWN_REASON", "STOPPED_REASON", "Announce", "Peers",
           "RunController", "RunTimings"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
COLUMN_OF_FIELD = {"port": "own_port"}
"""Task fields kept under another attribute of the row."""


@dataclass(frozen=True)
class Peers:
    """This replica's id and how it reaches the others (None: it works alone)."""

    replica_id: str = "local"
    forward_stop: Callable[[str, str], Task] | None = None
    """Hands a stop to the replica that owns the run: ``(owner, task_id)``."""
    alive: Callable[[], set[str]] | None = None
    """The replicas whose lease is current."""


class RunController:
    """Starts and stops task servers and records what becomes of them."""

    def __init__(
        self,
        records: TaskRecords,
        storage: TaskStorage,
        results: RunResultsStore,
        *,
        timings: RunTimings | None = None,
        peers: Peers = Peers(),
        announce: Announce | None = None,
        events: EventRecorder = NO_EVENTS,
        warm: WarmPool | None = None,
        executor: Executor | None = None,
        states: RunStates | None = None,
        data_plane: DataPlane | None = None,
        min_free_mb: float | None = None,
    ) -> None:
        self.records = records
        self.storage = storage
        self.results = results
        self.peers = peers
        self.states = states or RunStates(records.engine, DEFAULT_MAX_CHECKPOINT_BYTES)
        self.events = events
        self.served = ServedRuns(records, storage, results, self.states,
                                 replica_id=peers.replica_id, timings=timings or RunTimings(),
                                 announce=announce, events=events, warm=warm,
                                 executor=executor, data_plane=data_plane or DataPlane())
        self.recovery = RunRecovery(self.served, storage, self.states)
        self.served.restart_crashed = lambda task_id, cause: self.recovery.recover_or_fail(
            task_id, cause=cause)
        self.ownership = RunOwnership(self.served, self.recovery)
        if min_free_mb is not None:
            self.served.disk = DiskPauses(
                records, results.work.parent, min_free_mb, stop=self.servers.request_stop,
                resume=lambda task_id, cause: self.recovery.recover_or_fail(task_id,
                                                                            cause=cause))

    @property
    def replica_id(self) -> str:
        """This replica's id."""
        return self.peers.replica_id

    @property
    def servers(self) -> ServerProcesses:
        """The live server processes."""
        return self.served.servers

    def start(self, task_id: str, overrides: Mapping[str, ArgumentValue] | None) -> Task:
        """Start a run of the task's server; 409 when it runs already or has no server."""
        image = self.results.lifecycle(task_id).image
        served = self.served
        with served.transition:
            if served.shutting_down:
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
                deadline_s = float(record.deadline_s or served.timings.default_deadline_s)
                launch = served.launch(record, folder, kind, arguments, image,
                                       self.results.scratch(record.id, record.runs))
                record.status = TaskStatus.RUNNING.value
                record.status_reason = None
                record.owner = self.replica_id
                record.started_at = record.modified = utcnow()
                record.ended_at = None
            failed = served.serve(launch, deadline_s)
            if failed is not None:
                raise Conflict(f"task {task_id!r}: server could not start: {failed}")
        served.announce_status(launch, TaskStatus.RUNNING)
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

    def stop(self, task_id: str, *, forward: bool = True) -> Task:
        """Stop the task's server: terminate, then kill after the grace period. A run another
        live replica owns is stopped by that replica (``forward``)."""
        peers = self.peers
        if self.served.disk is not None:
            self.served.disk.forget(task_id)  # stopped, not paused for a full disk
        with self.served.transition:
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
                                 and peers.forward_stop is not None
                                 and peers.alive is not None and owner in peers.alive())
                    if not elsewhere:
                        record.status = TaskStatus.STOPPED.value
                        record.ended_at = record.modified = utcnow()
                        record.status_reason = STOPPED_REASON
                        return to_task(record)
            else:
                self.servers.stop(task_id)
                return self.records.task(task_id)
        assert owner is not None and peers.forward_stop is not None
        logger.info("task %s: stop handed to its owner, replica %s", task_id, owner)
        return peers.forward_stop(owner, task_id)

    def update(self, request: UpdateTaskRequest) -> Task:
        """Change the fields given; host and port only while the task is not running."""
        changes = {COLUMN_OF_FIELD.get(k, k): v for k, v in request.model_dump(
            exclude={"task_id"}, exclude_none=True).items()}
        with self.served.transition, self.records.transaction() as session:
            record = self.records.get(session, request.task_id)
            moving = {k.replace("own_", "") for k in ("host", "own_port") if k in changes
                      and changes[k] != getattr(record, k)}
            if moving and record.status == TaskStatus.RUNNING.value:
                raise Conflict(
                    f"task {request.task_id!r} is running; stop it before changing "
                    f"{' and '.join(sorted(moving))}"
                )
            try:
                check_min_devices(changes.get("devices", record.devices),
                                  changes.get("min_devices", record.min_devices))
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            for field, value in changes.items():
                setattr(record, field, value)
            record.modified = utcnow()
            session.flush()
            return to_task(record)

    def reconcile(self) -> int:
        """Recover every task recorded as running whose server is not ours; return how many
        (see ``recovery``)."""
        return self.recovery.reconcile()

    def take_over(self, alive: set[str]) -> int:
        """Recover the runs of replicas no longer ``alive``; how many this replica claimed."""
        return self.ownership.take_over(alive)

    def fence(self) -> None:
        """Stop serving runs another replica now owns."""
        self.ownership.fence()

    def shutdown(self, *, handover: bool = False) -> None:
        """Stop every task server; their tasks are recorded as stopped, or (``handover``:
        another replica lives) left running for another replica to take over."""
        self.served.shutting_down = True
        self.served.handing_over = handover
        self.served.deadlines.disarm_all()
        if self.served.disk is not None:
            self.served.disk.close()
        self.servers.stop_all()
        self.served.checkpoints.close()
