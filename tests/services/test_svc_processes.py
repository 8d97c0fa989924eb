"""Every service runs as its own ``python -m`` process and stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import OPERATOR_TOKEN, REPO_ROOT, isolated_environ

from experiments.processes import wait_for_http


def _start(module: str, environ: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", module], cwd=REPO_ROOT, env=environ,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _post(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cloud_services_serve_and_stop_cleanly(tmp_path: Path, stop_signal: int) -> None:
    environ = {**os.environ, **isolated_environ(tmp_path)}
    port = environ["AGATA_SERVER_GATEWAY_PORT"]
    processes = {
        module: _start(module, environ, tmp_path / f"{module}.log")
        for module in ("user_manager", "cloud_task_manager", "cloud_gateway")
    }
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", 30)
        # each service answers once its queues exist: 503 (no queue yet) until then
        answers = {}
        for rpc, body in (("rpc_exec_create_task", {"task_id": "proc1", "port": 8081}),
                          ("rpc_exec_get_user_info", {"user_id": "nobody"})):
            deadline = time.monotonic() + 30
            while True:
                answers[rpc] = _post(f"http://127.0.0.1:{port}/{rpc}", body)
                if answers[rpc][0] not in (503, 504) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        assert answers["rpc_exec_create_task"][0] == 200, answers
        status, body = answers["rpc_exec_get_user_info"]
        assert status == 404 and "not registered" in str(body["exception"]), answers
    finally:
        for process in processes.values():
            process.send_signal(stop_signal)
        codes = {name: process.wait(20) for name, process in processes.items()}
    assert codes == {name: 0 for name in processes}, {
        name: (tmp_path / f"{name}.log").read_text()[-2000:] for name in processes}
    for name in processes:
        log = (tmp_path / f"{name}.log").read_text()
        assert "Traceback" not in log, log


def test_bad_configuration_is_reported_without_traceback(tmp_path: Path) -> None:
    environ = {**os.environ, **isolated_environ(tmp_path), "AGATA_SERVER_BROKER_PORT": "abc"}
    result = subprocess.run([sys.executable, "-m", "user_manager"], cwd=REPO_ROOT, env=environ,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "AGATA_SERVER_BROKER_PORT" in result.stderr
    assert "Traceback" not in result.stderr
