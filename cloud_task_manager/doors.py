"""Run doors: where each run's server listens, and who may be let in.

A Flower App's ServerApp host listens on an internal address (``run_host``, reachable from every
gateway, never published) on a port chosen when its run starts; the address is kept on the
task's row, so any replica can tell any gateway where a run is. Devices never connect there
themselves: the gateway asks ``open`` first, which checks that the run is running, that the
credential is the device's own for it, and that the device is not revoked.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from agata_contracts.run_door import OpenRunDoorRequest, RunDoor, door_key
from cloud_task_manager.clients import ClientLookup
from cloud_task_manager.records import TaskRecords
from microservice_interconnect import Forbidden, NotFound


@dataclass(frozen=True)
class DataPlane:
    """Where run doors listen and how large a run's message may be."""

    run_host: str = "127.0.0.1"
    max_message_mb: float = 4096.0


def allocate_port(host: str) -> int:
    """A port free on ``host`` now (the run's server binds it a moment later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def address(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(door: str) -> tuple[str, int]:
    """``(host, port)`` of an ``address``."""
    host, _, port = door.rpartition(":")
    return host.strip("[]"), int(port)


class RunDoors:
    """Answers the gateway's ``open`` for a device's socket."""

    def __init__(self, records: TaskRecords, lookup_client: ClientLookup) -> None:
        self.records = records
        self.lookup_client = lookup_client

    def open(self, request: OpenRunDoorRequest) -> RunDoor:
        """The run's door for this device: 403 for a revoked or unknown device or a wrong
        credential, 409 when the run is over, 503 while its server is not listening yet."""
        try:
            info = self.lookup_client(request.client_id)
        except NotFound:
            raise Forbidden(f"device {request.client_id!r} is not known to the cloud") from None
        if info.revoked:
            raise Forbidden(f"device {request.client_id!r} was revoked")
        door, run_credential = self.records.run_door(request.task_id, request.run,
                                                     request.client_id, request.credential)
        return RunDoor(address=door, door_key=door_key(run_credential))
