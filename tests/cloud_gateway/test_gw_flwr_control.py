"""Flower's Control API at the gateway: run ids and statuses, the FAB's facts, run config
overrides, signed pull links, every call refused without a CLI session's token (the operator
token's too), and a session that holds on every gateway until it is revoked on one."""

from __future__ import annotations

import base64
import io
import time
import zipfile
from typing import Any

import pytest
from aiohttp import web
from flwr.proto.control_pb2 import (
    GetAuthTokensRequest,
    GetAuthTokensResponse,
    GetLoginDetailsRequest,
    GetLoginDetailsResponse,
    ListRunsRequest,
    ListRunsResponse,
    RefreshAuthTokensRequest,
    RefreshAuthTokensResponse,
    StartRunRequest,
    StreamLogsRequest,
    StreamLogsResponse,
)
from flwr.proto.transport_pb2 import Scalar
from flwr_calls import control
from support import OPERATOR_TOKEN, Cloud, Gateway, free_port

from agata_contracts.tasks import (
    CREATE_TASK,
    START_SERVER_TASK,
    STOP_SERVER_TASK,
    UPLOAD_TASK_FILE,
)
from cloud_gateway.flwr_artifacts import LINK_TTL_S, LinkKeyMissing, link_key, open_link, sign_link
from cloud_gateway.flwr_runs import (
    FabError,
    app_config,
    app_label,
    check_run_id,
    devices_for,
    fab_manifest,
    overrides_from,
    run_id_of,
    run_message,
    task_id_of,
    unknown_keys,
)
from cloud_gateway.wiring import create_app


def test_flwr_cli_run_ids_are_task_ids_and_back() -> None:
    assert task_id_of(42) == "flwr-42" and run_id_of("flwr-42") == 42
    for task_id in ("flwr-0", "flwr-042", "flwr-x", "digits", "flwr-99999999999999999"):
        assert run_id_of(task_id) is None, task_id
    with pytest.raises(ValueError):
        check_run_id(0)
    with pytest.raises(ValueError):
        check_run_id(2**53)


@pytest.mark.parametrize(("status", "shown"), [
    ("created", "pending"), ("running", "running"), ("finished", "finished:completed"),
    ("failed", "finished:failed"), ("stopped", "finished:stopped")])
def test_flwr_cli_run_status_is_flowers(status: str, shown: str) -> None:
    task: dict[str, Any] = {
        "id": "flwr-7", "status": status, "status_reason": "why", "tags": [
            "flwr-app:agata/numpyapp==1.0.0"], "server_arguments": {"num-server-rounds": 2},
        "created": "2026-12-07T03:00:00", "started_at": "2026-12-07T03:00:01+00:00",
        "ended_at": "2026-12-07T03:00:05+00:00"}
    run = run_message(task)
    text = f"{run.status.status}:{run.status.sub_status}".rstrip(":")
    assert (run.run_id, text) == (7, shown)
    assert (run.fab_id, run.fab_version) == ("agata/numpyapp", "1.0.0")
    assert run.pending_at == "2026-12-07T03:00:00+00:00"
    assert run.override_config["num-server-rounds"].sint64 == 2
    assert bool(run.finished_at) == shown.startswith("finished")
    explained = shown in ("finished:failed", "finished:stopped")
    assert run.status.details == ("why" if explained else "")


def test_flwr_cli_pull_links_open_one_run_until_they_expire() -> None:
    key = link_key("an-operator-token-of-the-cloud")
    token = sign_link(key, "flwr-42", 3, now=1000.0)
    assert open_link(key, token, now=1000.0 + LINK_TTL_S - 1) == ("flwr-42", 3)
    assert open_link(key, token, now=1000.0 + LINK_TTL_S) is None  # expired
    assert open_link(link_key("another-cloud's-operator-token"), token, now=1000.0) is None
    body, mac = token.rsplit(".", 1)
    for forged in (token.replace("flwr-42", "flwr-43"), token.replace(".3.", ".2."),
                   f"{body}.{'0' * 64}", sign_link(key, "digits", 1, now=1000.0), "x"):
        assert open_link(key, forged, now=1000.0) is None, forged
    assert "an-operator-token" not in token and mac not in key.hex()
    with pytest.raises(LinkKeyMissing):
        link_key("")


def fab(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


MANIFEST = """[project]\nname = "numpyapp"\nversion = "1.0.0"\n[tool.flwr.app]
publisher = "agata"\n[tool.flwr.app.config]\nnum-server-rounds = 3\nmin-nodes = 3\n"""


def test_flwr_cli_fab_facts_and_the_runs_devices() -> None:
    manifest = fab_manifest(fab({"pyproject.toml": MANIFEST, "numpyapp/a.py": ""}))
    assert app_label(manifest) == "agata/numpyapp==1.0.0"
    config = app_config(manifest)
    assert devices_for(config, {}, None) == 3
    assert devices_for(config, {"min-nodes": 4}, None) == 4
    assert devices_for(config, {}, 5) == 5  # the federation config says so
    assert devices_for({"num-server-rounds": 3}, {}, None) == 2
    assert devices_for(config, {"min-nodes": True}, None) == 3
    assert unknown_keys(config, {"num-server-rounds": 1}) is None
    assert unknown_keys(config, {"nope": 1}) == (
        "unknown run config key(s) nope; the app's [tool.flwr.app.config] has: min-nodes, "
        "num-server-rounds")
    with_table = MANIFEST + "[tool.flwr.app.config.opt]\nlr = 1\n"
    nested = fab_manifest(fab({"pyproject.toml": with_table}))
    assert app_config(nested)["opt.lr"] == 1
    for broken in (b"not a zip", fab({"other.toml": ""}), fab({"pyproject.toml": "[x"})):
        with pytest.raises(FabError):
            fab_manifest(broken)


def test_flwr_cli_run_config_overrides_become_server_arguments() -> None:
    asked = StartRunRequest()
    asked.override_config["num-server-rounds"].CopyFrom(Scalar(sint64=2))
    asked.override_config["lr"].CopyFrom(Scalar(double=0.5))
    asked.override_config["name"].CopyFrom(Scalar(string="x"))
    asked.override_config["on"].CopyFrom(Scalar(bool=True))
    assert overrides_from(asked.override_config) == {
        "num-server-rounds": 2, "lr": 0.5, "name": "x", "on": True}
    asked.override_config["blob"].CopyFrom(Scalar(bytes=b"\0"))
    with pytest.raises(ValueError, match="blob"):
        overrides_from(asked.override_config)


async def test_flwr_cli_control_api_refuses_calls_without_a_session(gateway: Gateway) -> None:
    for method in ("start-run", "list-runs", "stop-run", "stream-logs", "pull-artifacts",
                   "list-federations"):
        for token in (None, OPERATOR_TOKEN, "made-up"):
            status, error = await control(gateway, method, ListRunsRequest(), None, token)
            assert status == 401 and error["code"] == 36, (method, token, error)
            assert "flwr login" in error["detail"]
    async with gateway.http.post(f"{gateway.url}/v1/control/get-login-details",
                                 data=b"{}", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 415 and (await r.json())["code"] == 1002
    status, error = await control(gateway, "get-login-details", GetLoginDetailsRequest(), None,
                                  **{"flwr-package-version": "1.40.0"})
    assert status == 412 and error["code"] == 1001 and "1.41" in error["detail"]
    status, _ = await gateway.get("/api/flwr/artifacts/unknown-token")
    assert status == 404


async def session_tokens(gateway: Gateway) -> GetAuthTokensResponse:
    """A CLI session's tokens, the login approved by the operator."""
    _, details = await control(gateway, "get-login-details", GetLoginDetailsRequest(),
                               GetLoginDetailsResponse)
    code = details.verification_uri_complete.rsplit("=", 1)[1]
    status, _ = await gateway.post("/api/flwr/logins/approve", {"user_code": code},
                                   gateway.operator())
    assert status == 200
    _, tokens = await control(gateway, "get-auth-tokens",
                              GetAuthTokensRequest(device_code=details.device_code),
                              GetAuthTokensResponse)
    return tokens


async def test_flwr_cli_session_token_opens_the_control_api_until_refreshed_or_revoked(
        gateway: Gateway) -> None:
    tokens = await session_tokens(gateway)
    status, listed = await control(gateway, "list-runs", ListRunsRequest(), ListRunsResponse,
                                   tokens.access_token)
    assert status == 200 and dict(listed.run_dict) == {} and listed.now
    status, error = await control(gateway, "list-runs", ListRunsRequest(run_id=5), None,
                                  tokens.access_token)
    assert status == 404 and error["code"] == 16
    status, error = await control(gateway, "list-federations", ListRunsRequest(), None,
                                  tokens.access_token)
    assert status == 501 and "'list-federations'" in error["detail"]

    status, renewed = await control(gateway, "refresh-auth-tokens",
                                    RefreshAuthTokensRequest(refresh_token=tokens.refresh_token),
                                    RefreshAuthTokensResponse)
    assert status == 200 and renewed.access_token != tokens.access_token
    status, _ = await control(gateway, "list-runs", ListRunsRequest(), None, tokens.access_token)
    assert status == 401
    status, sessions = await gateway.get("/api/flwr/sessions", gateway.operator())
    assert status == 200 and len(sessions["sessions"]) == 1
    status, revoked = await gateway.post("/api/flwr/sessions/revoke", {}, gateway.operator())
    assert (status, revoked) == (200, {"revoked": 1})
    status, _ = await control(gateway, "list-runs", ListRunsRequest(), None,
                              renewed.access_token)
    assert status == 401


async def test_flwr_cli_session_holds_on_every_gateway_and_is_revoked_on_all(
        gateway: Gateway, cloud: Cloud) -> None:
    tokens = await session_tokens(gateway)
    other_app = create_app(cloud.settings)
    runner = web.AppRunner(other_app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        other = Gateway(f"http://127.0.0.1:{port}", gateway.http)
        status, _ = await control(other, "list-runs", ListRunsRequest(), ListRunsResponse,
                                  tokens.access_token)
        assert status == 200  # a session opened on one gateway holds on another
        status, _ = await gateway.post("/api/flwr/sessions/revoke", {}, gateway.operator())
        assert status == 200
        status, _ = await control(other, "list-runs", ListRunsRequest(), None,
                                  tokens.access_token)
        assert status == 401  # revoked on one, refused by all at once
    finally:
        await runner.cleanup()


PRINTING_SERVER = (b"import time\nfrom task_daemon_lib import TaskReporter\nTaskReporter()\n"
                   b"print('first line', flush=True)\ntime.sleep(120)\n")


async def test_flwr_cli_log_follows_a_run_and_ends_when_the_gateway_stops(
        gateway: Gateway, cloud: Cloud) -> None:
    tokens = await session_tokens(gateway)
    cloud.client.call(CREATE_TASK, {"task_id": "flwr-5", "port": free_port()})
    cloud.client.call(UPLOAD_TASK_FILE, {"task_id": "flwr-5", "filename": "server.py",
                                         "content": base64.b64encode(PRINTING_SERVER).decode()})
    cloud.client.call(START_SERVER_TASK, {"task_id": "flwr-5"})
    other_app = create_app(cloud.settings)
    runner = web.AppRunner(other_app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    headers = {"Content-Type": "application/protobuf",
               "Authorization": f"Bearer {tokens.access_token}"}
    try:
        async with gateway.http.post(
                f"http://127.0.0.1:{port}/v1/control/stream-logs", headers=headers,
                data=StreamLogsRequest(run_id=5).SerializeToString()) as response:
            assert response.status == 200
            assert response.content_type == "application/flower-protobuf-stream"
            size = int.from_bytes(await response.content.readexactly(4), "big")
            first = StreamLogsResponse()
            first.ParseFromString(await response.content.readexactly(size))
            assert first.log_output == "first line\n"
            started = time.monotonic()
            await runner.cleanup()  # the gateway stops: the followed log ends
            assert await response.content.read() == b""
            assert time.monotonic() - started < 5
    finally:
        await runner.cleanup()
        cloud.client.call(STOP_SERVER_TASK, {"task_id": "flwr-5"})
    listed = await control(gateway, "list-runs", ListRunsRequest(run_id=5), ListRunsResponse,
                           tokens.access_token)
    assert listed[1].run_dict[5].status.sub_status == "stopped"
