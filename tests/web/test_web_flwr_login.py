"""The page ``flwr login`` opens, in a real browser: the signed-in operator approves the code
it was opened with (the CLI's poll then gets its tokens), and revokes the CLI's sessions."""

from __future__ import annotations

import urllib.request

from flwr.proto.control_pb2 import (
    GetAuthTokensRequest,
    GetAuthTokensResponse,
    GetLoginDetailsRequest,
    GetLoginDetailsResponse,
)
from google.protobuf.message import Message


def call(url: str, method: str, message: Message, answer: Message) -> Message:
    """One Control API call as Flower's CLI makes it."""
    request = urllib.request.Request(
        f"{url}/v1/control/{method}", data=message.SerializeToString(), method="POST",
        headers={"Content-Type": "application/protobuf"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (test's URL)
        answer.ParseFromString(response.read())
    return answer


def test_flwr_cli_login_is_approved_on_the_page_then_revoked(ui):
    url = ui.stack.url
    details = call(url, "get-login-details", GetLoginDetailsRequest(), GetLoginDetailsResponse())
    assert details.verification_uri_complete.startswith(f"{url}/ui/flwr-login.html?code=")
    code = details.verification_uri_complete.rsplit("=", 1)[1]
    poll = GetAuthTokensRequest(device_code=details.device_code)
    assert not call(url, "get-auth-tokens", poll, GetAuthTokensResponse()).access_token

    ui.signed_in(details.verification_uri_complete.removeprefix(f"{url}/ui/"))
    assert ui.js("return document.getElementById('user_code').value") == code
    ui.find("#approve-form button[type=submit]").click()
    ui.wait(lambda: "approved" in ui.text("#status"), "the approval")
    tokens = call(url, "get-auth-tokens", poll, GetAuthTokensResponse())
    assert tokens.access_token and tokens.refresh_token
    assert len(ui.stack.api.get("/api/flwr/sessions")["sessions"]) == 1

    ui.find("#revoke-form button[type=submit]").click()
    ui.wait(lambda: "1 CLI session(s) revoked" in ui.text("#status"), "the revocation")
    assert ui.stack.api.get("/api/flwr/sessions")["sessions"] == []

    # an unknown code is refused next to its field
    ui.open("flwr-login.html?code=BCDF-BCDF")
    ui.find("#approve-form button[type=submit]").click()
    ui.wait(lambda: ui.field_error("user_code"), "the code's error")
    assert "no flwr login is waiting" in ui.field_error("user_code")
    assert not [line for line in ui.console() if "SEVERE" in line], ui.console()
