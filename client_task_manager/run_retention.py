"""Runs kept on this device: each task's newest runs only.

A run leaves a folder of downloaded task files (``task_<id>/run_<n>``) and, while it runs or
until its results are taken, a results folder (``results/task_<id>/run_<n>`` and its offer).
When a run of a task ends, the task's runs beyond the policy (``[client.params] keep_runs``,
``keep_mb_per_task``) are removed, oldest first, with a log line and an experiment event;
a run still going is never touched, and folders are measured without following links.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection
from pathlib import Path

from agata_common.retention import RetentionPolicy
from client_task_manager.left_runs import forget
from microservice_interconnect.events import NO_EVENTS, EventRecorder

logger = logging.getLogger(__name__)

SERVICE = "client_task_manager"


def _size(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links neither followed nor counted)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                status = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode):
                total += status.st_size
    return total


class DeviceRunRetention:
    """Removes a task's oldest runs' folders beyond the policy."""

    def __init__(self, work_dir: Path, policy: RetentionPolicy,
                 events: EventRecorder = NO_EVENTS) -> None:
        self.work_dir = work_dir
        self.policy = policy
        self.events = events

    def run_folders(self, task_id: str) -> dict[int, list[Path]]:
        """The task's folders on this device, by run number."""
        found: dict[int, list[Path]] = {}
        for base in (self.work_dir / f"task_{task_id}",
                     self.work_dir / "results" / f"task_{task_id}"):
            if base.is_symlink() or not base.is_dir():
                continue
            for folder in base.iterdir():
                number = folder.name.removeprefix("run_")
                if (folder.name.startswith("run_") and number.isascii() and number.isdigit()
                        and folder.is_dir() and not folder.is_symlink()):
                    found.setdefault(int(number), []).append(folder)
        return found

    def prune(self, task_id: str, running: Collection[int] = ()) -> list[int]:
        """Remove the task's runs beyond the policy (never one of ``running``); the runs
        removed."""
        folders = self.run_folders(task_id)
        sizes = {run: sum(_size(folder) for folder in paths) for run, paths in folders.items()}
        doomed = [run for run in self.policy.runs_to_prune(sizes) if run not in running]
        if not doomed:
            return []
        for run in doomed:
            for folder in folders[run]:
                forget(folder)
        runs = ",".join(str(run) for run in doomed)
        logger.info("task %s: removed the folders of run(s) %s from this device (%d bytes; %s)",
                    task_id, runs, sum(sizes[run] for run in doomed), self.policy.describe())
        self.events.register_event(SERVICE, "runs_retention", f"pruned {task_id} runs {runs}")
        return doomed
