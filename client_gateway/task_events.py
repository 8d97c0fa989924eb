"""Relaying the cloud's task events onto the client broker, by long poll.

A background thread asks the cloud gateway for events after its cursor (the request is answered
as soon as one arrives) and republishes each on the client broker's task-event exchange. Events
are hints ("look again now"): the client task manager still polls on its interval, so a missed
event (the cloud gateway restarted, this gateway was away) only costs a delay. On start and after
a ``reset`` the relay takes the cloud's current cursor without replaying history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pydantic import ValidationError

from agata_contracts.tasks import TaskEvent
from client_gateway.http import CloudGatewayHttp
from microservice_interconnect import RpcError, RpcTimeout, ServiceUnavailable

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 25.0
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


class TaskEventRelay:
    """Long-polls the cloud for task events and publishes them locally (own thread)."""

    def __init__(self, http: CloudGatewayHttp, publish: Callable[[TaskEvent], None], *,
                 poll_timeout_s: float = POLL_TIMEOUT_S, min_backoff_s: float = MIN_BACKOFF_S,
                 max_backoff_s: float = MAX_BACKOFF_S, client_id: str | None = None) -> None:
        self.http = http
        self.client_id = client_id
        self.publish = publish
        self.poll_timeout_s = poll_timeout_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.cursor: int | None = None
        self.epoch = ""
        self.relayed = 0
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> TaskEventRelay:
        """Start the long-poll thread."""
        self._thread = threading.Thread(target=self._run, name="task-events", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """End the long poll in progress and the thread (this closes the relay's HTTP client)."""
        self._stop.set()
        self.http.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = self.min_backoff_s
        outage_since: float | None = None
        while not self._stop.is_set():
            try:
                self._poll_once()
            except RpcError as exc:
                if self._stop.is_set():
                    break
                self.synced.clear()
                if outage_since is None:
                    outage_since = time.monotonic()
                    unreachable = isinstance(exc, ServiceUnavailable | RpcTimeout)
                    (logger.warning if unreachable else logger.error)(
                        "task events: %s; trying again with back-off (%.0f s up to %.0f s)",
                        exc.message if unreachable else f"HTTP {exc.status_code}: {exc.message}",
                        backoff, self.max_backoff_s)
                else:
                    logger.debug("task events: still failing (%s); next try in %.0f s",
                                 exc.message, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            except Exception:
                logger.exception("task events: relaying failed unexpectedly")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if outage_since is not None:
                logger.info("task events: cloud gateway at %s answers again after %.0f s",
                            self.http.base_url, time.monotonic() - outage_since)
                outage_since = None
            backoff = self.min_backoff_s

    def _poll_once(self) -> None:
        if self.cursor is None:
            # learn where the cloud's feed is; what happened before is history
            answer = self.http.task_events(0, 0)
            self.cursor = int(answer["cursor"])
            self.epoch = str(answer.get("epoch", ""))
            self.synced.set()
            logger.info("task events: following the cloud gateway at %s from cursor %d",
                        self.http.base_url, self.cursor)
            return
        answer = self.http.task_events(self.cursor, self.poll_timeout_s, self.epoch,
                                       self.client_id)
        cursor = int(answer["cursor"])
        if answer.get("reset"):
            logger.info("task events: the cloud's feed restarted (cursor %d -> %d); clients "
                        "catch up on their next poll", self.cursor, cursor)
            self.cursor = cursor
            self.epoch = str(answer.get("epoch", ""))
            self.synced.set()
            return
        self.cursor = cursor
        self.synced.set()
        for raw in answer.get("events") or []:
            try:
                event = TaskEvent.model_validate(raw)
            except ValidationError as exc:
                logger.warning("task events: ignored a malformed event: %s", exc)
                continue
            logger.debug("task events: %s is %s (run %d)", event.task_id, event.status,
                         event.run)
            self.publish(event)
            self.relayed += 1
