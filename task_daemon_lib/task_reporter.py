"""Reporter used by federated task code to talk to the manager that started it."""

from __future__ import annotations

import json
import logging
import operator
import os
import select
import stat
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from task_daemon_lib.messages import (
    INFO_STARTED,
    REPORT_FD_ENV,
    REPORT_SPOOL_ENV,
    STDOUT_PREFIX,
    CheckpointMessage,
    ErrorMessage,
    InfoMessage,
    PrintMessage,
    ReportMessage,
    RosterMessage,
    StatsMessage,
    TriggerMessage,
    encode_report,
)

__all__ = ["TaskReporter"]

logger = logging.getLogger(__name__)

# One lock for every reporter in the process: they may share the same descriptor.
_WRITE_LOCK = threading.Lock()


def _report_fd_from_env() -> int | None:
    """Return the report pipe descriptor named by ``AGATA_REPORT_FD``, or None."""
    raw = os.environ.get(REPORT_FD_ENV)
    if raw is None or not raw.strip():
        return None
    try:
        fd = int(raw)
    except ValueError:
        logger.warning("%s=%r is not a file descriptor number", REPORT_FD_ENV, raw)
        return None
    if fd < 0:
        logger.warning("%s=%r is not a file descriptor number", REPORT_FD_ENV, raw)
        return None
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        logger.warning("%s=%d is not an open file descriptor", REPORT_FD_ENV, fd)
        return None
    if not stat.S_ISFIFO(mode):
        # A process further down the tree inherited the variable but not the pipe.
        logger.warning("%s=%d is not a pipe", REPORT_FD_ENV, fd)
        return None
    return fd


class TaskReporter:
    """Sends AGATA report messages from task code to its manager.

    Messages go to the pipe named by ``AGATA_REPORT_FD`` (so the task's own prints cannot
    corrupt them); without it they go to stdout, each line prefixed with
    ``"@agata-report "``.  Every message is written as one whole line and flushed at
    once; sending is thread-safe and never raises if the manager has gone away.  Lines up
    to ``PIPE_BUF`` (4096) bytes stay whole even when forked processes share the pipe.
    Creating a reporter sends ``info "Started"``.

    With a spool file (``spool_to``, or ``AGATA_REPORT_SPOOL``), every message is also appended
    there (and, but for prints, synced
    to disk) before it is sent, so it outlives a manager that dies before reading it.
    """

    def __init__(self, *, fd: int | None = None) -> None:
        """Create the reporter; ``fd`` overrides the descriptor from the environment."""
        self._fd: int | None = fd if fd is not None else _report_fd_from_env()
        self._broken = False
        self._spool: int | None = None
        spool = os.environ.get(REPORT_SPOOL_ENV)
        if spool:
            try:
                self.spool_to(Path(spool))
            except OSError as exc:
                logger.warning("%s=%s cannot be kept: %s", REPORT_SPOOL_ENV, spool, exc)
        if self._fd is None:
            logger.debug("%s not usable, reporting on stdout", REPORT_FD_ENV)
        self.send_info(INFO_STARTED)

    def spool_to(self, path: Path) -> None:
        """From now on, keep every message in ``path`` too (appended; created 0600)."""
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                             0o600)
        with _WRITE_LOCK:
            if self._spool is not None:
                os.close(self._spool)
            self._spool = descriptor

    @property
    def uses_stdout(self) -> bool:
        """True when reports go to stdout (fallback channel)."""
        return self._fd is None

    def send_info(self, info: str) -> None:
        """Send an info string (AGATA: ``"Started"``, ``"Finished"``, ...)."""
        self._send(InfoMessage(info=info))

    def send_stats(self, task_round: int, acc: float | None = None, **metrics: float) -> None:
        """Send metrics of a round; ``acc`` is stored as metric ``"accuracy"``."""
        values = {name: float(value) for name, value in metrics.items()}
        if acc is not None:
            if "accuracy" in values:
                raise TypeError("send_stats() got accuracy both as acc and as a keyword")
            values["accuracy"] = float(acc)
        self._send(StatsMessage(round=operator.index(task_round), metrics=values))

    def send_print(self, msg: str) -> None:
        """Send a text line meant for the user."""
        self._send(PrintMessage(message=str(msg)))

    def send_error(self, exception: BaseException | str) -> None:
        """Report that the task failed (an exception is sent as ``"Type: message"``)."""
        if isinstance(exception, BaseException):
            text = "".join(traceback.format_exception_only(exception)).strip()
        else:
            text = str(exception)
        self._send(ErrorMessage(exception=text))

    def trigger(self, trigger_name: str, trigger_arguments: str = "") -> None:
        """Send a named trigger with optional string arguments."""
        self._send(TriggerMessage(trigger_name=trigger_name, trigger_arguments=trigger_arguments))

    def send_checkpoint(self, task_round: int) -> None:
        """Say that the model after ``task_round`` rounds was kept (the ServerApp host)."""
        self._send(CheckpointMessage(round=operator.index(task_round)))

    def send_roster(self, roster: dict[str, Any]) -> None:
        """Say who is in the run now and what changed (the ServerApp host; ``roster`` is an
        ``agata_contracts.run_devices.Roster`` as JSON)."""
        self._send(RosterMessage(roster=roster))

    def _send(self, msg: ReportMessage) -> None:
        """Write one message as a whole line; swallow errors from a vanished manager."""
        data = encode_report(msg)
        with _WRITE_LOCK:
            if self._spool is not None:
                self._keep(self._spool, data, sync=msg.type != "print")
            if self._broken:
                return
            try:
                if self._fd is None:
                    self._write_stdout(data)
                else:
                    self._write_fd(self._fd, data)
            except (OSError, ValueError) as exc:
                # BrokenPipeError (manager gone), closed stdout, bad descriptor, ...
                self._broken = True
                logger.warning("report channel unusable, dropping reports: %s", exc)

    def _keep(self, descriptor: int, data: bytes, *, sync: bool) -> None:
        """Append to the spool; a spool that fails is given up (the pipe still works)."""
        try:
            self._write_fd(descriptor, data)
            if sync:
                os.fsync(descriptor)
        except OSError as exc:
            logger.warning("report spool unusable, no longer kept: %s", exc)
            os.close(descriptor)
            self._spool = None

    @staticmethod
    def _write_fd(fd: int, data: bytes) -> None:
        """Write all of ``data`` to ``fd`` (handles partial and non-blocking writes)."""
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                select.select([], [fd], [])
                continue
            view = view[written:]

    @staticmethod
    def _write_stdout(data: bytes) -> None:
        """Write a prefixed line to stdout and flush it."""
        stream = sys.stdout
        if stream is None:
            raise ValueError("sys.stdout is None")
        # ASCII-only so the line survives any stdout encoding.
        text = json.dumps(json.loads(data), ensure_ascii=True, separators=(",", ":"))
        stream.write(f"{STDOUT_PREFIX}{text}\n")
        stream.flush()
