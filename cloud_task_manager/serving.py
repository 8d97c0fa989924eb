"""The runs one replica serves: launching a run's server, and recording how each run ends.

Every transition of a served run happens under one lock (``transition``), shared by the
operator's actions, recovery, fencing and the deadlines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agata_contracts.common import ArgumentValue
from agata_contracts.run_devices import Roster
from agata_contracts.tasks import TaskEvent, TaskKind, TaskStatus
from cloud_task_manager.deadlines import RunDeadlines
from cloud_task_manager.disk_pauses import DiskPauses, failed_reason, paused_reason
from cloud_task_manager.doors import DataPlane, address, allocate_port
from cloud_task_manager.models import TaskRecord
from cloud_task_manager.records import TaskRecords
from cloud_task_manager.results import RunResultsStore
from cloud_task_manager.run_records import RunRecords
from cloud_task_manager.run_reports import ServerReports
from cloud_task_manager.run_states import CheckpointCopier, PendingCheckpoint, RunStates
from cloud_task_manager.storage import TaskStorage
from cloud_task_manager.task_server import ServerLaunch, ServerProcesses
from microservice_interconnect.events import EventRecorder
from task_daemon_lib.executors import Executor
from task_daemon_lib.messages import ReportMessage
from task_daemon_lib.runner import ChildOutcome
from task_daemon_lib.warm import WarmPool

logger = logging.getLogger(__name__)

SERVICE = "cloud_task_manager"
MAX_HOST_RESTARTS = 3
"""How often one run's ServerApp host is started again after it died of a signal."""
SHUTDOWN_REASON = "the cloud task manager was shut down"
PAUSED_REASON = ("paused: the cloud task manager was shut down; the run resumes when it "
                 "starts again")
STOPPED_REASON = "stopped by the operator"

Announce = Callable[[TaskEvent], None]
"""Tells the world a task started or ended (a broadcast; must not raise into the caller)."""


@dataclass(frozen=True)
class RunTimings:
    """How long runs and their servers are given."""

    stop_grace_s: float = 5.0
    device_join_s: float = 300.0
    device_rejoin_s: float = 30.0
    device_answer_s: float = 0.0
    """A device silent this long on one instruction is let go (0: the app's timeout only)."""
    default_deadline_s: float = 86400.0
    lease_s: float = 6.0


class ServedRuns:
    """The server processes of the runs this replica serves, and their ends."""

    def __init__(self, records: TaskRecords, storage: TaskStorage, results: RunResultsStore,
                 states: RunStates, *, replica_id: str, timings: RunTimings,
                 announce: Announce | None, events: EventRecorder, warm: WarmPool | None,
                 executor: Executor | None, data_plane: DataPlane) -> None:
        self.records = records
        self.results = results
        self.replica_id = replica_id
        self.timings = timings
        self.data_plane = data_plane
        self.announce = announce
        self.events = events
        self.run_records = RunRecords(records, replica_id)
        self.servers = ServerProcesses(
            stop_grace_s=timings.stop_grace_s, on_report=self._on_report, on_exit=self._on_exit,
            warm=warm, executor=executor,
        )
        self.states = states
        self.checkpoints = CheckpointCopier(self._keep_checkpoint)
        self.reports = ServerReports(records, self.checkpoints, storage, self.servers, events,
                                     replica_id, on_round=self._round_done,
                                     on_vacancy=self._vacancy,
                                     on_roster=self._devices_changed,
                                     after_store=self._paused_for_disk)
        self.transition = threading.Lock()
        self.deadlines = RunDeadlines(self.transition, self.run_records,
                                      self.servers.request_stop, events)
        self.shutting_down = False
        self.handing_over = False
        self.fenced: set[tuple[str, int]] = set()
        self.restart_crashed: Callable[[str, str], None] | None = None
        """Starts a run whose host died again (``task_id``, the cause), set by the controller."""
        self.crash_restarts: dict[tuple[str, int], int] = {}
        self.launches: dict[str, ServerLaunch] = {}
        self.disk: DiskPauses | None = None
        """Pauses the runs a full disk stops from recording (set by the controller)."""

    def launch(self, record: TaskRecord, folder: Path, kind: TaskKind,
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
                            min(record.min_devices or record.devices, record.devices),
                            self.records.run_credential(record) or "",
                            self.timings.device_join_s, self.timings.device_rejoin_s,
                            results_dir, image, resume, self.data_plane.max_message_mb,
                            self.timings.device_answer_s,
                            self.results.state_path(record.id, record.runs))

    def serve(self, launch: ServerLaunch, deadline_s: float) -> OSError | None:
        """Start the launch's server and arm its deadline (caller holds the transition lock);
        when it cannot start, the run is recorded failed and the error returned."""
        self.fenced = {fenced for fenced in self.fenced if fenced[0] != launch.task_id}
        if self.disk is not None:
            self.disk.forget(launch.task_id)
        try:
            pid = self.servers.start(launch)
        except OSError as exc:
            self.finish_run(launch, TaskStatus.FAILED, f"server could not start: {exc}")
            return exc
        self.launches[launch.task_id] = launch
        self.run_records.set_pid(launch.task_id, launch.run, pid)
        self.deadlines.arm(launch, deadline_s)
        return None

    def end_with_results(self, launch: ServerLaunch, status: TaskStatus,
                         reason: str | None) -> None:
        """Keep the results the run's server left, then record the run's end."""
        self.checkpoints.forget(launch.task_id, launch.run)
        if launch.results_dir is not None:
            try:
                self.results.collect_server(launch.task_id, launch.run, launch.results_dir)
            except Exception:
                logger.exception("task %s run %d: server results not collected",
                                 launch.task_id, launch.run)
        self.finish_run(launch, status, reason)

    def finish_run(self, launch: ServerLaunch, status: TaskStatus, reason: str | None) -> None:
        """Record the run's end (when it is still this replica's running run) and announce it."""
        if self.run_records.end_run(launch.task_id, launch.run, status, reason):
            self.announce_status(launch, status)

    def announce_status(self, launch: ServerLaunch, status: TaskStatus) -> None:
        """Tell the world the run's new status (a failure to is logged)."""
        if self.announce is None:
            return
        try:
            self.announce(TaskEvent(task_id=launch.task_id, status=status, run=launch.run,
                                    time=time.time()))
        except Exception as exc:
            logger.warning("task %s: could not announce %s: %s", launch.task_id,
                           status.value, exc)

    def _keep_checkpoint(self, pending: PendingCheckpoint) -> str | None:
        """Copy a checkpoint the run's server reported into the manager's own folder, verified,
        and from that copy into a shared database (another replica resumes from there); why
        not, or None."""
        kept = self.results.kept.keep(pending.path, pending.task_id, pending.run,
                                      pending.rounds_done)
        if isinstance(kept, str) or not self.states.shared:
            return kept if isinstance(kept, str) else None
        why = self.states.keep_checkpoint_file(kept, pending.task_id, pending.run,
                                               pending.rounds_done, owner=pending.owner)
        return None if why is None else f"kept on this machine, not in the database: {why}"

    def _vacancy(self, launch: ServerLaunch) -> None:
        """A device left the run: idle compatible devices are asked to look again at once."""
        if self.announce is None:
            return
        try:
            self.announce(TaskEvent(task_id=launch.task_id, status=TaskStatus.RUNNING,
                                    run=launch.run, time=time.time(), vacancy=True))
        except Exception as exc:
            logger.warning("task %s: could not announce a free partition: %s",
                           launch.task_id, exc)

    def _devices_changed(self, launch: ServerLaunch, roster: Roster) -> None:
        """A run under its minimum of devices fails once it can no longer meet its deadline."""
        self.deadlines.devices_changed(launch, roster)

    def _round_done(self, launch: ServerLaunch, round_number: int) -> None:
        """Say early, as the run's reason, when its pace will miss its deadline."""
        why = self.deadlines.round_done(launch, round_number)
        if why is not None:
            self.run_records.note(launch.task_id, launch.run, why)

    def _paused_for_disk(self, launch: ServerLaunch, error: BaseException | None) -> bool:
        """After a round was stored (``error``: it could not be, the disk being full): whether
        the run is paused for a full disk."""
        return self.disk is not None and self.disk.after_round(launch, error)

    def _end_for_disk(self, launch: ServerLaunch, detail: str) -> None:
        """The run's server stopped for a full disk: a Flower App's run is paused (left running
        without its server, saying so; the reason is held in memory when the database cannot
        take it), a script task's, which cannot resume, failed."""
        if launch.kind is not TaskKind.FLOWER_APP:
            if self.disk is not None:
                self.disk.forget(launch.task_id)
            self.end_with_results(launch, TaskStatus.FAILED, failed_reason(detail))
            return
        reason = paused_reason(detail)
        try:
            self.run_records.pause(launch.task_id, launch.run, reason)
        except Exception as exc:
            logger.warning("task %s run %d: its pause is not recorded (%s); the reason is held "
                           "in memory", launch.task_id, launch.run, exc)
        logger.warning("task %s run %d paused until space is freed", launch.task_id,
                       launch.run)

    def _on_report(self, launch: ServerLaunch, message: ReportMessage) -> None:
        if (launch.task_id, launch.run) not in self.fenced:  # else another replica records
            self.reports.on_report(launch, message)

    def _restarts_after_crash(self, launch: ServerLaunch, outcome: ChildOutcome) -> bool:
        """A Flower App's host killed by a signal (not by us, not after reporting an error) is
        started again from its last good checkpoint, up to ``MAX_HOST_RESTARTS`` times a run;
        whether it is."""
        key = (launch.task_id, launch.run)
        if (self.restart_crashed is None or self.shutting_down or outcome.stopped
                or outcome.returncode >= 0 or outcome.error is not None
                or launch.kind is not TaskKind.FLOWER_APP):
            return False
        tries = self.crash_restarts.get(key, 0)
        if tries >= MAX_HOST_RESTARTS:
            return False
        self.crash_restarts[key] = tries + 1
        cause = (f"its ServerApp host died ({(outcome.reason or '').split(':')[0]}) and was "
                 f"started again ({tries + 1} of {MAX_HOST_RESTARTS})")
        logger.warning("task %s run %d: %s", launch.task_id, launch.run, cause)
        threading.Thread(target=self.restart_crashed, args=(launch.task_id, cause),
                         name=f"restart-{launch.task_id}", daemon=True).start()
        return True

    def _on_exit(self, launch: ServerLaunch, outcome: ChildOutcome) -> None:
        if self.launches.get(launch.task_id) is launch:
            del self.launches[launch.task_id]
        forced = self.deadlines.disarm(launch)
        if (launch.task_id, launch.run) in self.fenced or (
                self.handing_over and outcome.status == TaskStatus.STOPPED.value):
            self.fenced.discard((launch.task_id, launch.run))
            logger.info("task %s server %s; its run is left to another replica",
                        launch.task_id, outcome.status)
            return
        disk_full = self.disk.pausing(launch) if self.disk is not None else None
        if disk_full is not None and outcome.stopped and forced is None:
            self._end_for_disk(launch, disk_full)
            return
        if (self.shutting_down and outcome.stopped and forced is None
                and launch.kind is TaskKind.FLOWER_APP):
            if self.run_records.pause(launch.task_id, launch.run, PAUSED_REASON):
                logger.info("task %s run %d paused until this manager starts again",
                            launch.task_id, launch.run)
                return
        status = TaskStatus(outcome.status)
        reason = outcome.reason
        if forced is None and self._restarts_after_crash(launch, outcome):
            return
        if forced is not None and status is not TaskStatus.FINISHED:
            status, reason = TaskStatus.FAILED, forced
        elif status is TaskStatus.STOPPED:
            reason = SHUTDOWN_REASON if self.shutting_down else STOPPED_REASON
        self.end_with_results(launch, status, reason)
        self.servers.prepare_spare()
        self.events.register_event(SERVICE, "task_server", f"{status.value} {launch.task_id}")
        log = logger.warning if status is TaskStatus.FAILED else logger.info
        log("task %s server %s%s", launch.task_id, status.value, f": {reason}" if reason else "")
