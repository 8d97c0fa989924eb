"""Client RPCs on the client broker, forwarded to the real cloud gateway and services."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from aiohttp import web
from cg_helpers import closed_port_url
from support import Cloud, Gateway, free_port

from agata_contracts.tasks import (
    CLIENT_REQUESTING_TASK,
    DOWNLOAD_TASK_FILE,
    REPORT_CLIENT_TASK,
)
from agata_contracts.users import UPDATE_USER_INFO
from client_gateway.http import CloudGatewayHttp
from microservice_interconnect import (
    BadRequest,
    NotFound,
    RpcError,
    RpcTimeout,
    ServiceUnavailable,
    Unauthorized,
)


async def test_queries_are_forwarded_end_to_end(gateway: Gateway, cloud: Cloud, start_cg,
                                                device) -> None:
    await asyncio.to_thread(start_cg, gateway.url)
    client = device.runtime.client

    info = await asyncio.to_thread(client.call, UPDATE_USER_INFO,
                                   {"user_id": "dev-1", "data_qnt": 40, "sensors": ["camera"]})
    assert (info.id, info.data_qnt, info.sensors) == ("dev-1", 40, ["camera"])

    offers = await asyncio.to_thread(client.call, CLIENT_REQUESTING_TASK, {"client_id": "dev-1"})
    assert offers.tasks == []

    with pytest.raises(NotFound) as info_missing:
        await asyncio.to_thread(client.call, CLIENT_REQUESTING_TASK, {"client_id": "nobody"})
    assert "'nobody' is not registered" in info_missing.value.message

    with pytest.raises(NotFound) as task_missing:
        await asyncio.to_thread(client.call, REPORT_CLIENT_TASK,
                                {"task_id": "ghost", "client_id": "dev-1", "status": "failed"})
    assert "ghost" in task_missing.value.message


async def test_query_fails_fast_while_the_cloud_is_unreachable(start_cg, device) -> None:
    url = closed_port_url()
    await asyncio.to_thread(start_cg, url)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as info:
        await asyncio.to_thread(device.runtime.client.call, CLIENT_REQUESTING_TASK,
                                {"client_id": "dev-1"})
    # a 503 well inside the 10 s RPC timeout: it did not wait for the cloud
    assert time.monotonic() - started < 8
    assert f"cloud gateway unreachable at {url}" in info.value.message


# -- the HTTP client against a small fake gateway ----------------------------------------------


async def _fake_gateway() -> tuple[web.AppRunner, str, list[str]]:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        name = request.match_info["name"]
        if name == "ok":
            return web.json_response({"echo": (await request.json())["x"]})
        if name == "bad":
            return web.json_response({"exception": "invalid request: x: too big",
                                      "errors": [{"field": "x", "message": "too big"}]},
                                     status=400)
        if name == "html":
            return web.Response(status=502, text="<html>Bad Gateway</html>",
                                content_type="text/html")
        if name == "slow":
            await asyncio.sleep(4)
        return web.Response(status=500, text="")

    app = web.Application()
    app.router.add_post("/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}", seen


async def test_http_errors_become_rpc_errors() -> None:
    runner, url, seen = await _fake_gateway()
    http = CloudGatewayHttp(url, "secret", timeout_s=0.5)
    try:
        assert await asyncio.to_thread(http.post_rpc, "ok", b'{"x": 7}') == b'{"echo": 7}'
        # the same thread reuses its connection
        assert await asyncio.to_thread(http.post_rpc, "ok", b'{"x": 8}') == b'{"echo": 8}'
        assert seen == ["Bearer secret", "Bearer secret"]

        with pytest.raises(BadRequest) as bad:
            await asyncio.to_thread(http.post_rpc, "bad", b"{}")
        assert bad.value.errors == [{"field": "x", "message": "too big"}]

        with pytest.raises(RpcError) as html:
            await asyncio.to_thread(http.post_rpc, "html", b"{}")
        assert html.value.status_code == 502 and "Bad Gateway" in html.value.message

        # the answer would come after 4 s: a timeout (not the 500) shows the 0.5 s limit held
        with pytest.raises(RpcTimeout):
            await asyncio.to_thread(http.post_rpc, "slow", b"{}")
    finally:
        http.close()
        await runner.cleanup()


async def test_http_empty_error_body_and_closed_client() -> None:
    runner, url, _seen = await _fake_gateway()
    http = CloudGatewayHttp(url, "secret", timeout_s=2.0)
    try:
        assert await asyncio.to_thread(_status_of, http, "anything-else") == 500
    finally:
        http.close()
        await runner.cleanup()
    with pytest.raises(ServiceUnavailable):
        await asyncio.to_thread(http.post_rpc, "ok", b'{"x": 1}')


def _status_of(http: CloudGatewayHttp, name: str) -> int:
    try:
        http.post_rpc(name, b"{}")
    except RpcError as exc:
        return exc.status_code
    return 200


def test_long_poll_is_cut_by_close() -> None:
    """A long poll in progress ends at once when the client is closed (shutdown path)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    http = CloudGatewayHttp(url, "secret", timeout_s=10.0)
    outcome: list[BaseException] = []

    def poll() -> None:
        try:
            http.task_events(0, 25)
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    thread = threading.Thread(target=poll)
    thread.start()
    accepted, _ = listener.accept()
    try:
        request = b""
        while b"\r\n\r\n" not in request:  # the long poll is in flight
            request += accepted.recv(65536)
        started = time.monotonic()
        http.close()
        thread.join(9)
        # well before the 10 s timeout or the 25 s poll: closing ended it
        assert not thread.is_alive() and time.monotonic() - started < 8
        assert isinstance(outcome[0], ServiceUnavailable)
    finally:
        accepted.close()
        listener.close()


def test_download_requires_a_credential(start_cg, device) -> None:
    start_cg(closed_port_url())
    with pytest.raises(Unauthorized):
        device.runtime.client.call(DOWNLOAD_TASK_FILE, {"task_id": "t1", "filename": "a.py"})


def test_a_kept_alive_connection_closed_by_the_server_is_replaced() -> None:
    """The server drops idle connections (without saying so): the request goes out again."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    served: list[int] = []
    closed = threading.Event()

    def serve() -> None:
        for number in (1, 2):
            connection, _ = listener.accept()
            with connection:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(65536)
                body = str(number).encode()
                served.append(number)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            closed.set()  # closed without saying so: the client still thinks it is alive

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    http = CloudGatewayHttp(url, "secret", timeout_s=2.0)
    try:
        assert http.post_rpc("x", b"{}") == b"1"
        assert closed.wait(5)
        assert http.post_rpc("x", b"{}") == b"2"
        assert served == [1, 2]
    finally:
        http.close()
        listener.close()
