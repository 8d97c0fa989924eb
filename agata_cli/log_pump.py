"""A supervised service's output, copied line by line into its log file by the supervisor.

The service writes to a pipe, not to the file, so that what it says is not lost with the disk:
while the log file cannot be written (the disk is full, say), its warnings and errors (those
name the error id a user was shown) go to the supervisor's own stderr instead, under the
service's name, and the supervisor says once that the log cannot be written.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

_LOUD = (b" WARNING ", b" ERROR ", b" CRITICAL ", b"[error ", b"Traceback", b"Error:")


class LogPump:
    """Copies a pipe's lines into ``path`` on a thread of its own until the pipe closes."""

    def __init__(self, name: str, source: IO[bytes], path: Path,
                 fallback: IO[str] | None = None) -> None:
        self.name = name
        self.path = path
        self.fallback = fallback
        self.failing = False
        self._source = source
        self._thread = threading.Thread(target=self._pump, name=f"log-{name}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            output: IO[bytes] | None = self.path.open("ab", buffering=0)
        except OSError as exc:
            output = None
            self._failed(exc)
        with self._source:
            for line in self._source:
                if output is not None:
                    try:
                        output.write(line)
                        if self.failing:
                            self.failing = False
                            logger.warning("%s: its log %s can be written again", self.name,
                                           self.path)
                        continue
                    except OSError as exc:
                        self._failed(exc)
                self._spill(line)
        if output is not None:
            try:
                output.close()
            except OSError:
                pass

    def _failed(self, exc: OSError) -> None:
        if not self.failing:
            self.failing = True
            logger.error("%s: its log %s cannot be written (%s); its warnings and errors "
                         "follow here", self.name, self.path, exc.strerror or exc)

    def _spill(self, line: bytes) -> None:
        if not any(marker in line for marker in _LOUD):
            return
        stream = self.fallback if self.fallback is not None else sys.stderr
        try:
            stream.write(f"[{self.name}] {line.decode(errors='replace').rstrip()}\n")
            stream.flush()
        except (OSError, ValueError):
            pass

    def join(self, timeout_s: float) -> None:
        """Wait (bounded) until the pipe closed and every line was copied."""
        self._thread.join(timeout_s)
