"""A run's data plane on real processes: devices reach their run only through the gateway's own
port (over TLS when it serves HTTPS), a model over 64 MiB crosses in bounded frames, and a
revoked device is dropped from its run at once and cannot come back."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from support import make_ca, make_server_cert, wait_for

from experiments.rss import PeakRss
from experiments.stack import TASKS_DIR, Stack, TlsFiles

NUMPY_APP = TASKS_DIR / "app_numpy"
MODEL_BYTES = 64 << 20
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Any]:
    stacks: list[Stack] = []

    def make(**options: Any) -> Stack:
        stack = Stack(tmp_path / f"stack{len(stacks)}", client_count=2,
                      client_params={"request_interval": "2", "task_retry_s": "300"},
                      **options)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def ended(stack: Stack, task_id: str, timeout: float = 120) -> dict[str, Any]:
    assert stack.api is not None
    api = stack.api
    return wait_for(lambda: (task := api.get(f"/api/tasks/{task_id}"))["status"] != "running"
                    and task, timeout, f"task {task_id} to end")


def log_of(stack: Stack, name: str) -> str:
    return (stack.out_dir / "logs" / f"{name}.log").read_text(errors="replace")


def logged_at(stack: Stack, name: str, text: str) -> float | None:
    """When the log first had a line with ``text`` (its own timestamp, epoch seconds)."""
    for line in log_of(stack, name).splitlines():
        if text in line and (match := LOG_TIME.match(line)):
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_a_run_goes_over_wss_through_the_https_gateway(make_stack, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = make_ca(certs, "agata-ca")
    cert, key = make_server_cert(certs, "agata-ca")
    stack = make_stack(tls=TlsFiles(cert, key, ca))
    api = stack.start_cloud()
    assert api.url.startswith("https://")
    devices = stack.start_clients()
    stack.create_task("secure", NUMPY_APP, None, devices=2,
                      server_arguments={"num-server-rounds": 2})
    api.post("/rpc_exec_start_server_task", {"task_id": "secure"})
    assert ended(stack, "secure")["status"] == "finished"
    gateway = log_of(stack, "cloud_gateway")
    for device in devices:
        assert f"device {device} joined run 1 of task secure through this gateway" in gateway
    # the run's door listened on the cloud's internal address only
    assert api.get("/api/tasks/secure/metrics")["rounds"][-1]["round"] == 2


def test_a_model_over_64_mib_crosses_in_bounded_frames(make_stack) -> None:
    stack = make_stack()
    api = stack.start_cloud()
    stack.start_clients()
    stack.create_task("big", NUMPY_APP, None, devices=2, server_arguments={
        "num-server-rounds": 1, "vector-size": MODEL_BYTES // 8 + 1})
    memory = PeakRss({"gateway": "-m cloud_gateway", "host": "flower_runtime.server_host",
                      "worker": "flower_runtime.client_worker"}).start()
    try:
        api.post("/rpc_exec_start_server_task", {"task_id": "big"})
        task = ended(stack, "big", 240)
    finally:
        peaks = memory.stop()
    assert task["status"] == "finished", task
    model_mb = MODEL_BYTES / 2**20
    # the gateway relays frames of 1 MiB: it never holds a model
    assert peaks["gateway"] < 150, peaks
    # a device holds the model it got, its copy in NumPy and its update (plus what it imports)
    assert peaks["worker"] < 6 * model_mb + 400, peaks


def test_a_revoked_device_leaves_its_run_within_a_second_and_cannot_rejoin(make_stack) -> None:
    stack = make_stack()
    api = stack.start_cloud()
    stack.start_clients()
    stack.create_task("long", NUMPY_APP, None, devices=2, server_arguments={
        "num-server-rounds": 500, "train-delay-s": 0.05})
    api.post("/rpc_exec_start_server_task", {"task_id": "long"})
    wait_for(lambda: log_of(stack, "cloud_task_manager").count("joined as partition") >= 2, 60,
             "both devices to join")
    revoked_at = time.time()
    api.post("/api/clients/device-0/revoke")
    left = wait_for(lambda: logged_at(stack, "cloud_task_manager", "device device-0 left"), 10,
                    "device-0 to leave its run")
    assert left - revoked_at <= 1.0, f"left {left - revoked_at:.2f} s after its revocation"
    assert "dropped 1 run socket(s) of device device-0" in log_of(stack, "cloud_gateway")
    wait_for(lambda: "the cloud refused this device's socket for run 1 (HTTP 403)"
             in log_of(stack, "client0_task_manager"), 30, "device-0's rejoin to be refused")
    assert "device device-0 joined" not in log_of(stack, "cloud_task_manager").split(
        "device device-0 left", 1)[1]
    api.post("/rpc_exec_stop_server_task", {"task_id": "long"})
