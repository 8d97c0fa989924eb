"""Configuration: ``config.ini`` sections with environment overrides, read per side.

The file is ``AGATA_CONFIG`` when that is set, else the default that ships with the code: the
repository's top-level ``config.ini``, which ``agata_common/config.ini`` links to (a symbolic
link in the source tree, a copy of the file in a built wheel).

A cloud process reads the cloud's sections (:func:`cloud_settings`), a device process the
device's (:func:`device_settings`); each ignores the other side's. :func:`load_settings` reads
both, for the tools that run both sides on one machine (``agata up``, experiments, tests).

Every key of every section can be overridden by ``AGATA_<SECTION>_<KEY>`` (upper case, dots
to underscores), e.g. ``AGATA_SERVER_BROKER_PORT=5672``; secrets have a file form
(``api_token_file``...), see :mod:`agata_common.config_loader`. Values are validated by the
section models, so a bad value is reported with the section, key and environment variable it
came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from agata_common.config_cloud import (
    CLOUD_SECTIONS,
    CloudSettings,
    CloudTaskManagerSettings,
    GatewaySettings,
    UserManagerSettings,
)
from agata_common.config_device import (
    DEVICE_SECTIONS,
    ClientParams,
    DeviceSettings,
    NodeConfigValue,
    parse_node_config,
)
from agata_common.config_loader import (
    CONFIG_ENV,
    ConfigError,
    env_name,
    load_section,
    read_parser,
)
from agata_common.config_sections import (
    MIN_TOKEN_LENGTH,
    CommonSettings,
    ExecutorSettings,
    RetentionSettings,
    StorageSettings,
    check_token,
)
from microservice_interconnect.settings import (
    BrokerSettings,
    EventSettings,
    RpcSettings,
    SettingsSection,
)

__all__ = [
    "CONFIG_ENV", "DEFAULT_CONFIG_PATH", "MIN_TOKEN_LENGTH", "BrokerSettings", "ClientParams",
    "CloudSettings", "CloudTaskManagerSettings", "CommonSettings", "ConfigError",
    "DeviceSettings", "EventSettings", "ExecutorSettings", "GatewaySettings", "NodeConfigValue",
    "RetentionSettings", "RpcSettings", "Settings", "StorageSettings", "UserManagerSettings",
    "check_token", "cloud_settings", "device_settings", "env_name", "load_cloud_settings",
    "load_device_settings", "load_settings", "parse_node_config", "settings",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "config.ini"


class Settings(CloudSettings, DeviceSettings):
    """Every section of both sides, for what runs both on one machine."""


_ALL_SECTIONS: dict[str, type[SettingsSection]] = {**CLOUD_SECTIONS, **DEVICE_SECTIONS}

SettingsT = TypeVar("SettingsT", bound=CommonSettings)


def _load(model: type[SettingsT], sections: Mapping[str, type[SettingsSection]],
          path: Path | None, environ: Mapping[str, str] | None) -> SettingsT:
    environ = os.environ if environ is None else environ
    if path is None:
        path = Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else DEFAULT_CONFIG_PATH
    parser = read_parser(path, environ)
    values: dict[str, Any] = {
        section.replace(".", "_"): load_section(parser, section, section_model, environ, path)
        for section, section_model in sections.items()}
    return model(**values, source=str(path))


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration file, apply environment overrides and validate every section of
    both sides."""
    return _load(Settings, _ALL_SECTIONS, path, environ)


def load_cloud_settings(path: Path | None = None,
                        environ: Mapping[str, str] | None = None) -> CloudSettings:
    """The cloud's sections (and the common ones) of the configuration, validated."""
    return _load(CloudSettings, CLOUD_SECTIONS, path, environ)


def load_device_settings(path: Path | None = None,
                         environ: Mapping[str, str] | None = None) -> DeviceSettings:
    """A device's sections (and the common ones) of the configuration, validated; the cloud's
    sections are not read."""
    return _load(DeviceSettings, DEVICE_SECTIONS, path, environ)


@lru_cache(maxsize=1)
def settings() -> Settings:
    """Both sides' settings, loaded once (for tools that run both)."""
    return load_settings()


@lru_cache(maxsize=1)
def cloud_settings() -> CloudSettings:
    """A cloud process's settings, loaded once."""
    return load_cloud_settings()


@lru_cache(maxsize=1)
def device_settings() -> DeviceSettings:
    """A device process's settings, loaded once."""
    return load_device_settings()
