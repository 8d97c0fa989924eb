"""Which running tasks a client may join: criteria evaluated against the client's stats."""

from __future__ import annotations

from collections.abc import Callable

from agata_contracts.criteria import Criteria, compile_criteria
from agata_contracts.tasks import TaskKind, TaskOffer, kind_of
from agata_contracts.users import UserInfo
from cloud_task_manager.records import TaskRecords, to_task_file

ClientLookup = Callable[[str], UserInfo]
"""Fetches a client's stats by id (raises ``NotFound`` for an unknown client)."""

MAX_CACHED_CRITERIA = 10_000


class TaskSelector:
    """Builds a client's offers; compiled criteria are kept per task and criteria text."""

    def __init__(self, records: TaskRecords, lookup_client: ClientLookup) -> None:
        self.records = records
        self.lookup_client = lookup_client
        self._criteria: dict[tuple[str, str], Criteria] = {}

    def _compiled(self, task_id: str, source: str) -> Criteria:
        key = (task_id, source)
        criteria = self._criteria.get(key)
        if criteria is None:
            criteria = compile_criteria(source)
            if len(self._criteria) >= MAX_CACHED_CRITERIA:
                self._criteria.clear()
            self._criteria[key] = criteria
        return criteria

    def offers_for(self, client_id: str) -> list[TaskOffer]:
        """Running tasks whose criteria the client's stored stats match, oldest start first."""
        attributes = self.lookup_client(client_id).criteria_attributes()
        credentials = self.records.credentials
        return [
            TaskOffer(
                task_id=record.id,
                run=record.runs,
                host=record.host,
                port=record.port,
                client_arguments=dict(record.client_arguments or {}),
                tags=list(record.tags or []),
                files=[to_task_file(f) for f in record.files],
                kind=kind_of(f.name for f in record.files) or TaskKind.SCRIPT,
                download_credential=credentials.credential(record.id, record.credential_nonce),
            )
            for record in self.records.running()
            if self._compiled(record.id, record.selection_criteria).matches(attributes)
        ]
