"""The gateway's run route refuses, before any upgrade, what is not a known device's socket for a
running run (real gateway, real cloud task manager and user manager)."""

from __future__ import annotations

from typing import Any

import aiohttp
from support import Gateway

from agata_contracts.run_door import CLIENT_HEADER, CREDENTIAL_HEADER, NODE_CONFIG_HEADER


async def refused(gateway: Gateway, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with gateway.http.get(f"{gateway.url}{path}", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", **headers}) as response:
        return response.status, await response.json(content_type=None)


async def test_malformed_run_socket_requests_are_400s_that_say_what_is_wrong(
        gateway: Gateway) -> None:
    status, body = await refused(gateway, "/api/runs/demo/1/flower", {})
    assert status == 400 and CLIENT_HEADER in body["exception"]
    device = {CLIENT_HEADER: "dev-1", CREDENTIAL_HEADER: "x" * 64}
    status, body = await refused(gateway, "/api/runs/demo/0/flower", device)
    assert status == 400 and "run" in body["exception"]
    status, body = await refused(gateway, "/api/runs/demo/1/flower",
                                 {**device, NODE_CONFIG_HEADER: "[1, 2]"})
    assert status == 400 and "JSON object" in body["exception"]
    status, body = await refused(gateway, "/api/runs/../1/flower", device)
    assert status in (400, 404)


async def test_a_socket_for_an_unknown_device_or_task_is_refused(gateway: Gateway) -> None:
    device = {CLIENT_HEADER: "nobody", CREDENTIAL_HEADER: "x" * 64}
    status, body = await refused(gateway, "/api/runs/demo/1/flower", device)
    assert status == 403 and "not known" in body["exception"]
    status, _ = await gateway.post("/rpc_exec_update_user_info", {"user_id": "dev-1"},
                                   headers=gateway.client())
    assert status == 200
    status, body = await refused(gateway, "/api/runs/demo/1/flower",
                                 {CLIENT_HEADER: "dev-1", CREDENTIAL_HEADER: "x" * 64})
    assert status == 404 and "demo" in body["exception"]
    status, _ = await gateway.post("/rpc_exec_create_task", {"task_id": "demo"},
                                   headers=gateway.operator())
    assert status == 200
    status, body = await refused(gateway, "/api/runs/demo/1/flower",
                                 {CLIENT_HEADER: "dev-1", CREDENTIAL_HEADER: "x" * 64})
    assert status == 403 and "wrong run credential" in body["exception"]
    async with aiohttp.ClientSession() as session:
        try:
            await session.ws_connect(f"{gateway.url}/api/runs/demo/1/flower",
                                     headers={CLIENT_HEADER: "dev-1", CREDENTIAL_HEADER: "x"})
        except aiohttp.WSServerHandshakeError as error:
            assert error.status == 403
        else:
            raise AssertionError("a socket with a wrong credential was upgraded")
