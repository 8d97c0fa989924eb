"""The cloud's settings: its broker, the gateway, the user manager and the task manager.

A device never reads these sections (:mod:`agata_common.config_device` holds its own).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from agata_common.config_sections import (
    COMMON_SECTIONS,
    CommonSettings,
    ExecutorSettings,
    RetentionSettings,
    check_token,
)
from agata_common.networks import Network, parse_networks
from microservice_interconnect.settings import BrokerSettings, SettingsSection


class GatewaySettings(SettingsSection):
    """The cloud gateway's HTTP listener and the secrets it checks."""

    host: str = "127.0.0.1"
    port: int = Field(9001, ge=1, le=65535)
    api_token: str = ""
    api_token_file: str = ""
    client_token: str = ""
    client_token_file: str = ""
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


class UserManagerSettings(SettingsSection):
    """The user manager's database (empty URL: SQLite file in the data directory)."""

    database_url: str = ""
    database_url_file: str = ""
    cache_ttl_s: float = Field(2.0, ge=0)
    lost_after_s: float = Field(30.0, gt=0)


class CloudTaskManagerSettings(ExecutorSettings, RetentionSettings):
    """The cloud task manager's database, file limits and task-process policy."""

    database_url: str = ""
    database_url_file: str = ""
    max_file_mb: float = Field(16.0, gt=0)
    max_files_per_task: int = Field(64, ge=1)
    max_task_mb: float = Field(64.0, gt=0)
    device_join_s: float = Field(300.0, gt=0)
    device_rejoin_s: float = Field(30.0, gt=0)
    device_answer_s: float = Field(0.0, ge=0)
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
    download_secret_file: str = ""


CLOUD_SECTIONS: dict[str, type[SettingsSection]] = {
    "server.broker": BrokerSettings,
    "server.gateway": GatewaySettings,
    "user_manager": UserManagerSettings,
    "cloud_task_manager": CloudTaskManagerSettings,
    **COMMON_SECTIONS,
}


class CloudSettings(CommonSettings):
    """What a cloud service reads: the common sections and the cloud's own."""

    server_broker: BrokerSettings
    server_gateway: GatewaySettings
    user_manager: UserManagerSettings
    cloud_task_manager: CloudTaskManagerSettings
