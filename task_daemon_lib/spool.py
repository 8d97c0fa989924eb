"""Reading back a task process's report spool: what it reported before its manager died.

The spool is written by :class:`~task_daemon_lib.task_reporter.TaskReporter` (``spool_to``),
one report line each. It lies where task code can write, so it is read like anything from
outside: never through a link, never a FIFO, at most its last ``limit`` bytes (the end of a run
is reported last), each line checked against the report contract.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from task_daemon_lib.messages import (
    INFO_FINISHED,
    ErrorMessage,
    InfoMessage,
    StatsMessage,
    parse_report_line,
)

DEFAULT_LIMIT = 16 * 1024 * 1024


@dataclass
class SpoolReading:
    """The round metrics a spool holds and how the process said it ended (None: it did not)."""

    stats: list[StatsMessage] = field(default_factory=list)
    finished: bool = False
    error: str | None = None

    @property
    def ended(self) -> bool:
        """Whether the process reported its end (finished, or an error)."""
        return self.finished or self.error is not None


def _tail(path: Path, limit: int) -> bytes:
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        start = max(0, info.st_size - limit)
        handle.seek(start)
        content = handle.read(limit)
    if start:
        content = content.partition(b"\n")[2]  # the first line may be cut
    return content


def read_spool(path: Path, limit: int = DEFAULT_LIMIT) -> SpoolReading | str:
    """What the spool at ``path`` says, or why it cannot be read (a missing spool reads as
    empty)."""
    if path.parent.is_symlink():
        return f"{path.parent.name} is a link; not read"
    try:
        content = _tail(path, limit)
    except FileNotFoundError:
        return SpoolReading()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    reading = SpoolReading()
    for line in content.splitlines():
        message = parse_report_line(line)
        if isinstance(message, StatsMessage):
            reading.stats.append(message)
        elif isinstance(message, InfoMessage) and message.info == INFO_FINISHED:
            reading.finished = True
        elif isinstance(message, ErrorMessage):
            reading.error = message.exception
    return reading
