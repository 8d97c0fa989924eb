"""What a task declares about its life beyond running: what it needs (setup) and what it
leaves (results).

A Flower App declares it in its ``pyproject.toml``, a script task in a small ``agata.toml``;
both use the same table::

    [tool.agata]
    requires = ["torch", "numpy"]          # modules that must import on a device
    results = ["samples/*.png", "model.npz"]  # files of the run's results folder to collect
    image = "agata-task:local"             # the container image (executor = docker)
    resume = true                          # the ServerApp resumes from a checkpoint
                                           # (see agata_contracts.checkpoints)

Everything is optional. Without ``results`` every file the run leaves in its results folder is
collected; the runtime's own log (``output-<who>.txt``) always is. Patterns are shell-style,
matched against the path inside the results folder (``*`` also crosses ``/``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

APP_MANIFEST: Final = "pyproject.toml"
"""A Flower App's manifest; a task holding it at its top is a Flower App."""
SCRIPT_MANIFEST: Final = "agata.toml"
"""A script task's manifest: the same ``[tool.agata]`` table as a Flower App's."""
RESULTS_DIR_ENV: Final = "AGATA_RESULTS_DIR"
"""The environment variable naming the folder a task process leaves its results in."""
OUTPUT_LOG_PREFIX: Final = "output-"
"""The runtime's log of a task process is ``output-<who>.txt`` in its results folder."""

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,199}(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$")
_PATTERN = re.compile(r"^[A-Za-z0-9_*?\[\]][A-Za-z0-9._*?\[\]/-]{0,199}$")


class LifecycleError(ValueError):
    """The ``[tool.agata]`` table cannot be used; says what is wrong."""


class Lifecycle(BaseModel):
    """A task's ``[tool.agata]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requires: tuple[str, ...] = Field(default=(), max_length=64)
    results: tuple[str, ...] = Field(default=(), max_length=64)
    image: str | None = None
    resume: bool = False

    @field_validator("requires")
    @classmethod
    def _modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _MODULE.match(name):
                raise ValueError(f"{name!r} is not a module name (like numpy or sklearn.svm)")
        return value

    @field_validator("results")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not _PATTERN.match(pattern) or ".." in pattern:
                raise ValueError(f"{pattern!r} is not a relative file pattern (letters, digits, "
                                 "'._-/' and the wildcards * ? [])")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not _IMAGE.match(value):
            raise ValueError(f"{value!r} is not an image name like agata-task:local")
        return value

    def keeps(self, path: str) -> bool:
        """Whether a file at ``path`` (inside the results folder) is a result to collect."""
        if path.startswith(OUTPUT_LOG_PREFIX) and "/" not in path:
            return True
        return not self.results or any(fnmatchcase(path, pattern) for pattern in self.results)


NO_LIFECYCLE: Final = Lifecycle()
"""A task that declares nothing: no setup checks, every file of its results folder kept."""


def _message(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"[tool.agata] {where}: {first['msg']}" if where else f"[tool.agata]: {first['msg']}"


def read_lifecycle(content: bytes, manifest: str = APP_MANIFEST) -> Lifecycle:
    """The ``[tool.agata]`` table of a manifest's text (``NO_LIFECYCLE`` without one);
    ``LifecycleError`` naming the manifest and what is wrong."""
    try:
        document: Mapping[str, Any] = tomllib.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LifecycleError(f"{manifest} is not valid TOML: {exc}") from None
    tool = document.get("tool", {})
    table = tool.get("agata") if isinstance(tool, Mapping) else None
    if table is None:
        return NO_LIFECYCLE
    if not isinstance(table, Mapping):
        raise LifecycleError(f"{manifest}: [tool.agata] must be a table")
    try:
        return Lifecycle.model_validate(dict(table))
    except ValidationError as exc:
        raise LifecycleError(f"{manifest}: {_message(exc)}") from None


def manifest_of(paths: set[str]) -> str | None:
    """Which file of a task holds its ``[tool.agata]`` table, if any."""
    for name in (APP_MANIFEST, SCRIPT_MANIFEST):
        if name in paths:
            return name
    return None


def output_log_name(who: str) -> str:
    """The runtime's log file of one task process: ``output-server.txt`` or
    ``output-<client>.txt`` (characters a file name may not hold become ``_``)."""
    return f"{OUTPUT_LOG_PREFIX}{re.sub(r'[^A-Za-z0-9._-]', '_', who)}.txt"
