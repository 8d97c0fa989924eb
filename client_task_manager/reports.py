"""What a device reports to the cloud, in order: kept here until the local broker's durable
outbox takes each (a report the broker refused is tried again before any later one)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from agata_contracts.results import UPLOAD_RESULT, UploadResultRequest
from agata_contracts.tasks import REPORT_CLIENT_TASK, ClientTaskStatus, ReportClientTaskRequest
from agata_contracts.users import UPDATE_USER_INFO, UpdateUserInfoRequest
from microservice_interconnect import RpcError
from microservice_interconnect.spec import RpcSpec

logger = logging.getLogger(__name__)

SendReport = Callable[[RpcSpec[Any, Any], BaseModel], None]
"""Hands a report to the durable outbox (raises when the local broker does not take it)."""
MAX_REASON_CHARS = 4000


class PendingReports:
    """The device's reports not yet taken by the outbox."""

    def __init__(self, send: SendReport, client_id: Callable[[], str]) -> None:
        self._send = send
        self._client_id = client_id
        self._pending: list[tuple[RpcSpec[Any, Any], BaseModel]] = []
        self._stats_sent: UpdateUserInfoRequest | None = None

    def results(self, uploads: Sequence[UploadResultRequest]) -> None:
        """Queue a run's result files (sent before that run's last report)."""
        self._pending.extend((UPLOAD_RESULT, upload) for upload in uploads)

    def task(self, task_id: str, status: ClientTaskStatus, reason: str | None) -> None:
        """Report how a task went here, now."""
        self._pending.append((REPORT_CLIENT_TASK, ReportClientTaskRequest(
            task_id=task_id, client_id=self._client_id(), status=status,
            reason=reason[:MAX_REASON_CHARS] if reason else None)))
        self.flush()

    def stats(self, stats: UpdateUserInfoRequest) -> None:
        """Queue the device's stats when they changed since they were last queued."""
        if stats == self._stats_sent:
            return
        self._pending.append((UPDATE_USER_INFO, stats))
        self._stats_sent = stats
        logger.info("reporting stats: %s", stats.model_dump(exclude_none=True,
                                                            exclude={"user_id"}))

    def stats_unknown(self) -> None:
        """The cloud does not know this device (yet): its stats go again, changed or not."""
        self._stats_sent = None

    def flush(self) -> None:
        """Hand the outbox what waits, in order, until it refuses one."""
        while self._pending:
            spec, report = self._pending[0]
            try:
                self._send(spec, report)
            except RpcError as exc:
                logger.warning("local broker did not take a report (%s); will retry",
                               exc.message)
                return
            self._pending.pop(0)
