"""``tasks follow``: poll a task's status and metrics until it ends, printing each new round."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agata_cli.client import (
    EXIT_OK,
    EXIT_TASK_FAILED,
    EXIT_UNAVAILABLE,
    CliError,
    Gateway,
    quote,
)
from agata_cli.output import ProgressLine, bar, duration, err, out, out_json, text

TERMINAL_STATUSES = frozenset({"finished", "failed", "stopped"})
ROUND_ARGUMENTS = ("num-rounds", "num_rounds")
OUTAGE_GRACE_S = 20.0
"""How long the gateway may stay unreachable (or answer 503/504) before following gives up."""


def total_rounds(arguments: Mapping[str, Any]) -> int | None:
    """The number of rounds a task's server arguments ask for, if they say."""
    for name in ROUND_ARGUMENTS:
        value = arguments.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def metrics_text(metrics: Mapping[str, Any]) -> str:
    """``loss=0.1234  accuracy=0.9``."""
    return "  ".join(f"{name}={text(value)}" for name, value in metrics.items())


@dataclass
class Follower:
    """State of one ``follow``: what was printed, and how the progress line looks."""

    gateway: Gateway
    task_id: str
    as_json: bool
    interval_s: float = 1.0
    timeout_s: float | None = None
    rounds: int | None = None
    clock: Callable[[], float] = time.monotonic
    seen: set[tuple[int, int]] = field(default_factory=set)
    last_round: dict[str, Any] | None = None
    last_status: str | None = None

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.progress = ProgressLine(sys.stderr, not self.as_json and sys.stderr.isatty())

    def run(self) -> int:
        """Follow until the task ends (exit code 0/1) or ``--timeout`` (a ``CliError``)."""
        try:
            return self._loop()
        finally:
            self.progress.clear()

    def _loop(self) -> int:
        outage_since: float | None = None
        while True:
            try:
                task = self.gateway.get(f"/api/tasks/{quote(self.task_id)}")
                # Metrics after the status: a finished task's rounds are all stored by then.
                metrics = self.gateway.get(f"/api/tasks/{quote(self.task_id)}/metrics")
                outage_since = None
            except CliError as error:
                if error.exit_code != EXIT_UNAVAILABLE:
                    raise
                now = self.clock()
                outage_since = now if outage_since is None else outage_since
                if now - outage_since > OUTAGE_GRACE_S:
                    raise
                self._note(f"{error.message}; retrying")
                self._check_timeout(None)
                time.sleep(self.interval_s)
                continue
            self._show_status(task)
            self._show_rounds(metrics)
            if task["status"] in TERMINAL_STATUSES:
                return self._finish(task)
            self._check_timeout(task)
            self.progress.show(self._progress_text(task))
            time.sleep(self.interval_s)

    def _note(self, line: str) -> None:
        """A passing remark: on the progress line on a terminal, else a line on stderr."""
        if self.progress.enabled:
            self.progress.show(f"{self.task_id}  {line}")
        elif not self.as_json:
            err(f"agata: {line}")

    def _emit(self, line: str) -> None:
        self.progress.clear()
        out(line)

    def _show_status(self, task: Mapping[str, Any]) -> None:
        status = task["status"]
        if self.rounds is None:
            self.rounds = total_rounds(task.get("server_arguments") or {})
        if status == self.last_status:
            return
        self.last_status = status
        if self.as_json or self.progress.enabled or status in TERMINAL_STATUSES:
            return
        waiting = " (waiting for it to be started)" if status == "created" else ""
        self._emit(f"task {self.task_id}: {status}{waiting}")

    def _show_rounds(self, metrics: Mapping[str, Any]) -> None:
        run = int(metrics.get("run") or 0)
        for entry in metrics.get("rounds") or []:
            key = (run, int(entry["round"]))
            if key in self.seen:
                continue
            self.seen.add(key)
            self.last_round = entry
            if self.as_json:
                out_json({"task_id": self.task_id, "run": run, **entry}, compact=True)
            else:
                self._emit(f"round {self._of_total(key[1])}  {metrics_text(entry['metrics'])}")

    def _of_total(self, number: int) -> str:
        return f"{number}/{self.rounds}" if self.rounds else str(number)

    def _elapsed(self, task: Mapping[str, Any] | None) -> float:
        started = task.get("started_at") if task else None
        if started:
            try:
                moment = datetime.fromisoformat(started)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                seconds = (datetime.now(UTC) - moment).total_seconds()
                if seconds >= 0:
                    return seconds
            except ValueError:
                pass
        return self.clock() - self.started

    def _progress_text(self, task: Mapping[str, Any]) -> str:
        parts = [self.task_id, task["status"]]
        if task["status"] == "created":
            parts.append("waiting for it to be started")
        elif self.last_round is None:
            parts.append("no round reported yet")
        else:
            done = int(self.last_round["round"])
            progress = f"round {self._of_total(done)}"
            if self.rounds:
                progress = f"{bar(done, self.rounds)} {progress}"
            parts.append(progress)
        parts.append(duration(self._elapsed(task)))
        return "  ".join(parts)

    def _check_timeout(self, task: Mapping[str, Any] | None) -> None:
        if self.timeout_s is None or self.clock() - self.started < self.timeout_s:
            return
        status = task["status"] if task else "unknown"
        raise CliError(f"gave up following task {self.task_id} after {self.timeout_s:g} s; "
                       f"it is still {status} (it was not stopped)", EXIT_UNAVAILABLE)

    def _finish(self, task: Mapping[str, Any]) -> int:
        self.progress.clear()
        status = task["status"]
        if self.as_json:
            out_json(task, compact=True)
        rounds = len(self.seen)
        if status == "finished":
            if not self.as_json:
                last = (f"; last: {metrics_text(self.last_round['metrics'])}"
                        if self.last_round else "")
                out(f"task {self.task_id} finished: {rounds} round(s) in "
                    f"{self._run_time(task)}{last}")
            return EXIT_OK
        reason = (task.get("status_reason") or "no reason given").strip()
        verb = "failed" if status == "failed" else "was stopped"
        err(f"agata: task {self.task_id} {verb} after {rounds} round(s): "
            + reason.replace("\n", "\n  "))
        for line in self._client_failures():
            err(f"  {line}")
        return EXIT_TASK_FAILED

    def _run_time(self, task: Mapping[str, Any]) -> str:
        try:
            seconds = (datetime.fromisoformat(task["ended_at"])
                       - datetime.fromisoformat(task["started_at"])).total_seconds()
        except (KeyError, TypeError, ValueError):
            seconds = self.clock() - self.started
        return duration(seconds)

    def _client_failures(self) -> list[str]:
        """Failures clients reported about the task (best effort)."""
        try:
            body = self.gateway.get(f"/api/tasks/{quote(self.task_id)}/reports")
        except CliError:
            return []
        return [f"client {r['client_id']} failed: {r.get('reason') or 'no reason given'}"
                for r in body.get("reports") or [] if r.get("status") == "failed"]
