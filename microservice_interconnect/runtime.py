"""Wiring one service process: its link, its RPC host, an RPC client and events, on one link."""

from __future__ import annotations

import logging
from collections.abc import Callable

from agata_common.config import BrokerSettings, Settings
from microservice_interconnect.events import configure_events
from microservice_interconnect.link import AmqpLink
from microservice_interconnect.rpc_client import RpcClient
from microservice_interconnect.service import ServiceHost

logger = logging.getLogger(__name__)


class ServiceRuntime:
    """The AMQP side of one service process: one connection shared by everything in it."""

    def __init__(self, name: str, config: Settings, broker: BrokerSettings) -> None:
        self.name = name
        self.config = config
        self.link = AmqpLink(broker, name=name)
        self.client = RpcClient(self.link, timeout_s=config.rpc.timeout_s,
                                queue_prefix=broker.queue_prefix)
        self.hosts: list[ServiceHost] = []
        configure_events(self.link, config.events)

    def serve(self, service: object) -> ServiceHost:
        """Serve a service object's ``@rpc`` endpoints on this process's link."""
        host = ServiceHost(
            service,
            self.link,
            queue_prefix=self.link.broker.queue_prefix,
            threads=self.config.rpc.handler_threads,
            prefetch=self.config.rpc.prefetch,
        )
        self.hosts.append(host)
        return host

    def start(self) -> ServiceRuntime:
        """Connect (in the background; the link retries until the broker answers)."""
        self.link.start()
        return self

    def stop(self, before_close: Callable[[], None] | None = None) -> None:
        """Finish requests in hand, run ``before_close`` (still connected), then disconnect."""
        for host in self.hosts:
            host.stop()
        if before_close is not None:
            before_close()
        self.link.close()
