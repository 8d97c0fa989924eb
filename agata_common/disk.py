"""Is the disk full? Free space of a data folder against a floor, and errors that mean "no space".

A service checks the folder it writes (its ``[storage] data_dir``): below ``min_free_mb`` MiB
free the disk counts as full, before writes start failing. Errors are told apart by what they
say: ``ENOSPC``/``EDQUOT`` from the OS, SQLite's "database or disk is full", PostgreSQL's
``53100`` (disk full), however a driver wraps them.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

DISK_FULL = "disk full"
"""What a reason, a status and the health answer say when the disk is full."""
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk full",
               "could not extend file")


@dataclass(frozen=True)
class DiskSpace:
    """A folder's disk: free and total bytes, and whether that is under the floor."""

    folder: Path
    free_bytes: int
    total_bytes: int
    min_free_bytes: int

    @property
    def full(self) -> bool:
        """Whether less than the floor is free."""
        return self.free_bytes < self.min_free_bytes

    def describe(self) -> str:
        """One line for people: how much is free where, and whether that is full."""
        free_mb = self.free_bytes / 2**20
        state = f"{DISK_FULL}: " if self.full else ""
        return (f"{state}{free_mb:.0f} MiB free of {self.total_bytes / 2**20:.0f} MiB in "
                f"{self.folder} (at least {self.min_free_bytes / 2**20:.0f} MiB must be)")


def disk_space(folder: Path, min_free_mb: float) -> DiskSpace | None:
    """The disk of ``folder`` (None when it cannot be asked, e.g. the folder is gone)."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return DiskSpace(folder, stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize,
                     int(min_free_mb * 2**20))


def is_disk_full_error(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says the disk or the database is out of space."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if getattr(current, "sqlstate", None) == "53100" or getattr(
                current, "pgcode", None) == "53100":
            return True
        if says_disk_full(str(current)):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


def says_disk_full(text: str) -> bool:
    """Whether an error's text (a child process's reason, say) says the disk is out of space."""
    lowered = text.lower()
    return any(marker in lowered for marker in _FULL_TEXTS)
