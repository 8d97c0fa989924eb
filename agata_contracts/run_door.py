"""How a device reaches a run: through the cloud gateway's own public port.

A device's ClientApp worker opens a websocket on ``run_url(cloud_url, task_id, run)`` (``wss://``
when the cloud is HTTPS), presenting its id and its credential for the run in headers. The
gateway checks them with the cloud task manager (``rpc_exec_open_run_door``: the run is running
here, the credential is the device's own for it, the device is not revoked), then forwards the
socket to the run's door, the websocket the run's ServerApp host listens on at an internal
address, presenting the door key that only the cloud derives. Nothing is forwarded before the
device is known, and the host takes no socket without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from agata_contracts.common import ClientId, TaskId
from agata_contracts.rpc import Audience, RpcSpec

SERVICE = "cloud_task_manager"
RUN_ROUTE = "/api/runs/{task_id}/{run}/flower"
"""The gateway's websocket route of a run."""
CLIENT_HEADER = "X-Agata-Client-Id"
CREDENTIAL_HEADER = "X-Agata-Run-Credential"
NODE_CONFIG_HEADER = "X-Agata-Node-Config"
"""JSON object: the device's own node config (its partition comes from the run)."""
DOOR_KEY_HEADER = "X-Agata-Door-Key"
DOOR_PATH = "/flower"
"""The websocket's path on the run's door (the host's internal port)."""
MAX_NODE_CONFIG_BYTES = 4096
CHUNK_BYTES = 1 << 20
"""The largest binary frame either end of a run's socket sends."""
MAX_FRAME_BYTES = CHUNK_BYTES + (64 << 10)
"""The largest frame any hop of a run's socket accepts (a chunk, or a control message)."""

NodeConfig = dict[str, bool | int | float | str]


class PlainChannelRefused(ValueError):
    """The device's cloud is HTTPS but the run's address is not (or the URL is not one)."""


def door_key(run_credential: str) -> str:
    """The key a run's host asks of every socket (only the cloud and the host know it)."""
    return hmac.new(run_credential.encode(), b"agata run door", hashlib.sha256).hexdigest()


def run_url(cloud_url: str, task_id: str, run: int) -> str:
    """The websocket URL of a run behind ``cloud_url``: ``wss://`` for an HTTPS cloud,
    ``ws://`` for plain HTTP; ``PlainChannelRefused`` for anything else."""
    parts = urlsplit(cloud_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise PlainChannelRefused(f"cloud_url {cloud_url!r} is not an http(s) URL")
    path = RUN_ROUTE.format(task_id=quote(task_id, safe=""), run=int(run))
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}"


def check_channel(cloud_url: str, url: str) -> None:
    """Refuse a run address that would carry an HTTPS cloud's run in clear."""
    cloud = urlsplit(cloud_url).scheme
    if cloud == "https" and urlsplit(url).scheme != "wss":
        raise PlainChannelRefused(
            f"the cloud is HTTPS ({cloud_url}) but the run's address {url} is not wss://: "
            "refusing to send model weights and credentials in clear")


def address(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(door: str) -> tuple[str, int]:
    """``(host, port)`` of an ``address``."""
    host, _, port = door.rpartition(":")
    return host.strip("[]"), int(port)


def node_config_header(node_config: NodeConfig) -> str:
    """The node config header's value."""
    return json.dumps(node_config, separators=(",", ":"))


def parse_node_config(header: str) -> NodeConfig:
    """The node config a device sent in its header; ValueError when it is not one."""
    if len(header) > MAX_NODE_CONFIG_BYTES:
        raise ValueError(f"{NODE_CONFIG_HEADER} is over {MAX_NODE_CONFIG_BYTES} bytes")
    try:
        value = json.loads(header) if header else {}
    except ValueError:
        raise ValueError(f"{NODE_CONFIG_HEADER} is not JSON") from None
    if not isinstance(value, dict) or not all(
            isinstance(v, bool | int | float | str) for v in value.values()):
        raise ValueError(f"{NODE_CONFIG_HEADER} must be a JSON object of scalars")
    return value


class Hello(BaseModel):
    """A device joining the run: the first frame the gateway sends the run's door, once it
    checked the device."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["hello"] = "hello"
    client_id: ClientId
    credential: str = Field(min_length=1, max_length=256)
    node_config: NodeConfig = Field(default_factory=dict, max_length=64)


class OpenRunDoorRequest(BaseModel):
    """A device asks the gateway to be let into a run."""

    model_config = ConfigDict(extra="forbid")

    task_id: TaskId
    run: int = Field(ge=1)
    client_id: ClientId
    credential: str = Field(min_length=1, max_length=256)


class RunDoor(BaseModel):
    """Where the run's host listens (internal) and the key it asks for."""

    address: str
    door_key: str


OPEN_RUN_DOOR: RpcSpec[OpenRunDoorRequest, RunDoor] = RpcSpec(
    "rpc_exec_open_run_door", SERVICE, OpenRunDoorRequest, RunDoor,
    "Where a device's socket for a run goes, once its credential and standing are checked.",
    frozenset({Audience.INTERNAL}))

RPCS = (OPEN_RUN_DOOR,)
