"""The ServerApp host's checkpoints: the global model after each round, as ``.npz`` files.

The host does not need the app's help to take them: a strategy sends its current global model
with every ``train`` (the model after the previous round) and ``evaluate`` (the model after this
round's training) instruction, and :class:`Checkpointer` keeps it from the first instruction of
each batch: at once from a ``train`` batch, and from an ``evaluate`` batch once its replies are in
(so a restart never skips a round's evaluation). The format is plain NumPy: one array per entry
(``a0``, ``a1``, …) and a JSON description (round, time, the arrays' names); ``allow_pickle`` is
never used to read it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message

from agata_contracts.checkpoints import META_KEY, checkpoint_name, checkpoint_round
from flower_runtime.flower_internals import SType
from flower_runtime.grid import round_of
from task_daemon_lib.task_reporter import TaskReporter

logger = logging.getLogger(__name__)

KEEP = 2
"""Checkpoint files kept in the state folder (the manager may still be reading the previous)."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be read; says why."""


def _npy(value: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    return buffer.getvalue()


def write_npz(output: IO[bytes], arrays: ArrayRecord, rounds_done: int) -> None:
    """Write the ``.npz`` of a global model after ``rounds_done`` rounds to ``output``: the
    arrays' own ``.npy`` bytes as they are (Flower keeps NumPy arrays in that format), so a
    large model is not converted or copied on the way."""
    names = list(arrays.keys())
    meta = json.dumps({"round": rounds_done, "time": time.time(), "names": names})
    with zipfile.ZipFile(output, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for index, name in enumerate(names):
            array = arrays[name]
            data = array.data if array.stype == SType.NUMPY else _npy(array.numpy())
            with archive.open(f"a{index}.npy", "w", force_zip64=True) as member:
                member.write(data)
        archive.writestr(f"{META_KEY}.npy", _npy(np.array(meta)))


def checkpoint_bytes(arrays: ArrayRecord, rounds_done: int) -> bytes:
    """The ``.npz`` of a global model after ``rounds_done`` rounds."""
    buffer = io.BytesIO()
    write_npz(buffer, arrays, rounds_done)
    return buffer.getvalue()


def read_checkpoint(content: bytes) -> tuple[int, ArrayRecord]:
    """The rounds done and the global model of a checkpoint's bytes (``CheckpointError``)."""
    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as data:
            meta = json.loads(str(data[META_KEY]))
            names = meta["names"]
            rounds_done = meta["round"]
            if not isinstance(rounds_done, int) or rounds_done < 0 or not isinstance(names, list):
                raise CheckpointError("its description has no round or no names")
            arrays = {str(name): Array(np.array(data[f"a{index}"]))
                      for index, name in enumerate(names)}
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"not a checkpoint: {exc}") from None
    return rounds_done, ArrayRecord(array_dict=arrays)


def write_atomically(path: Path, content: bytes | Callable[[IO[bytes]], None]) -> None:
    """Write ``content`` (bytes, or what a writer writes) at ``path`` so that a reader sees
    all of it or nothing. It is not forced to the disk (a large model's fsync would hold the
    next round): a checkpoint a power loss tore fails its checksums when it is read, and the
    previous one is taken instead."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".write-")
    try:
        with os.fdopen(handle, "wb") as output:
            if isinstance(content, bytes):
                output.write(content)
            else:
                content(output)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class Checkpointer:
    """Keeps the global model after each round in ``state_dir`` and reports it.

    The files are written on a thread of their own, so the ServerApp never waits for a large
    model to reach the disk; when rounds come faster than that, a checkpoint overtaken before
    its turn is skipped for the newer one. ``flush`` waits for what is pending, ``close`` also
    ends the thread (at the end of the run). ``rounds_before`` is how many rounds the run had
    done before this process (a resumed run): the strategy counts its rounds from 1 again, the
    checkpoints go on from there.
    """

    def __init__(self, state_dir: Path, reporter: TaskReporter, rounds_before: int = 0) -> None:
        self.state_dir = state_dir
        self.reporter = reporter
        self.rounds_before = rounds_before
        self.last = rounds_before
        self._evaluated: tuple[int, ArrayRecord] | None = None
        self._queued: tuple[int, ArrayRecord] | None = None
        self._busy = False
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._write_loop, name="checkpoints",
                                        daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until every checkpoint asked for is written; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._queued is None and not self._busy,
                                          timeout_s)

    def close(self, timeout_s: float = 60.0) -> None:
        """Write what is pending, then stop the writing thread."""
        self.flush(timeout_s)
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout_s)

    def replies_seen(self, server_round: int) -> None:
        """A round's replies are in: keep the model its ``evaluate`` instructions carried."""
        pending, self._evaluated = self._evaluated, None
        if pending is not None and pending[0] == server_round + self.rounds_before:
            self._keep(*pending)
        elif pending is not None:
            self._evaluated = pending

    def instructions_sent(self, instruction: Message) -> None:
        """Keep the model a ``train`` instruction carries (or hold an ``evaluate`` one's until
        its replies), when it is newer than the last one kept."""
        number = round_of(instruction)
        kind = instruction.metadata.message_type
        if number is None or not instruction.has_content():
            return
        if kind.startswith("train"):
            done = number - 1
        elif kind.startswith("evaluate"):
            done = number
        else:
            return
        done += self.rounds_before
        records = list(instruction.content.array_records.values())
        if done <= self.last or not records:
            return
        if kind.startswith("evaluate"):
            self._evaluated = (done, records[0])
            return
        self._keep(done, records[0])

    def _keep(self, done: int, arrays: ArrayRecord) -> None:
        with self._changed:
            if done <= self.last or (self._queued is not None and done <= self._queued[0]):
                return
            self._queued = (done, arrays)
            self._changed.notify_all()

    def _write_loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queued is not None or self._closed)
                if self._queued is None:
                    return
                (done, arrays), self._queued = self._queued, None
                self._busy = True
            try:
                self._write(done, arrays)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _write(self, done: int, arrays: ArrayRecord) -> None:
        if done <= self.last:
            return
        try:
            write_atomically(self.state_dir / checkpoint_name(done),
                             lambda output: write_npz(output, arrays, done))
        except (OSError, ValueError) as exc:
            logger.warning("checkpoint after round %d not kept: %s", done, exc)
            return
        self.last = done
        self.reporter.send_checkpoint(done)
        self._drop_old()

    def _drop_old(self) -> None:
        kept = sorted((r, p) for p in self.state_dir.iterdir()
                      if (r := checkpoint_round(p.name)) is not None)
        for _, path in kept[:-KEEP]:
            path.unlink(missing_ok=True)
