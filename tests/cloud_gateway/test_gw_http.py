"""The cloud gateway over HTTP on real services: RPC routes, auth, REST, files, CORS, limits."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from support import CLIENT_TOKEN, OPERATOR_TOKEN, Cloud, Gateway, start_cloud

from agata_common.config import Settings
from cloud_gateway.routes import EXPOSED_RPCS
from cloud_gateway.wiring import create_app

STATS_THEN_SLEEP = """\
import time
from task_daemon_lib import TaskReporter

reporter = TaskReporter()
for task_round in (1, 2, 3):
    reporter.send_stats(task_round, loss=1.0 / task_round, accuracy=0.2 * task_round)
time.sleep(120)
"""


def no_traceback(body: Any) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    assert "Traceback" not in text, text


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart body built by hand, so file names are sent exactly as given."""
    boundary = "agata-test-boundary-7f3a"
    chunks = []
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                      "Content-Type: application/octet-stream\r\n\r\n".encode()
                      + content + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def post_raw(gateway: Gateway, path: str, data: bytes, headers: dict[str, str]
                   ) -> tuple[int, Any]:
    async with gateway.http.post(f"{gateway.url}{path}", data=data, headers=headers) as response:
        text = await response.text()
        no_traceback(text)
        return response.status, json.loads(text)


async def request(gateway: Gateway, method: str, path: str, headers: dict[str, str] | None = None,
                  body: Any = None) -> tuple[int, Any]:
    async with gateway.http.request(method, f"{gateway.url}{path}", json=body,
                                    headers=headers) as response:
        text = await response.text()
        no_traceback(text)
        return response.status, json.loads(text)


async def post(gateway: Gateway, path: str, body: Any, headers: dict[str, str] | None = None
               ) -> tuple[int, Any]:
    status, answer = await gateway.post(path, body, headers=headers)
    no_traceback(answer)
    return status, answer


async def get(gateway: Gateway, path: str, headers: dict[str, str] | None = None
              ) -> tuple[int, Any]:
    status, answer = await gateway.get(path, headers=headers)
    no_traceback(answer)
    return status, answer


@asynccontextmanager
async def serve(config: Settings, tmp_path: Path, *, with_cloud: bool = True
                ) -> AsyncIterator[Gateway]:
    """A gateway on non-default settings (and the cloud services behind it)."""
    cloud = start_cloud(config, f"sqlite:///{tmp_path / 'gw.db'}") if with_cloud else None
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", config.server_gateway.port).start()
        async with ClientSession() as http:
            gateway = Gateway(f"http://127.0.0.1:{config.server_gateway.port}", http)
            for _ in range(100):
                async with http.get(f"{gateway.url}/health") as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.05)
            yield gateway
    finally:
        await runner.cleanup()
        if cloud is not None:
            cloud.stop()


async def test_rpc_route_round_trip_and_status_mapping(gateway: Gateway) -> None:
    status, body = await post(gateway, "/rpc_exec_update_user_info",
                              {"user_id": "dev-1", "data_qnt": 40},
                              headers=gateway.client())
    assert (status, body["id"], body["data_qnt"]) == (200, "dev-1", 40)
    status, body = await post(gateway, "/rpc_exec_get_user_info", {"user_id": "dev-1"},
                              headers=gateway.operator())
    assert (status, body["data_qnt"]) == (200, 40)

    status, body = await post(gateway, "/rpc_exec_update_user_info",
                              {"user_id": "a b", "data_qnt": -1},
                              headers=gateway.client())
    assert status == 400
    assert isinstance(body["exception"], str) and body["exception"]
    assert {e["field"] for e in body["errors"]} == {"user_id", "data_qnt"}
    status, body = await post(gateway, "/rpc_exec_get_user_info", {"user_id": "nobody"},
                              headers=gateway.operator())
    assert status == 404 and "nobody" in body["exception"]
    status, body = await post(gateway, "/rpc_exec_create_task", {"task_id": "dup", "port": 1},
                              headers=gateway.operator())
    assert status == 200
    status, body = await post(gateway, "/rpc_exec_create_task", {"task_id": "dup", "port": 1},
                              headers=gateway.operator())
    assert status == 409 and "dup" in body["exception"]
    status, body = await post(gateway, "/rpc_exec_no_such_thing", {},
                              headers=gateway.operator())
    assert status == 404 and "rpc_exec_no_such_thing" in body["exception"]

    headers = {**gateway.client(), "Content-Type": "application/json"}
    for raw in (b'{"user_id": "x",', b"\xff\xfe", b"not json"):
        status, body = await post_raw(gateway, "/rpc_exec_get_user_info", raw, headers)
        assert status == 400 and "JSON" in body["exception"], body
    for raw in (b"[1, 2]", b'"user_id"', b"42", b"null"):
        status, body = await post_raw(gateway, "/rpc_exec_get_user_info", raw, headers)
        assert status == 400, (raw, body)
    status, body = await post_raw(gateway, "/rpc_exec_get_user_info", b"", headers)
    assert status == 400 and body["errors"][0]["field"] == "user_id"
    status, body = await request(gateway, "GET", "/rpc_exec_get_user_info", gateway.operator())
    assert status == 405 and body["exception"]
    status, body = await request(gateway, "GET", "/no/such/route")
    assert status == 404 and body["exception"]


async def test_tokens_are_required_and_checked(gateway: Gateway) -> None:
    cases = [
        ("POST", "/rpc_exec_get_user_info", None),
        ("POST", "/rpc_exec_get_user_info", {"Authorization": "Bearer wrong"}),
        ("POST", "/rpc_exec_get_user_info", {"Authorization": f"Basic {OPERATOR_TOKEN}"}),
        ("POST", "/rpc_exec_get_user_info", {"Authorization": "Bearer "}),
        ("POST", "/rpc_exec_get_user_info", {"Authorization": OPERATOR_TOKEN}),
        ("POST", "/rpc_exec_create_task", gateway.client()),
        ("POST", "/rpc_exec_list_users", gateway.client()),
        ("POST", "/rpc_exec_client_requesting_task", gateway.operator()),
        ("GET", "/api/tasks", None),
        ("GET", "/api/tasks", gateway.client()),
        ("POST", "/api/tasks", None),
        ("GET", "/api/tasks/x", None),
        ("PATCH", "/api/tasks/x", gateway.client()),
        ("POST", "/api/tasks/x/start", None),
        ("POST", "/api/tasks/x/stop", gateway.client()),
        ("GET", "/api/tasks/x/metrics", None),
        ("GET", "/api/clients", None),
        ("GET", "/api/clients/dev", gateway.client()),
        ("POST", "/upload_files", gateway.client()),
        ("POST", "/api/tasks/x/files", None),
        ("GET", "/download/x/server.py", None),
        ("GET", "/download/x/server.py", {"Authorization": "Bearer wrong"}),
    ]
    for method, path, headers in cases:
        status, body = await request(gateway, method, path, headers,
                                     {"user_id": "dev"} if method != "GET" else None)
        assert status == 401, (method, path, headers, body)
        assert "authentication required" in body["exception"]

    status, body = await get(gateway, "/health")
    assert (status, body["status"], body["broker"]) == (200, "ok", "connected")


async def test_openapi_document_lists_exposed_rpcs_only(gateway: Gateway) -> None:
    status, document = await get(gateway, "/openapi.json")
    assert status == 200
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] and document["info"]["version"]
    paths = document["paths"]
    for name, spec in EXPOSED_RPCS.items():
        operation = paths[f"/{name}"]["post"]
        assert operation["operationId"] == name and operation["responses"]["200"]
        schema_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert schema_ref == f"#/components/schemas/{spec.request.__name__}"
    for path in ("/api/tasks", "/api/tasks/{task_id}", "/api/tasks/{task_id}/start",
                 "/api/clients", "/upload_files", "/download/{task_id}/{filename}", "/health"):
        assert path in paths, path
    assert set(paths["/api/tasks"]) == {"get", "post"}
    schemas = document["components"]["schemas"]
    for model in ("CreateTaskRequest", "UpdateTaskRequest", "UpdateUserInfoRequest",
                  "StartTaskRequest", "Task", "ErrorBody"):
        assert model in schemas, model
    assert "selection_criteria" in schemas["CreateTaskRequest"]["properties"]
    assert "port" in schemas["CreateTaskRequest"]["properties"]  # optional (issue 21)
    assert "port" not in schemas["CreateTaskRequest"].get("required", [])
    text = json.dumps(document)
    assert "rpc_exec_download_task_file" not in text
    assert "DownloadTaskFileRequest" not in schemas and "TaskFileContent" not in schemas
    for ref in set(_refs(document)):
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert set(document["components"]["securitySchemes"]) == {"operatorToken", "clientToken"}

    for headers in (gateway.operator(), gateway.client()):
        status, body = await post(
            gateway, "/rpc_exec_download_task_file",
            {"task_id": "x", "filename": "server.py", "operator": True}, headers=headers)
        assert status == 404, body
    status, schemas_by_rpc = await get(gateway, "/api/schemas")
    assert status == 200 and set(schemas_by_rpc) == set(EXPOSED_RPCS)


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


async def test_rest_flow_files_and_downloads(gateway: Gateway, cloud: Cloud) -> None:
    op = gateway.operator()
    status, task = await post(gateway, "/api/tasks",
                              {"task_id": "rest", "port": 8300, "tags": ["a"],
                               "client_arguments": {"epochs": 1}}, headers=op)
    assert (status, task["id"], task["status"]) == (200, "rest", "created"), task
    status, body = await post(gateway, "/api/tasks", {"port": 8301, "selection_criteria": "x >"},
                              headers=op)
    assert status == 400 and body["errors"][0]["field"] == "selection_criteria"
    status, listing = await get(gateway, "/api/tasks?status=created&limit=5&offset=0",
                                headers=op)
    assert (status, listing["total"], listing["tasks"][0]["id"]) == (200, 1, "rest")
    status, body = await get(gateway, "/api/tasks?limit=lots", headers=op)
    assert status == 400 and body["errors"][0]["field"] == "limit"
    status, body = await get(gateway, "/api/tasks/rest", headers=op)
    assert (status, body["tags"]) == (200, ["a"])
    status, body = await get(gateway, "/api/tasks/ghost", headers=op)
    assert status == 404
    status, body = await request(gateway, "PATCH", "/api/tasks/rest", op,
                                 {"tags": ["b"], "port": 8302})
    assert (status, body["tags"], body["port"]) == (200, ["b"], 8302)
    status, body = await request(gateway, "PATCH", "/api/tasks/rest", op, {"owner": "me"})
    assert status == 400 and body["errors"][0]["field"] == "owner"
    for raw in (b"{bad", b"[1]", b'"x"'):
        async with gateway.http.patch(f"{gateway.url}/api/tasks/rest", data=raw,
                                      headers=op) as response:
            text = await response.text()
            assert response.status == 400 and "JSON" in json.loads(text)["exception"], text
            no_traceback(text)

    model = bytes(range(256)) * 4
    data, headers = multipart([("files", "server.py", STATS_THEN_SLEEP.encode()),
                               ("files", "client.py", model)])
    status, body = await post_raw(gateway, "/api/tasks/rest/files", data, {**op, **headers})
    assert status == 200, body
    assert [f["name"] for f in body["files"]] == ["server.py", "client.py"]
    assert body["files"][1]["sha256"] == hashlib.sha256(model).hexdigest()

    status, body = await post(gateway, "/api/tasks/rest/start", None, headers=op)
    assert (status, body["status"]) == (200, "running"), body
    status, body = await post(gateway, "/api/tasks/rest/start", {}, headers=op)
    assert status == 409
    deadline = time.monotonic() + 20
    while True:
        status, metrics = await get(gateway, "/api/tasks/rest/metrics", headers=op)
        assert status == 200, metrics
        if len(metrics["rounds"]) == 3:
            break
        assert time.monotonic() < deadline, metrics
        await asyncio.sleep(0.05)
    assert [r["round"] for r in metrics["rounds"]] == [1, 2, 3]
    assert metrics["rounds"][2]["metrics"] == pytest.approx({"loss": 1 / 3, "accuracy": 0.6})
    status, again = await get(gateway, "/api/tasks/rest/metrics?run=1", headers=op)
    assert (status, again["run"], len(again["rounds"])) == (200, 1, 3)

    # A client registers, is offered the task and downloads its file with the credential.
    status, body = await post(gateway, "/rpc_exec_update_user_info",
                              {"user_id": "dev-9", "sensors": ["camera"]},
                              headers=gateway.client())
    assert status == 200
    status, offers = await post(gateway, "/rpc_exec_client_requesting_task",
                                {"client_id": "dev-9"}, headers=gateway.client())
    assert status == 200 and [o["task_id"] for o in offers["tasks"]] == ["rest"]
    credential = offers["tasks"][0]["download_credential"]
    assert offers["tasks"][0]["client_arguments"] == {"epochs": 1}
    await _check_downloads(gateway, credential, model)

    status, clients = await get(gateway, "/api/clients?limit=10", headers=op)
    assert (status, clients["total"], clients["users"][0]["id"]) == (200, 1, "dev-9")
    status, body = await get(gateway, "/api/clients/dev-9", headers=op)
    assert (status, body["sensors"]) == (200, ["camera"])
    status, body = await get(gateway, "/api/clients/nobody", headers=op)
    assert status == 404

    status, body = await post(gateway, "/api/tasks/rest/stop", None, headers=op)
    assert (status, body["status"]) == (200, "stopped"), body
    status, body = await post(gateway, "/api/tasks/rest/stop", None, headers=op)
    assert status == 409
    status, body = await get(gateway, "/api/tasks/rest", headers=op)
    assert (body["status"], body["status_reason"]) == ("stopped", "stopped by the operator")


async def _check_downloads(gateway: Gateway, credential: str, model: bytes) -> None:
    url = f"{gateway.url}/download/rest/client.py"
    expected = hashlib.sha256(model).hexdigest()
    device = {**gateway.client(), "X-Client-Id": "dev-9"}
    for headers in (gateway.operator(), {**device, "X-Download-Credential": credential}):
        async with gateway.http.get(url, headers=headers) as response:
            assert response.status == 200
            content = await response.read()
            assert content == model
            assert response.headers["X-Content-SHA256"] == expected
            assert hashlib.sha256(content).hexdigest() == expected
    refused = [
        ("/download/rest/client.py", device, 401),
        ("/download/rest/client.py", {**device, "X-Download-Credential": "0" * 64}, 401),
        ("/download/rest/client.py", {**device, "X-Download-Credential": credential[:-1]}, 401),
        # the credential is dev-9's own: worth nothing to another device
        ("/download/rest/client.py",
         {**device, "X-Client-Id": "dev-8", "X-Download-Credential": credential}, 401),
        ("/download/ghost/client.py", gateway.operator(), 404),
        ("/download/ghost/client.py", {**device, "X-Download-Credential": credential}, 404),
        ("/download/rest/missing.py", gateway.operator(), 404),
    ]
    for path, headers, expected_status in refused:
        status, body = await request(gateway, "GET", path, headers)
        assert status == expected_status, (path, body)
        assert body["exception"]
    for path in ("/download/rest/..%2F..%2Fetc%2Fpasswd",
                 "/download/rest/..%2Ftask_rest%2Fclient.py",
                 "/download/rest/%2Fetc%2Fpasswd", "/download/rest/..",
                 "/download/..%2F..%2F..%2Fetc/passwd"):
        for headers in (gateway.operator(),
                        {**gateway.client(), "X-Download-Credential": credential}):
            async with gateway.http.get(f"{gateway.url}{path}", headers=headers) as response:
                content = await response.read()
                assert response.status in (400, 404), (path, response.status)
                assert b"root:" not in content and content != model
                no_traceback(content.decode(errors="replace"))


async def test_upload_files_route(gateway: Gateway, cloud: Cloud) -> None:
    op = gateway.operator()
    status, _ = await post(gateway, "/api/tasks", {"task_id": "up", "port": 8400}, headers=op)
    assert status == 200
    data, headers = multipart([("task_id", None, b"up"), ("files", "server.py", b"print(1)\n"),
                               ("files", "notes.txt", b"hello")])
    status, body = await post_raw(gateway, "/upload_files", data, {**op, **headers})
    assert status == 200, body
    assert body["task_id"] == "up"
    assert [(f["name"], f["size"]) for f in body["files"]] == [("server.py", 9), ("notes.txt", 5)]
    assert body["files"][0]["sha256"] == hashlib.sha256(b"print(1)\n").hexdigest()

    deep = "/".join(["d"] * 9) + "/x.py"
    # (aiohttp strips a leading '/' from multipart file names; the RPC route refuses it below)
    for filename in ("../x.py", "a/../b.py", "a//b.py", "a/.env", "..", "..\\\\x.py", ".env",
                     "", deep, "server.py/inner.py"):
        data, headers = multipart([("task_id", None, b"up"), ("files", filename, b"x")])
        status, body = await post_raw(gateway, "/upload_files", data, {**op, **headers})
        assert status == 400, (filename, body)
        assert body["exception"]
    for parts in ([("files", "a.py", b"x")],
                  [("task_id", None, b"up")],
                  [("task_id", None, b"up"), ("other", None, b"x")]):
        data, headers = multipart(parts)
        status, body = await post_raw(gateway, "/upload_files", data, {**op, **headers})
        assert status == 400, (parts, body)
    data, headers = multipart([("task_id", None, b"ghost"), ("files", "a.py", b"x")])
    status, body = await post_raw(gateway, "/upload_files", data, {**op, **headers})
    assert status == 404, body
    data, headers = multipart([("task_id", None, b"../up"), ("files", "a.py", b"x")])
    status, body = await post_raw(gateway, "/upload_files", data, {**op, **headers})
    assert status == 400, body
    status, body = await post(gateway, "/rpc_exec_upload_task_file",
                              {"task_id": "up", "filename": "/etc/passwd", "content": "eA=="},
                              headers=op)
    assert status == 400 and "absolute" in body["exception"] + str(body.get("errors")), body
    status, body = await post(gateway, "/upload_files", {"task_id": "up"}, headers=op)
    assert status == 400 and "multipart" in body["exception"]

    data, headers = multipart([("task_id", None, b"up"), ("files", "app/task.py", b"y = 2\n")])
    status, body = await post_raw(gateway, "/upload_files", data, {**op, **headers})
    assert status == 200, body
    assert [f["name"] for f in body["files"]] == ["app/task.py"]

    status, task = await get(gateway, "/api/tasks/up", headers=op)
    assert sorted(f["name"] for f in task["files"]) == ["app/task.py", "notes.txt", "server.py"]
    assert task["kind"] == "script"
    root = cloud.task_manager.storage.root
    assert sorted(p.name for p in (root / "task_up").iterdir()) == ["app", "notes.txt",
                                                                    "server.py"]
    assert (root / "task_up" / "app" / "task.py").read_bytes() == b"y = 2\n"
    assert sorted(p.name for p in root.iterdir()) == ["task_up"]
    assert not (root.parent / "x.py").exists()


async def test_cors_allows_configured_origins_only(make_settings: Callable[..., Settings],
                                                  tmp_path: Path) -> None:
    config = make_settings(AGATA_SERVER_GATEWAY_CORS_ORIGINS="http://ok.example")
    async with serve(config, tmp_path, with_cloud=False) as gateway:
        url = f"{gateway.url}/health"
        async with gateway.http.get(url, headers={"Origin": "http://ok.example"}) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "http://ok.example"
        for origin in ("http://evil.example", "http://ok.example.evil.example", "null"):
            async with gateway.http.get(url, headers={"Origin": origin}) as response:
                assert response.status == 200
                assert "Access-Control-Allow-Origin" not in response.headers
        async with gateway.http.get(url) as response:
            assert "Access-Control-Allow-Origin" not in response.headers

        preflight = {"Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "Authorization, Content-Type"}
        async with gateway.http.options(f"{gateway.url}/rpc_exec_create_task",
                                        headers={"Origin": "http://ok.example",
                                                 **preflight}) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "http://ok.example"
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        async with gateway.http.options(f"{gateway.url}/rpc_exec_create_task",
                                        headers={"Origin": "http://evil.example",
                                                 **preflight}) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
            body = await response.json()
            assert "not allowed" in body["exception"]

        # Errors carry the header too, so a browser page can read why its request failed.
        async with gateway.http.post(f"{gateway.url}/rpc_exec_create_task", json={},
                                     headers={"Origin": "http://ok.example"}) as response:
            assert response.status == 401
            assert response.headers["Access-Control-Allow-Origin"] == "http://ok.example"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "authentication required" in (await response.json())["exception"]
        async with gateway.http.post(f"{gateway.url}/rpc_exec_create_task", json={},
                                     headers={"Origin": "http://evil.example"}) as response:
            assert response.status == 401
            assert "Access-Control-Allow-Origin" not in response.headers

        # No service behind this gateway: a JSON 503, with the CORS header as well.
        status, body = await request(gateway, "POST", "/rpc_exec_list_users",
                                     {**gateway.operator(), "Origin": "http://ok.example"}, {})
        assert status == 503 and "rpc_exec_list_users" in body["exception"], body


async def test_body_over_the_limit_is_413_json(make_settings: Callable[..., Settings],
                                               tmp_path: Path) -> None:
    config = make_settings(AGATA_SERVER_GATEWAY_MAX_BODY_MB="0.01")
    async with serve(config, tmp_path) as gateway:
        status, body = await post(gateway, "/rpc_exec_update_user_info",
                                  {"user_id": "small", "data_qnt": 1},
                                  headers=gateway.client())
        assert status == 200, body
        big = {"user_id": "big", "sensors": ["s" * 60] * 200}
        for path, headers in (("/rpc_exec_update_user_info", gateway.client()),
                              ("/api/tasks", gateway.operator())):
            status, body = await request(gateway, "POST", path, headers, big)
            assert status == 413, (path, body)
            assert "too large" in body["exception"]
        status, body = await post(gateway, "/rpc_exec_get_user_info", {"user_id": "big"},
                                  headers=gateway.operator())
        assert status == 404


async def test_without_an_api_token_operator_routes_fail_closed(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    config = make_settings(AGATA_SERVER_GATEWAY_API_TOKEN="")
    async with serve(config, tmp_path, with_cloud=False) as gateway:
        for headers in (None, {"Authorization": "Bearer "}, {"Authorization": "Bearer"},
                        {"Authorization": "Bearer  "}, {"Authorization": ""},
                        {"Authorization": f"Bearer {OPERATOR_TOKEN}"},
                        {"Authorization": "Bearer anything"},
                        {"Authorization": f"Bearer {CLIENT_TOKEN}"}):
            for method, path in (("POST", "/rpc_exec_create_task"), ("GET", "/api/tasks"),
                                 ("POST", "/rpc_exec_list_users"), ("POST", "/upload_files"),
                                 ("GET", "/api/clients")):
                status, body = await request(gateway, method, path, headers,
                                             {"port": 1} if method == "POST" else None)
                assert status == 401, (headers, path, body)
        status, body = await get(gateway, "/health")
        assert status == 200


async def test_task_event_feed_resets_a_cursor_from_another_epoch(gateway) -> None:
    status, first = await gateway.get("/api/client/task_events?after=0&timeout=0",
                                      headers=gateway.client())
    assert status == 200 and first["reset"] is False and first["epoch"]
    status, same = await gateway.get(
        f"/api/client/task_events?after=0&timeout=0&epoch={first['epoch']}",
        headers=gateway.client())
    assert same["reset"] is False
    status, other = await gateway.get(
        "/api/client/task_events?after=0&timeout=0&epoch=from-before-a-restart",
        headers=gateway.client())
    assert other["reset"] is True and other["epoch"] == first["epoch"]


@pytest.mark.parametrize("query", [
    "timeout=nan", "timeout=inf", "timeout=-1", "timeout=56", "timeout=1e400",
    "after=-1", "after=99999999999999999999999", "after=x", "timeout=soon"])
async def test_a_bad_long_poll_is_refused_and_the_loop_keeps_its_timers(gateway, query) -> None:
    status, body = await gateway.get(f"/api/client/task_events?{query}",
                                     headers=gateway.client())
    assert status == 400, body
    assert "after" in str(body) or "timeout" in str(body)
    # the event loop's timers still fire: a bounded poll returns on time
    status, body = await gateway.get("/api/client/task_events?after=0&timeout=0.2",
                                     headers=gateway.client())
    assert status == 200


@pytest.mark.parametrize("path", [
    "/api/tasks?offset=99999999999999999999", "/api/clients?offset=1000000001",
    "/api/tasks/t1/metrics?run=99999999999999999999"])
async def test_huge_numbers_are_a_400_not_a_database_error(gateway, path) -> None:
    status, body = await gateway.get(path, headers=gateway.operator())
    assert status == 400, body


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


async def test_an_archive_replaces_the_task_files(gateway: Gateway, cloud: Cloud) -> None:
    op = gateway.operator()
    status, _ = await post(gateway, "/api/tasks", {"task_id": "zap", "port": 8401}, headers=op)
    assert status == 200
    data, headers = multipart([("task_id", None, b"zap"), ("files", "server.py", b"old\n")])
    status, body = await post_raw(gateway, "/upload_files", data, {**op, **headers})
    assert status == 200, body

    app = zipped({"myapp/pyproject.toml": b"[project]\n", "myapp/pkg/app.py": b"a = 1\n",
                  "myapp/.git/HEAD": b"ref"})
    data, headers = multipart([("task_id", None, b"zap"), ("archive", "myapp.zip", app)])
    status, body = await post_raw(gateway, "/upload_files", data, {**op, **headers})
    assert status == 200, body
    assert [f["name"] for f in body["files"]] == ["pkg/app.py", "pyproject.toml"]
    assert body["skipped"] == ["myapp/.git/HEAD"]
    status, task = await get(gateway, "/api/tasks/zap", headers=op)
    assert task["kind"] == "flower_app"
    assert sorted(f["name"] for f in task["files"]) == ["pkg/app.py", "pyproject.toml"]
    folder = cloud.task_manager.storage.root / "task_zap"
    assert not (folder / "server.py").exists()
    assert (folder / "pkg" / "app.py").read_bytes() == b"a = 1\n"

    evil = zipped({"../../escape.py": b"x"})
    data, headers = multipart([("task_id", None, b"zap"), ("archive", "evil.zip", evil)])
    status, body = await post_raw(gateway, "/upload_files", data, {**op, **headers})
    assert status == 400 and "evil.zip" in body["exception"] and "'..'" in body["exception"]
    data, headers = multipart([("task_id", None, b"zap"), ("archive", "junk.zip", b"junk")])
    status, body = await post_raw(gateway, "/upload_files", data, {**op, **headers})
    assert status == 400 and "not a zip archive" in body["exception"]
    status, task = await get(gateway, "/api/tasks/zap", headers=op)
    assert sorted(f["name"] for f in task["files"]) == ["pkg/app.py", "pyproject.toml"]
    assert not (cloud.task_manager.storage.root.parent / "escape.py").exists()


async def test_malformed_or_oversized_forms_are_a_400_and_store_nothing(
        gateway: Gateway, cloud: Cloud) -> None:
    op = gateway.operator()
    status, _ = await post(gateway, "/api/tasks", {"task_id": "forms", "port": 8402}, headers=op)
    assert status == 200
    good, headers = multipart([("task_id", None, b"forms"), ("files", "a.py", b"a = 1\n"),
                               ("files", "b.py", b"b = 2\n")])
    limit = cloud.settings.cloud_task_manager.max_files_per_task
    too_many, _ = multipart([("task_id", None, b"forms")]
                            + [("files", f"f{i}.py", b"x\n") for i in range(limit + 1)])
    bad_path, _ = multipart([("task_id", None, b"forms"), ("files", "a.py", b"a\n"),
                             ("files", "../b.py", b"b\n")])
    cases = [
        (good[: len(good) // 2], headers, "malformed"),               # truncated body
        (good, {"Content-Type": "multipart/form-data"}, "malformed"),  # no boundary
        (good.replace(b"Content-Type: application", b"Content-Type: appl\x00ication", 1),
         headers, ""),                                                # NUL in a part header
        (too_many, headers, f"more than {limit} files"),
        (bad_path, headers, "'..'"),
    ]
    for data, sent_headers, says in cases:
        status, body = await post_raw(gateway, "/upload_files", data, {**op, **sent_headers})
        assert status == 400, (says, body)
        assert says in body["exception"], body
        status, task = await get(gateway, "/api/tasks/forms", headers=op)
        assert task["files"] == [], (says, task["files"])
    status, body = await post_raw(gateway, "/upload_files", good, {**op, **headers})
    assert status == 200 and [f["name"] for f in body["files"]] == ["a.py", "b.py"]
    # the whole form is read before anything is stored, so task_id may come last
    late, headers = multipart([("files", "c.py", b"c\n"), ("task_id", None, b"forms")])
    status, body = await post_raw(gateway, "/upload_files", late, {**op, **headers})
    assert status == 200 and [f["name"] for f in body["files"]] == ["c.py"], body


async def test_a_form_over_max_body_mb_is_refused_before_anything_is_stored(
        make_settings, tmp_path) -> None:
    settings = make_settings(AGATA_SERVER_GATEWAY_MAX_BODY_MB="0.01")
    cloud = start_cloud(settings, f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = settings.server_gateway.port
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with ClientSession() as http:
                gateway = Gateway(f"http://127.0.0.1:{port}", http)
                op = gateway.operator()
                status, _ = await post(gateway, "/api/tasks", {"task_id": "big", "port": 8403},
                                       headers=op)
                assert status == 200
                data, headers = multipart([("task_id", None, b"big"),
                                           ("files", "a.py", b"a" * 6000),
                                           ("files", "b.py", b"b" * 6000)])
                status, body = await post_raw(gateway, "/upload_files", data, {**op, **headers})
                assert status == 400 and "max_body_mb" in body["exception"], body
                status, task = await get(gateway, "/api/tasks/big", headers=op)
                assert task["files"] == []
        finally:
            await runner.cleanup()
    finally:
        cloud.stop()
