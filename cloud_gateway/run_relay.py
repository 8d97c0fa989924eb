"""``GET /api/runs/{task_id}/{run}/flower``: a device's socket to its run, on the gateway's own
port (and so under its TLS, or the reverse proxy's in front of it).

The device is checked before anything is upgraded: its id, its credential for the run and its
node config travel in headers, and the cloud task manager (``rpc_exec_open_run_door``) says
whether the run is running, the credential is this device's own, and the device is not revoked;
it answers with the run's door (the ServerApp host's internal address, on whichever replica
owns the run) and the door's key. Only then is a websocket opened on the door (the gateway's
own handshake, presenting the key, then the device's hello) and the device's socket accepted.
From there the two connections are spliced: bytes go from one to the other as they come, never
parsed, re-framed or re-masked (the device masks its frames as the door expects of a client;
the door's frames go out unmasked, as the device expects of a server; pings and the closing
handshake pass end to end). Each side stops reading while the other's send buffer is full, so
the gateway holds a few hundred KiB per socket whatever the model's size. A device revoked while
in a run is dropped from it at once (``RunSockets.drop``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from typing import Any

from aiohttp import web

from agata_contracts.run_door import (
    CLIENT_HEADER,
    CREDENTIAL_HEADER,
    DOOR_KEY_HEADER,
    DOOR_PATH,
    NODE_CONFIG_HEADER,
    Hello,
    OpenRunDoorRequest,
    RunDoor,
    parse_node_config,
    split_address,
)
from microservice_interconnect import BadRequest, ServiceUnavailable

logger = logging.getLogger(__name__)

DOOR_CONNECT_TIMEOUT_S = 10.0
HIGH_WATER_BYTES = 1 << 20
"""A side stops reading while the other side's send buffer holds more than this."""
DRAIN_POLL_S = 0.002
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HANDSHAKE_BYTES = 16 << 10


def masked_text_frame(text: str) -> bytes:
    """One masked websocket text frame (what a client sends), for the device's hello."""
    payload = text.encode()
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes((0x81, 0x80 | length))
    elif length < 1 << 16:
        header = bytes((0x81, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + length.to_bytes(8, "big")
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + masked


def accept_of(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server answers ``key`` with (RFC 6455)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 (the RFC's)


class DoorLeg(asyncio.Protocol):
    """The gateway's connection to a run's door: its handshake, then raw bytes both ways with
    the device's connection (``splice``)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.device: asyncio.BaseTransport | None = None
        self.upgraded: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handshake = bytearray()
        self._early = bytearray()
        self._draining: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.upgraded.done():
            self._handshake += data
            end = self._handshake.find(b"\r\n\r\n")
            if end >= 0:
                self._early += self._handshake[end + 4:]
                self.upgraded.set_result(bytes(self._handshake[:end]))
            elif len(self._handshake) > MAX_HANDSHAKE_BYTES:
                self.upgraded.set_exception(ConnectionError("the door's answer is too long"))
            return
        if self.device is None:
            self._early += data
            return
        self._to_device(data)

    def _to_device(self, data: bytes | bytearray) -> None:
        assert self.device is not None and self.transport is not None
        device = self.device
        assert isinstance(device, asyncio.WriteTransport)
        device.write(data)
        if device.get_write_buffer_size() > HIGH_WATER_BYTES and self._draining is None:
            self.transport.pause_reading()
            self._draining = asyncio.get_running_loop().create_task(self._drain_device())

    async def _drain_device(self) -> None:
        device = self.device
        assert isinstance(device, asyncio.WriteTransport) and self.transport is not None
        while device.get_write_buffer_size() > HIGH_WATER_BYTES // 4 and not device.is_closing():
            await asyncio.sleep(DRAIN_POLL_S)
        self._draining = None
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def splice(self, device: asyncio.BaseTransport) -> None:
        """Join the device's connection: what the door sent meanwhile goes out first."""
        self.device = device
        if self._early:
            early, self._early = self._early, bytearray()
            self._to_device(early)

    def pause_writing(self) -> None:
        if isinstance(self.device, asyncio.ReadTransport):
            self.device.pause_reading()

    def resume_writing(self) -> None:
        if isinstance(self.device, asyncio.ReadTransport) and not self.device.is_closing():
            self.device.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("the door closed during its handshake"))
        self.close()

    def close(self) -> None:
        """End both connections."""
        if self._draining is not None:
            self._draining.cancel()
        if self.transport is not None:
            self.transport.close()
        if self.device is not None:
            self.device.close()
        if not self.closed.done():
            self.closed.set_result(None)


class _DeviceBytes:
    """Takes the device's bytes in place of aiohttp's frame reader and sends them on."""

    def __init__(self, leg: DoorLeg) -> None:
        self.leg = leg

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        transport = self.leg.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
        return False, b""

    def feed_eof(self) -> None:
        self.leg.close()


class SplicedResponse(web.WebSocketResponse):
    """The device's side of the upgrade: aiohttp checks the handshake and answers it, then the
    connection's bytes go to the door as they are, instead of to a frame reader."""

    def __init__(self, leg: DoorLeg) -> None:
        super().__init__(compress=False, heartbeat=None, autoping=False)
        self.leg = leg

    def _post_start(self, request: web.BaseRequest, protocol: str | None,
                    writer: Any) -> None:
        self._ws_protocol = protocol
        self._writer = writer
        request.protocol.set_parser(_DeviceBytes(self.leg))  # type: ignore[arg-type]
        request.protocol.keep_alive(False)

class RunSockets:
    """The run sockets this gateway relays, by device, so a revoked device is dropped."""

    def __init__(self) -> None:
        self._by_client: dict[str, set[DoorLeg]] = {}

    def add(self, client_id: str, socket: DoorLeg) -> None:
        """Track a device's relayed socket."""
        self._by_client.setdefault(client_id, set()).add(socket)

    def remove(self, client_id: str, socket: DoorLeg) -> None:
        """Forget a relayed socket that ended."""
        sockets = self._by_client.get(client_id)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self._by_client[client_id]

    def drop(self, client_id: str, reason: str) -> None:
        """Close every run socket of a device (it was revoked)."""
        sockets = list(self._by_client.get(client_id, ()))
        for socket in sockets:
            socket.close()
        if sockets:
            logger.warning("dropped %d run socket(s) of device %s: %s", len(sockets), client_id,
                           reason)

    def close(self) -> None:
        """Close every relayed socket (the gateway stops)."""
        for client_id in list(self._by_client):
            for socket in list(self._by_client.get(client_id, ())):
                socket.close()


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


async def open_door(door: RunDoor, hello: Hello) -> DoorLeg:
    """A websocket opened on the run's door with its key, the device's hello sent on it."""
    host, port = split_address(door.address)
    key = base64.b64encode(os.urandom(16))
    loop = asyncio.get_running_loop()
    try:
        _, leg = await asyncio.wait_for(loop.create_connection(DoorLeg, host, port),
                                        DOOR_CONNECT_TIMEOUT_S)
        assert leg.transport is not None
        leg.transport.write(
            f"GET {DOOR_PATH} HTTP/1.1\r\nHost: {door.address}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\n{DOOR_KEY_HEADER}: {door.door_key}\r\n\r\n"
            .encode())
        answer = await asyncio.wait_for(leg.upgraded, DOOR_CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ConnectionError) as exc:
        logger.warning("the run door %s cannot be reached: %s", door.address, exc)
        raise ServiceUnavailable("the run's server is not reachable yet; try again") from None
    status_line, *header_lines = answer.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in
               (line.partition(":") for line in header_lines)}
    if status_line.split(" ")[1:2] != ["101"] or \
            headers.get("sec-websocket-accept", "").encode() != accept_of(key):
        leg.close()
        logger.warning("the run door %s refused the gateway: %s", door.address, status_line)
        raise ServiceUnavailable("the run's server did not take the socket; try again")
    assert leg.transport is not None
    leg.transport.write(masked_text_frame(hello.model_dump_json()))
    return leg


async def run_socket(request: web.Request, sockets: RunSockets,
                     open_run_door: Any) -> web.StreamResponse:
    """The route's handler: check, open the door, accept, splice until either side ends."""
    asked, node_config = door_request(request)
    door: RunDoor = await open_run_door(asked)
    leg = await open_door(door, Hello(
        client_id=asked.client_id, credential=asked.credential, node_config=node_config))
    response = SplicedResponse(leg)
    try:
        await response.prepare(request)
        if request.transport is None:
            raise ConnectionResetError("the device went away")
    except BaseException:
        leg.close()
        raise
    leg.splice(request.transport)
    sockets.add(asked.client_id, leg)
    logger.info("device %s joined run %d of task %s through this gateway", asked.client_id,
                asked.run, asked.task_id)
    try:
        await leg.closed
    finally:
        sockets.remove(asked.client_id, leg)
        leg.close()
    return response


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc)
