"""Pieces shared by the task runners (child process and container): line splitting, the
stdout report prefix, where each line goes (a router, this process's log, a capped output log
file), and how a task ended."""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from task_daemon_lib.messages import (
    INFO_FINISHED,
    STDOUT_PREFIX,
    ErrorMessage,
    InfoMessage,
    ReportMessage,
    parse_report_line,
)

__all__ = [
    "MAX_LINE_BYTES",
    "STDERR_TAIL_LINES",
    "TRUNCATION_MARK",
    "ChildOutcome",
    "ChildStatus",
    "LineRouter",
    "OutputLog",
    "log_output",
    "LineSplitter",
    "split_stdout_report",
]

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024
"""Longest line kept from any pipe; the rest of a longer line is dropped."""

TRUNCATION_MARK = "…[truncated]"
"""Appended to lines cut at :data:`MAX_LINE_BYTES`."""

STDERR_TAIL_LINES = 20
"""Number of last stderr lines kept for the outcome."""

_REASON_TAIL_CHARS = 4000

ChildStatus = Literal["finished", "failed", "stopped"]


def _signal_name(signum: int) -> str:
    """Return ``SIGKILL``-style name of a signal number."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@dataclass(frozen=True)
class ChildOutcome:
    """How a child process ended.

    ``error`` is the error the task reported (if any); ``reason`` is the text to show
    for a failed task (the reported error, or a description of the exit).
    """

    returncode: int
    finished: bool
    error: str | None
    stopped: bool
    stderr_tail: list[str] = field(default_factory=list)
    require_finished: bool = True

    @property
    def status(self) -> ChildStatus:
        """``"stopped"`` if we stopped it, else ``"failed"`` or ``"finished"``."""
        if self.stopped:
            return "stopped"
        return "failed" if self._failure() is not None else "finished"

    @property
    def reason(self) -> str | None:
        """Why the child failed; None unless :attr:`status` is ``"failed"``."""
        return None if self.stopped else self._failure()

    def _failure(self) -> str | None:
        """Failure description ignoring :attr:`stopped`, or None on success."""
        if self.error is not None:
            return self.error
        if self.returncode < 0:
            return self._with_tail(f"killed by signal {_signal_name(-self.returncode)}")
        if self.returncode > 0:
            return self._with_tail(f"exited with code {self.returncode}")
        if self.require_finished and not self.finished:
            return f"exited with code 0 without reporting {INFO_FINISHED}"
        return None

    def _with_tail(self, text: str) -> str:
        """Append the last stderr lines (capped) to ``text``."""
        tail = "\n".join(self.stderr_tail).strip()
        if not tail:
            return text
        if len(tail) > _REASON_TAIL_CHARS:
            tail = "…" + tail[-_REASON_TAIL_CHARS:]
        return f"{text}: {tail}"


class LineSplitter:
    """Splits a byte stream into decoded lines of at most ``limit`` bytes."""

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._limit = limit
        self._buf = bytearray()
        self._skipping = False  # inside the dropped rest of a truncated line

    def feed(self, data: bytes) -> list[str]:
        """Consume a chunk; return the lines it completed."""
        out: list[str] = []
        *complete, rest = data.split(b"\n")
        for piece in complete:
            if self._skipping:
                self._skipping = False  # the newline ends the truncated line
                continue
            self._add(piece, out)
            if self._skipping:
                self._skipping = False
                continue
            out.append(self._decode(self._buf))
            self._buf.clear()
        if not self._skipping:
            self._add(rest, out)
        return out

    def flush(self) -> list[str]:
        """Return the unterminated last line (at EOF), if any."""
        out = [self._decode(self._buf)] if self._buf else []
        self._buf.clear()
        self._skipping = False
        return out

    def _add(self, piece: bytes, out: list[str]) -> None:
        """Append to the current line, emitting it truncated when it grows too long."""
        room = self._limit - len(self._buf)
        if len(piece) <= room:
            self._buf += piece
            return
        self._buf += piece[:room]
        out.append(self._decode(self._buf) + TRUNCATION_MARK)
        self._buf.clear()
        self._skipping = True

    @staticmethod
    def _decode(raw: bytes | bytearray) -> str:
        """Decode a line as UTF-8 (lenient), dropping a trailing CR."""
        return raw.decode("utf-8", errors="replace").removesuffix("\r")


def split_stdout_report(line: str) -> tuple[str, ReportMessage] | None:
    """For a stdout line carrying a prefixed report line: the text before the prefix and the
    message; None for a plain output line (or an invalid report after the prefix)."""
    idx = line.find(STDOUT_PREFIX)
    if idx < 0:
        return None
    msg = parse_report_line(line[idx + len(STDOUT_PREFIX) :])
    if msg is None:
        return None
    return line[:idx], msg


def log_output(name: str, stream: str, line: str) -> None:
    """A task process's output line in this process's log: stderr at INFO, stdout at DEBUG."""
    if stream == "stderr":
        logger.info("[%s stderr] %s", name, line)
    else:
        logger.debug("[%s stdout] %s", name, line)


_TRUNCATED = "[output log truncated here: the rest of the output is not kept]\n"


class OutputLog:
    """Appends a task process's output lines to a file, up to ``limit`` bytes (thread-safe);
    stderr lines also go to this process's log, as they do without an output log.

    The file is new, or with ``append`` the log an earlier process of the same run left (a
    resumed run); never reached through a link a task left in its folder.
    """

    def __init__(self, path: Path, limit: int, name: str = "task", *,
                 append: bool = False) -> None:
        self.path = path
        self.name = name
        self.limit = limit
        self._full = False
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # non-blocking: a FIFO left in its place must not hang the open
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            descriptor = os.open(path, flags | (os.O_APPEND if append else os.O_EXCL), 0o644)
        except OSError as exc:
            raise OSError(f"{path.name} cannot be opened as a log: {exc.strerror}") from None
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(descriptor)
            raise OSError(f"{path.name} is not a plain file of its own")
        os.set_blocking(descriptor, True)
        self._written = info.st_size
        self._file = os.fdopen(descriptor, "a", encoding="utf-8", errors="replace")

    def __call__(self, stream: str, line: str) -> None:
        """Keep one line (``stream`` is ``stdout`` or ``stderr``; both go to the one log)."""
        if stream == "stderr":
            log_output(self.name, stream, line)
        text = line + "\n"
        size = len(text.encode("utf-8", errors="replace"))
        with self._lock:
            if self._full or self._file.closed:
                return
            if self._written + size > self.limit:
                self._file.write(_TRUNCATED)
                self._full = True
            else:
                self._file.write(text)
                self._written += size
            self._file.flush()

    def close(self) -> None:
        """Close the file (later lines are dropped)."""
        with self._lock:
            self._file.close()


class LineRouter:
    """Where a task process's lines go, the same for a child process and a container: report
    lines (from the report pipe, or prefixed on stdout) become messages and what the outcome
    needs; other output goes to ``on_output`` or this process's log; the outcome goes to
    ``on_exit`` once. Callback exceptions are logged, never propagated."""

    def __init__(self, name: str, *, on_message: Callable[[ReportMessage], None] | None,
                 on_output: Callable[[str, str], None] | None,
                 on_exit: Callable[[ChildOutcome], None] | None,
                 require_finished: bool) -> None:
        self.name = name
        self._on_message = on_message
        self._on_output = on_output
        self._on_exit = on_exit
        self._require_finished = require_finished
        self.finished = False
        self.error: str | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def report_line(self, line: str) -> None:
        """A line of the report pipe."""
        if not line.strip():
            return
        msg = parse_report_line(line)
        if msg is None:
            logger.warning("%s sent an invalid report line: %.200r", self.name, line)
            return
        self.message(msg)

    def output_line(self, stream: str, line: str) -> None:
        """A line of stdout (which may carry a prefixed report) or stderr."""
        if stream == "stdout":
            report = split_stdout_report(line)
            if report is not None:
                before, msg = report
                if before:
                    self._output(stream, before)
                self.message(msg)
                return
        else:
            self.stderr_tail.append(line)
        self._output(stream, line)

    def message(self, msg: ReportMessage) -> None:
        """Record what the outcome needs, then pass the message on."""
        if isinstance(msg, InfoMessage) and msg.info == INFO_FINISHED:
            self.finished = True
        elif isinstance(msg, ErrorMessage) and self.error is None:
            self.error = msg.exception
        if self._on_message is not None:
            self._call(self._on_message, msg)
        else:
            logger.debug("%s reported %r", self.name, msg)

    def fail(self, reason: str) -> None:
        """The runner itself failed: the outcome says so unless the task reported an error."""
        if self.error is None:
            self.error = reason

    def _output(self, stream: str, line: str) -> None:
        if self._on_output is not None:
            self._call(self._on_output, stream, line)
        else:
            log_output(self.name, stream, line)

    def _call(self, callback: Callable[..., object], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception("callback %r of %s raised", callback, self.name)

    def outcome(self, returncode: int, stopped: bool) -> ChildOutcome:
        """How the process ended, from its exit and what it reported."""
        return ChildOutcome(returncode=returncode, finished=self.finished, error=self.error,
                            stopped=stopped, stderr_tail=list(self.stderr_tail),
                            require_finished=self._require_finished)

    def exited(self, outcome: ChildOutcome) -> None:
        """Log the outcome and hand it to ``on_exit``."""
        logger.info("%s ended: %s (%s)", self.name, outcome.status, outcome.reason or "ok")
        if self._on_exit is not None:
            self._call(self._on_exit, outcome)
