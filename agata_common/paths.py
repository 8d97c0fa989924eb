"""Placing a task's relative paths under a folder, never outside it."""

from __future__ import annotations

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
