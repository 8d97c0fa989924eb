"""What the next warm spares import: the modules of ``warm_preload`` that the last runs' apps use.

A spare that imported torch holds about 200 MB and its import's CPU for a run that may never
touch it. So each run's app is read when the run takes its process: the ``import`` and
``from … import`` lines of its Python files (scanned line by line, never parsed or run) and
the dependencies its ``pyproject.toml`` declares. The spares started afterwards import what the
last few apps used. Only modules the operator named in ``warm_preload`` are ever chosen: an app
can leave one out, never add one (a name found in a string or a comment can only keep one of
them). Before any run, spares import all of them.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from flower_runtime import warm_argv

logger = logging.getLogger(__name__)

MAX_ENTRIES = 5_000
MAX_SOURCE_BYTES = 256 << 10
MAX_TOTAL_BYTES = 2 << 20
"""Bounds on what is read of an app (its files come from whoever uploaded it): the folders and
files looked at, the bytes of one file (a bigger one is skipped) and the bytes read in all."""

REMEMBERED_RUNS = 5
"""How many of the last runs' apps the spares' imports follow."""

_IMPORT_LINE = re.compile(
    rb"^[ \t]*(?:import[ \t]+([^\n#;]+)|from[ \t]+([A-Za-z_][\w.]*)[ \t]+import\b)", re.M)
_NAME = re.compile(r"[A-Za-z_]\w*")
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _sources(app_dir: Path) -> Iterator[Path]:
    """The app's own Python files (no hidden folders), within ``MAX_ENTRIES``."""
    seen = 0
    for folder, subfolders, files in os.walk(app_dir, followlinks=False):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        seen += len(subfolders) + len(files)
        if seen > MAX_ENTRIES:
            return
        yield from (Path(folder) / name for name in sorted(files) if name.endswith(".py"))


def _read(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file not reached through a link and at most ``limit`` long."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        content = handle.read(limit + 1)
    return content if len(content) <= limit else None


def _imported(source: bytes) -> set[str]:
    """Top-level names of the absolute imports on the lines of one Python file."""
    names: set[str] = set()
    for listed, module in _IMPORT_LINE.findall(source):
        for item in (module,) if module else listed.split(b","):
            words = item.decode("ascii", "ignore").split()
            top = words[0].split(".")[0] if words else ""
            if _NAME.fullmatch(top):
                names.add(top)
    return names


def _declared(pyproject: Path) -> set[str]:
    """Module-like names of the dependencies the app's ``pyproject.toml`` declares."""
    content = _read(pyproject, MAX_SOURCE_BYTES)
    if content is None:
        return set()
    table = tomllib.loads(content.decode())
    requirements = table.get("project", {}).get("dependencies", [])
    names = set()
    for requirement in requirements if isinstance(requirements, list) else []:
        match = _REQUIREMENT_NAME.match(str(requirement))
        if match:
            names.add(match.group(1).lower().replace("-", "_").replace(".", "_"))
    return names


def app_imports(app_dir: Path) -> frozenset[str]:
    """The top-level modules an app imports or declares; a file that cannot be read adds
    nothing."""
    names: set[str] = set()
    try:
        names |= _declared(app_dir / "pyproject.toml")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        logger.debug("%s: dependencies not read: %s", app_dir, exc)
    budget = MAX_TOTAL_BYTES
    for path in _sources(app_dir):
        try:
            content = _read(path, min(MAX_SOURCE_BYTES, budget))
        except OSError as exc:
            logger.debug("%s: imports not read: %s", path, exc)
            continue
        if content is None:
            if budget < MAX_SOURCE_BYTES:
                break  # the budget is spent
            continue
        budget -= len(content)
        names |= _imported(content)
    return frozenset(names)


class SpareImports:
    """The command line of the next spares of ``module``: ``candidates`` (``warm_preload``)
    narrowed to what the last ``remember`` runs' apps use."""

    def __init__(self, module: str, candidates: Sequence[str],
                 remember: int = REMEMBERED_RUNS) -> None:
        self.module = module
        self.candidates = tuple(candidates)
        self._recent: deque[frozenset[str]] = deque(maxlen=max(1, remember))

    def modules(self) -> tuple[str, ...]:
        """What the next spares import, in ``candidates``' order."""
        if not self._recent:
            return self.candidates
        used = frozenset().union(*self._recent)
        return tuple(name for name in self.candidates if name.split(".")[0] in used)

    def argv(self) -> list[str]:
        """The next spares' command line."""
        return warm_argv(self.module, self.modules())

    def after_run_of(self, app_dir: Path) -> list[str]:
        """Remember the app of a run that starts now; the next spares' command line."""
        self._recent.append(app_imports(app_dir))
        return self.argv()
