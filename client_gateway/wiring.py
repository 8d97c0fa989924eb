"""Wiring the client gateway process: RPCs, the outbox worker and the task-event relay."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from agata_common.config import ConfigError, DeviceSettings
from agata_common.device_identity import device_id, load_secret, save_secret
from agata_common.disk import DISK_FULL, disk_space, is_disk_full_error
from agata_common.runtime import device_runtime
from agata_contracts.queues import outbox_queue, task_events_exchange
from agata_contracts.tasks import TaskEvent
from client_gateway.http import CloudGatewayHttp
from client_gateway.reports import ReportForwarder
from client_gateway.service import ClientGateway
from client_gateway.task_events import POLL_TIMEOUT_S, TaskEventRelay
from microservice_interconnect import RpcError, RpcTimeout, ServiceUnavailable
from microservice_interconnect.broadcast import Broadcaster
from microservice_interconnect.outbox_worker import OutboxWorker
from microservice_interconnect.runtime import ServiceRuntime
from microservice_interconnect.service import ServiceHost

logger = logging.getLogger(__name__)

NAME = "client_gateway"


JOIN_WAIT_S = 60.0
"""How long a first start keeps trying to reach the cloud to join, before giving up."""


def _http(settings: DeviceSettings, token: str) -> CloudGatewayHttp:
    params = settings.client_params
    try:
        return CloudGatewayHttp(params.cloud_url, token, params.cloud_timeout_s,
                                ca_file=params.cloud_ca_file)
    except ValueError as exc:
        raise ConfigError(f"[client.params] cloud_url (env AGATA_CLIENT_PARAMS_CLOUD_URL): "
                          f"{exc}") from None


def _join(settings: DeviceSettings, client_id: str) -> str:
    """Spend the configured join token for this device's secret, and keep the secret."""
    params = settings.client_params
    data_dir = settings.storage.resolved_data_dir()
    space = disk_space(data_dir, settings.storage.min_free_mb)
    if space is not None and space.full:  # the one-time token is not spent on a lost secret
        raise ConfigError(f"cannot join while this device's disk is full: {space.describe()}")
    http = _http(settings, "")
    deadline = time.monotonic() + JOIN_WAIT_S
    try:
        while True:
            try:
                secret = http.join(params.join_token.strip(), client_id)
                break
            except (ServiceUnavailable, RpcTimeout) as exc:
                if time.monotonic() > deadline:
                    raise ConfigError(f"cannot join: {exc.message}") from None
                logger.warning("cannot join yet (%s); trying again", exc.message)
                time.sleep(1.0)
            except RpcError as exc:
                raise ConfigError(f"the cloud refused this device's join token "
                                  f"([client.params] join_token_file): {exc.message}") from None
    finally:
        http.close()
    try:
        path = save_secret(data_dir, client_id, secret)
    except OSError as exc:
        state = DISK_FULL if is_disk_full_error(exc) else "an error"
        raise ConfigError(f"joined as device {client_id}, but its credential could not be kept "
                          f"in {data_dir} ({state}: {exc}); free the disk and give the device "
                          "a new join token") from None
    logger.info("joined as device %s; its credential is kept in %s", client_id, path)
    return secret


def device_token(settings: DeviceSettings) -> str:
    """This device's token for the cloud gateway: ``<client_id>:<secret>`` from its kept
    credential, joining first when it has none but a join token; the shared client token of
    earlier versions when it has neither. ``ConfigError`` when there is nothing to send."""
    params = settings.client_params
    data_dir = settings.storage.resolved_data_dir()
    client_id = device_id(params.client_id, data_dir)
    secret = load_secret(data_dir, client_id)
    if secret is None and params.join_token.strip():
        secret = _join(settings, client_id)
    if secret is not None:
        return f"{client_id}:{secret}"
    if params.client_token.strip():
        logger.warning("device %s has no credential of its own: using the shared client token "
                       "(enroll it: agata clients enroll %s)", client_id, client_id)
        return params.client_token.strip()
    raise ConfigError(
        f"device {client_id} has no credential: put a join token from `agata clients enroll` "
        "in a file only you can read (chmod 600) and name it in [client.params] "
        "join_token_file (or AGATA_CLIENT_PARAMS_JOIN_TOKEN_FILE)")


def cloud_client(settings: DeviceSettings, token: str | None = None) -> CloudGatewayHttp:
    """An HTTP client for the configured cloud gateway with this device's token."""
    return _http(settings, token if token is not None else device_token(settings))


@dataclass
class RunningClientGateway:
    """A started client gateway and its parts."""

    runtime: ServiceRuntime
    host: ServiceHost
    worker: OutboxWorker
    relay: TaskEventRelay
    http: CloudGatewayHttp

    def stop(self) -> None:
        """Stop polling and delivering, finish the RPCs in hand, then disconnect."""
        self.relay.stop()
        self.worker.stop()
        self.runtime.stop()
        self.http.close()


def start(settings: DeviceSettings, *,
                         poll_timeout_s: float = POLL_TIMEOUT_S) -> RunningClientGateway:
    """Serve the client RPCs on the client broker, deliver the outbox, relay task events.

    ``poll_timeout_s`` is how long one task-event long poll may wait at the cloud gateway.
    """
    token = device_token(settings)
    http = cloud_client(settings, token)
    runtime = device_runtime(NAME, settings)
    host = runtime.serve(ClientGateway(http))
    prefix = settings.client_broker.queue_prefix
    worker = OutboxWorker(runtime.link, outbox_queue(prefix), ReportForwarder(http),
                          probe=http.healthy)
    broadcaster: Broadcaster[TaskEvent] = Broadcaster(runtime.link, task_events_exchange(prefix))
    client_id = device_id(settings.client_params.client_id,
                          settings.storage.resolved_data_dir())
    relay = TaskEventRelay(cloud_client(settings, token), broadcaster.publish,
                           poll_timeout_s=poll_timeout_s, client_id=client_id)
    runtime.start()
    relay.start()
    logger.info("client gateway forwarding to %s (client broker %s)", http.base_url,
                runtime.link.address)
    return RunningClientGateway(runtime, host, worker, relay, http)
