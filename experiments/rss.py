"""Peak resident memory of running processes, by role, for benchmarks.

A background thread reads ``VmHWM`` (the kernel's own high-water mark of a process's resident
memory) of every process whose command line contains a role's marker, keeping the highest seen
per role. ``start`` first resets the mark of the processes already running (``clear_refs``), so
a process reused across runs reports its peak in this run only.
"""

from __future__ import annotations

import threading
from pathlib import Path

PROC = Path("/proc")


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


class PeakRss:
    """The highest ``VmHWM`` (MB) per role while it runs."""

    def __init__(self, markers: dict[str, str], interval_s: float = 0.05) -> None:
        self.markers = markers
        self.interval_s = interval_s
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)

    def start(self) -> PeakRss:
        """Reset the running processes' marks, then sample until ``stop``."""
        for _, process in _matching(self.markers):
            try:
                (process / "clear_refs").write_text("5")
            except OSError:
                continue
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        """Stop sampling; the peaks, MB, rounded."""
        self._stop.set()
        self._thread.join(5)
        return {role: round(mb, 1) for role, mb in sorted(self.peaks.items())}

    def _sample(self) -> None:
        while not self._stop.is_set():
            for role, process in _matching(self.markers):
                mb = _high_water_mb(process)
                if mb is not None and mb > self.peaks.get(role, 0.0):
                    self.peaks[role] = mb
            self._stop.wait(self.interval_s)
