"""A Flower App's manifest (``pyproject.toml``): its components and its run config.

Reads only TOML (no Flower import), so the cloud can check an app and its run-config overrides
before anything runs. Run-config keys are flattened the way Flower does (nested tables joined
with ``.``); an override takes the type of the default it replaces.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ConfigValue = bool | int | float | str
"""A run-config value, as Flower allows them."""

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_COMPONENT = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}$")
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


class ManifestError(ValueError):
    """The app's ``pyproject.toml`` or a run-config override cannot be used; says why."""


@dataclass(frozen=True)
class AppManifest:
    """What the runtime needs from an app's ``pyproject.toml``."""

    name: str
    version: str
    serverapp: str
    clientapp: str
    run_config: dict[str, ConfigValue]


def _table(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if not isinstance(value, Mapping):
        raise ManifestError(f"pyproject.toml has no [{where}] table")
    return value


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, ConfigValue]:
    flat: dict[str, ConfigValue] = {}
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            raise ManifestError(f"run config key {name!r}: values must be booleans, numbers "
                                f"or strings, not {type(value).__name__}")
    return flat


def read_manifest(content: bytes) -> AppManifest:
    """Parse an app's ``pyproject.toml``; ``ManifestError`` naming what is missing or wrong."""
    try:
        document = tomllib.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"pyproject.toml is not valid TOML: {exc}") from None
    project = document.get("project")
    if not isinstance(project, Mapping):
        project = {}
    app = _table(_table(_table(document, "tool", "tool"), "flwr", "tool.flwr"), "app",
                 "tool.flwr.app")
    components = _table(app, "components", "tool.flwr.app.components")
    found: dict[str, str] = {}
    for role in ("serverapp", "clientapp"):
        reference = components.get(role)
        if not isinstance(reference, str) or not _COMPONENT.match(reference):
            raise ManifestError(f"[tool.flwr.app.components] {role} must name an object as "
                                f"'package.module:attribute', not {reference!r}")
        found[role] = reference
    config = app.get("config", {})
    if not isinstance(config, Mapping):
        raise ManifestError("[tool.flwr.app.config] must be a table")
    return AppManifest(
        name=str(project.get("name", "")),
        version=str(project.get("version", "")),
        serverapp=found["serverapp"],
        clientapp=found["clientapp"],
        run_config=_flatten(config),
    )


def _coerce(key: str, default: ConfigValue, value: ConfigValue) -> ConfigValue:
    expected = type(default).__name__
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
    else:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    raise ManifestError(f"run config key {key!r} takes a {expected} (default {default!r}), "
                        f"not {value!r}")


def fuse_run_config(defaults: Mapping[str, ConfigValue],
                    overrides: Mapping[str, ConfigValue]) -> dict[str, ConfigValue]:
    """The app's run config with ``overrides`` applied, each typed as its default.

    Raises ``ManifestError`` naming every unknown key (with the known ones), or the first value
    that does not fit its default's type.
    """
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise ManifestError(f"unknown run config key(s) {', '.join(unknown)}; "
                            f"the app's [tool.flwr.app.config] has: {known}")
    fused = dict(defaults)
    for key, value in overrides.items():
        fused[key] = _coerce(key, defaults[key], value)
    return fused
