"""Reading ``config.ini`` sections into models: environment overrides, secret files, renamed keys.

Every key of a section can be overridden by ``AGATA_<SECTION>_<KEY>`` (upper case, dots to
underscores). A secret key (:data:`SECRET_KEYS`) also has a file form, ``<key>_file``, naming a
0600 file that holds it (see :mod:`agata_common.secret_files`); the file form wins over the key.
A secret given as an environment value still works, with a deprecation line in the log: the
environment is seen by child processes and through ``/proc``. A renamed key
(:data:`RENAMED_KEYS`) keeps working under its old name, with a deprecation line.
"""

from __future__ import annotations

import configparser
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from agata_common.secret_files import SecretFileError, read_secret_file

logger = logging.getLogger("agata_common.config")

CONFIG_ENV = "AGATA_CONFIG"

SECRET_KEYS: dict[str, tuple[str, ...]] = {
    "client.broker": ("password",),
    "server.broker": ("password",),
    "server.gateway": ("api_token", "client_token"),
    "client.params": ("join_token", "client_token"),
    "user_manager": ("database_url",),
    "cloud_task_manager": ("download_secret", "database_url"),
}
"""The keys whose values are secrets, per section: each has a ``<key>_file`` form."""

RENAMED_KEYS: dict[tuple[str, str], str] = {
    ("client.params", "heartbeat_s"): "cloud_heartbeat_s",
}
"""Old ``(section, key)`` names still read, and the key each now is."""

class ConfigError(RuntimeError):
    """The configuration file or an override holds a value that cannot be used."""


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides ``[section] key``."""
    return f"AGATA_{section}_{key}".upper().replace(".", "_")


def secret_env_names() -> set[str]:
    """Every environment variable that would carry a secret's value (not its file's name)."""
    return {env_name(section, key) for section, keys in SECRET_KEYS.items() for key in keys}


def read_parser(path: Path, environ: Mapping[str, str]) -> configparser.ConfigParser:
    """The parsed file at ``path`` (empty when a default file is absent)."""
    parser = configparser.ConfigParser(interpolation=None)
    if path.exists():
        try:
            with path.open(encoding="utf-8") as handle:
                parser.read_file(handle)
        except (configparser.Error, UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
    elif environ.get(CONFIG_ENV):
        raise ConfigError(f"{CONFIG_ENV} names {path}, which does not exist")
    return parser


def _carries_secret(key: str, value: str) -> bool:
    """Whether an environment value of secret key ``key`` is itself a secret (a database URL
    only when it holds a password)."""
    if not value:
        return False
    if key == "database_url":
        try:
            return bool(urlsplit(value).password)
        except ValueError:
            return False
    return True


def _section_values(parser: configparser.ConfigParser, section: str, model: type[BaseModel],
                    environ: Mapping[str, str]) -> dict[str, str]:
    """The raw values of one section: the file's, then the environment's over them, with
    renamed keys moved to their new names."""
    values: dict[str, str] = dict(parser.items(section)) if parser.has_section(section) else {}
    for (renamed_section, old), new in RENAMED_KEYS.items():
        if renamed_section != section:
            continue
        variable = env_name(section, old)
        if old in values or variable in environ:
            logger.warning("config: [%s] %s (%s) is deprecated; use %s (%s)", section, old,
                       variable, new, env_name(section, new))
            old_value = environ.get(variable, values.get(old))
            values.pop(old, None)
            if old_value is not None and new not in values:
                values[new] = old_value
    for key in model.model_fields:
        override = environ.get(env_name(section, key))
        if override is not None:
            values[key] = override
    return values


def _resolve_secrets(section: str, values: dict[str, str], environ: Mapping[str, str]) -> None:
    """Read each secret's file form into its key; warn about secrets set in the environment."""
    for key in SECRET_KEYS.get(section, ()):
        variable = env_name(section, key)
        file_key = f"{key}_file"
        if _carries_secret(key, environ.get(variable, "")):
            logger.warning("config: %s puts a secret in the environment, where child processes "
                       "and /proc can read it (deprecated): write it to a file only you can "
                       "read (chmod 600) and set [%s] %s or %s instead", variable, section,
                       file_key, env_name(section, file_key))
        name = values.get(file_key, "").strip()
        if not name:
            continue
        try:
            values[key] = read_secret_file(name)
        except SecretFileError as exc:
            raise ConfigError(f"[{section}] {file_key} (env {env_name(section, file_key)}): "
                              f"{exc}") from None


STOCK_BROKER_PASSWORD = "guest"  # noqa: S105 (RabbitMQ's local-only default, no secret)


def _warn_secrets_in_a_shared_file(parser: configparser.ConfigParser, section: str,
                                   environ: Mapping[str, str], path: Path) -> None:
    """A secret written in a configuration file that others may read is logged as such."""
    try:
        shared = bool(path.stat().st_mode & 0o077)
    except OSError:
        return
    for key in SECRET_KEYS.get(section, ()) if shared else ():
        value = parser.get(section, key, fallback="").strip()
        if (value and env_name(section, key) not in environ
                and value != STOCK_BROKER_PASSWORD and _carries_secret(key, value)):
            logger.warning("config: [%s] %s is written in %s, which others may read "
                           "(deprecated): put it in a 0600 file named by [%s] %s_file",
                           section, key, path, section, key)


def load_section(parser: configparser.ConfigParser, section: str, model: type[BaseModel],
                 environ: Mapping[str, str], path: Path) -> Any:
    """One validated section of the file at ``path``."""
    values = _section_values(parser, section, model, environ)
    _warn_secrets_in_a_shared_file(parser, section, environ, path)
    _resolve_secrets(section, values, environ)
    for key in sorted(set(values) - set(model.model_fields)):
        logger.warning("config: [%s] %s is not a known key; ignored", section, key)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(_problem(section, err) for err in exc.errors())
        raise ConfigError(f"invalid configuration in {path}: {problems}") from exc


def _problem(section: str, error: Any) -> str:
    """One validation error, naming the key and its environment variable (the section alone
    when the error is about several keys together)."""
    location = error["loc"]
    if not location:
        return f"[{section}]: {error['msg']}"
    return (f"[{section}] {'.'.join(str(p) for p in location)} "
            f"(env {env_name(section, str(location[0]))}): {error['msg']}")
