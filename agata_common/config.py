"""Configuration: ``config.ini`` sections with environment overrides.

The file is ``AGATA_CONFIG`` when that is set, else the default that ships inside this package
(``agata_common/config.ini``, in a source tree and in an installed wheel alike).

Every key of every section can be overridden by ``AGATA_<SECTION>_<KEY>`` (upper case, dots
to underscores), e.g. ``AGATA_SERVER_BROKER_PORT=5672``. ``AGATA_CONFIG`` names another file.
Values are validated by the pydantic section models below, so a bad value is reported with the
section, key and environment variable it came from.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
import shlex
import stat
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agata_common.networks import Network, parse_networks
from agata_common.retention import RetentionPolicy
from microservice_interconnect.settings import (
    BrokerSettings,
    EventSettings,
    RpcSettings,
    SettingsSection,
)

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "config.ini"
CONFIG_ENV = "AGATA_CONFIG"


class ConfigError(RuntimeError):
    """The configuration file or an override holds a value that cannot be used."""


MIN_TOKEN_LENGTH = 16


def check_token(value: str) -> str:
    """A token is empty (its routes refuse everyone) or at least ``MIN_TOKEN_LENGTH`` long."""
    if value and len(value) < MIN_TOKEN_LENGTH:
        raise ValueError(f"a token must be at least {MIN_TOKEN_LENGTH} characters "
                         "(e.g. python -c 'import secrets; print(secrets.token_hex(16))')")
    return value


class GatewaySettings(SettingsSection):
    """The cloud gateway's HTTP listener and the secrets it checks."""

    host: str = "127.0.0.1"
    port: int = Field(9001, ge=1, le=65535)
    api_token: str = ""
    client_token: str = ""
    shared_client_token: bool = False
    join_rate_per_minute: int = Field(30, ge=1, le=100_000)
    trusted_proxies: str = ""
    cors_origins: str = ""
    max_body_mb: float = Field(64.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0, le=3600)
    access_log: bool = False
    tls_cert: str = ""
    tls_key: str = ""

    @field_validator("api_token", "client_token")
    @classmethod
    def _strong_token(cls, value: str) -> str:
        return check_token(value)

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewaySettings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: set both (HTTPS) or neither")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path and not Path(path).expanduser().is_file():
                raise ValueError(f"{name} {path!r} is not a readable file")
        return self

    @model_validator(mode="after")
    def _distinct_tokens(self) -> GatewaySettings:
        if self.api_token and self.api_token == self.client_token:
            raise ValueError("api_token and client_token must differ: a device's token must "
                             "not open the operator routes")
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        """The reverse proxies whose ``X-Forwarded-For`` names the client."""
        return parse_networks(self.trusted_proxies)

    def cors_origin_list(self) -> list[str]:
        """Configured CORS origins, comma separated in the file."""
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


class ExecutorSettings(SettingsSection):
    """Where a manager runs task processes: ``subprocess`` (child processes, the default) or
    ``docker`` (one container each, from ``container_image`` unless the task names one)."""

    executor: Literal["subprocess", "docker"] = "subprocess"
    container_image: str = Field("agata-task:local", min_length=1, max_length=255)
    container_cpus: float = Field(1.0, gt=0, le=256)
    container_memory_mb: int = Field(2048, ge=64, le=1024 * 1024)


class RetentionSettings(SettingsSection):
    """How many runs' results a task keeps, and how many bytes of them (oldest pruned first)."""

    keep_runs: int = Field(20, ge=1, le=100_000)
    keep_mb_per_task: float = Field(1024.0, gt=0)

    def retention(self) -> RetentionPolicy:
        """The policy these keys make."""
        return RetentionPolicy(self.keep_runs, int(self.keep_mb_per_task * 1024 * 1024))


class ClientParams(ExecutorSettings, RetentionSettings):
    """Client-side parameters (AGATA's ``client.params``)."""

    request_interval: float = Field(10.0, gt=0)
    client_id: str = ""
    policy: str = "one"
    max_parallel_tasks: int = Field(2, ge=1)
    cloud_url: str = "http://127.0.0.1:9001"
    cloud_ca_file: str = ""
    join_token: str = Field("", max_length=128)
    client_token: str = ""
    cloud_timeout_s: float = Field(8.0, gt=0)
    data_qnt: int = Field(0, ge=0)
    sensors: str = ""
    task_retry_s: float = Field(30.0, gt=0)
    task_retry_max_s: float = Field(600.0, gt=0)
    flower_workers: int = Field(1, ge=0, le=8)
    heartbeat_s: float = Field(10.0, gt=0, le=3600)
    node_config: str = ""

    @field_validator("client_token")
    @classmethod
    def _strong_token(cls, value: str) -> str:
        return check_token(value)

    @field_validator("cloud_ca_file")
    @classmethod
    def _ca_file_exists(cls, value: str) -> str:
        if value and not Path(value).expanduser().is_file():
            raise ValueError(f"{value!r} is not a readable file (a PEM bundle of CA "
                             "certificates)")
        return value

    @field_validator("node_config")
    @classmethod
    def _node_config_parses(cls, value: str) -> str:
        parse_node_config(value)
        return value

    def node_config_values(self) -> dict[str, NodeConfigValue]:
        """This device's own ``node_config`` keys for the Flower Apps it runs."""
        return parse_node_config(self.node_config)


NodeConfigValue = bool | int | float | str
_NODE_CONFIG_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def parse_node_config(text: str) -> dict[str, NodeConfigValue]:
    """``key=value`` pairs separated by spaces, as Flower's ``--node-config`` takes them; a value
    is read as TOML (``3``, ``0.5``, ``true``, ``"a b"``) and otherwise kept as text."""
    values: dict[str, NodeConfigValue] = {}
    try:
        pairs = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"node_config: {exc}") from None
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not _NODE_CONFIG_KEY.match(key):
            raise ValueError(f"node_config: {pair!r} is not key=value with a key of letters, "
                             "digits, '-' and '_'")
        try:
            parsed = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = raw
        if not isinstance(parsed, bool | int | float | str):
            raise ValueError(f"node_config: {key} must be a number, true/false or text")
        values[key] = parsed
    return values


class UserManagerSettings(SettingsSection):
    """The user manager's database (empty URL: SQLite file in the data directory)."""

    database_url: str = ""
    cache_ttl_s: float = Field(2.0, ge=0)
    lost_after_s: float = Field(30.0, gt=0)


class CloudTaskManagerSettings(ExecutorSettings, RetentionSettings):
    """The cloud task manager's database, file limits and task-process policy."""

    database_url: str = ""
    max_file_mb: float = Field(16.0, gt=0)
    max_files_per_task: int = Field(64, ge=1)
    max_task_mb: float = Field(64.0, gt=0)
    device_join_s: float = Field(300.0, gt=0)
    device_rejoin_s: float = Field(30.0, gt=0)
    default_deadline_s: int = Field(86400, ge=1, le=30 * 24 * 3600)
    max_checkpoint_mb: float = Field(64.0, gt=0)
    replica_id: str = Field("", pattern=r"^[a-z0-9][a-z0-9-]{0,39}$|^$")
    replica_lease_s: float = Field(6.0, ge=1.0, le=600.0)
    run_host: str = Field("127.0.0.1", min_length=1, max_length=253,
                          pattern=r"^[A-Za-z0-9.:-]+$")
    max_message_mb: float = Field(4096.0, gt=0, le=1 << 20)
    warm_hosts: int = Field(2, ge=0, le=8)
    stop_grace_s: float = Field(5.0, ge=0)
    download_secret: str = ""


class StorageSettings(SettingsSection):
    """Where services keep their files (empty: ``$XDG_DATA_HOME/agata``)."""

    data_dir: str = ""

    def resolved_data_dir(self) -> Path:
        """The data directory, created if missing."""
        if self.data_dir:
            path = Path(self.data_dir).expanduser()
        else:
            base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
            path = Path(base) / "agata"
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()


_SECTIONS: dict[str, type[SettingsSection]] = {
    "client.broker": BrokerSettings,
    "server.broker": BrokerSettings,
    "server.gateway": GatewaySettings,
    "rpc": RpcSettings,
    "events": EventSettings,
    "client.params": ClientParams,
    "user_manager": UserManagerSettings,
    "cloud_task_manager": CloudTaskManagerSettings,
    "storage": StorageSettings,
}


class Settings(BaseModel):
    """Every section of the configuration, validated."""

    model_config = ConfigDict(frozen=True)

    client_broker: BrokerSettings
    server_broker: BrokerSettings
    server_gateway: GatewaySettings
    rpc: RpcSettings
    events: EventSettings
    client_params: ClientParams
    user_manager: UserManagerSettings
    cloud_task_manager: CloudTaskManagerSettings
    storage: StorageSettings
    source: str = ""


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides ``[section] key``."""
    return f"AGATA_{section}_{key}".upper().replace(".", "_")


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration file, apply environment overrides and validate every section."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else DEFAULT_CONFIG_PATH
    parser = configparser.ConfigParser(interpolation=None)
    if path.exists():
        try:
            with path.open(encoding="utf-8") as handle:
                parser.read_file(handle)
        except (configparser.Error, UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
    elif environ.get(CONFIG_ENV):
        raise ConfigError(f"{CONFIG_ENV} names {path}, which does not exist")

    sections: dict[str, Any] = {}
    for section, model in _SECTIONS.items():
        values: dict[str, str] = dict(parser.items(section)) if parser.has_section(section) else {}
        for key in model.model_fields:
            override = environ.get(env_name(section, key))
            if override is not None:
                values[key] = override
        if model is BrokerSettings:
            _read_password_file(section, values)
        unknown = set(values) - set(model.model_fields)
        for key in sorted(unknown):
            logger.warning("config: [%s] %s is not a known key; ignored", section, key)
        try:
            sections[section.replace(".", "_")] = model.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(_problem(section, err) for err in exc.errors())
            raise ConfigError(f"invalid configuration in {path}: {problems}") from exc
    return Settings(**sections, source=str(path))


def _read_password_file(section: str, values: dict[str, str]) -> None:
    """A broker's ``password_file`` (a regular file only its owner may read) replaces
    ``password`` with its content."""
    name = values.get("password_file", "")
    if not name:
        return
    path = Path(name).expanduser()
    where = f"[{section}] password_file (env {env_name(section, 'password_file')})"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
            raise ConfigError(f"{where}: {path} must be a regular file only its owner may read "
                              f"(chmod 600 {path})")
        password = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None
    if not password:
        raise ConfigError(f"{where}: {path} is empty")
    values["password"] = password


def _problem(section: str, error: Any) -> str:
    """One validation error, naming the key and its environment variable (the section alone
    when the error is about several keys together)."""
    location = error["loc"]
    if not location:
        return f"[{section}]: {error['msg']}"
    return (f"[{section}] {'.'.join(str(p) for p in location)} "
            f"(env {env_name(section, str(location[0]))}): {error['msg']}")


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, loaded once."""
    return load_settings()
