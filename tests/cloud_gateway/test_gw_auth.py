"""The gateway's authenticator as pure logic: a device answer that races its revocation is
never remembered (the verification itself is the user manager's, tested end to end)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from agata_common.config import GatewaySettings
from cloud_gateway.auth import Authenticator
from microservice_interconnect import Audience

pytestmark = pytest.mark.unit

SECRET = "s" * 43


def request_with(token: str):
    return make_mocked_request("POST", "/x", headers={"Authorization": f"Bearer {token}"})


async def test_a_revocation_during_the_check_is_not_forgotten() -> None:
    asked: list[str] = []
    auth = Authenticator(GatewaySettings(api_token="o" * 32))

    async def verify(client_id: str, secret: str) -> bool:
        asked.append(client_id)
        if len(asked) == 1:
            auth.forget(client_id)  # the revocation's broadcast arrives while we ask
        return len(asked) == 1  # the user manager answered before it saw the revocation

    auth.verify = verify
    token = f"dev-1:{SECRET}"
    first = await auth.caller(request_with(token))
    assert first is not None and first.audience is Audience.CLIENT
    assert await auth.caller(request_with(token)) is None  # asked again, and refused
    assert asked == ["dev-1", "dev-1"]


async def test_a_good_answer_is_remembered_until_the_device_changes() -> None:
    asked: list[str] = []
    auth = Authenticator(GatewaySettings(api_token="o" * 32))

    async def verify(client_id: str, secret: str) -> bool:
        asked.append(client_id)
        return True

    auth.verify = verify
    for _ in range(3):
        assert await auth.caller(request_with(f"dev-2:{SECRET}")) is not None
    assert asked == ["dev-2"]
    auth.forget("dev-2")
    assert await auth.caller(request_with(f"dev-2:{SECRET}")) is not None
    assert asked == ["dev-2", "dev-2"]
    # a malformed device token is nobody, and is never sent to the user manager
    assert await auth.caller(request_with("dev-2:short")) is None
    assert asked == ["dev-2", "dev-2"]
