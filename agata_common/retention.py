"""How many runs' results a task keeps: the policy both sides prune by.

A task keeps its newest runs while there are at most ``keep_runs`` of them and their results
together stay within ``keep_bytes``; the oldest go first, and once one run goes every older one
goes too. The newest run is always kept, whatever its size (its results may still be arriving).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RetentionPolicy:
    """What a task keeps of its runs' results."""

    keep_runs: int
    keep_bytes: int

    def runs_to_prune(self, sizes: Mapping[int, int]) -> list[int]:
        """Of the runs ``sizes`` holds (run number: bytes), those to remove, oldest first."""
        newest_first = sorted(sizes, reverse=True)
        kept, total = 0, 0
        for index, run in enumerate(newest_first):
            total += sizes[run]
            if index and (kept >= self.keep_runs or total > self.keep_bytes):
                return sorted(newest_first[index:])
            kept += 1
        return []

    def describe(self) -> str:
        """The limits, for log lines and events."""
        return f"keep_runs {self.keep_runs}, keep_mb_per_task {self.keep_bytes / 2**20:g}"
