"""``flwr login`` against this gateway: Flower's device-code login (its ``oidc`` CLI plugin)
served from :class:`~cloud_gateway.flwr_accounts.FlowerAccounts`, and the operators' routes
that approve a login and list or revoke the CLI's sessions.

The CLI calls ``get-login-details`` (anyone may, rate-limited per address) and opens the
verification page ``/ui/flwr-login.html?code=<user code>``; the operator, signed in there,
approves it (``POST /api/flwr/logins/approve``, operator token); the CLI's ``get-auth-tokens``
poll then gets its tokens, and every other Control API call must carry the access token.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
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
from cloud_gateway.app import AUTH, SETTINGS
from cloud_gateway.auth import bearer_token
from cloud_gateway.flwr_accounts import FlowerAccounts, LoginRefused
from cloud_gateway.flwr_wire import (
    ACCOUNT_AUTHENTICATION_FAILED,
    ControlError,
    message_response,
    unauthenticated,
)
from cloud_gateway.rate_limit import RateLimiter
from microservice_interconnect import Audience, BadRequest, NotFound, wire

FLWR_ACCOUNTS = web.AppKey("flwr_accounts", FlowerAccounts)
LOGIN_LIMITER = web.AppKey("flwr_login_limiter", RateLimiter)
AUTHN_TYPE = "oidc"
"""The CLI plugin Flower's CLI uses for a device-code login."""
POLL_INTERVAL_S = 1
VERIFICATION_PAGE = "/ui/flwr-login.html"
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")
_OPERATOR = frozenset({Audience.OPERATOR})


def public_base(request: web.Request, gateway: GatewaySettings) -> str:
    """The gateway's address as the caller reached it (its Host header when that is a plain
    host name or address, else the configured host and port)."""
    host = request.host if _HOST.match(request.host or "") else \
        f"{gateway.host}:{gateway.port}"
    return f"{request.scheme}://{host}"


def require_session(request: web.Request) -> str:
    """The CLI session whose access token the request carries; a 401 otherwise (nothing
    else, the operator token included, opens the Control API)."""
    token = bearer_token(request)
    session = request.app[FLWR_ACCOUNTS].session_of(token) if token else None
    if session is None:
        raise unauthenticated("log in first: flwr login <connection> (the token is missing, "
                              "expired or revoked)")
    return session


async def get_login_details(request: web.Request,
                            _: GetLoginDetailsRequest) -> web.Response:
    """Start a login: the device code for the CLI and the page the operator approves it on."""
    if not request.app[LOGIN_LIMITER].allow(request.remote or "?"):
        raise ControlError(429, ACCOUNT_AUTHENTICATION_FAILED,
                           "too many logins from this address; wait a minute")
    try:
        pending = request.app[FLWR_ACCOUNTS].begin()
    except LoginRefused as exc:
        raise ControlError(503, ACCOUNT_AUTHENTICATION_FAILED, str(exc)) from None
    base = public_base(request, request.app[SETTINGS].server_gateway)
    return message_response(GetLoginDetailsResponse(
        authn_type=AUTHN_TYPE, device_code=pending.device_code,
        verification_uri_complete=f"{base}{VERIFICATION_PAGE}?code={pending.user_code}",
        expires_in=pending.expires_in, interval=POLL_INTERVAL_S))


async def get_auth_tokens(request: web.Request, asked: GetAuthTokensRequest) -> web.Response:
    """The CLI's poll: empty while the login waits, its tokens once approved."""
    try:
        tokens = request.app[FLWR_ACCOUNTS].poll(asked.device_code)
    except LoginRefused as exc:
        raise ControlError(400, ACCOUNT_AUTHENTICATION_FAILED, str(exc)) from None
    if tokens is None:
        return message_response(GetAuthTokensResponse())
    return message_response(GetAuthTokensResponse(access_token=tokens.access_token,
                                                  refresh_token=tokens.refresh_token))


async def refresh_auth_tokens(request: web.Request,
                              asked: RefreshAuthTokensRequest) -> web.Response:
    """New tokens for a refresh token (the CLI does this once when its access token expired)."""
    try:
        tokens = request.app[FLWR_ACCOUNTS].refresh(asked.refresh_token)
    except LoginRefused as exc:
        raise unauthenticated(str(exc)) from None
    return message_response(RefreshAuthTokensResponse(access_token=tokens.access_token,
                                                      refresh_token=tokens.refresh_token))


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    value = wire.loads(raw) if raw.strip() else {}
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


async def approve_login(request: web.Request) -> web.Response:
    """``POST /api/flwr/logins/approve`` ``{"user_code": "KMTR-QXBD"}`` (operators)."""
    await request.app[AUTH].authenticate(request, _OPERATOR)
    code = (await _json_object(request)).get("user_code")
    if not isinstance(code, str) or not code.strip() or len(code) > 32:
        raise BadRequest("user_code: give the code the flwr login page shows, e.g. KMTR-QXBD")
    try:
        request.app[FLWR_ACCOUNTS].approve(code)
    except LoginRefused as exc:
        raise NotFound(str(exc)) from None
    return web.json_response({"approved": True})


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


async def list_sessions(request: web.Request) -> web.Response:
    """``GET /api/flwr/sessions``: the CLI's live sessions (operators; never a token)."""
    await request.app[AUTH].authenticate(request, _OPERATOR)
    sessions = [{"session_id": s.session_id, "created": _when(s.created_at),
                 "expires": _when(s.expires_at)}
                for s in request.app[FLWR_ACCOUNTS].sessions()]
    return web.json_response({"sessions": sessions})


async def revoke_sessions(request: web.Request) -> web.Response:
    """``POST /api/flwr/sessions/revoke`` ``{"session_id": …}``, or ``{}`` for all (operators):
    the tokens are refused from now on."""
    await request.app[AUTH].authenticate(request, _OPERATOR)
    session_id = (await _json_object(request)).get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        raise BadRequest("session_id must be a string (leave it out to revoke every session)")
    revoked = request.app[FLWR_ACCOUNTS].revoke(session_id)
    if session_id is not None and not revoked:
        raise NotFound(f"no CLI session {session_id[:32]!r}")
    return web.json_response({"revoked": revoked})


def add_login_routes(app: web.Application, gateway: GatewaySettings) -> None:
    """The operators' routes and the stores behind them."""
    app[FLWR_ACCOUNTS] = FlowerAccounts()
    app[LOGIN_LIMITER] = RateLimiter(gateway.join_rate_per_minute)
    app.router.add_post("/api/flwr/logins/approve", approve_login)
    app.router.add_get("/api/flwr/sessions", list_sessions)
    app.router.add_post("/api/flwr/sessions/revoke", revoke_sessions)
