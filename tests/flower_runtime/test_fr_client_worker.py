"""The device's run socket on the wire: its frames go out unmasked (no copy and XOR pass of
every model byte), which a plain reader of the raw bytes sees."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import aiohttp

from flower_runtime.client_worker import send_unmasked

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def _first_frame_header(unmasked: bool) -> bytes:
    """The first two bytes of the first binary frame an aiohttp client sends to a raw server."""
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 (the RFC's)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        await writer.drain()
        got.set_result(await reader.readexactly(2))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            socket = await session.ws_connect(f"ws://127.0.0.1:{port}/", autoping=False)
            if unmasked:
                send_unmasked(socket)
            await socket.send_bytes(b"model bytes")
            header = await asyncio.wait_for(got, 5)
            await socket.close()
    finally:
        server.close()
        await server.wait_closed()
    return header


def test_the_device_sends_its_frames_unmasked() -> None:
    masked = asyncio.run(_first_frame_header(unmasked=False))
    plain = asyncio.run(_first_frame_header(unmasked=True))
    assert masked[0] == plain[0] == 0x82  # a final binary frame either way
    assert masked[1] & 0x80, "aiohttp's default: the mask bit set"
    assert plain[1] == len(b"model bytes"), "no mask bit, the payload's length as it is"
