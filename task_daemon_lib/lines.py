"""Pieces shared by the task runners (child process and container): line splitting, the
stdout report prefix, and how a task ended."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Literal

from task_daemon_lib.messages import (
    INFO_FINISHED,
    STDOUT_PREFIX,
    ReportMessage,
    parse_report_line,
)

__all__ = [
    "MAX_LINE_BYTES",
    "STDERR_TAIL_LINES",
    "TRUNCATION_MARK",
    "ChildOutcome",
    "ChildStatus",
    "LineSplitter",
    "split_stdout_report",
]

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
