"""Device identity end to end: real devices join with one-time tokens, each speaks only for
itself, a revoked device is refused at once, joining is rate-limited (real processes)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

from agata_cli.client import ApiError
from agata_common.device_identity import load_secret
from experiments.stack import Api, Stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = Stack(tmp_path / "stack", client_count=2,
                    client_params={"request_interval": "1"},
                    cloud_overrides={"AGATA_SERVER_GATEWAY_JOIN_RATE_PER_MINUTE": "6"})
    try:
        yield started
    finally:
        started.stop()


def device_api(stack: Stack, api: Api, client_id: str) -> Api:
    secret = load_secret(stack.out_dir / client_id, client_id)
    assert secret is not None, f"{client_id} kept no credential"
    return Api(api.url, f"{client_id}:{secret}")


def status_of(call) -> int:
    try:
        call()
    except ApiError as error:
        return error.status
    return 200


def test_each_device_speaks_only_for_itself(stack: Stack) -> None:
    api = stack.start_cloud()
    stack.start_clients()
    alice, bob = device_api(stack, api, "device-0"), device_api(stack, api, "device-1")
    credential = stack.out_dir / "device-0" / "secrets" / "device_credential.json"
    assert credential.stat().st_mode & 0o777 == 0o600

    # its own calls work
    assert status_of(lambda: alice.post("/rpc_exec_client_requesting_task",
                                        {"client_id": "device-0"})) == 200
    assert status_of(lambda: alice.post("/rpc_exec_update_user_info",
                                        {"user_id": "device-0", "data_qnt": 5})) == 200
    # another device's are 403, whatever the route
    for path, body in [
        ("/rpc_exec_client_requesting_task", {"client_id": "device-1"}),
        ("/rpc_exec_update_user_info", {"user_id": "device-1", "sensors": []}),
        ("/rpc_exec_get_user_info", {"user_id": "device-1"}),
        ("/rpc_exec_report_client_task", {"task_id": "t", "client_id": "device-1",
                                          "status": "failed", "reason": "framed"}),
        ("/rpc_exec_upload_result", {"task_id": "t", "run": 1, "client_id": "device-1",
                                     "name": "x.txt", "content": base64.b64encode(b"x").decode(),
                                     "credential": "c" * 64}),
    ]:
        with pytest.raises(ApiError) as refused:
            alice.post(path, body)
        assert refused.value.status == 403, (path, refused.value)
        assert "device-0" in str(refused.value), refused.value
    # what the gateway cannot read as one JSON object is refused before any service sees it
    for raw in (b"[1]", b'"device-1"', b"{" * 3):
        with pytest.raises(ApiError) as malformed:
            alice._request("POST", "/rpc_exec_client_requesting_task", data=raw,
                           content_type="application/json")
        assert malformed.value.status == 400
    # no shared token, no made-up device, no operator route for a device
    for token in ("client-test-token", "device-9:" + "a" * 43, "device-0:" + "b" * 43):
        assert status_of(lambda t=token: Api(api.url, t).post(
            "/rpc_exec_client_requesting_task", {"client_id": "device-0"})) == 401
    assert status_of(lambda: alice.get("/api/clients")) == 401
    assert status_of(lambda: alice.post("/rpc_exec_enroll_client", {})) == 401

    # revocation takes effect at once, through the CLI
    assert status_of(lambda: bob.post("/rpc_exec_client_requesting_task",
                                      {"client_id": "device-1"})) == 200
    revoked = subprocess.run(
        [sys.executable, "-m", "agata_cli", "--url", api.url, "--token-env", "TEST_TOKEN",
         "clients", "revoke", "device-1"],
        env={**stack.cloud_env, "TEST_TOKEN": api.token or ""}, capture_output=True,
        text=True, timeout=60, check=False)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
    wait_for(lambda: status_of(lambda: bob.post("/rpc_exec_client_requesting_task",
                                                {"client_id": "device-1"})) == 401,
             1.0, "the revoked device to be refused")
    listed = {u["id"]: u for u in api.get("/api/clients")["users"]}
    assert listed["device-1"]["revoked"] and listed["device-0"]["enrolled"]
    assert not listed["device-0"]["revoked"]


def test_join_tokens_are_one_time_and_joining_is_rate_limited(stack: Stack) -> None:
    api = stack.start_cloud()
    anyone = Api(api.url, None)
    enrolled = subprocess.run(
        [sys.executable, "-m", "agata_cli", "--url", api.url, "--token-env", "TEST_TOKEN",
         "--json", "clients", "enroll", "lab-7", "--ttl", "600"],
        env={**stack.cloud_env, "TEST_TOKEN": api.token or ""}, capture_output=True,
        text=True, timeout=60, check=False)
    assert enrolled.returncode == 0, enrolled.stderr
    token = json.loads(enrolled.stdout)["join_token"]

    def join(client_id: str, join_token: str = token) -> int:
        return status_of(lambda: anyone._request(
            "POST", "/api/client/join", data=json.dumps(
                {"join_token": join_token, "client_id": client_id}).encode(),
            content_type="application/json", auth=False))

    assert join("lab-8") == 401          # the token names another device
    assert join("lab-7") == 200          # spent here
    assert join("lab-7") == 401          # and never again
    assert join("lab-7", "z" * 43) == 401
    # a token naming no device never takes an id that exists (revoked or not)
    api.post("/api/clients/lab-7/revoke")
    unnamed = api.enroll()["join_token"]
    assert join("lab-7", unnamed) == 409
    assert join("lab-9", unnamed) == 200
    statuses = [join("lab-7", "z" * 43) for _ in range(4)]
    assert statuses[-1] == 429, statuses  # 6 attempts a minute from one address
    assert api.get("/api/clients/lab-7")["enrolled"]
