"""The whole system on one machine: which processes run, and the environment of each.

Cloud and devices share the local RabbitMQ, kept apart by queue prefixes (as if each had its own
broker) and, with ``locked_broker``, by a virtual host and a broker user of their own each
(see ``broker_roles``); each side has its own data directory. Used by ``agata up`` and by the
experiments, so both deploy the same way.

No secret goes into an environment: each process that needs one gets the path of a 0600 file
in its own data directory (``secrets/``), written here. Only the cloud gateway gets the operator
token; a device's client gateway gets its one-time join token, and nothing else does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agata_cli.broker_roles import BrokerRole, stack_name
from agata_common.config import env_name
from agata_common.config_loader import SECRET_KEYS
from agata_common.secret_files import write_secret_file

CLOUD_SERVICES = ("user_manager", "cloud_task_manager", "cloud_gateway")
DEVICE_SERVICES = ("client_gateway", "client_task_manager")
DEVICE_SECTIONS = ("client.broker", "client.params")
API_TOKEN_FILE = env_name("server.gateway", "api_token_file")
JOIN_TOKEN_FILE = env_name("client.params", "join_token_file")


def secret_files_for(secrets: Mapping[str, str], folder: Path) -> dict[str, str]:
    """Write each secret given as ``AGATA_<SECTION>_<KEY>`` to a 0600 file in ``folder`` and
    return the ``..._FILE`` variables naming those files instead."""
    found = {}
    for section, keys in SECRET_KEYS.items():
        for key in keys:
            value = secrets.get(env_name(section, key))
            if value:
                path = write_secret_file(folder / f"{section}.{key}", value)
                found[env_name(section, f"{key}_file")] = str(path)
    return found


def split_by_side(environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``AGATA_*`` variables split into the cloud's and the devices' (by section)."""
    device_prefixes = tuple(env_name(section, "") for section in DEVICE_SECTIONS)
    cloud = {name: value for name, value in environ.items()
             if not name.startswith(device_prefixes)}
    device = {name: value for name, value in environ.items() if name.startswith(device_prefixes)}
    return cloud, device


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
    secrets: Mapping[str, str] = field(default_factory=dict)
    """Secrets as ``AGATA_<SECTION>_<KEY>`` (e.g. a broker password from the caller's
    environment): each process gets those of its side as 0600 files, never as values."""
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
            "AGATA_SERVER_BROKER_QUEUE_PREFIX": f"{self.prefix}cloud.",
            "AGATA_CLIENT_PARAMS_CLOUD_URL": self.url,
            **self.overrides,
        }

    @property
    def cloud_data_dir(self) -> Path:
        """The cloud services' data directory."""
        return self.data_dir / "cloud"

    def cloud_environ(self) -> dict[str, str]:
        """Overrides for the cloud services (secrets as files, written now)."""
        cloud, _ = split_by_side(self.secrets)
        roles = self.cloud_role().environ() if self.locked_broker else {}
        return {**self._common(), "AGATA_STORAGE_DATA_DIR": str(self.cloud_data_dir),
                **secret_files_for(cloud, self.cloud_data_dir / "secrets"), **roles}

    def api_token_environ(self) -> dict[str, str]:
        """The operator token for the cloud gateway: written to a 0600 file in the cloud's data
        directory, and the variable naming that file."""
        path = write_secret_file(self.cloud_data_dir / "secrets" / "api_token", self.api_token)
        return {API_TOKEN_FILE: str(path)}

    def join_token_environ(self, index: int, join_token: str | None) -> dict[str, str]:
        """Local device ``index``'s one-time join token in a 0600 file of its data directory,
        and the variable naming it (nothing, and no file left, without a token)."""
        path = self.device_data_dir(index) / "secrets" / "join_token"
        if not join_token:
            path.unlink(missing_ok=True)
            return {}
        return {JOIN_TOKEN_FILE: str(write_secret_file(path, join_token))}

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
            **self.device_overrides,
            **secret_files_for(split_by_side(self.secrets)[1],
                               self.device_data_dir(index) / "secrets"),
            **(self.device_role(index).environ() if self.locked_broker else {}),
        }

    def device_data_dir(self, index: int) -> Path:
        """Local device ``index``'s data directory (its credential is kept there)."""
        return self.data_dir / self.device_id(index)

    def cloud_services(self) -> list[Service]:
        """The cloud's processes, in start order (only the gateway knows the operator token)."""
        environ = self.cloud_environ()
        return [Service(module, module,
                        {**environ, **self.api_token_environ()} if module == "cloud_gateway"
                        else environ)
                for module in CLOUD_SERVICES]

    def device_services(self, index: int, join_token: str | None = None) -> list[Service]:
        """Local device ``index``'s processes (its client gateway with the join token of its
        first start)."""
        environ = self.device_environ(index)
        joining = {**environ, **self.join_token_environ(index, join_token)}
        return [Service(f"{self.device_id(index)}.{module}", module,
                        joining if module == "client_gateway" else environ, index)
                for module in DEVICE_SERVICES]
