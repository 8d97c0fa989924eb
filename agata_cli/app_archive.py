"""A Flower App as one archive, the way the gateway takes apps: a folder zipped here, or a
``.zip``/``.fab`` (what ``flwr build`` makes) given as it is."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

APP_MANIFEST = "pyproject.toml"
ARCHIVE_SUFFIXES = (".fab", ".zip")
"""File suffixes that make a ``--file`` an app archive, uploaded whole."""


@dataclass(frozen=True)
class AppArchive:
    """An app ready to upload whole: the archive's name, its bytes, and where it came from."""

    name: str
    content: bytes
    source: Path


def is_app_folder(folder: Path) -> bool:
    """Whether ``folder`` is a Flower App (a ``pyproject.toml`` at its top)."""
    return (folder / APP_MANIFEST).is_file()


def is_app_archive(path: Path) -> bool:
    """Whether ``path`` names an app archive (``.fab`` or ``.zip``, in any case)."""
    return path.suffix.lower() in ARCHIVE_SUFFIXES


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


def folder_archive(folder: Path) -> AppArchive:
    """A Flower App folder, zipped."""
    return AppArchive(f"{folder.name}.zip", zip_folder(folder), folder)


def read_archive(path: Path) -> AppArchive:
    """An app archive read whole; ``ValueError`` naming the file when it cannot be read or is
    not a zip archive (a ``.fab`` is one)."""
    try:
        content = path.read_bytes()
    except OSError as error:
        raise ValueError(f"--file {path}: cannot read it: {error.strerror or error}") from None
    if not zipfile.is_zipfile(io.BytesIO(content)):
        raise ValueError(f"--file {path}: not a zip archive (a .fab or .zip holds a whole app)")
    return AppArchive(path.name, content, path)
