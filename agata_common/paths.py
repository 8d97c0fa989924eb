"""Placing a task's relative paths under a folder, never outside it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agata_contracts.common import check_task_path


def resolve_inside(folder: Path, relative: str) -> Path:
    """The absolute path of ``relative`` under ``folder``; ``ValueError`` when the path is not
    a plain relative task path or would leave the folder (through a link, say)."""
    check_task_path(relative)
    root = folder.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or path == root:
        raise ValueError(f"path {relative!r} leaves the task folder")
    return path


def prepare_parent(folder: Path, path: Path) -> None:
    """Create the folders above ``path`` (inside ``folder``); ``ValueError`` when a file is in
    the way."""
    root = folder.resolve()
    for parent in reversed(path.parents):
        if not parent.is_relative_to(root) or parent == root:
            continue
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{parent.relative_to(root)} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise ValueError(f"{path.relative_to(root)} is a folder, not a file")


def own_folder(folder: Path, *, empty: bool = False) -> Path:
    """``folder`` as a real folder of its own (``empty``: emptied first): a link or a file a
    task left in its place is removed, never followed."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        folder.unlink()
    elif empty:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_new_file(path: Path, content: bytes, mode: int = 0o600) -> None:
    """Write ``content`` as a new file at ``path``, replacing a file or a link there without
    following it."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(descriptor, "wb") as output:
        output.write(content)
