"""Peak resident memory and CPU time of running processes, by role, for benchmarks.

A background thread reads ``VmHWM`` (the kernel's own high-water mark of a process's resident
memory) of every process of this one's tree whose command line contains a role's marker,
keeping the highest seen per role. ``start`` first resets the mark of the processes already
running (``clear_refs``), so a process reused across runs reports its peak in this run only.
CPU seconds (user and system) are counted per role from ``start`` for a process seen then, and
under "<role>+new" for one started later (from its own start), up to the last sample that saw
it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

PROC = Path("/proc")


def _parent(pid: int) -> int:
    try:
        return int((PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _descends_from_us(pid: int) -> bool:
    """Whether ``pid`` is this process's descendant (other programs' processes on the
    machine may carry the same markers)."""
    ours = os.getpid()
    for _ in range(64):
        pid = _parent(pid)
        if pid == ours:
            return True
        if pid <= 1:
            return False
    return False


def _matching(markers: dict[str, str]) -> list[tuple[str, Path]]:
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode(
                errors="replace")
        except OSError:
            continue
        for role, marker in markers.items():
            if marker in command:
                if _descends_from_us(int(entry.name)):
                    found.append((role, entry))
                break
    return found


def _high_water_mb(process: Path) -> float | None:
    try:
        for line in (process / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_s(process: Path) -> float | None:
    try:
        fields = (process / "stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
    except (OSError, ValueError, IndexError):
        return None


class PeakRss:
    """The highest ``VmHWM`` (MB) per role while it runs, and the CPU seconds each role spent."""

    def __init__(self, markers: dict[str, str], interval_s: float = 0.05) -> None:
        self.markers = markers
        self.interval_s = interval_s
        self.peaks: dict[str, float] = {}
        self._cpu_first: dict[Path, tuple[str, float]] = {}
        self._cpu_last: dict[Path, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)

    def start(self) -> PeakRss:
        """Reset the running processes' marks, then sample until ``stop``."""
        for role, process in _matching(self.markers):
            try:
                (process / "clear_refs").write_text("5")
            except OSError:
                continue
            cpu = _cpu_s(process)
            if cpu is not None:
                self._cpu_first[process] = (role, cpu)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        """Stop sampling; the peaks, MB, rounded."""
        self._stop.set()
        self._thread.join(5)
        return {role: round(mb, 1) for role, mb in sorted(self.peaks.items())}

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds (user and system) per role since ``start``, rounded; after ``stop``."""
        spent: dict[str, float] = {}
        for process, last in self._cpu_last.items():
            role, first = self._cpu_first[process]
            spent[role] = spent.get(role, 0.0) + last - first
        return {role: round(seconds, 2) for role, seconds in sorted(spent.items())}

    def _sample(self) -> None:
        while not self._stop.is_set():
            for role, process in _matching(self.markers):
                mb = _high_water_mb(process)
                if mb is not None and mb > self.peaks.get(role, 0.0):
                    self.peaks[role] = mb
                cpu = _cpu_s(process)
                if cpu is not None:
                    self._cpu_first.setdefault(process, (f"{role}+new", 0.0))
                    self._cpu_last[process] = cpu
            self._stop.wait(self.interval_s)
