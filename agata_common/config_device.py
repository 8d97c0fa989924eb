"""A device's settings: its broker and ``[client.params]``.

A device process reads these and the common sections only, never the cloud's (so a device
never validates the gateway's TLS files, for one).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from pydantic import Field, field_validator

from agata_common.config_sections import (
    COMMON_SECTIONS,
    CommonSettings,
    ExecutorSettings,
    RetentionSettings,
    check_token,
)
from microservice_interconnect.settings import BrokerSettings, SettingsSection


class ClientParams(ExecutorSettings, RetentionSettings):
    """Client-side parameters (AGATA's ``client.params``)."""

    request_interval: float = Field(10.0, gt=0)
    client_id: str = ""
    policy: str = "one"
    max_parallel_tasks: int = Field(2, ge=1)
    cloud_url: str = "http://127.0.0.1:9001"
    cloud_ca_file: str = ""
    join_token: str = Field("", max_length=128)
    join_token_file: str = ""
    client_token: str = ""
    client_token_file: str = ""
    cloud_timeout_s: float = Field(8.0, gt=0)
    data_qnt: int = Field(0, ge=0)
    sensors: str = ""
    task_retry_s: float = Field(30.0, gt=0)
    task_retry_max_s: float = Field(600.0, gt=0)
    flower_workers: int = Field(1, ge=0, le=8)
    cloud_heartbeat_s: float = Field(10.0, gt=0, le=3600)
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


DEVICE_SECTIONS: dict[str, type[SettingsSection]] = {
    "client.broker": BrokerSettings,
    "client.params": ClientParams,
    **COMMON_SECTIONS,
}


class DeviceSettings(CommonSettings):
    """What a device process reads: the common sections and the device's own."""

    client_broker: BrokerSettings
    client_params: ClientParams
