"""What the command writes for people (tables, key/value lists, a progress line) and scripts."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO


def out(text: str = "") -> None:
    """Write a line to stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str) -> None:
    """Write a line to stderr."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def out_json(value: Any, *, compact: bool = False) -> None:
    """Write a JSON value to stdout (indented, or on one line for streams)."""
    if compact:
        out(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
    else:
        out(json.dumps(value, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Rows as left-aligned columns under upper-case headers."""
    cells = [[str(h) for h in headers]] + [[text(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in cells]


def key_values(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    """``key: value`` lines with the values aligned."""
    width = max((len(k) for k, _ in pairs), default=0) + 1
    return [f"{(k + ':').ljust(width)} {text(v)}" for k, v in pairs]


def text(value: Any) -> str:
    """A value as a table cell: '-' for nothing, short numbers, lists joined by commas."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(text(v) for v in value)
    if isinstance(value, Mapping):
        return " ".join(f"{k}={text(v)}" for k, v in value.items())
    return str(value)


def endpoint(task: Mapping[str, Any]) -> str:
    """A task's server address: ``host:port``, or the host alone when the task has no port."""
    port = task.get("port")
    return str(task["host"]) if port is None else f"{task['host']}:{port}"


def when(value: str | None) -> str:
    """An ISO timestamp of the API as ``YYYY-MM-DD HH:MM:SSZ`` (UTC); '-' if missing."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def size(value: int) -> str:
    """A byte count for people."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB"):
        if amount < 1024 or unit == "MiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"


def duration(seconds: float) -> str:
    """Elapsed time as ``M:SS`` or ``H:MM:SS``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLine:
    """One status line redrawn in place on a terminal; does nothing when not enabled."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self._shown = False

    def show(self, line: str) -> None:
        """Replace the line with ``line`` (cut to the terminal's width)."""
        if not self.enabled:
            return
        width = shutil.get_terminal_size((80, 24)).columns - 1
        self.stream.write("\r\x1b[K" + line[:max(width, 10)])
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Remove the line (before other output, and at the end)."""
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


def bar(done: int, total: int, width: int = 20) -> str:
    """``[#####---------]`` for ``done`` of ``total``."""
    filled = 0 if total <= 0 else min(width, round(width * done / total))
    return "[" + "#" * filled + "-" * (width - filled) + "]"
