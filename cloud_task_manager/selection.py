"""Which running tasks a client may join: criteria evaluated against the client's stats.

A poll must be cheap: the running tasks, their compiled criteria and their finished offers
(each device's download credential is derived from the run's when it polls) are kept in memory
as one snapshot, dropped whenever a task record changes (start, stop, exit,
update, upload) and rebuilt by the next poll. A poll is then the client lookup and one criteria
evaluation per running task.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from agata_contracts.credentials import device_credential
from agata_contracts.criteria import Criteria, compile_criteria
from agata_contracts.tasks import TaskKind, TaskOffer, kind_of
from cloud_task_manager.clients import ClientLookup
from cloud_task_manager.doors import split_address
from cloud_task_manager.models import TaskRecord
from cloud_task_manager.records import TaskRecords, to_task_file


@dataclass(frozen=True)
class _Candidate:
    """A running task as a poll needs it: who may join, what they are offered, and the run's
    credential each device's own is derived from."""

    criteria: Criteria
    offer: TaskOffer
    run_credential: str


def _server_address(record: TaskRecord) -> dict[str, Any]:
    """Where a script task's ``client.py`` connects: its run's door. A Flower App's devices go
    through the gateway, so its offer names only the task's own host and port (the door is
    internal and never offered)."""
    if record.door and kind_of(f.name for f in record.files) is TaskKind.SCRIPT:
        host, port = split_address(record.door)
        return {"host": host, "port": port}
    return {"host": record.host, "port": record.own_port}


class TaskSelector:
    """Builds a client's offers from a snapshot of the running tasks."""

    def __init__(self, records: TaskRecords, lookup_client: ClientLookup) -> None:
        self.records = records
        self.lookup_client = lookup_client
        self._lock = threading.Lock()
        self._version = 0
        self._snapshot: list[_Candidate] | None = None
        records.on_change(self.invalidate)

    def invalidate(self) -> None:
        """Task records changed: the next poll reads the running tasks again."""
        with self._lock:
            self._version += 1
            self._snapshot = None

    def _candidates(self) -> list[_Candidate]:
        with self._lock:
            if self._snapshot is not None:
                return self._snapshot
            version = self._version
        credentials = self.records.credentials
        built = [
            _Candidate(
                compile_criteria(record.selection_criteria),
                TaskOffer(
                    task_id=record.id,
                    run=record.runs,
                    **_server_address(record),
                    client_arguments=dict(record.client_arguments or {}),
                    tags=list(record.tags or []),
                    files=[to_task_file(f) for f in record.files],
                    kind=kind_of(f.name for f in record.files) or TaskKind.SCRIPT,
                    download_credential="",
                ),
                credentials.credential(record.id, record.credential_nonce),
            )
            for record in self.records.running()
        ]
        with self._lock:
            if self._version == version:
                self._snapshot = built
        return built

    def offers_for(self, client_id: str) -> list[TaskOffer]:
        """Running tasks whose criteria the client's stored stats match, oldest start first."""
        attributes = self.lookup_client(client_id).criteria_attributes()
        return [candidate.offer.model_copy(update={"download_credential": device_credential(
                    candidate.run_credential, client_id)})
                for candidate in self._candidates() if candidate.criteria.matches(attributes)]
