"""A run's lifecycle end to end on real processes: setup checks on the devices, results left by
the server and every device collected on the cloud, listed, read and downloaded as one archive
(HTTP and ``agata tasks results``). The module's tests share one stack, each with tasks of its
own ids."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Running, started, stop_runs_left, wait_for

from agata_cli.client import ApiError
from agata_common.device_identity import load_secret
from agata_contracts.results import device_folder
from experiments.processes import free_port
from experiments.stack import TASKS_DIR, Api, Stack

NUMPY_APP = TASKS_DIR / "app_numpy"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with started(Stack(tmp_path_factory.mktemp("results") / "stack", client_count=2,
                       client_params={"request_interval": "1", "task_retry_s": "1"})) as up:
        yield up


@pytest.fixture
def running(shared: Running) -> Iterator[Running]:
    """The shared stack; the runs the test left going are stopped after it."""
    yield shared
    stop_runs_left(shared.api)


def device_token(stack: Stack, index: int) -> str:
    """Local device ``index``'s own token, as its client gateway sends it."""
    client_id = f"device-{index}"
    secret = load_secret(stack.out_dir / client_id, client_id)
    assert secret is not None
    return f"{client_id}:{secret}"


def results_of(api: Api, task_id: str, count: int) -> dict[str, Any]:
    """The latest run's results once there are at least ``count`` files."""
    return wait_for(lambda: (found := api.get(f"/api/tasks/{task_id}/results"))
                    and len(found["files"]) >= count and found, 30,
                    f"{count} result files of {task_id}")


def test_results_of_the_server_and_every_device_are_collected_and_downloadable(
        running: Running, tmp_path: Path) -> None:
    stack, api, devices = running.stack, running.api, running.devices
    stack.create_task("kept", NUMPY_APP, free_port(), devices=2,
                      server_arguments={"num-server-rounds": 2})
    api.post("/rpc_exec_start_server_task", {"task_id": "kept"})
    assert api.wait_until_ended("kept", 90)["status"] == "finished"

    # the server's declared result, its log, and each device's log
    listing = results_of(api, "kept", 4)
    paths = {item["path"]: item for item in listing["files"]}
    expected = {"server/final.npy", "server/output-server.txt",
                *(f"devices/{device_folder(d)}/output-{device_folder(d)}.txt" for d in devices)}
    assert set(paths) == expected, paths
    assert listing["run"] == 1
    assert {paths[p]["client_id"] for p in paths} == {None, *devices}
    device_log = api.download(f"/api/tasks/kept/runs/1/results/devices/{device_folder(devices[0])}"
                              f"/output-{device_folder(devices[0])}.txt").decode()
    assert "joined run" in device_log or device_log.strip(), device_log

    # one file as an attachment, never rendered on the gateway's origin
    raw = api.download("/api/tasks/kept/runs/0/results/server/final.npy")
    assert raw.startswith(b"\x93NUMPY")
    assert len(raw) == paths["server/final.npy"]["size"]

    # every file in one archive, under task-<id>-run-<n>/
    archive = zipfile.ZipFile(io.BytesIO(api.download("/api/tasks/kept/runs/1/results.zip")))
    assert sorted(archive.namelist()) == sorted(f"task-kept-run-1/{p}" for p in expected)
    assert archive.read("task-kept-run-1/server/final.npy") == raw

    # the CLI saves the same tree into a folder
    folder = tmp_path / "saved"
    completed = subprocess.run(
        [sys.executable, "-m", "agata_cli", "--url", api.url, "--token-env", "TEST_TOKEN",
         "tasks", "results", "kept", "-o", str(folder)],
        env={**stack.cloud_env, "TEST_TOKEN": api.token or ""}, capture_output=True, text=True,
        timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "saved 4 result file(s)" in completed.stdout, completed.stdout
    assert (folder / "task-kept-run-1/server/final.npy").read_bytes() == raw

    # paths that leave a folder are refused on every route
    with pytest.raises(ApiError) as refused:
        api.download("/api/tasks/kept/runs/1/results/server/..%2F..%2Ftasks.db")
    assert refused.value.status in (400, 404)
    device_api = Api(api.url, device_token(stack, 0))
    with pytest.raises(ApiError) as bad_name:
        device_api.post("/rpc_exec_upload_result", {
            "task_id": "kept", "run": 1, "client_id": devices[0], "name": "../escape.txt",
            "content": base64.b64encode(b"x").decode(), "credential": "x" * 64})
    assert bad_name.value.status == 400
    assert ".." in " ".join(bad_name.value.details), bad_name.value.details
    # a credential that is not the run's is refused
    with pytest.raises(ApiError) as wrong:
        device_api.post("/rpc_exec_upload_result", {
            "task_id": "kept", "run": 1, "client_id": devices[0], "name": "extra.txt",
            "content": base64.b64encode(b"x").decode(), "credential": "x" * 64})
    assert wrong.value.status == 403
    # the operator's routes refuse the device token
    with pytest.raises(ApiError) as forbidden:
        device_api.download("/api/tasks/kept/runs/1/results.zip")
    assert forbidden.value.status in (401, 403)


def test_a_device_that_cannot_set_a_task_up_says_why_and_does_not_take_it_again(
        running: Running, tmp_path: Path) -> None:
    app = tmp_path / "needs"
    shutil.copytree(NUMPY_APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = app / "pyproject.toml"
    manifest.write_text(manifest.read_text().replace(
        'requires = ["numpy"]', 'requires = ["numpy", "agata_no_such_module"]'))
    stack, api, devices = running.stack, running.api, running.devices
    stack.create_task("needs", app, free_port(), devices=2)
    api.post("/rpc_exec_start_server_task", {"task_id": "needs"})

    def setup_failures() -> list[dict[str, Any]] | None:
        found = [r for r in api.get("/api/tasks/needs/reports")["reports"]
                 if r["status"] == "setup_failed"]
        return found if len(found) >= 2 else None

    failures = wait_for(setup_failures, 30, "both devices' setup failures")
    assert sorted(r["client_id"] for r in failures) == sorted(devices)
    assert all("agata_no_such_module" in r["reason"] and "numpy" not in r["reason"]
               for r in failures), failures
    # retries are 1 s apart for ordinary failures; a setup failure is not retried at all
    time.sleep(3)
    again = [r for r in api.get("/api/tasks/needs/reports")["reports"]
             if r["status"] != "setup_failed"]
    assert again == [], again
    assert len(setup_failures() or []) == 2
    api.post("/rpc_exec_stop_server_task", {"task_id": "needs"})


def test_the_dcgan_app_trains_two_rounds_and_leaves_sample_images(running: Running) -> None:
    stack, api, devices = running.stack, running.api, running.devices
    stack.create_task("gan", TASKS_DIR / "app_dcgan", free_port(), devices=2,
                      server_arguments={"num-server-rounds": 2})
    api.post("/rpc_exec_start_server_task", {"task_id": "gan"})
    task = api.wait_until_ended("gan", 120)
    assert task["status"] == "finished", task
    rounds = api.get("/api/tasks/gan/metrics")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all({"train.d_loss", "train.g_loss"} <= set(r["metrics"]) for r in rounds), rounds

    device_logs = {f"devices/{device_folder(d)}/output-{device_folder(d)}.txt" for d in devices}
    listing = wait_for(lambda: (found := api.get("/api/tasks/gan/results"))
                       and device_logs <= {f["path"] for f in found["files"]} and found, 30,
                       "both devices' logs")
    paths = {item["path"] for item in listing["files"]}
    samples = sorted(p for p in paths if p.startswith("server/samples/"))
    assert samples[-1] == "server/samples/round-2.png", samples
    assert "server/generator.npz" in paths
    image = api.download("/api/tasks/gan/runs/1/results/server/samples/round-2.png")
    assert image.startswith(b"\x89PNG\r\n\x1a\n") and len(image) > 1000
    for device in devices:
        log = api.download(f"/api/tasks/gan/runs/1/results/devices/{device_folder(device)}/"
                           f"output-{device_folder(device)}.txt").decode()
        assert "round 2 epoch 1: d_loss" in log, log[-2000:]
