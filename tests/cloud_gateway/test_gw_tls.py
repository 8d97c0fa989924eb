"""HTTPS at the gateway (``tls_cert``/``tls_key``) and verification by the device's client
gateway (``cloud_ca_file``) and the CLI (``AGATA_CA_FILE``): a real round trip on real
processes, with certificates made here by ``openssl``; a wrong CA is refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from certificates import make_ca, make_server_cert
from support import OPERATOR_TOKEN, REPO_ROOT, isolated_environ, wait_for

from client_gateway.http import CloudGatewayHttp
from experiments.processes import ProcessGroup
from microservice_interconnect import RpcError, ServiceUnavailable

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")


@pytest.fixture
def tls_cloud(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """The user manager and an HTTPS gateway; (https URL, the right CA, a wrong CA)."""
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = make_ca(certs, "agata-ca")
    wrong = make_ca(certs, "other-ca")
    cert, key = make_server_cert(certs, "agata-ca")
    environ = {**os.environ, **isolated_environ(
        tmp_path, AGATA_SERVER_GATEWAY_TLS_CERT=str(cert), AGATA_SERVER_GATEWAY_TLS_KEY=str(key))}
    url = f"https://127.0.0.1:{environ['AGATA_SERVER_GATEWAY_PORT']}"
    processes = ProcessGroup(environ, tmp_path / "logs")
    try:
        for module in ("user_manager", "cloud_gateway"):
            processes.start(module, module)
        probe = CloudGatewayHttp(url, "", timeout_s=5, ca_file=str(ca))
        wait_for(probe.healthy, 30, "the HTTPS gateway to come up")
        yield url, ca, wrong
    finally:
        processes.stop_all()


def test_a_device_joins_and_calls_over_https_and_a_wrong_ca_is_refused(tls_cloud) -> None:
    url, ca, wrong = tls_cloud
    operator = CloudGatewayHttp(url, OPERATOR_TOKEN, timeout_s=10, ca_file=str(ca))

    def enroll() -> dict | None:
        try:
            return json.loads(operator.post_rpc(
                "rpc_exec_enroll_client", json.dumps({"client_id": "tls-dev"}).encode()))
        except ServiceUnavailable:  # the user manager is still declaring its queues
            return None

    enrollment = wait_for(enroll, 30, "the user manager behind the HTTPS gateway")
    joining = CloudGatewayHttp(url, "", timeout_s=10, ca_file=str(ca))
    secret = joining.join(enrollment["join_token"], "tls-dev")
    device = CloudGatewayHttp(url, f"tls-dev:{secret}", timeout_s=10, ca_file=str(ca))
    info = json.loads(device.post_rpc("rpc_exec_update_user_info",
                                      json.dumps({"user_id": "tls-dev", "data_qnt": 3}).encode()))
    assert info["id"] == "tls-dev" and info["data_qnt"] == 3

    untrusting = CloudGatewayHttp(url, f"tls-dev:{secret}", timeout_s=5, ca_file=str(wrong))
    assert not untrusting.healthy()
    with pytest.raises(RpcError) as refused:
        untrusting.post_rpc("rpc_exec_get_user_info", b'{"user_id":"tls-dev"}')
    assert "not trusted" in refused.value.message and "cloud_ca_file" in refused.value.message
    # plain HTTP to the HTTPS port gets no answer it could use
    plain = CloudGatewayHttp(url.replace("https:", "http:"), OPERATOR_TOKEN, timeout_s=5)
    with pytest.raises((ServiceUnavailable, RpcError)):
        plain.post_rpc("rpc_exec_list_users", b"{}")

    # the CLI verifies with AGATA_CA_FILE, and refuses without it (a self-signed CA)
    environ = {**os.environ, "AGATA_API_TOKEN": OPERATOR_TOKEN}
    command = [sys.executable, "-m", "agata_cli", "--url", url, "clients", "show", "tls-dev"]
    trusted = subprocess.run(command, env={**environ, "AGATA_CA_FILE": str(ca)}, cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=60, check=False)
    assert trusted.returncode == 0 and "tls-dev" in trusted.stdout, trusted.stderr
    refused_cli = subprocess.run(command, env=environ, cwd=REPO_ROOT, capture_output=True,
                                 text=True, timeout=60, check=False)
    assert refused_cli.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in refused_cli.stderr or "certificate" in refused_cli.stderr
