"""A run's results folder on the side that ran it: gathering the files its process left for
upload.

Task code is untrusted: gathering reads regular files only, never follows a link (a link to a
device's secret is skipped, not sent), checks every path with the task path rule and keeps to
the count and size limits, saying what it left out and why.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from agata_contracts.checkpoints import STATE_DIR
from agata_contracts.common import check_task_path
from agata_contracts.lifecycle import Lifecycle
from agata_contracts.results import MAX_RESULT_BYTES, MAX_RESULT_FILE_BYTES, MAX_RESULT_FILES

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class GatheredFile:
    """A result file to send: its path inside the results folder and its bytes."""

    path: str
    content: bytes


@dataclass
class Gathered:
    """What a results folder holds to send, and what was left out (with why)."""

    files: list[GatheredFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes gathered in all."""
        return sum(len(item.content) for item in self.files)


def read_regular(path: Path, limit: int) -> bytes | str:
    """The bytes of a regular file not reached through a link, or why it is left out."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if info.st_size > limit:
            return f"{info.st_size} bytes, over the {limit} bytes a result file may have"
        return handle.read(limit + 1)


def gather_results(folder: Path, lifecycle: Lifecycle) -> Gathered:
    """The files of ``folder`` the task declared as results, within the limits, in path order
    (the runtime's state folder, ``.agata/``, is never one)."""
    gathered = Gathered()
    if not folder.is_dir() or folder.is_symlink():
        return gathered
    candidates: list[tuple[str, Path]] = []
    for root, folders, names in os.walk(folder, followlinks=False):
        folders.sort()
        base = Path(root)
        if base == folder and STATE_DIR in folders:
            folders.remove(STATE_DIR)
        for name in [name for name in folders if (base / name).is_symlink()]:
            relative = (base / name).relative_to(folder).as_posix()
            gathered.skipped.append(f"{relative}: a link (only regular files are results)")
            folders.remove(name)
        for name in names:
            path = base / name
            candidates.append((path.relative_to(folder).as_posix(), path))
    total = 0
    for relative, path in sorted(candidates):
        if not lifecycle.keeps(relative):
            continue
        try:
            check_task_path(relative)
        except ValueError as exc:
            gathered.skipped.append(f"{relative}: {exc}")
            continue
        if path.is_symlink():
            gathered.skipped.append(f"{relative}: a link (only regular files are results)")
            continue
        if len(gathered.files) >= MAX_RESULT_FILES:
            gathered.skipped.append(f"{relative}: over {MAX_RESULT_FILES} result files")
            continue
        content = read_regular(path, MAX_RESULT_FILE_BYTES)
        if isinstance(content, str):
            gathered.skipped.append(f"{relative}: {content}")
            continue
        if len(content) > MAX_RESULT_FILE_BYTES:
            gathered.skipped.append(f"{relative}: grew past {MAX_RESULT_FILE_BYTES} bytes")
            continue
        if total + len(content) > MAX_RESULT_BYTES:
            gathered.skipped.append(f"{relative}: over {MAX_RESULT_BYTES} bytes of results")
            continue
        total += len(content)
        gathered.files.append(GatheredFile(relative, content))
    return gathered
