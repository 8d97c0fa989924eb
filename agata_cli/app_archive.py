"""A Flower App folder as one zip archive, the way the gateway takes apps."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

APP_MANIFEST = "pyproject.toml"


def is_app_folder(folder: Path) -> bool:
    """Whether ``folder`` is a Flower App (a ``pyproject.toml`` at its top)."""
    return (folder / APP_MANIFEST).is_file()


def zip_folder(folder: Path) -> bytes:
    """A folder's files as a zip archive (paths relative to the folder; no links followed,
    caches and hidden files left out)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_symlink() or not path.is_file() or any(
                    part.startswith(".") or part == "__pycache__" for part in relative.parts):
                continue
            archive.write(path, relative.as_posix())
    return buffer.getvalue()
