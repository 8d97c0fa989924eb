"""Calls to the gateway's Flower Control API as Flower's CLI makes them (protobuf over HTTP)."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from support import Gateway


async def control(gateway: Gateway, method: str, message: Message, answer: type[Message] | None,
                  token: str | None = None, **headers: str) -> tuple[int, Any]:
    """POST one Control API call; (status, the parsed answer or the JSON error)."""
    sent = {"Content-Type": "application/protobuf", **headers}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with gateway.http.post(f"{gateway.url}/v1/control/{method}", headers=sent,
                                 data=message.SerializeToString()) as response:
        body = await response.read()
        if response.status != 200 or answer is None:
            if response.status == 401:
                assert response.headers["WWW-Authenticate"] == "Bearer"
            return response.status, await response.json(content_type=None)
        parsed = answer()
        parsed.ParseFromString(body)
        return 200, parsed
