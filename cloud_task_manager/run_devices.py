"""A run's devices as its ServerApp host last reported them (``agata_contracts.run_devices``):
kept on the task's row for its current run, said in the run's events, read by the task page."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from agata_contracts.run_devices import Roster, RunDevice, RunDevices
from cloud_task_manager.records import TaskRecords

logger = logging.getLogger(__name__)


class RunDeviceRecords:
    """Stores and reads the devices of each task's current run."""

    def __init__(self, records: TaskRecords) -> None:
        self.records = records

    def store(self, task_id: str, run: int, roster: Roster) -> None:
        """Keep the run's latest devices (a later run's report is never overwritten)."""
        with self.records.transaction(changes_tasks=False) as session:
            record = self.records.get(session, task_id)
            if record.runs != run:
                return
            record.run_devices = {
                "run": run, "seats": [d.model_dump(mode="json") for d in roster.devices]}

    def read(self, task_id: str) -> RunDevices:
        """The devices of the task's latest run (none before its host reported any)."""
        with Session(self.records.engine) as session:
            record = self.records.get(session, task_id)
            kept = record.run_devices or {}
            seats = kept.get("seats", []) if kept.get("run") == record.runs else []
            return RunDevices(
                task_id=record.id, run=record.runs, devices=record.devices,
                min_devices=min(record.min_devices or record.devices, record.devices),
                seats=[RunDevice.model_validate(seat) for seat in seats])
