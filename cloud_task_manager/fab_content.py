"""A ``.fab``'s own manifest, ``.info/CONTENT``, checked against the files it travels with.

``flwr build`` writes one line per file of the app, ``<path>,<sha256 hex>,<size in bits>``,
joined by newlines, and stores them as ``.info/CONTENT``; every other file of the archive is
listed. An archive that carries the manifest is accepted only when every file it holds is
listed with its exact hash and size, and every listed file is there. The manifest proves
integrity (nothing was lost or changed on the way), not who built the app.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

FAB_CONTENT = ".info/CONTENT"
MAX_CONTENT_BYTES = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_SHOWN = 200


def _shown(path: str) -> str:
    """A path from the manifest as an error message names it: printable, and not too long."""
    text = path if path.isprintable() else repr(path)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"


class FabContentError(ValueError):
    """The archive and its ``.info/CONTENT`` disagree; says which file and how."""


@dataclass(frozen=True)
class ListedFile:
    """One line of ``.info/CONTENT``."""

    sha256: str
    size_bits: int


def parse_content(text: str) -> dict[str, ListedFile]:
    """The manifest's lines by path; ``FabContentError`` naming the first bad line."""
    listed: dict[str, ListedFile] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(",", 2)
        if len(parts) != 3 or not parts[0]:
            raise FabContentError(f"{FAB_CONTENT} line {number} is not path,sha256,size_bits")
        path, sha256, size_bits = parts
        if not _SHA256.match(sha256) or not size_bits.isdigit():
            raise FabContentError(f"{FAB_CONTENT} line {number} ({_shown(path)}): not a sha256 "
                                  "in hex and a size in bits")
        if path in listed:
            raise FabContentError(f"{_shown(path)}: listed twice in {FAB_CONTENT}")
        listed[path] = ListedFile(sha256, int(size_bits))
    return listed


def verify_fab_content(archive: zipfile.ZipFile, read: Callable[[zipfile.ZipInfo, int], bytes],
                       *, required: bool, max_total_bytes: int) -> None:
    """Check every file of ``archive`` against its ``.info/CONTENT``.

    ``read(entry, limit)`` unpacks one entry, refusing more than ``limit`` bytes. An archive
    without a manifest passes unless it is ``required`` (the upload is named ``*.fab``).
    ``FabContentError`` names the first file that disagrees.
    """
    entries = [entry for entry in archive.infolist() if not entry.is_dir()]
    names = [entry.filename for entry in entries]
    manifest = next((entry for entry in entries if entry.filename == FAB_CONTENT), None)
    if manifest is None:
        if required:
            raise FabContentError(f"a .fab must hold {FAB_CONTENT} (the file list with "
                                  "sha256 hashes that flwr build writes)")
        return
    try:
        listed = parse_content(read(manifest, MAX_CONTENT_BYTES).decode("utf-8"))
    except UnicodeDecodeError:
        raise FabContentError(f"{FAB_CONTENT} is not UTF-8 text") from None
    seen: set[str] = set()
    total = 0
    for entry in entries:
        name = entry.filename
        if name in seen:
            raise FabContentError(f"{name}: appears twice in the archive")
        seen.add(name)
        if name == FAB_CONTENT:
            continue
        expected = listed.get(name)
        if expected is None:
            raise FabContentError(f"{name}: in the archive but not listed in {FAB_CONTENT}")
        data = read(entry, max(0, max_total_bytes - total))
        total += len(data)
        if hashlib.sha256(data).hexdigest() != expected.sha256:
            raise FabContentError(f"{name}: its sha256 does not match {FAB_CONTENT}")
        if len(data) * 8 != expected.size_bits:
            raise FabContentError(f"{name}: {len(data) * 8} bits, {FAB_CONTENT} says "
                                  f"{expected.size_bits}")
    missing = sorted(set(listed) - set(names))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FabContentError(f"{_shown(missing[0])}: listed in {FAB_CONTENT} but missing from "
                              f"the archive{more}")
