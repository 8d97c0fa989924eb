"""``python -m client_gateway``: refuses to start without a token, stops cleanly on signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cg_helpers import Broker, closed_port_url
from support import CLIENT_TOKEN, REPO_ROOT, isolated_environ

from agata_common.config import load_settings
from agata_common.runtime import device_runtime
from agata_contracts.queues import outbox_queue
from agata_contracts.tasks import CLIENT_REQUESTING_TASK
from agata_contracts.tasks import RPCS as TASK_RPCS
from agata_contracts.users import RPCS as USER_RPCS
from microservice_interconnect import RpcTimeout, ServiceUnavailable


def test_a_device_without_a_credential_is_a_configuration_error(tmp_path: Path) -> None:
    environ = {**os.environ, **isolated_environ(tmp_path), "AGATA_CLIENT_PARAMS_CLIENT_TOKEN": ""}
    result = subprocess.run([sys.executable, "-m", "client_gateway"], cwd=REPO_ROOT,
                            env=environ, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "join_token" in result.stderr and "AGATA_CLIENT_PARAMS_JOIN_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_process_serves_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    url = closed_port_url()
    overrides = isolated_environ(tmp_path, AGATA_CLIENT_PARAMS_CLIENT_TOKEN=CLIENT_TOKEN,
                                 AGATA_CLIENT_PARAMS_CLOUD_URL=url)
    settings = load_settings(environ=overrides)
    log = tmp_path / "client_gateway.log"
    process = subprocess.Popen([sys.executable, "-m", "client_gateway"], cwd=REPO_ROOT,
                               env={**os.environ, **overrides}, stdout=log.open("wb"),
                               stderr=subprocess.STDOUT)
    device = device_runtime("test_device", settings).start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                device.client.call(CLIENT_REQUESTING_TASK, {"client_id": "dev-p"}, timeout=2)
            except ServiceUnavailable as exc:
                if "cloud gateway unreachable" in exc.message:
                    break
            except RpcTimeout:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        device.stop()
        process.send_signal(stop_signal)
        code = process.wait(20)
        queue = outbox_queue(settings.client_broker.queue_prefix)
        prefix = settings.client_broker.queue_prefix
        Broker(settings.client_broker).delete(
            [queue, f"{queue}.rejected"]
            + [f"{prefix}{spec.name}" for spec in USER_RPCS + TASK_RPCS])
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text, text
    assert "client_gateway stopped" in text
