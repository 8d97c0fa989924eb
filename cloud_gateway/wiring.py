"""Assembling the cloud gateway: its routes, its AMQP link on the app's loop, its headers."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from pathlib import Path

from aiohttp import web
from pydantic import ValidationError

from agata_common.config import CloudSettings, ConfigError, GatewaySettings
from agata_contracts.devices import VERIFY_DEVICE, VerifyDeviceRequest
from agata_contracts.queues import client_changes_exchange, task_events_exchange
from agata_contracts.run_door import OPEN_RUN_DOOR, RUN_ROUTE, OpenRunDoorRequest, RunDoor
from agata_contracts.tasks import CLIENT_REQUESTING_TASK, ClientRequestingTaskRequest, TaskEvent
from agata_contracts.users import GET_USER_INFO, GetUserInfoRequest, UserInfo
from cloud_gateway.app import (
    AUTH,
    CLIENT_ADDRESSES,
    EVENT_SCOPE,
    JOIN_LIMITER,
    LINK,
    OPENAPI,
    RPC_CLIENT,
    RUN_SOCKETS,
    SCHEMAS,
    SETTINGS,
    TASK_FEED,
    WEB_PAGES,
    download,
    errors_and_cors,
    health,
    join,
    openapi,
    rest_handler,
    rpc_route,
    schemas,
    task_events,
    to_web_interface,
    web_file,
    web_interface_index,
)
from cloud_gateway.auth import Authenticator
from cloud_gateway.body_deadline import body_deadline
from cloud_gateway.client_address import ClientAddresses
from cloud_gateway.event_scope import EventScope
from cloud_gateway.flwr_routes import add_flwr_routes
from cloud_gateway.openapi import build_openapi, request_schemas
from cloud_gateway.rate_limit import RateLimiter
from cloud_gateway.result_files import result_file, results_archive
from cloud_gateway.routes import REST_ROUTES
from cloud_gateway.run_relay import RunSockets, run_socket
from cloud_gateway.security_headers import add_security_headers
from cloud_gateway.task_feed import TaskEventFeed
from cloud_gateway.uploads import upload_files, upload_task_files
from cloud_web_interface import WEB_DIR
from microservice_interconnect import NotFound, Unauthorized
from microservice_interconnect.broadcast import Subscriber
from microservice_interconnect.link import AmqpLink
from microservice_interconnect.rpc_client import RpcClient

logger = logging.getLogger("cloud_gateway")

NAME = "cloud_gateway"


def server_tls(gateway: GatewaySettings) -> ssl.SSLContext | None:
    """The HTTPS context of ``tls_cert``/``tls_key`` (TLS 1.2 at least), None without them."""
    if not gateway.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(Path(gateway.tls_cert).expanduser(),
                                Path(gateway.tls_key).expanduser())
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[server.gateway] tls_cert/tls_key cannot be used: {exc}") from None
    return context


def create_app(config: CloudSettings, web_dir: Path = WEB_DIR) -> web.Application:
    """The gateway application; its AMQP link starts with the app, on the app's loop."""
    gateway = config.server_gateway
    app = web.Application(
        client_max_size=int(gateway.max_body_mb * 1024 * 1024),
        middlewares=[errors_and_cors, body_deadline(gateway.body_timeout_s)],
    )
    app.on_response_prepare.append(add_security_headers)
    app[SETTINGS] = config
    app[AUTH] = Authenticator(gateway)
    app[JOIN_LIMITER] = RateLimiter(gateway.join_rate_per_minute)
    app[RUN_SOCKETS] = RunSockets()
    app[CLIENT_ADDRESSES] = ClientAddresses(gateway.trusted_proxy_networks())
    app[OPENAPI] = json.dumps(build_openapi()).encode()
    app[SCHEMAS] = json.dumps(request_schemas()).encode()
    if not gateway.api_token:
        logger.warning("no api_token configured: operator routes refuse every request")
    if gateway.shared_client_token and not gateway.client_token:
        logger.warning("shared_client_token is on but no client_token is configured: client "
                       "routes accept only each device's own credential")

    async def start_link(app: web.Application) -> None:
        link = AmqpLink(config.server_broker, name="cloud_gateway",
                        loop=asyncio.get_running_loop())
        app[LINK] = link
        app[RPC_CLIENT] = RpcClient(link, timeout_s=config.rpc.timeout_s,
                                    queue_prefix=config.server_broker.queue_prefix,
                                    reconnect_wait_s=config.rpc.reconnect_wait_s)
        feed = app[TASK_FEED] = TaskEventFeed()
        Subscriber(link, task_events_exchange(config.server_broker.queue_prefix), TaskEvent,
                   feed.add)
        auth = app[AUTH]
        client = app[RPC_CLIENT]

        async def verify(client_id: str, secret: str) -> bool:
            request = VerifyDeviceRequest(client_id=client_id, secret=secret)
            try:
                await client.acall(VERIFY_DEVICE, request)
            except Unauthorized:
                return False
            return True

        async def is_enrolled(client_id: str) -> bool:
            try:
                request = GetUserInfoRequest(user_id=client_id)
            except ValidationError:
                return False  # no device has such an id; the RPC itself refuses it, saying why
            try:
                info = await client.acall(GET_USER_INFO, request)
            except NotFound:
                return False
            return info.enrolled or info.revoked

        async def offered(client_id: str) -> set[str]:
            try:
                request = ClientRequestingTaskRequest(client_id=client_id)
                offers = await client.acall(CLIENT_REQUESTING_TASK, request)
            except (ValidationError, NotFound):
                return set()  # no such device: no task is offered to it
            return {offer.task_id for offer in offers.tasks}

        auth.verify = verify
        auth.is_enrolled = is_enrolled
        app[EVENT_SCOPE] = EventScope(offered)

        def client_changed(info: UserInfo) -> None:
            auth.forget(info.id)
            if info.revoked:
                app[RUN_SOCKETS].drop(info.id, "the device's credential was revoked")

        Subscriber(link, client_changes_exchange(config.server_broker.queue_prefix), UserInfo,
                   client_changed)
        link.start()

    async def close_link(app: web.Application) -> None:
        app[RUN_SOCKETS].close()
        await app[LINK].aclose()

    async def open_run_door(asked: OpenRunDoorRequest) -> RunDoor:
        return await app[RPC_CLIENT].acall(OPEN_RUN_DOOR, asked)

    async def run_socket_route(request: web.Request) -> web.StreamResponse:
        return await run_socket(request, app[RUN_SOCKETS], open_run_door)

    async def end_long_polls(app: web.Application) -> None:
        if TASK_FEED in app:
            app[TASK_FEED].close()

    app.on_startup.append(start_link)
    app.on_shutdown.append(end_long_polls)
    app.on_cleanup.append(close_link)

    router = app.router
    router.add_get("/health", health)
    router.add_get("/openapi.json", openapi)
    router.add_get("/api/schemas", schemas)
    router.add_post("/upload_files", upload_files)
    router.add_get("/download/{task_id}/{filename:.+}", download)
    router.add_get("/api/client/task_events", task_events)
    router.add_post("/api/client/join", join)
    router.add_get(RUN_ROUTE, run_socket_route)
    router.add_post("/api/tasks/{task_id}/files", upload_task_files)
    router.add_get("/api/tasks/{task_id}/runs/{run}/results.zip", results_archive)
    router.add_get("/api/tasks/{task_id}/runs/{run}/results/{path:.+}", result_file)
    for route in REST_ROUTES:
        router.add_route(route.method, route.path, rest_handler(route))
    add_flwr_routes(app, gateway)
    router.add_post("/{rpc_name}", rpc_route)
    app[WEB_PAGES] = web_dir
    if web_dir.is_dir():
        router.add_get("/", to_web_interface)
        router.add_get("/ui", to_web_interface)
        router.add_get("/ui/", web_interface_index)
        # Only web file types under web_dir, no links followed, no directory listing.
        router.add_get("/ui/{path:.+}", web_file)
    return app
