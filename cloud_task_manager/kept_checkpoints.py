"""The manager's own copies of its runs' checkpoints, out of task code's reach.

A run's ServerApp host writes its checkpoints into the run's state folder, which its sandbox
binds writable: the operator's ServerApp code, in that same process, can overwrite or delete
them. So the manager copies each checkpoint it is told of into a folder of its own,
``<data_dir>/run-checkpoints/task_<id>/run_<n>/`` (mode 0700, never bound into any sandbox),
with the kernel, into a temporary name; the copy is kept only when every member's CRC-32 holds,
then renamed into place. The newest ``KEEP`` copies of a run stay; the folder goes when the
run's state folder does. A restart resumes from the newest whole checkpoint of either folder
(``RunStates.restart_point``).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import zipfile
from pathlib import Path

from agata_contracts.checkpoints import checkpoint_name, checkpoint_round

logger = logging.getLogger(__name__)

KEEP = 2
"""Copies kept per run: the newest and the one before (should the newest rot)."""
FOLDER_MODE = 0o700
FILE_MODE = 0o600
TEMPORARY_PREFIX = ".copy-"
_CHUNK = 64 * 1024 * 1024
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}


def is_whole_file(path: Path) -> bool:
    """Whether the file at ``path`` (not reached through a link) is a whole ``.npz``: a zip
    whose every member's CRC-32 holds."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return False
        try:
            with zipfile.ZipFile(handle) as archive:
                return archive.testzip() is None
        except (zipfile.BadZipFile, OSError, ValueError):
            return False


def _kernel_copy(source: int, target: int, size: int) -> None:
    """Copy ``size`` bytes between two open files in the kernel (``copy_file_range``), or
    through this process where the kernel cannot between these two files."""
    copied = 0
    try:
        while copied < size:
            step = os.copy_file_range(source, target, min(_CHUNK, size - copied))
            if step == 0:
                break
            copied += step
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY or copied:
            raise
        with os.fdopen(os.dup(source), "rb") as reading, \
                os.fdopen(os.dup(target), "wb") as writing:
            shutil.copyfileobj(reading, writing, _CHUNK)


def copy_verified(source: Path, target: Path) -> str | None:
    """Copy the regular file ``source`` (not followed when a link) to ``target`` (replaced,
    never followed) through a temporary name beside it, keeping it only when the copy is a
    whole checkpoint; why it was not kept, or None."""
    try:
        descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    temporary = target.parent / f"{TEMPORARY_PREFIX}{target.name}"
    try:
        with os.fdopen(descriptor, "rb") as reading:
            info = os.fstat(reading.fileno())
            if not stat.S_ISREG(info.st_mode):
                return "not a regular file"
            temporary.unlink(missing_ok=True)
            written = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                              FILE_MODE)
            with os.fdopen(written, "wb") as writing:
                _kernel_copy(reading.fileno(), writing.fileno(), info.st_size)
        if not is_whole_file(temporary):
            temporary.unlink(missing_ok=True)
            return "it is damaged (its checksums fail): the previous copy is kept"
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        return f"could not be copied ({exc.strerror or exc})"
    return None


def private_folder(root: Path, relative: Path, *, empty: bool = False) -> Path:
    """``root / relative`` as real folders of mode 0700 down from ``root`` (``empty``: the last
    one emptied first); a link or a file in the way is removed, never followed."""
    levels = [root]
    for part in relative.parts:
        levels.append(levels[-1] / part)
    for folder in levels:
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            folder.unlink()
        folder.mkdir(mode=FOLDER_MODE, parents=folder == root, exist_ok=True)
        os.chmod(folder, FOLDER_MODE, follow_symlinks=False)
    folder = levels[-1]
    if empty:
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    return folder


class KeptCheckpoints:
    """``<data_dir>/run-checkpoints``: a verified copy of each run's newest checkpoints."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        private_folder(self.root, Path())

    def path(self, task_id: str, run: int) -> Path:
        """The run's folder of kept checkpoints (nothing is created)."""
        return self.root / f"task_{task_id}" / f"run_{run}"

    def folder(self, task_id: str, run: int, *, empty: bool = False) -> Path:
        """The run's folder of kept checkpoints, made (``empty``: emptied first); a copy left
        half-made by an earlier process is removed."""
        folder = private_folder(self.root, Path(f"task_{task_id}", f"run_{run}"), empty=empty)
        for entry in folder.glob(f"{TEMPORARY_PREFIX}*"):
            entry.unlink(missing_ok=True)
        return folder

    def drop(self, task_id: str, run: int) -> None:
        """The run's state is gone: so are its kept checkpoints."""
        folder = self.path(task_id, run)
        if folder.is_symlink():
            folder.unlink()
        else:
            shutil.rmtree(folder, ignore_errors=True)

    def keep(self, source: Path, task_id: str, run: int, rounds_done: int) -> Path | str:
        """Copy the checkpoint after ``rounds_done`` rounds from ``source`` into the run's
        folder, verified, dropping all but the newest ``KEEP``; the copy, or why not. Only
        into a folder the run's launch made: a run whose state was dropped gets none."""
        folder = self.path(task_id, run)
        if folder.is_symlink() or not folder.is_dir():
            return "the run's state was dropped"
        target = folder / checkpoint_name(rounds_done)
        why = copy_verified(source, target)
        if why is not None:
            return why
        self.prune(task_id, run, keep_last=KEEP)
        return target

    def prune(self, task_id: str, run: int, *, keep_last: int | None = None,
              newer_than: int | None = None) -> None:
        """Remove the run's kept checkpoints after round ``newer_than``, and all but the
        newest ``keep_last``."""
        found = sorted((r, p) for p in self.path(task_id, run).glob("checkpoint-*.npz")
                       if (r := checkpoint_round(p.name)) is not None)
        if newer_than is not None:
            for _, path in (item for item in found if item[0] > newer_than):
                path.unlink(missing_ok=True)
            found = [item for item in found if item[0] <= newer_than]
        if keep_last is not None:
            for _, path in found[:-keep_last] if keep_last else found:
                path.unlink(missing_ok=True)
