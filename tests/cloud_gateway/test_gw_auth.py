"""The gateway's authenticator as pure logic: a device answer that races its revocation is
never remembered (the verification itself is the user manager's, tested end to end)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from agata_common.config import GatewaySettings
from cloud_gateway.auth import Authenticator
from microservice_interconnect import Audience, Forbidden

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


async def test_the_shared_token_is_refused_for_enrolled_devices_and_fails_closed() -> None:
    settings = GatewaySettings(api_token="o" * 32, client_token="c" * 32,
                               shared_client_token=True)
    auth = Authenticator(settings)
    caller = await auth.caller(request_with("c" * 32))
    assert caller is not None and caller.shared and caller.client_id is None
    with pytest.raises(Forbidden):  # nobody to ask: every device counts as enrolled
        await auth.refuse_enrolled("dev-3")
    asked: list[str] = []

    async def is_enrolled(client_id: str) -> bool:
        asked.append(client_id)
        return client_id == "dev-4"

    auth.is_enrolled = is_enrolled
    await auth.refuse_enrolled("dev-3")
    for _ in range(2):
        with pytest.raises(Forbidden, match="dev-4"):
            await auth.refuse_enrolled("dev-4")
    assert asked == ["dev-3", "dev-4"]  # an enrolled device is remembered
    device = await Authenticator(settings, verify=lambda *_: _true()).caller(
        request_with(f"dev-4:{SECRET}"))
    assert device is not None and not device.shared


async def _true() -> bool:
    return True
