"""Unpacking an uploaded app archive (a zip, or a ``.fab`` built by ``flwr build``) safely.

Every entry is checked before anything is stored: its path (the task-path rule), its kind (no
links, no devices), its size (announced and actual, so a zip bomb stops at the limit) and the
number of files. Folders, hidden entries (``.info/`` of a FAB, ``.git/``) and Python caches
are left out and listed. A zip whose files all sit in one top folder (``zip -r app.zip app``)
is unpacked from inside that folder. An archive holding ``.info/CONTENT`` (a FAB's manifest),
and any upload named ``*.fab``, must match that manifest file for file (``fab_content``).
"""

from __future__ import annotations

import io
import stat
import zipfile
import zlib
from dataclasses import dataclass, field

from agata_contracts.common import check_task_path
from cloud_task_manager.fab_content import FabContentError, verify_fab_content

_CHUNK = 64 * 1024


class ArchiveError(ValueError):
    """The archive cannot be stored; says which entry and why."""


@dataclass
class UnpackedArchive:
    """The files of an archive (path relative to the app's top, bytes) and what was left out."""

    files: list[tuple[str, bytes]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _left_out(name: str) -> bool:
    parts = name.split("/")
    hidden = any(part.startswith(".") and part not in (".", "..") for part in parts)
    return (hidden or "__pycache__" in parts
            or name.endswith((".pyc", ".pyo")))


def _top_folder(names: list[str]) -> str:
    """The one folder every name sits in, when there is one and it holds no manifest above."""
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1 and all("/" in name for name in names):
        return tops.pop() + "/"
    return ""


def _read_limited(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, limit: int) -> bytes:
    data = bytearray()
    try:
        with archive.open(entry) as stream:
            while chunk := stream.read(_CHUNK):
                data += chunk
                if len(data) > limit:
                    raise ArchiveError(f"{entry.filename}: more than {limit} bytes unpacked")
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, OSError,
            zlib.error) as exc:
        raise ArchiveError(f"{entry.filename}: cannot be unpacked ({exc})") from None
    return bytes(data)


def unpack_archive(content: bytes, *, max_file_bytes: int, max_files: int,
                   max_total_bytes: int, fab: bool = False) -> UnpackedArchive:
    """The files of a zip archive, checked; ``ArchiveError`` on the first bad entry. ``fab``:
    the upload says it is a ``.fab``, so its ``.info/CONTENT`` must be there."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"not a zip archive (a .zip or .fab): {exc}") from None
    result = UnpackedArchive()
    with archive:
        try:
            verify_fab_content(archive, lambda entry, limit: _read_limited(archive, entry, limit),
                               required=fab, max_total_bytes=max_total_bytes)
        except FabContentError as exc:
            raise ArchiveError(str(exc)) from None
        entries: list[zipfile.ZipInfo] = []
        for entry in archive.infolist():
            name = entry.filename
            if entry.is_dir():
                continue
            mode = entry.external_attr >> 16
            if mode and not (stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0):
                raise ArchiveError(f"{name}: only plain files are accepted (no links)")
            if _left_out(name):
                result.skipped.append(name)
                continue
            try:
                check_task_path(name)
            except ValueError as exc:
                raise ArchiveError(f"{name}: {exc}") from None
            entries.append(entry)
        prefix = _top_folder([entry.filename for entry in entries])
        if len(entries) > max_files:
            raise ArchiveError(f"{len(entries)} files; a task holds at most {max_files}")
        total = 0
        for entry in entries:
            path = entry.filename[len(prefix):]
            if entry.file_size > max_file_bytes:
                raise ArchiveError(f"{entry.filename}: {entry.file_size} bytes; the limit is "
                                   f"{max_file_bytes}")
            data = _read_limited(archive, entry, max_file_bytes)
            total += len(data)
            if total > max_total_bytes:
                raise ArchiveError(f"more than {max_total_bytes} bytes unpacked in all")
            result.files.append((path, data))
    if not result.files:
        raise ArchiveError("the archive holds no files to store")
    return result
