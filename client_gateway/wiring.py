"""Wiring the client gateway process: RPCs, the outbox worker and the task-event relay."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agata_common.config import ConfigError, Settings
from agata_common.runtime import device_runtime
from agata_contracts.queues import outbox_queue, task_events_exchange
from agata_contracts.tasks import TaskEvent
from client_gateway.http import CloudGatewayHttp
from client_gateway.reports import ReportForwarder
from client_gateway.service import ClientGateway
from client_gateway.task_events import POLL_TIMEOUT_S, TaskEventRelay
from microservice_interconnect.broadcast import Broadcaster
from microservice_interconnect.outbox import OutboxWorker
from microservice_interconnect.runtime import ServiceRuntime
from microservice_interconnect.service import ServiceHost

logger = logging.getLogger(__name__)

NAME = "client_gateway"


def cloud_client(settings: Settings) -> CloudGatewayHttp:
    """An HTTP client for the configured cloud gateway; ``ConfigError`` when unusable."""
    params = settings.client_params
    if not params.client_token.strip():
        raise ConfigError(
            "[client.params] client_token is empty: set it (or AGATA_CLIENT_PARAMS_CLIENT_TOKEN) "
            "to the cloud gateway's client token")
    try:
        return CloudGatewayHttp(params.cloud_url, params.client_token.strip(),
                                params.cloud_timeout_s)
    except ValueError as exc:
        raise ConfigError(f"[client.params] cloud_url (env AGATA_CLIENT_PARAMS_CLOUD_URL): "
                          f"{exc}") from None


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


def start(settings: Settings, *,
                         poll_timeout_s: float = POLL_TIMEOUT_S) -> RunningClientGateway:
    """Serve the client RPCs on the client broker, deliver the outbox, relay task events.

    ``poll_timeout_s`` is how long one task-event long poll may wait at the cloud gateway.
    """
    http = cloud_client(settings)
    runtime = device_runtime(NAME, settings)
    host = runtime.serve(ClientGateway(http))
    prefix = settings.client_broker.queue_prefix
    worker = OutboxWorker(runtime.link, outbox_queue(prefix), ReportForwarder(http),
                          probe=http.healthy)
    broadcaster: Broadcaster[TaskEvent] = Broadcaster(runtime.link, task_events_exchange(prefix))
    relay = TaskEventRelay(cloud_client(settings), broadcaster.publish,
                           poll_timeout_s=poll_timeout_s)
    runtime.start()
    relay.start()
    logger.info("client gateway forwarding to %s (client broker %s)", http.base_url,
                runtime.link.address)
    return RunningClientGateway(runtime, host, worker, relay, http)
