"""The cloud gateway: the single public HTTP entry (aiohttp).

* ``POST /<rpc_name>``: AGATA's route; the JSON body goes to the RPC, the envelope's status
  becomes the HTTP status, ``return`` (or the error) the body.
* ``GET /download/<task_id>/<filename>``: AGATA's download route (uploads: ``uploads``).
* ``/api/...``: REST routes for people, ``/health``, ``/openapi.json``, ``/api/schemas``.
* ``GET /ui/...``: the operators' web interface (static files of ``cloud_web_interface/``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import web

from agata_common.config import CloudSettings
from agata_common.disk import disk_space
from agata_contracts.devices import JOIN
from agata_contracts.health import Health
from agata_contracts.tasks import (
    DOWNLOAD_TASK_FILE,
    READ_TASK_FILE,
)
from cloud_gateway.auth import Authenticator, Caller
from cloud_gateway.client_address import ClientAddresses
from cloud_gateway.event_scope import EventScope
from cloud_gateway.rate_limit import RateLimiter
from cloud_gateway.routes import EXPOSED_RPCS, RestRoute
from cloud_gateway.run_relay import RunSockets
from cloud_gateway.task_feed import TaskEventFeed
from microservice_interconnect import Audience, BadRequest, Forbidden, RpcError, RpcSpec, wire
from microservice_interconnect.link import AmqpLink
from microservice_interconnect.rpc_client import RpcClient

logger = logging.getLogger(__name__)

JSON = "application/json"
MAX_LONG_POLL_S = 55.0
"""The longest a task-event long poll may wait."""
MAX_EVENT_CURSOR = 2**62
_OK_PREFIX = b'{"status_code":200,"return":'
OPERATOR_ONLY = frozenset({Audience.OPERATOR})
"""The audiences of the routes only operators may call."""
_FILE_ROUTE_AUDIENCES = frozenset({Audience.OPERATOR, Audience.CLIENT})

RPC_CLIENT = web.AppKey("rpc_client", RpcClient)
LINK = web.AppKey("link", AmqpLink)
AUTH = web.AppKey("auth", Authenticator)
SETTINGS = web.AppKey("settings", CloudSettings)
OPENAPI = web.AppKey("openapi", bytes)
SCHEMAS = web.AppKey("schemas", bytes)
TASK_FEED = web.AppKey("task_feed", TaskEventFeed)
WEB_PAGES = web.AppKey("web_pages", Path)
JOIN_LIMITER = web.AppKey("join_limiter", RateLimiter)
RUN_SOCKETS = web.AppKey("run_sockets", RunSockets)
CLIENT_ADDRESSES = web.AppKey("client_addresses", ClientAddresses)
EVENT_SCOPE = web.AppKey("event_scope", EventScope)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(status: int, message: str, **extra: Any) -> web.Response:
    body = {"exception": message, **{k: v for k, v in extra.items() if v}}
    return web.Response(status=status, body=wire.dumps(body), content_type=JSON)


def envelope_to_response(reply: bytes) -> web.Response:
    """AGATA's envelope as an HTTP response: its status, and ``return`` or the error as body."""
    if reply.startswith(_OK_PREFIX) and reply.endswith(b"}"):
        return web.Response(body=reply[len(_OK_PREFIX):-1], content_type=JSON)
    status, result, envelope = wire.split_reply(reply)
    if status == 200:
        return web.Response(body=wire.dumps(result), content_type=JSON)
    return _json_error(status, str(envelope.get("exception", "")),
                       errors=envelope.get("errors"), error_id=envelope.get("error_id"))


def _error_response(error: RpcError) -> web.Response:
    return _json_error(error.status_code, error.message, errors=error.errors,
                       error_id=error.error_id)


@web.middleware
async def errors_and_cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors for everything (no tracebacks to callers) and CORS for configured origins."""
    origin = request.headers.get("Origin")
    cors_origins = request.app[SETTINGS].server_gateway.cors_origin_list()
    allowed = origin is not None and origin in cors_origins
    if request.method == "OPTIONS" and origin is not None:
        if not allowed:
            return _json_error(403, f"origin {origin} is not allowed")
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = (
            "Authorization, Content-Type, X-Download-Credential"
        )
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        try:
            response = await handler(request)
        except RpcError as exc:
            response = _error_response(exc)
        except web.HTTPException as exc:
            if exc.content_type == JSON:
                # Answer it here (not re-raised) so CORS headers are added below as well.
                response = web.Response(status=exc.status, body=exc.body,
                                        headers=exc.headers)
            else:
                message = {404: "no such route", 405: "method not allowed",
                           413: "request body too large"}.get(exc.status, exc.reason)
                response = _json_error(exc.status, message)
        except asyncio.CancelledError:
            raise
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            logger.exception("%s %s failed [error %s]", request.method, request.path, error_id)
            response = _json_error(500, f"internal error (id {error_id})", error_id=error_id)
    if allowed and origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    value = wire.loads(raw)
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


async def call_rpc(request: web.Request, spec: RpcSpec[Any, Any], payload: dict[str, Any],
                   timeout: float = 60) -> Any:
    """Call ``spec`` with ``payload`` for a route the gateway answers itself; its ``return``,
    or the RPC's error raised (the middleware answers it)."""
    reply = await request.app[RPC_CLIENT].acall_raw(spec.name, wire.dumps(payload),
                                                    timeout=timeout)
    status, result, envelope = wire.split_reply(reply)
    wire.raise_for_envelope(status, envelope)
    return result


async def rpc_route(request: web.Request) -> web.Response:
    """``POST /<rpc_name>``: AGATA's gateway route."""
    name = request.match_info["rpc_name"]
    spec = EXPOSED_RPCS.get(name)
    if spec is None:
        return _json_error(404, f"unknown RPC {name!r}")
    caller = await request.app[AUTH].authenticate(request, spec.audiences)
    body = await request.read()
    if caller.client_id is not None or caller.shared:
        body = await _bind_to_device(request, body, caller)
    reply = await request.app[RPC_CLIENT].acall_raw(name, body or b"{}")
    return envelope_to_response(reply)


DEVICE_FIELDS = ("client_id", "user_id")
"""The fields of a client RPC's body that name the device it is about."""


async def _may_act_for(request: web.Request, caller: Caller, named: str) -> None:
    """A device may only speak for itself, and the shared token for no enrolled device: 403
    otherwise."""
    if caller.client_id is not None and named != caller.client_id:
        raise Forbidden(f"you are device {caller.client_id!r}; {named!r} is another device")
    if caller.client_id is None and caller.shared:
        await request.app[AUTH].refuse_enrolled(named)


async def _bind_to_device(request: web.Request, body: bytes, caller: Caller) -> bytes:
    """The body of a device's RPC, checked for the devices it names (``_may_act_for``). The
    body forwarded is the one checked, re-encoded (so no second parser can read another id
    into it); one that is not a JSON object, or names a device with something other than a
    string, is a 400 here."""
    value = wire.loads(body) if body.strip() else {}
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    for field in DEVICE_FIELDS:
        named = value.get(field)
        if named is None:
            continue
        if not isinstance(named, str):
            raise BadRequest(f"{field} must be a device id")
        await _may_act_for(request, caller, named)
    return wire.dumps(value)


def rest_handler(route: RestRoute) -> Handler:
    """A handler that builds the RPC request from the path, query and body."""
    audiences = route.spec.audiences & OPERATOR_ONLY or OPERATOR_ONLY

    async def handle(request: web.Request) -> web.Response:
        await request.app[AUTH].authenticate(request, audiences)
        payload: dict[str, Any] = await _json_body(request) if route.body else {}
        for name in route.query:
            if name in request.query:
                payload[name] = request.query[name]
        for path_name, field_name in route.path_fields.items():
            payload[field_name] = request.match_info[path_name]
        reply = await request.app[RPC_CLIENT].acall_raw(route.spec.name, wire.dumps(payload))
        return envelope_to_response(reply)

    return handle


async def download(request: web.Request) -> web.Response:
    """``GET /download/<task_id>/<filename>``: operators, or clients with the task credential."""
    caller = await request.app[AUTH].authenticate(request, _FILE_ROUTE_AUDIENCES)
    audience = caller.audience
    credential = request.headers.get("X-Download-Credential")
    if audience is Audience.CLIENT and not credential:
        raise web.HTTPUnauthorized(
            text='{"exception":"send the task\'s download credential in X-Download-Credential"}',
            content_type=JSON,
        )
    payload: dict[str, Any] = {
        "task_id": request.match_info["task_id"],
        "filename": request.match_info["filename"],
    }
    spec: RpcSpec[Any, Any] = READ_TASK_FILE
    if audience is Audience.CLIENT:
        # whose credential it is: the device the token proved (a header only names it for
        # the shared token of earlier versions, which proves no device)
        payload["credential"] = credential
        named = caller.client_id or request.headers.get("X-Client-Id")
        if named is not None:
            await _may_act_for(request, caller, named)
        payload["client_id"] = named
        spec = DOWNLOAD_TASK_FILE
    result = await call_rpc(request, spec, payload)
    content = base64.b64decode(result["content"])
    return web.Response(
        body=content,
        content_type="application/octet-stream",
        headers={
            "X-Content-SHA256": result["sha256"],
            "Content-Disposition": f'attachment; filename="{PurePosixPath(result["name"]).name}"',
        },
    )


async def task_events(request: web.Request) -> web.Response:
    """``GET /api/client/task_events?after=N&epoch=E&timeout=S``: long poll for task
    starts/ends; a device is told only of the tasks it may take (``event_scope``), and the
    shared token names its device with ``client_id=`` (without one it is told nothing)."""
    caller = await request.app[AUTH].authenticate(request, _FILE_ROUTE_AUDIENCES)
    try:
        after = int(request.query.get("after", "0"))
        timeout = float(request.query.get("timeout", "25"))
    except ValueError:
        raise BadRequest("after must be an integer and timeout a number of seconds") from None
    if not 0 <= after <= MAX_EVENT_CURSOR:
        raise BadRequest(f"after must be between 0 and {MAX_EVENT_CURSOR}")
    if not math.isfinite(timeout) or not 0 <= timeout <= MAX_LONG_POLL_S:
        raise BadRequest(f"timeout must be a number of seconds from 0 to {MAX_LONG_POLL_S:g}")
    feed, scope = request.app[TASK_FEED], request.app[EVENT_SCOPE]
    named = request.query.get("client_id") or None
    device = caller.client_id or named
    if caller.audience is Audience.CLIENT and device is not None:
        await _may_act_for(request, caller, named or device)
        await scope.prime(device)
    cursor, events, reset = await feed.wait(after, timeout, request.query.get("epoch", ""))
    if caller.audience is Audience.CLIENT:
        events = await scope.events_for(device, events) if device is not None else []
    body = {"epoch": feed.epoch, "cursor": cursor, "reset": reset,
            "events": [event.model_dump(mode="json") for event in events]}
    return web.Response(body=wire.dumps(body), content_type=JSON)


async def join(request: web.Request) -> web.Response:
    """``POST /api/client/join``: a device spends its one-time join token for its own secret
    (no other authentication; attempts are rate-limited per address: the peer's, or the
    device's as a trusted proxy forwards it)."""
    if not request.app[JOIN_LIMITER].allow(request.app[CLIENT_ADDRESSES].of(request)):
        raise web.HTTPTooManyRequests(
            text='{"exception":"too many join attempts from this address; wait a minute"}',
            content_type=JSON, headers={"Retry-After": "60"})
    result = await call_rpc(request, JOIN, await _json_body(request))
    return web.Response(body=wire.dumps(result), content_type=JSON)


async def health(request: web.Request) -> web.Response:
    """Liveness, whether the broker is connected (503 when it is not) and whether the disk of
    the data folder is full (said, still 200: the gateway serves on)."""
    connected = request.app[LINK].connected
    storage = request.app[SETTINGS].storage
    space = disk_space(storage.resolved_data_dir(), storage.min_free_mb)
    disk = "unknown" if space is None else "full" if space.full else "ok"
    body = Health(status="ok" if connected and disk != "full" else "degraded",
                  broker="connected" if connected else "disconnected", disk=disk,
                  disk_detail=space.describe() if space is not None and space.full else "")
    return web.Response(status=200 if connected else 503,
                        body=wire.dumps(body.model_dump(mode="json")), content_type=JSON)


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document generated from the contracts."""
    return web.Response(body=request.app[OPENAPI], content_type=JSON)


async def schemas(request: web.Request) -> web.Response:
    """JSON Schemas of every request model, by RPC name (for form validation)."""
    return web.Response(body=request.app[SCHEMAS], content_type=JSON)


async def to_web_interface(request: web.Request) -> web.Response:
    """``GET /`` and ``GET /ui``: to the web interface."""
    return web.Response(status=302, headers={"Location": "/ui/"})


async def web_interface_index(request: web.Request) -> web.FileResponse:
    """``GET /ui/``: the dashboard page (public; its data comes from the API, with a token)."""
    return web.FileResponse(request.app[WEB_PAGES] / "index.html")


WEB_FILE_TYPES = frozenset({".html", ".js", ".css", ".svg", ".png", ".ico"})
"""What the web interface's folder serves; anything else there (the package's ``__init__.py``,
caches) is a 404."""


async def web_file(request: web.Request) -> web.FileResponse:
    """``GET /ui/<path>``: one file of the web interface: a web file type, inside the folder,
    reached without following a link."""
    root = request.app[WEB_PAGES]
    relative = PurePosixPath(request.match_info["path"])
    if (relative.suffix not in WEB_FILE_TYPES or relative.is_absolute()
            or any(part in ("", ".", "..") or part.startswith((".", "_"))
                   for part in relative.parts)):
        raise web.HTTPNotFound()
    path = root.joinpath(*relative.parts)
    current = root
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            raise web.HTTPNotFound()
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path)
