"""What the next warm spares import: the modules of ``warm_preload`` that the last runs' apps use.

A spare that imported torch holds about 200 MB and its import's CPU for a run that may never
touch it. So each run's app is read when the run takes its process (its Python files' imports,
parsed with :mod:`ast`, never run, and the dependencies its ``pyproject.toml`` declares), and
the spares started afterwards import what the last few apps used. Only modules the operator
named in ``warm_preload`` are ever chosen: an app can leave one out, never add one. Before any
run, spares import all of them.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import tomllib
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from flower_runtime import warm_argv

logger = logging.getLogger(__name__)

MAX_SOURCE_FILES = 500
MAX_SOURCE_BYTES = 1 << 20
MAX_TOTAL_BYTES = 8 << 20
"""Bounds on what is read of an app (its files come from whoever uploaded it): a file over
``MAX_SOURCE_BYTES`` is skipped, and reading stops past the count or the total."""

REMEMBERED_RUNS = 5
"""How many of the last runs' apps the spares' imports follow."""

_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _sources(app_dir: Path) -> Iterator[Path]:
    """The app's own Python files (no hidden folders, no links), within the bounds."""
    count = 0
    for folder, subfolders, files in os.walk(app_dir, followlinks=False):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if not name.endswith(".py") or path.is_symlink():
                continue
            count += 1
            if count > MAX_SOURCE_FILES:
                return
            yield path


def _imported(source: bytes) -> set[str]:
    """Top-level names of the absolute imports anywhere in one Python file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _declared(pyproject: Path) -> set[str]:
    """Module-like names of the dependencies the app's ``pyproject.toml`` declares."""
    if not pyproject.is_file() or pyproject.stat().st_size > MAX_SOURCE_BYTES:
        return set()
    requirements = tomllib.loads(pyproject.read_text()).get("project", {}).get("dependencies", [])
    names = set()
    for requirement in requirements if isinstance(requirements, list) else []:
        match = _REQUIREMENT_NAME.match(str(requirement))
        if match:
            names.add(match.group(1).lower().replace("-", "_").replace(".", "_"))
    return names


def app_imports(app_dir: Path) -> frozenset[str]:
    """The top-level modules an app imports or declares; a file that cannot be read or parsed
    adds nothing."""
    names: set[str] = set()
    try:
        names |= _declared(app_dir / "pyproject.toml")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        logger.debug("%s: dependencies not read: %s", app_dir, exc)
    budget = MAX_TOTAL_BYTES
    for path in _sources(app_dir):
        try:
            size = path.stat().st_size
            if size > MAX_SOURCE_BYTES:
                continue
            budget -= size
            if budget < 0:
                break
            names |= _imported(path.read_bytes())
        except (OSError, SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            logger.debug("%s: imports not read: %s", path, exc)
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
