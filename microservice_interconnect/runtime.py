"""Wiring one service process: its link, its RPC host, an RPC client and events, on one link."""

from __future__ import annotations

import logging
from collections.abc import Callable

from microservice_interconnect.events import EventRecorder
from microservice_interconnect.link import AmqpLink
from microservice_interconnect.rpc_client import RpcClient
from microservice_interconnect.service import ServiceHost
from microservice_interconnect.settings import BrokerSettings, EventSettings, RpcSettings

logger = logging.getLogger(__name__)


class ServiceRuntime:
    """The AMQP side of one service process: one connection shared by everything in it."""

    def __init__(self, name: str, broker: BrokerSettings, *, rpc: RpcSettings | None = None,
                 events: EventSettings | None = None) -> None:
        self.name = name
        self.rpc = rpc or RpcSettings()
        self.link = AmqpLink(broker, name=name)
        self.client = RpcClient(self.link, timeout_s=self.rpc.timeout_s,
                                queue_prefix=broker.queue_prefix,
                                reconnect_wait_s=self.rpc.reconnect_wait_s)
        self.events = EventRecorder.on_link(self.link, events or EventSettings())
        self.hosts: list[ServiceHost] = []

    def serve(self, service: object) -> ServiceHost:
        """Serve a service object's ``@rpc`` endpoints on this process's link."""
        host = ServiceHost(
            service,
            self.link,
            name=self.name,
            queue_prefix=self.link.broker.queue_prefix,
            threads=self.rpc.handler_threads,
            prefetch=self.rpc.prefetch,
            events=self.events,
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
