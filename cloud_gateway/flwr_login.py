"""``flwr login`` against this gateway: Flower's device-code login (its ``oidc`` CLI plugin)
over the user manager's CLI sessions (``agata_contracts.cli_sessions``), and the operators'
routes that approve a login and list or revoke the CLI's sessions.

The CLI calls ``get-login-details`` (anyone may, rate-limited per address) and opens the
verification page ``/ui/flwr-login.html?code=<user code>``; the operator, signed in there,
approves it (``POST /api/flwr/logins/approve``, operator token); the CLI's ``get-auth-tokens``
poll then gets its tokens, and every other Control API call must carry the access token,
checked with the user manager at every call (so a revoked session is refused by every
gateway at once, and a gateway that cannot ask refuses).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from flwr.proto.control_pb2 import (
    GetAuthTokensRequest,
    GetAuthTokensResponse,
    GetLoginDetailsRequest,
    GetLoginDetailsResponse,
    RefreshAuthTokensRequest,
    RefreshAuthTokensResponse,
)

from agata_common.config import GatewaySettings
from agata_contracts.cli_sessions import (
    APPROVE_CLI_LOGIN,
    BEGIN_CLI_LOGIN,
    LIST_CLI_SESSIONS,
    POLL_CLI_LOGIN,
    REFRESH_CLI_SESSION,
    REVOKE_CLI_SESSIONS,
    VERIFY_CLI_TOKEN,
)
from cloud_gateway.app import AUTH, OPERATOR_ONLY, SETTINGS, call_rpc
from cloud_gateway.auth import bearer_token
from cloud_gateway.flwr_routes import LOGIN_LIMITER
from cloud_gateway.flwr_wire import (
    ACCOUNT_AUTHENTICATION_FAILED,
    ControlError,
    message_response,
    unauthenticated,
)
from microservice_interconnect import BadRequest, RpcError, Unauthorized, wire

AUTHN_TYPE = "oidc"
"""The CLI plugin Flower's CLI uses for a device-code login."""
POLL_INTERVAL_S = 1
VERIFICATION_PAGE = "/ui/flwr-login.html"
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def public_base(request: web.Request, gateway: GatewaySettings) -> str:
    """The gateway's address as the caller reached it (its Host header when that is a plain
    host name or address, else the configured host and port)."""
    host = request.host if _HOST.match(request.host or "") else \
        f"{gateway.host}:{gateway.port}"
    return f"{request.scheme}://{host}"


def _refused(error: RpcError) -> ControlError:
    """The user manager's refusal of a token or code: a 401 saying so; its absence a 503
    (the call is refused either way)."""
    if isinstance(error, Unauthorized):
        return unauthenticated(error.message)
    return ControlError(503, ACCOUNT_AUTHENTICATION_FAILED,
                        "sessions cannot be checked right now; try again in a moment")


async def require_session(request: web.Request) -> str:
    """The CLI session whose access token the request carries; a 401 otherwise (nothing
    else, the operator token included, opens the Control API)."""
    token = bearer_token(request)
    if token is None or not _TOKEN.match(token):
        raise unauthenticated("log in first: flwr login <connection> (the token is missing, "
                              "expired or revoked)")
    try:
        verified = await call_rpc(request, VERIFY_CLI_TOKEN, {"access_token": token})
    except Unauthorized:
        raise unauthenticated("log in first: flwr login <connection> (the token is missing, "
                              "expired or revoked)") from None
    except RpcError as exc:
        raise _refused(exc) from None
    return str(verified["session_id"])


async def get_login_details(request: web.Request,
                            _: GetLoginDetailsRequest) -> web.Response:
    """Start a login: the device code for the CLI and the page the operator approves it on."""
    if not request.app[LOGIN_LIMITER].allow(request.remote or "?"):
        raise ControlError(429, ACCOUNT_AUTHENTICATION_FAILED,
                           "too many logins from this address; wait a minute")
    try:
        pending = await call_rpc(request, BEGIN_CLI_LOGIN, {})
    except RpcError as exc:
        raise ControlError(503, ACCOUNT_AUTHENTICATION_FAILED, exc.message) from None
    base = public_base(request, request.app[SETTINGS].server_gateway)
    return message_response(GetLoginDetailsResponse(
        authn_type=AUTHN_TYPE, device_code=pending["device_code"],
        verification_uri_complete=f"{base}{VERIFICATION_PAGE}?code={pending['user_code']}",
        expires_in=pending["expires_in"], interval=POLL_INTERVAL_S))


async def get_auth_tokens(request: web.Request, asked: GetAuthTokensRequest) -> web.Response:
    """The CLI's poll: empty while the login waits, its tokens once approved."""
    if not _TOKEN.match(asked.device_code):
        raise ControlError(400, ACCOUNT_AUTHENTICATION_FAILED, "this is not a device code")
    try:
        tokens = await call_rpc(request, POLL_CLI_LOGIN, {"device_code": asked.device_code})
    except RpcError as exc:
        error = _refused(exc)
        raise ControlError(400 if error.status == 401 else error.status, error.code,
                           error.detail) from None
    return message_response(GetAuthTokensResponse(access_token=tokens["access_token"],
                                                  refresh_token=tokens["refresh_token"]))


async def refresh_auth_tokens(request: web.Request,
                              asked: RefreshAuthTokensRequest) -> web.Response:
    """New tokens for a refresh token (the CLI does this once when its access token expired)."""
    if not _TOKEN.match(asked.refresh_token):
        raise unauthenticated("this is not a refresh token; run flwr login")
    try:
        tokens = await call_rpc(request, REFRESH_CLI_SESSION,
                                {"refresh_token": asked.refresh_token})
    except RpcError as exc:
        raise _refused(exc) from None
    return message_response(RefreshAuthTokensResponse(access_token=tokens["access_token"],
                                                      refresh_token=tokens["refresh_token"]))


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    value = wire.loads(raw) if raw.strip() else {}
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


async def approve_login(request: web.Request) -> web.Response:
    """``POST /api/flwr/logins/approve`` ``{"user_code": "KMTR-QXBD"}`` (operators)."""
    await request.app[AUTH].authenticate(request, OPERATOR_ONLY)
    code = (await _json_object(request)).get("user_code")
    if not isinstance(code, str) or not code.strip() or len(code) > 32:
        raise BadRequest("user_code: give the code the flwr login page shows, e.g. KMTR-QXBD")
    await call_rpc(request, APPROVE_CLI_LOGIN, {"user_code": code})
    return web.json_response({"approved": True})


async def list_sessions(request: web.Request) -> web.Response:
    """``GET /api/flwr/sessions``: the CLI's live sessions (operators; never a token)."""
    await request.app[AUTH].authenticate(request, OPERATOR_ONLY)
    return web.json_response(await call_rpc(request, LIST_CLI_SESSIONS, {}))


async def revoke_sessions(request: web.Request) -> web.Response:
    """``POST /api/flwr/sessions/revoke`` ``{"session_id": …}``, or ``{}`` for all (operators):
    the tokens are refused from now on."""
    await request.app[AUTH].authenticate(request, OPERATOR_ONLY)
    body = await _json_object(request)
    payload = {"session_id": body["session_id"]} if "session_id" in body else {}
    return web.json_response(await call_rpc(request, REVOKE_CLI_SESSIONS, payload))
