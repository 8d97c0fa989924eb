"""What a run's server reports: rounds and their metrics, checkpoints, triggers and notes, live
from its report channel or read back from the spool it kept."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from agata_common.database import utcnow
from agata_common.disk import is_disk_full_error
from agata_contracts.checkpoints import checkpoint_name
from agata_contracts.run_devices import Roster
from agata_contracts.tasks import TaskStatus
from cloud_task_manager.records import TaskRecords
from cloud_task_manager.run_devices import RunDeviceRecords
from cloud_task_manager.run_states import CheckpointCopier, PendingCheckpoint
from cloud_task_manager.storage import TaskStorage
from cloud_task_manager.task_server import ServerLaunch, ServerProcesses
from microservice_interconnect.events import EventRecorder
from task_daemon_lib.messages import (
    INFO_FINISHED,
    CheckpointMessage,
    ErrorMessage,
    InfoMessage,
    PrintMessage,
    ReportMessage,
    RosterMessage,
    StatsMessage,
    TriggerMessage,
)
from task_daemon_lib.spool import read_spool

logger = logging.getLogger(__name__)

SERVICE = "cloud_task_manager"
FINISHED_AWAY_REASON = "finished while the cloud task manager was away"


INLINE_CHECKPOINT_BYTES = 1 << 20
"""A checkpoint up to this size is copied before the next report is read; a larger one on the
copier's thread."""


class ServerReports:
    """Stores and acts on the reports of the servers one replica runs."""

    def __init__(self, records: TaskRecords, checkpoints: CheckpointCopier | None,
                 storage: TaskStorage, servers: ServerProcesses, events: EventRecorder,
                 replica_id: str,
                 on_round: Callable[[ServerLaunch, int], None] | None = None,
                 on_vacancy: Callable[[ServerLaunch], None] | None = None,
                 on_roster: Callable[[ServerLaunch, Roster], None] | None = None,
                 after_store: Callable[[ServerLaunch, BaseException | None], bool] | None = None
                 ) -> None:
        self.records = records
        self.run_devices = RunDeviceRecords(records)
        self.on_vacancy = on_vacancy
        self.on_roster = on_roster
        """Called with every roster the run's host reports (after it was kept)."""
        self.on_round = on_round
        self.after_store = after_store
        """After a round's report (with the disk-full error that kept it from being stored):
        whether the run was paused for it."""
        self.checkpoints = checkpoints
        self.storage = storage
        self.servers = servers
        self.events = events
        self.replica_id = replica_id

    def on_report(self, launch: ServerLaunch, message: ReportMessage) -> None:
        """Handle one message of the run's server (its reader thread)."""
        if isinstance(message, StatsMessage):
            error: Exception | None = None
            try:
                self.store_round(launch, message)
            except Exception as exc:
                if self.after_store is None or not is_disk_full_error(exc):
                    raise
                error = exc
            if self.after_store is not None and self.after_store(launch, error):
                return
            if self.on_round is not None:
                self.on_round(launch, message.round)
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
        elif isinstance(message, RosterMessage):
            try:
                roster = Roster.model_validate(message.roster)
            except ValidationError as exc:
                logger.warning("task %s: its server reported devices that are not a roster: "
                               "%s", launch.task_id, exc)
                return
            self._devices_changed(launch, roster)

    def _devices_changed(self, launch: ServerLaunch, roster: Roster) -> None:
        """Keep the run's devices; say what changed; call for a replacement when a
        partition is free."""
        self.run_devices.store(launch.task_id, launch.run, roster)
        if self.on_roster is not None:
            self.on_roster(launch, roster)
        if roster.change is None:
            return
        self.events.register_event(SERVICE, "task_server",
                                   f"devices {launch.task_id}: {roster.change}")
        if roster.lost and roster.vacancies and self.on_vacancy is not None:
            self.on_vacancy(launch)

    def replay_spool(self, launch: ServerLaunch,
                     spool: Path) -> tuple[TaskStatus, str | None] | None:
        """Store the rounds the run's server reported (again: storing is idempotent); how the
        run ended when the server had ended it, else None."""
        reading = read_spool(spool)
        if isinstance(reading, str):
            logger.warning("task %s: its report spool %s", launch.task_id, reading)
            return None
        for message in reading.stats:
            self.store_round(launch, message)
        if reading.error is not None:
            return TaskStatus.FAILED, reading.error
        return (TaskStatus.FINISHED, FINISHED_AWAY_REASON) if reading.finished else None

    def store_round(self, launch: ServerLaunch, message: StatsMessage) -> None:
        """Record a round's finite metrics."""
        metrics = {k: v for k, v in message.metrics.items() if math.isfinite(v)}
        if len(metrics) != len(message.metrics):
            logger.warning("task %s round %d: dropped non-finite metrics", launch.task_id,
                           message.round)
        reported = datetime.fromtimestamp(message.time, tz=utcnow().tzinfo)
        self.records.store_round(launch.task_id, launch.run, message.round, metrics, reported)
        logger.info("task %s round %d: %s", launch.task_id, message.round,
                    ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    def _keep_checkpoint(self, launch: ServerLaunch, rounds_done: int) -> None:
        """Have the checkpoint file the server reported copied out of the task's reach (read
        safely: no link, verified), and into a shared database, where another replica resumes
        from (``checkpoints`` None: none is copied)."""
        if launch.state_dir is None or self.checkpoints is None:
            return
        pending = PendingCheckpoint(launch.state_dir / checkpoint_name(rounds_done),
                                    launch.task_id, launch.run, rounds_done, self.replica_id)
        try:
            small = pending.path.lstat().st_size <= INLINE_CHECKPOINT_BYTES
        except OSError:
            small = False
        if small:
            self.checkpoints.copy_now(pending)  # before the round's report: nothing lags
        else:
            self.checkpoints.submit(pending)

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
