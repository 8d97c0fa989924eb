"""Where Flower's CLI reaches the gateway: the Control API (``POST /v1/control/<method>``),
the login's operator routes and the pull links' downloads, registered without importing
Flower.

The modules behind them speak Flower's protobuf messages, and importing those loads the whole
``flwr`` package (about 40 MB more for the gateway's process): they are loaded at the first
such request, on a thread, so a gateway nobody drives with ``flwr`` stays as small as before,
and one without ``flwr`` installed answers those routes with a 503 saying so.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import cast

from aiohttp import web

from agata_common.config import GatewaySettings
from cloud_gateway.rate_limit import RateLimiter

logger = logging.getLogger(__name__)

ARTIFACTS_ROUTE = "/api/flwr/artifacts/{token}"
CLOSING = web.AppKey("flwr_closing", asyncio.Event)
"""Set when the gateway shuts down: followed logs end then."""
LOGIN_LIMITER = web.AppKey("flwr_login_limiter", RateLimiter)
"""Logins begun per address and minute."""
_LOADED = web.AppKey("flwr_modules", dict[str, ModuleType])
CONTROL = "cloud_gateway.flwr_control"
LOGIN = "cloud_gateway.flwr_login"
ARTIFACTS = "cloud_gateway.flwr_artifacts"
UNAVAILABLE = 3005
"""Flower's error code for an endpoint that is not available."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _module(app: web.Application, name: str) -> ModuleType | None:
    """The module ``name``, imported once (on a thread); None when Flower is missing."""
    loaded = app[_LOADED]
    if name not in loaded:
        try:
            loaded[name] = await asyncio.to_thread(importlib.import_module, name)
        except ImportError as exc:
            logger.error("Flower's CLI cannot be served: %s", exc)
            return None
    return loaded[name]


def lazy_handler(module: str, handler: str) -> Handler:
    """A handler that loads ``module`` at its first call and delegates to its ``handler``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        target = await _module(request.app, module)
        if target is None:
            message = ("this gateway cannot serve Flower's CLI: the flwr package (1.41) is not "
                       "installed beside it")
            return web.json_response({"code": UNAVAILABLE, "detail": message,
                                      "exception": message}, status=503)
        return await cast(Handler, getattr(target, handler))(request)

    return handle


def add_flwr_routes(app: web.Application, gateway: GatewaySettings) -> None:
    """The routes Flower's CLI and its login use, and the state they share."""
    app[_LOADED] = {}
    app[LOGIN_LIMITER] = RateLimiter(gateway.join_rate_per_minute)
    closing = app[CLOSING] = asyncio.Event()

    async def end_followed_logs(_: web.Application) -> None:
        closing.set()

    app.on_shutdown.append(end_followed_logs)
    router = app.router
    router.add_post("/api/flwr/logins/approve", lazy_handler(LOGIN, "approve_login"))
    router.add_get("/api/flwr/sessions", lazy_handler(LOGIN, "list_sessions"))
    router.add_post("/api/flwr/sessions/revoke", lazy_handler(LOGIN, "revoke_sessions"))
    router.add_post("/v1/control/{method}", lazy_handler(CONTROL, "dispatch"))
    router.add_get(ARTIFACTS_ROUTE, lazy_handler(ARTIFACTS, "download_artifacts"))
