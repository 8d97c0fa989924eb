"""``GET /api/runs/{task_id}/{run}/flower``: a device's socket to its run, on the gateway's own
port (and so under its TLS, or the reverse proxy's in front of it).

The device is checked before anything is upgraded: its id, its credential for the run and its
node config travel in headers, and the cloud task manager (``rpc_exec_open_run_door``) says
whether the run is running, the credential is this device's own, and the device is not revoked;
it answers with the run's door (the ServerApp host's internal address, on whichever replica
owns the run) and the door's key. Only then is the device's socket accepted and joined, frame
for frame, to one opened on the door. Frames are relayed as they are (never larger than a
chunk), each send waiting for its socket to drain, so memory stays bounded whatever the model.
A device revoked while in a run is dropped from it at once (``RunSockets.drop``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from agata_contracts.run_door import (
    CLIENT_HEADER,
    CREDENTIAL_HEADER,
    DOOR_KEY_HEADER,
    DOOR_PATH,
    MAX_FRAME_BYTES,
    NODE_CONFIG_HEADER,
    Hello,
    OpenRunDoorRequest,
    RunDoor,
    parse_node_config,
)
from microservice_interconnect import BadRequest, ServiceUnavailable

logger = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
DOOR_CONNECT_TIMEOUT_S = 10.0

Relay = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


class RunSockets:
    """The run sockets this gateway relays, by device, so a revoked device is dropped."""

    def __init__(self) -> None:
        self._by_client: dict[str, set[web.WebSocketResponse]] = {}
        self.session: aiohttp.ClientSession | None = None
        self._dropping: set[asyncio.Task[None]] = set()

    def add(self, client_id: str, socket: web.WebSocketResponse) -> None:
        """Track a device's relayed socket."""
        self._by_client.setdefault(client_id, set()).add(socket)

    def remove(self, client_id: str, socket: web.WebSocketResponse) -> None:
        """Forget a relayed socket that ended."""
        sockets = self._by_client.get(client_id)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self._by_client[client_id]

    def count(self, client_id: str | None = None) -> int:
        """How many sockets are relayed (for one device, or in all)."""
        if client_id is not None:
            return len(self._by_client.get(client_id, ()))
        return sum(len(s) for s in self._by_client.values())

    def drop_soon(self, client_id: str, reason: str) -> None:
        """``drop`` from a callback on the gateway's loop."""
        if client_id in self._by_client:
            task = asyncio.get_running_loop().create_task(self.drop(client_id, reason))
            self._dropping.add(task)
            task.add_done_callback(self._dropping.discard)

    async def drop(self, client_id: str, reason: str) -> None:
        """Close every run socket of a device (it was revoked)."""
        sockets = list(self._by_client.get(client_id, ()))
        for socket in sockets:
            await socket.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=reason.encode())
        if sockets:
            logger.warning("dropped %d run socket(s) of device %s: %s", len(sockets), client_id,
                           reason)

    async def close(self) -> None:
        """Close every relayed socket and the door connections' session (gateway stops)."""
        for client_id in list(self._by_client):
            for socket in list(self._by_client.get(client_id, ())):
                await socket.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"gateway stops")
        if self.session is not None:
            await self.session.close()


def door_request(request: web.Request) -> tuple[OpenRunDoorRequest, dict[str, Any]]:
    """What the device asks for, from the route and its headers (400 when malformed)."""
    try:
        run = int(request.match_info["run"])
        node_config = parse_node_config(request.headers.get(NODE_CONFIG_HEADER, ""))
        asked = OpenRunDoorRequest(task_id=request.match_info["task_id"], run=run,
                                   client_id=request.headers.get(CLIENT_HEADER, ""),
                                   credential=request.headers.get(CREDENTIAL_HEADER, ""))
    except ValueError as exc:
        raise BadRequest(f"not a run socket request: {_first_error(exc)} (send "
                         f"{CLIENT_HEADER}, {CREDENTIAL_HEADER} and optionally "
                         f"{NODE_CONFIG_HEADER})") from None
    return asked, node_config


async def open_door(session: aiohttp.ClientSession, door: RunDoor, hello: Hello
                    ) -> aiohttp.ClientWebSocketResponse:
    """The socket to the run's door, the device's hello already sent on it."""
    try:
        upstream = await asyncio.wait_for(session.ws_connect(
            f"http://{door.address}{DOOR_PATH}", headers={DOOR_KEY_HEADER: door.door_key},
            max_msg_size=MAX_FRAME_BYTES, compress=0, autoping=True),
            DOOR_CONNECT_TIMEOUT_S)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        logger.warning("the run door %s cannot be reached: %s", door.address, exc)
        raise ServiceUnavailable("the run's server is not reachable yet; try again") from None
    await upstream.send_str(hello.model_dump_json())
    return upstream


async def relay(source: Relay, sink: Relay) -> None:
    """Copy frames from ``source`` to ``sink`` until either side closes."""
    async for frame in source:
        if frame.type == WSMsgType.BINARY:
            await sink.send_bytes(frame.data)
        elif frame.type == WSMsgType.TEXT:
            await sink.send_str(frame.data)
        else:
            break


async def run_socket(request: web.Request, sockets: RunSockets,
                     open_run_door: Any) -> web.StreamResponse:
    """The route's handler: check, open the door, accept, relay both ways."""
    asked, node_config = door_request(request)
    door: RunDoor = await open_run_door(asked)
    if sockets.session is None:
        sockets.session = aiohttp.ClientSession()
    upstream = await open_door(sockets.session, door, Hello(
        client_id=asked.client_id, credential=asked.credential, node_config=node_config))
    downstream = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_FRAME_BYTES,
                                       compress=False)
    try:
        await downstream.prepare(request)
    except BaseException:
        await upstream.close()
        raise
    sockets.add(asked.client_id, downstream)
    logger.info("device %s joined run %d of task %s through this gateway", asked.client_id,
                asked.run, asked.task_id)
    try:
        legs = [asyncio.create_task(relay(upstream, downstream)),
                asyncio.create_task(relay(downstream, upstream))]
        _, pending = await asyncio.wait(legs, return_when=asyncio.FIRST_COMPLETED)
        for leg in pending:
            leg.cancel()
    finally:
        sockets.remove(asked.client_id, downstream)
        await upstream.close()
        await downstream.close()
    return downstream


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc)
