"""``flwr login`` at the gateway: Flower's device-code login approved by a signed-in
operator over the user manager's CLI sessions, refreshed (the old pair then refused) and
revoked; the CLI's Flower version checked."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from flwr.proto.control_pb2 import (
    GetAuthTokensRequest,
    GetAuthTokensResponse,
    GetLoginDetailsRequest,
    GetLoginDetailsResponse,
    RefreshAuthTokensRequest,
    RefreshAuthTokensResponse,
)
from flwr_calls import control
from support import REPO_ROOT, Gateway

from agata_common.config import GatewaySettings
from cloud_gateway.flwr_routes import add_flwr_routes, lazy_handler
from cloud_gateway.flwr_wire import ControlError, check_version, frame


def test_flwr_cli_versions_other_than_1_41_are_refused() -> None:
    check_version(make_mocked_request("POST", "/", headers={}))
    check_version(make_mocked_request("POST", "/", headers={"flwr-package-version": "1.41.3"}))
    for other in ("1.40.0", "2.41.0", "nonsense"):
        with pytest.raises(ControlError) as refused:
            check_version(make_mocked_request("POST", "/",
                                              headers={"flwr-package-version": other}))
        assert (refused.value.status, refused.value.code) == (412, 1001)
    message = GetLoginDetailsRequest()
    framed = frame(GetAuthTokensRequest(device_code="abc"))
    assert int.from_bytes(framed[:4], "big") == len(framed) - 4
    assert message.SerializeToString() == b""


async def test_flwr_cli_login_over_http_approved_by_an_operator(gateway: Gateway) -> None:
    status, details = await control(gateway, "get-login-details", GetLoginDetailsRequest(),
                                    GetLoginDetailsResponse)
    assert status == 200 and details.authn_type == "oidc" and details.interval >= 1
    assert details.verification_uri_complete.startswith(f"{gateway.url}/ui/flwr-login.html?code=")
    code = details.verification_uri_complete.rsplit("=", 1)[1]
    poll = GetAuthTokensRequest(device_code=details.device_code)
    status, waiting = await control(gateway, "get-auth-tokens", poll, GetAuthTokensResponse)
    assert status == 200 and not waiting.access_token

    status, _ = await gateway.post("/api/flwr/logins/approve", {"user_code": code})
    assert status == 401  # only a signed-in operator approves
    status, _ = await gateway.post("/api/flwr/logins/approve", {"user_code": "BCDF-BCDF"},
                                   gateway.operator())
    assert status == 404
    status, body = await gateway.post("/api/flwr/logins/approve", {"user_code": code},
                                      gateway.operator())
    assert (status, body) == (200, {"approved": True})
    status, tokens = await control(gateway, "get-auth-tokens", poll, GetAuthTokensResponse)
    assert status == 200 and tokens.access_token and tokens.refresh_token

    status, sessions = await gateway.get("/api/flwr/sessions", gateway.operator())
    assert status == 200 and len(sessions["sessions"]) == 1
    status, renewed = await control(gateway, "refresh-auth-tokens",
                                    RefreshAuthTokensRequest(refresh_token=tokens.refresh_token),
                                    RefreshAuthTokensResponse)
    assert status == 200 and renewed.access_token != tokens.access_token
    status, error = await control(gateway, "refresh-auth-tokens",
                                  RefreshAuthTokensRequest(refresh_token=tokens.refresh_token),
                                  None)
    assert status == 401 and "flwr login" in error["detail"]
    status, revoked = await gateway.post("/api/flwr/sessions/revoke", {}, gateway.operator())
    assert (status, revoked) == (200, {"revoked": 1})
    status, _ = await gateway.get("/api/flwr/sessions")
    assert status == 401


def test_flwr_cli_gateway_loads_flower_only_when_the_cli_calls() -> None:
    probe = ("import sys, cloud_gateway.wiring, cloud_gateway.flwr_routes;"
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'flwr'))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout


async def test_flwr_cli_routes_answer_503_where_flower_is_missing() -> None:
    app = web.Application()
    add_flwr_routes(app, GatewaySettings())
    handler = lazy_handler("cloud_gateway.no_such_flower_module", "dispatch")
    answer = await handler(make_mocked_request("POST", "/v1/control/list-runs", app=app))
    assert isinstance(answer, web.Response) and answer.status == 503
    body = json.loads(answer.text or "")
    assert body["code"] == 3005 and "flwr package" in body["detail"]
