"""AGATA across hosts on one machine: the cloud on one network namespace host, each device on
its own, each side with its own RabbitMQ node as AGATA deploys them, so nothing can lean on
127.0.0.1."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from experiments.netns import Host, Network
from experiments.rabbit_nodes import BROKER_PORT, RabbitNode, start_brokers, stop_brokers
from experiments.stack import Stack

logger = logging.getLogger(__name__)


@dataclass
class HostsStack:
    """A :class:`Stack` spread over hosts: the cloud on one, each device on its own."""

    stack: Stack
    network: Network
    cloud: Host
    devices: list[Host]
    brokers: dict[str, RabbitNode]
    """Each host's RabbitMQ node, by host name."""


@contextlib.contextmanager
def netns_stack(out_dir: Path, devices: int = 2, *,
                client_params: Mapping[str, str] | None = None,
                cloud_overrides: Mapping[str, str] | None = None,
                broker_timeout_s: float = 60.0) -> Iterator[HostsStack]:
    """The cloud and ``devices`` devices on hosts of their own, each with its own RabbitMQ node;
    the cloud's services are not started yet (``stack.start_cloud``, ``stack.start_clients``).

    The cloud's gateway listens on the cloud's address, which the devices call, and tasks
    created through ``stack.create_task`` run on it. Everything is stopped and removed on exit.
    """
    with contextlib.ExitStack() as cleanup:
        network = Network()
        cleanup.callback(network.close)
        network.start()
        cloud = network.add_host("cloud")
        device_hosts = [network.add_host(f"dev{index}") for index in range(devices)]
        nodes = [RabbitNode(host, BROKER_PORT + index, out_dir / "logs" / f"rabbit-{host.name}")
                 for index, host in enumerate([cloud, *device_hosts])]
        cleanup.callback(stop_brokers, nodes)
        started = time.monotonic()
        start_brokers(nodes, broker_timeout_s)
        logger.info("%d RabbitMQ nodes answered in %.1f s", len(nodes),
                    time.monotonic() - started)
        stack = Stack(out_dir, client_count=devices, client_params=dict(client_params or {}),
                      cloud_overrides={**nodes[0].overrides("server"), **(cloud_overrides or {})},
                      host=cloud.address, cloud_command=cloud.command,
                      client_commands=[host.command for host in device_hosts],
                      client_overrides=[node.overrides("client") for node in nodes[1:]])
        cleanup.callback(stack.stop)
        yield HostsStack(stack, network, cloud, device_hosts,
                         {node.host.name: node for node in nodes})
