"""Flower's Control API on the gateway's own port: the calls behind ``flwr login``, ``flwr
run``, ``flwr ls``, ``flwr log``, ``flwr stop`` and ``flwr pull``, each turned into AGATA RPCs.

Every call but the three of the login is refused without a CLI session's access token (see
:mod:`cloud_gateway.flwr_login`). A run is a task (``flwr-<run id>``, see
:mod:`cloud_gateway.flwr_runs`): StartRun creates it with the run's overrides as its server
arguments, stores the FAB through the archive upload and starts it; the log is the run's
server output, followed through ``rpc_exec_read_run_log`` until the run ends.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from flwr.proto.control_pb2 import (
    GetAuthTokensRequest,
    GetLoginDetailsRequest,
    ListRunsRequest,
    ListRunsResponse,
    PullArtifactsRequest,
    PullArtifactsResponse,
    RefreshAuthTokensRequest,
    StartRunRequest,
    StartRunResponse,
    StopRunRequest,
    StopRunResponse,
    StreamLogsRequest,
    StreamLogsResponse,
)
from google.protobuf.message import Message

from agata_contracts.results import LIST_RESULTS, READ_RUN_LOG
from agata_contracts.tasks import (
    CREATE_TASK,
    GET_TASK_BY_ID,
    LIST_TASKS,
    START_SERVER_TASK,
    STOP_SERVER_TASK,
    UPLOAD_TASK_ARCHIVE,
)
from cloud_gateway.app import SETTINGS, call_rpc
from cloud_gateway.flwr_artifacts import LinkKeyMissing, link_key, sign_link
from cloud_gateway.flwr_login import (
    get_auth_tokens,
    get_login_details,
    public_base,
    refresh_auth_tokens,
    require_session,
)
from cloud_gateway.flwr_routes import ARTIFACTS_ROUTE, CLOSING
from cloud_gateway.flwr_runs import (
    APP_TAG,
    FabError,
    app_config,
    app_label,
    check_run_id,
    devices_for,
    fab_manifest,
    new_run_id,
    overrides_from,
    run_id_of,
    run_message,
    task_id_of,
    unknown_keys,
)
from cloud_gateway.flwr_wire import (
    FAILED_TO_CREATE_RUN,
    INVALID_APP_SPEC,
    INVALID_RUN_CONFIG,
    NO_PERMISSIONS,
    NOT_SERVED,
    PROTOBUF_STREAM,
    PULL_UNFINISHED_RUN,
    RUN_ALREADY_FINISHED,
    RUN_ID_NOT_FOUND,
    UNAVAILABLE,
    ControlError,
    check_version,
    error_response,
    frame,
    message_response,
    read_message,
)
from microservice_interconnect import Conflict, NotFound, RpcError

logger = logging.getLogger(__name__)

LOG_POLL_S = 0.5
"""How often a followed log is read while nothing new came."""
MAX_LISTED_TASKS = 10_000
PAGE = 1000
START_ATTEMPTS = 5

SESSION = web.RequestKey("flwr_session", str)
"""Where a Control API request keeps the CLI session its token proved."""

Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]


def from_rpc(error: RpcError, code: int) -> ControlError:
    """An AGATA RPC's refusal as the Control API's: its status and message (field errors
    named), never more."""
    detail = error.message
    if error.errors:
        detail += "; " + "; ".join(f"{e.get('field', '')}: {e.get('message', '')}"
                                   for e in error.errors[:5])
    if error.status_code >= 500:
        return ControlError(503 if error.status_code in (503, 504) else 500, UNAVAILABLE,
                            detail)
    return ControlError(error.status_code, code, detail)


async def _task(request: web.Request, run_id: int) -> dict[str, Any]:
    try:
        task_id = check_run_id(run_id)
        task: dict[str, Any] = await call_rpc(request, GET_TASK_BY_ID, {"task_id": task_id})
    except (ValueError, NotFound):
        raise ControlError(404, RUN_ID_NOT_FOUND, f"run {run_id} does not exist") from None
    return task


async def start_run(request: web.Request, asked: StartRunRequest) -> web.Response:
    """``flwr run APP NAME``: the FAB becomes task ``flwr-<run id>``, started at once."""
    fab = asked.fab.content
    if asked.app_spec or not fab:
        raise ControlError(400, INVALID_APP_SPEC, "this cloud runs the FAB flwr builds from a "
                           "local app folder; apps from a hub are not served")
    if asked.fab.hash_str and hashlib.sha256(fab).hexdigest() != asked.fab.hash_str:
        raise ControlError(400, INVALID_APP_SPEC, "the FAB does not match its sha256")
    try:
        manifest = fab_manifest(fab)
        overrides = overrides_from(asked.override_config)
    except (FabError, ValueError) as exc:
        raise ControlError(400, INVALID_RUN_CONFIG, str(exc)) from None
    app = app_config(manifest)
    if (problem := unknown_keys(app, overrides)) is not None:
        raise ControlError(412, INVALID_RUN_CONFIG, problem)
    nodes = (asked.override_federation_config.num_supernodes
             if asked.HasField("override_federation_config")
             and asked.override_federation_config.HasField("num_supernodes") else None)
    task = {"devices": devices_for(app, overrides, nodes),
            "server_arguments": overrides, "tags": [APP_TAG + app_label(manifest)]}
    run_id, task_id = await _create(request, task)
    try:
        await call_rpc(request, UPLOAD_TASK_ARCHIVE, {
            "task_id": task_id, "filename": "app.fab",
            "content": base64.b64encode(fab).decode()})
        await call_rpc(request, START_SERVER_TASK, {"task_id": task_id})
    except RpcError as exc:
        error = from_rpc(exc, INVALID_RUN_CONFIG)
        raise ControlError(error.status, error.code,
                           f"run {run_id} (task {task_id}) was created but did not start: "
                           f"{error.detail}") from None
    logger.info("flwr run: task %s started by CLI session %s", task_id, request[SESSION])
    return message_response(StartRunResponse(run_id=run_id))


async def _create(request: web.Request, task: dict[str, Any]) -> tuple[int, str]:
    """Create the run's task under a fresh run id (another on the rare clash)."""
    for _ in range(START_ATTEMPTS):
        run_id = new_run_id()
        try:
            await call_rpc(request, CREATE_TASK, {"task_id": task_id_of(run_id), **task})
        except Conflict:
            continue
        except RpcError as exc:
            raise from_rpc(exc, FAILED_TO_CREATE_RUN) from None
        return run_id, task_id_of(run_id)
    raise ControlError(500, FAILED_TO_CREATE_RUN, "no free run id was found; try again")


async def list_runs(request: web.Request, asked: ListRunsRequest) -> web.Response:
    """``flwr ls``: the runs ``flwr run`` started (or the one asked for), newest first."""
    if asked.run_id:
        tasks = [await _task(request, asked.run_id)]
    else:
        tasks = []
        offset = 0
        while offset < MAX_LISTED_TASKS:
            page = await call_rpc(request, LIST_TASKS, {"limit": PAGE, "offset": offset})
            tasks += [t for t in page["tasks"] if run_id_of(t["id"]) is not None]
            offset += PAGE
            if offset >= page["total"]:
                break
        if asked.limit:
            tasks = tasks[:asked.limit]
    runs = {run_id_of(t["id"]) or 0: run_message(t) for t in tasks}
    return message_response(ListRunsResponse(run_dict=runs,
                                             now=datetime.now(UTC).isoformat()))


async def stop_run(request: web.Request, asked: StopRunRequest) -> web.Response:
    """``flwr stop RUN``: the run's task is stopped."""
    task = await _task(request, asked.run_id)
    if task["status"] != "running":
        raise ControlError(412, RUN_ALREADY_FINISHED,
                           f"run {asked.run_id} is not running (it is {task['status']})")
    try:
        await call_rpc(request, STOP_SERVER_TASK, {"task_id": task["id"]})
    except RpcError as exc:
        raise from_rpc(exc, RUN_ALREADY_FINISHED) from None
    logger.info("flwr stop: task %s stopped by CLI session %s", task["id"], request[SESSION])
    return message_response(StopRunResponse(success=True))


async def pull_artifacts(request: web.Request, asked: PullArtifactsRequest) -> web.Response:
    """``flwr pull RUN``: a short-lived link to the ended run's results archive."""
    task = await _task(request, asked.run_id)
    if task["status"] in ("created", "running"):
        raise ControlError(412, PULL_UNFINISHED_RUN,
                           f"run {asked.run_id} has not ended; pull its results once it has")
    listing = await call_rpc(request, LIST_RESULTS, {"task_id": task["id"], "run": 0})
    if not listing["files"]:
        raise ControlError(404, PULL_UNFINISHED_RUN, f"run {asked.run_id} left no results")
    try:
        key = link_key(request.app[SETTINGS].server_gateway.api_token)
    except LinkKeyMissing:
        raise ControlError(503, UNAVAILABLE, "download links need the cloud's operator token "
                           "configured ([server.gateway] api_token)") from None
    token = sign_link(key, task["id"], int(listing["run"]))
    base = public_base(request, request.app[SETTINGS].server_gateway)
    return message_response(PullArtifactsResponse(
        url=base + ARTIFACTS_ROUTE.replace("{token}", token)))


async def stream_logs(request: web.Request, asked: StreamLogsRequest) -> web.StreamResponse:
    """``flwr log RUN`` (and ``flwr run --stream``): the run's server output, followed until
    the run ends."""
    task = await _task(request, asked.run_id)
    response = web.StreamResponse(headers={"Content-Type": PROTOBUF_STREAM})
    await response.prepare(request)
    offset, run = 0, 0  # the latest run at first, then that run even if another starts
    try:
        while True:
            chunk = await call_rpc(request, READ_RUN_LOG,
                                   {"task_id": task["id"], "run": run, "offset": offset})
            run = chunk["run"]
            if chunk["text"]:
                await response.write(frame(StreamLogsResponse(
                    log_output=chunk["text"],
                    latest_timestamp=datetime.now(UTC).timestamp())))
            offset = chunk["next_offset"]
            if chunk["ended"] and not chunk["text"]:
                break
            if not chunk["text"] and await _closing_within(request, LOG_POLL_S):
                break
    except NotFound:
        pass  # the run has not started: nothing to show
    except RpcError as exc:
        logger.warning("log of run %d ended early: %s", asked.run_id, exc.message)
    except ConnectionResetError:
        return response
    await response.write_eof()
    return response


async def _closing_within(request: web.Request, seconds: float) -> bool:
    """Wait ``seconds``; True at once when the gateway shuts down meanwhile."""
    try:
        await asyncio.wait_for(request.app[CLOSING].wait(), seconds)
    except TimeoutError:
        return False
    return True


def control_handler(kind: type[Message], handler: Handler, *,
                    public: bool = False) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A Control API route: the CLI's version checked, a session required (unless
    ``public``), the protobuf request read, and every refusal answered as Flower's error."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            check_version(request)
            if not public:
                request[SESSION] = await require_session(request)
            return await handler(request, await read_message(request, kind))
        except ControlError as error:
            return error_response(error)
        except RpcError as error:
            return error_response(from_rpc(error, NO_PERMISSIONS))

    return handle


ROUTES: tuple[tuple[str, type[Message], Handler, bool], ...] = (
    ("get-login-details", GetLoginDetailsRequest, get_login_details, True),
    ("get-auth-tokens", GetAuthTokensRequest, get_auth_tokens, True),
    ("refresh-auth-tokens", RefreshAuthTokensRequest, refresh_auth_tokens, True),
    ("start-run", StartRunRequest, start_run, False),
    ("list-runs", ListRunsRequest, list_runs, False),
    ("stop-run", StopRunRequest, stop_run, False),
    ("stream-logs", StreamLogsRequest, stream_logs, False),
    ("pull-artifacts", PullArtifactsRequest, pull_artifacts, False),
)
"""The Control API methods served (``POST /v1/control/<name>``); any other is a 501 (to a
CLI session; a 401 to anyone else)."""


async def not_served(request: web.Request) -> web.Response:
    """Any other Control API method: a session is still required, then a 501 saying what
    this cloud serves."""
    try:
        check_version(request)
        await require_session(request)
    except ControlError as error:
        return error_response(error)
    return error_response(ControlError(
        501, NOT_SERVED, "this cloud serves flwr login, run, ls, log, stop and pull; not "
        f"{request.match_info['method'][:60]!r}"))


_HANDLERS = {name: control_handler(kind, handler, public=public)
             for name, kind, handler, public in ROUTES}


async def dispatch(request: web.Request) -> web.StreamResponse:
    """``POST /v1/control/{method}``: the method's handler, or the 501 of one not served."""
    handler = _HANDLERS.get(request.match_info["method"], not_served)
    return await handler(request)
