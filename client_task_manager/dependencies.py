"""Whether this device can import what a Flower App's ``[project] dependencies`` name.

Each requirement is parsed with ``packaging`` (never evaluated); one whose environment marker
does not hold here is skipped. A distribution's import names come from its installed metadata,
or, when it is not installed, from its name as Python spells it (``scikit-learn`` is imported
as ``sklearn``: a few such names are known). Versions are not compared: only importability.
"""

from __future__ import annotations

import importlib.util
import tomllib
from collections.abc import Mapping
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from agata_contracts.lifecycle import APP_MANIFEST
from client_task_manager.lifecycle import SetupFailed

KNOWN_IMPORT_NAMES = {
    "scikit-learn": "sklearn", "pillow": "PIL", "opencv-python": "cv2",
    "opencv-python-headless": "cv2", "pyyaml": "yaml", "beautifulsoup4": "bs4",
    "python-dateutil": "dateutil", "attrs": "attr",
}
"""Distributions whose import name is not their own, for when they are not installed."""


@cache
def _installed_import_names() -> dict[str, tuple[str, ...]]:
    """Installed distributions (canonical names) and the top-level modules they provide."""
    provided: dict[str, list[str]] = {}
    for module, distributions in packages_distributions().items():
        for distribution in distributions:
            provided.setdefault(canonicalize_name(distribution), []).append(module)
    return {name: tuple(sorted(modules)) for name, modules in provided.items()}


def import_names(distribution: str) -> tuple[str, ...]:
    """The top-level modules ``distribution`` provides, or the one it would if installed."""
    canonical = canonicalize_name(distribution)
    installed = _installed_import_names().get(canonical)
    if installed:
        return installed
    return (KNOWN_IMPORT_NAMES.get(canonical, canonical.replace("-", "_")),)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def requirements(manifest: Mapping[str, object]) -> list[Requirement]:
    """The ``[project] dependencies`` of a parsed ``pyproject.toml`` that apply here;
    ``SetupFailed`` naming the entry that is not a requirement."""
    project = manifest.get("project")
    listed = project.get("dependencies", []) if isinstance(project, Mapping) else []
    if not isinstance(listed, list):
        raise SetupFailed("setup: [project] dependencies of pyproject.toml is not a list")
    found = []
    for entry in listed:
        if not isinstance(entry, str):
            raise SetupFailed(f"setup: [project] dependencies: {entry!r} is not a string")
        try:
            requirement = Requirement(entry)
        except InvalidRequirement as exc:
            raise SetupFailed(f"setup: [project] dependencies: {entry!r} is not a valid "
                              f"requirement: {exc}") from None
        if requirement.marker is None or requirement.marker.evaluate():
            found.append(requirement)
    return found


def check_app_dependencies(folder: Path, image: str | None) -> None:
    """``SetupFailed`` naming every distribution of the app's ``[project] dependencies`` that
    this device cannot import. Nothing to check for a script task (no ``pyproject.toml``), nor
    for one run in a container image (the image holds its own Python)."""
    manifest = folder / APP_MANIFEST
    if image is not None or not manifest.is_file():
        return
    try:
        document = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SetupFailed(f"setup: pyproject.toml is not valid TOML: {exc}") from None
    missing = []
    for requirement in requirements(document):
        names = import_names(requirement.name)
        if not any(_importable(name) for name in names):
            missing.append(f"{requirement.name} (import {' or '.join(names)})")
    if missing:
        raise SetupFailed(f"setup: {', '.join(missing)} cannot be imported on this device "
                          "([project] dependencies)")
