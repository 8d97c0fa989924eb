"""Finding files under a running stack's folders, which its processes create and remove
meanwhile (a spare's stage goes when the spare ends): a folder that vanishes during the search
is skipped, never an error."""

from __future__ import annotations

import os
from pathlib import Path


def matching(root: Path, pattern: str, *, folders: bool = False) -> list[Path]:
    """The files (or, with ``folders``, the folders) under ``root`` whose path ends like
    ``pattern`` (``PurePath.match``: ``*`` within one name), sorted."""
    found = []
    for folder, subfolders, files in os.walk(root):
        for name in subfolders if folders else files:
            path = Path(folder) / name
            if path.match(pattern):
                found.append(path)
    return sorted(found)
