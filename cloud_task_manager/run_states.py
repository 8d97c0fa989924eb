"""What it takes to start a task's latest run again: its arguments and its last checkpoint.

Kept in the database, not on this process's disk, so that whichever manager process starts the
run again (this one after a restart, or another replica) finds it. Writes here do not go through
:meth:`TaskRecords.transaction`: a checkpoint a round changes no offer to devices.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from agata_common.database import utcnow
from agata_common.paths import own_folder, write_new_file
from agata_common.run_results import read_regular
from agata_contracts.checkpoints import RESUME_FILE, checkpoint_round
from cloud_task_manager.kept_checkpoints import KeptCheckpoints, copy_verified, is_whole_file
from cloud_task_manager.models import RunStateRecord, TaskRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunState:
    """A run's arguments and its last checkpoint (None before the first)."""

    run: int
    arguments: dict[str, Any]
    checkpoint_round: int | None
    checkpoint: bytes | None


class RunStates:
    """The ``run_states`` table: one row per task, for its latest run."""

    def __init__(self, engine: Engine, max_checkpoint_bytes: int) -> None:
        self.max_checkpoint_bytes = max_checkpoint_bytes
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.shared = engine.dialect.name != "sqlite"
        """Whether other replicas may read this database (a file database is this machine's
        alone: a run's checkpoints stay in its state folder, which a restart here reads)."""

    @staticmethod
    def begin(session: Session, task_id: str, run: int, arguments: dict[str, Any]) -> None:
        """A new run of the task starts (in the caller's transaction): no checkpoint yet."""
        row = session.get(RunStateRecord, task_id)
        if row is None:
            session.add(RunStateRecord(task_id=task_id, run=run, arguments=arguments))
            return
        row.run = run
        row.arguments = arguments
        row.checkpoint_round = None
        row.checkpoint = None
        row.checkpoint_at = None

    def save_checkpoint(self, task_id: str, run: int, rounds_done: int, content: bytes, *,
                        owner: str | None = None) -> bool:
        """Keep the checkpoint when it belongs to the task's latest run, is newer than the one
        kept and (``owner``) that replica still owns the run; False when it was not kept."""
        if len(content) > self.max_checkpoint_bytes:
            return False
        with self._sessions.begin() as session:
            changed = session.execute(
                update(RunStateRecord)
                .where(RunStateRecord.task_id == task_id, RunStateRecord.run == run,
                       or_(RunStateRecord.checkpoint_round.is_(None),
                           RunStateRecord.checkpoint_round < rounds_done),
                       *([select(TaskRecord.id).where(TaskRecord.id == task_id,
                                                      TaskRecord.owner == owner).exists()]
                         if owner is not None else []))
                .values(checkpoint_round=rounds_done, checkpoint=content,
                        checkpoint_at=utcnow())
            )
            return bool(getattr(changed, "rowcount", 0))

    def keep_checkpoint_file(self, path: Path, task_id: str, run: int, rounds_done: int, *,
                             owner: str) -> str | None:
        """Keep the checkpoint file a run's server left at ``path`` (read without following a
        link, within the size limit, whole: a damaged one never replaces the good one kept);
        why not, or None."""
        if path.parent.is_symlink():
            return "its folder is a link"
        content = read_regular(path, self.max_checkpoint_bytes)
        if isinstance(content, str):
            return content
        if len(content) > self.max_checkpoint_bytes:
            return "over the checkpoint size limit"
        if not is_whole_checkpoint(content):
            return "it is damaged (its checksums fail): the previous one is kept"
        if not self.save_checkpoint(task_id, run, rounds_done, content, owner=owner):
            return "not newer than the one kept, or the run is no longer this replica's"
        return None

    def restart_point(self, task_id: str, state: RunState, resumable: bool, state_dir: Path,
                      cause: str, kept: KeptCheckpoints | None = None) -> tuple[bool, str]:
        """Where a run starts again, and the task's reason saying so: after its newest whole
        checkpoint (written as ``resume.npz`` in a state folder of its own) among its state
        folder's, the copies the manager ``kept`` and the database's, a damaged newer one
        skipped and named, or from round 0 (both folders emptied: its spool was read back, its
        checkpoints are stale)."""
        in_database = state.checkpoint is not None and state.checkpoint_round is not None
        damaged_copy = in_database and not is_whole_checkpoint(state.checkpoint or b"")
        kept_dir = kept.path(task_id, state.run) if kept is not None else None
        local, damaged = local_checkpoints(state_dir, None if damaged_copy
                                           else state.checkpoint_round, kept_dir)
        if damaged_copy and state.checkpoint_round is not None:
            damaged.append(state.checkpoint_round)
        notes = [f"its newer checkpoint after round {max(damaged)} is damaged and was skipped"
                 ] if damaged else []
        if resumable and local is not None:
            rounds_done, path = local
            resume = own_folder(state_dir) / RESUME_FILE
            if path.parent == kept_dir:
                notes.append("taken from the copy the manager kept: its state folder had no "
                             "whole one as new")
                why = copy_verified(path, resume)
                if why is not None:
                    raise OSError(f"its kept checkpoint after round {rounds_done} {why}")
            else:
                os.replace(path, resume)
            if kept is not None:
                kept.prune(task_id, state.run, newer_than=rounds_done)
            return True, (f"resumed after round {rounds_done} from its checkpoint"
                          f"{_noted(notes)}: {cause}")
        if resumable and in_database and not damaged_copy:
            write_new_file(own_folder(state_dir) / RESUME_FILE, state.checkpoint or b"")
            if kept is not None:
                kept.prune(task_id, state.run, newer_than=state.checkpoint_round)
            return True, (f"resumed after round {state.checkpoint_round} from its checkpoint"
                          f"{_noted(notes)}: {cause}")
        own_folder(state_dir, empty=True)
        if kept is not None:
            kept.folder(task_id, state.run, empty=True)
        with self._sessions.begin() as session:
            self.begin(session, task_id, state.run, state.arguments)
        why = ("the app does not declare [tool.agata] resume = true" if not resumable
               else f"its checkpoint after round {max(damaged)} is damaged and no earlier one "
                    "is whole" if damaged else "no checkpoint was kept yet")
        return False, f"started again from round 0 ({why}): {cause}"

    def get(self, task_id: str, run: int) -> RunState | None:
        """The state of the task's run ``run``; None when the latest run is another one."""
        with self._sessions() as session:
            row = session.get(RunStateRecord, task_id)
            if row is None or row.run != run:
                return None
            return RunState(row.run, dict(row.arguments or {}), row.checkpoint_round,
                            row.checkpoint)


def is_whole_checkpoint(content: bytes) -> bool:
    """Whether a checkpoint's bytes are a whole ``.npz``: a zip whose every member's CRC-32
    holds (a truncated or altered file is not)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _noted(notes: list[str]) -> str:
    return f" ({'; '.join(notes)})" if notes else ""


def newest_local_checkpoint(state_dir: Path, newer_than: int | None
                            ) -> tuple[int, Path] | None:
    """The newest whole checkpoint file the run's server left in its state folder on this
    machine, when it is newer than ``newer_than`` (the database's); None otherwise."""
    return local_checkpoints(state_dir, newer_than)[0]


def local_checkpoints(state_dir: Path, newer_than: int | None, kept_dir: Path | None = None
                      ) -> tuple[tuple[int, Path] | None, list[int]]:
    """The newest checkpoint file on this machine newer than ``newer_than`` that is whole (a
    regular file, a zip whose every member's checksum holds), from the run's state folder or
    the manager's kept copies (``kept_dir``; the state folder's first for one round), or None;
    and the rounds of the newer ones found damaged in both on the way."""
    found: dict[int, list[Path]] = {}
    for folder in (state_dir, kept_dir):
        if folder is None or not folder.is_dir() or folder.is_symlink():
            continue
        for path in sorted(folder.iterdir()):
            rounds_done = checkpoint_round(path.name)
            if rounds_done is not None and (newer_than is None or rounds_done > newer_than):
                found.setdefault(rounds_done, []).append(path)
    damaged: list[int] = []
    for rounds_done in sorted(found, reverse=True):
        for path in found[rounds_done]:
            if is_whole_file(path):
                return (rounds_done, path), damaged
            logger.warning("checkpoint %s is damaged: not resumed from", path)
        damaged.append(rounds_done)
    return None, damaged


@dataclass(frozen=True)
class PendingCheckpoint:
    """A checkpoint a run's server reported, waiting to be copied."""

    path: Path
    task_id: str
    run: int
    rounds_done: int
    owner: str


COPIER_NICENESS = 10
"""How much nicer than its process the copier thread runs (Linux thread niceness): it steps
back for the runs' own processes."""


def _yield_the_processor() -> None:
    """Lower the calling thread's scheduling priority (Linux gives each thread its own), so
    copying a large checkpoint uses the processor when the run's processes leave it idle."""
    try:
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + COPIER_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness, 19))
    except (OSError, AttributeError) as exc:
        logger.debug("checkpoint copier keeps its priority: %s", exc)


class CheckpointCopier:
    """Copies reported checkpoints (``keep``: into the manager's own folder, and into a shared
    database) on a thread of its own, the newest of each run only, and spending at most
    ``duty`` of its time on a run: after a copy that took ``d`` seconds, that run's next waits
    ``d * (1 / duty - 1)`` (the host writes one after every round: a small model is copied at
    once each time, a large one every few rounds, instead of taking the machine's time from the
    run). The newest checkpoint may so be only in the run's state folder for a while: a restart
    on this machine resumes from there when it is newer and whole (``restart_point``); the
    copies are what a task that wiped its state folder, or another replica, resumes from.
    Reports of rounds and ends never wait behind a model's write."""

    def __init__(self, keep: Callable[[PendingCheckpoint], str | None],
                 duty: float = 0.2) -> None:
        self._keep = keep
        self.duty = duty
        self._pending: dict[tuple[str, int], PendingCheckpoint] = {}
        self._copied_at: dict[tuple[str, int], float] = {}
        self._copying: dict[tuple[str, int], int] = {}
        self._changed = threading.Condition()
        self._closed = False
        self._hurry = False
        self._busy = False
        self._thread = threading.Thread(target=self._copy, name="checkpoint-copier",
                                        daemon=True)
        self._thread.start()

    def copy_now(self, checkpoint: PendingCheckpoint) -> None:
        """Copy this (small) checkpoint in the caller's thread, dropping an older one of its
        run still waiting (a newer copy is never overwritten by an older one)."""
        with self._changed:
            key = (checkpoint.task_id, checkpoint.run)
            waiting = self._pending.get(key)
            if waiting is not None and waiting.rounds_done <= checkpoint.rounds_done:
                del self._pending[key]
            self._copying[key] = self._copying.get(key, 0) + 1
        try:
            self._copy_one(checkpoint)
        finally:
            self._done_copying(key)

    def submit(self, checkpoint: PendingCheckpoint) -> None:
        """Copy this checkpoint (replacing an older one of its run still waiting)."""
        with self._changed:
            key = (checkpoint.task_id, checkpoint.run)
            waiting = self._pending.get(key)
            if waiting is None or waiting.rounds_done < checkpoint.rounds_done:
                self._pending[key] = checkpoint
            self._changed.notify_all()

    def forget(self, task_id: str, run: int, timeout_s: float = 30.0) -> None:
        """The run ended: what it still had waiting is not copied, and a copy of it under way
        is waited for (at most ``timeout_s``), so that none lands after its state is dropped."""
        key = (task_id, run)
        with self._changed:
            self._pending.pop(key, None)
            self._copied_at.pop(key, None)
            if not self._changed.wait_for(lambda: key not in self._copying, timeout_s):
                logger.warning("task %s run %d: a copy of its checkpoint is still under way",
                               task_id, run)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Copy what waits now, without waiting for its interval; False on timeout."""
        with self._changed:
            self._hurry = True
            self._changed.notify_all()
            done = self._changed.wait_for(lambda: not self._pending and not self._busy,
                                          timeout_s)
            self._hurry = False
            return done

    def close(self) -> None:
        """Copy what waits, then stop."""
        self.flush()
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(5)

    def _copy_one(self, checkpoint: PendingCheckpoint) -> None:
        try:
            why = self._keep(checkpoint)
        except Exception:
            logger.exception("task %s run %d: checkpoint after round %d not kept",
                             checkpoint.task_id, checkpoint.run, checkpoint.rounds_done)
            return
        if why is not None:
            logger.warning("task %s run %d: checkpoint after round %d not kept: %s",
                           checkpoint.task_id, checkpoint.run, checkpoint.rounds_done, why)

    def _due(self) -> tuple[PendingCheckpoint | None, float | None]:
        """The next checkpoint whose turn it is, else how long until one's turn."""
        now = time.monotonic()
        wait: float | None = None
        for key, checkpoint in self._pending.items():
            turn = self._copied_at.get(key, -math.inf)
            if self._hurry or turn <= now:
                return checkpoint, None
            wait = turn - now if wait is None else min(wait, turn - now)
        return None, wait

    def _copy(self) -> None:
        _yield_the_processor()
        while True:
            with self._changed:
                checkpoint, wait = self._due()
                while checkpoint is None:
                    if self._closed:
                        return
                    self._changed.wait(wait)
                    checkpoint, wait = self._due()
                key = (checkpoint.task_id, checkpoint.run)
                del self._pending[key]
                self._busy = True
                self._copying[key] = self._copying.get(key, 0) + 1
            began = time.monotonic()
            try:
                self._copy_one(checkpoint)
            finally:
                with self._changed:
                    took = time.monotonic() - began
                    self._copied_at[key] = time.monotonic() + took * (1 / self.duty - 1)
                    self._busy = False
                self._done_copying(key)

    def _done_copying(self, key: tuple[str, int]) -> None:
        with self._changed:
            left = self._copying.pop(key, 1) - 1
            if left:
                self._copying[key] = left
            self._changed.notify_all()
