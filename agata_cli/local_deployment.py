"""The whole system on one machine: which processes run, and the environment of each.

Cloud and devices share the local RabbitMQ, kept apart by queue prefixes (as if each had its own
broker) and, with ``locked_broker``, by a virtual host and a broker user of their own each
(see ``broker_roles``); each side has its own data directory. Used by ``agata up`` and by the
experiments, so both deploy the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agata_cli.broker_roles import BrokerRole, stack_name

CLOUD_SERVICES = ("user_manager", "cloud_task_manager", "cloud_gateway")
DEVICE_SERVICES = ("client_gateway", "client_task_manager")


@dataclass(frozen=True)
class Service:
    """One ``python -m`` process of the deployment."""

    name: str
    module: str
    environ: Mapping[str, str]
    device: int | None = None


@dataclass(frozen=True)
class LocalDeployment:
    """Cloud services plus ``devices`` local devices, all talking through one broker."""

    data_dir: Path
    port: int
    api_token: str
    devices: int = 0
    prefix: str = "agata."
    overrides: Mapping[str, str] = field(default_factory=dict)
    device_overrides: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    """The cloud's address: the gateway listens on it and the devices call it."""
    locked_broker: bool = False
    """Each side uses its own broker role (``broker_roles``) instead of the configured
    account."""

    @property
    def url(self) -> str:
        """The cloud gateway's address."""
        return f"http://{self.host}:{self.port}"

    def _common(self) -> dict[str, str]:
        return {
            "AGATA_SERVER_GATEWAY_HOST": self.host,
            "AGATA_SERVER_GATEWAY_PORT": str(self.port),
            "AGATA_SERVER_GATEWAY_API_TOKEN": self.api_token,
            "AGATA_SERVER_BROKER_QUEUE_PREFIX": f"{self.prefix}cloud.",
            "AGATA_CLIENT_PARAMS_CLOUD_URL": self.url,
            **self.overrides,
        }

    def cloud_environ(self) -> dict[str, str]:
        """Overrides for the cloud services."""
        roles = self.cloud_role().environ() if self.locked_broker else {}
        return {**self._common(), "AGATA_STORAGE_DATA_DIR": str(self.data_dir / "cloud"),
                **roles}

    def cloud_role(self) -> BrokerRole:
        """The cloud services' broker role: virtual host ``<stack>``, user ``<stack>-cloud``
        (the stack is the queue prefix without its dot)."""
        stack = stack_name(self.prefix)
        return BrokerRole("server", f"{stack}-cloud", stack, f"{self.prefix}cloud.",
                          self.data_dir / "cloud" / "secrets" / "broker_password")

    def device_role(self, index: int) -> BrokerRole:
        """Local device ``index``'s broker role: virtual host ``<stack>.device-<index>``, user
        ``<stack>-device-<index>``."""
        stack, device = stack_name(self.prefix), self.device_id(index)
        return BrokerRole("client", f"{stack}-{device}", f"{stack}.{device}",
                          f"{self.prefix}{device}.",
                          self.device_data_dir(index) / "secrets" / "broker_password")

    def broker_roles(self) -> list[BrokerRole]:
        """Every role of the deployment: the cloud's, then each device's."""
        return [self.cloud_role(), *(self.device_role(i) for i in range(self.devices))]

    def device_id(self, index: int) -> str:
        """The client id of local device ``index``."""
        return f"device-{index}"

    def device_environ(self, index: int) -> dict[str, str]:
        """Overrides for local device ``index``'s services."""
        return {
            **self._common(),
            "AGATA_STORAGE_DATA_DIR": str(self.device_data_dir(index)),
            "AGATA_CLIENT_BROKER_QUEUE_PREFIX": f"{self.prefix}{self.device_id(index)}.",
            "AGATA_CLIENT_PARAMS_CLIENT_ID": self.device_id(index),
            **(self.device_role(index).environ() if self.locked_broker else {}),
            **self.device_overrides,
        }

    def device_data_dir(self, index: int) -> Path:
        """Local device ``index``'s data directory (its credential is kept there)."""
        return self.data_dir / self.device_id(index)

    def cloud_services(self) -> list[Service]:
        """The cloud's processes, in start order."""
        return [Service(module, module, self.cloud_environ()) for module in CLOUD_SERVICES]

    def device_services(self, index: int, join_token: str | None = None) -> list[Service]:
        """Local device ``index``'s processes (with the join token of its first start)."""
        environ = self.device_environ(index)
        if join_token:
            environ["AGATA_CLIENT_PARAMS_JOIN_TOKEN"] = join_token
        return [Service(f"{self.device_id(index)}.{module}", module, environ, index)
                for module in DEVICE_SERVICES]
