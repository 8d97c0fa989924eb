"""Flower Apps end to end on real processes: every service as ``python -m``, two devices.

The module's tests share one stack (its start and stop cost about 3 s each): each runs tasks of
its own ids on the same cloud and devices, and a run a test leaves going is stopped after it."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Running, started, stop_runs_left, wait_for

from agata_cli.app_archive import zip_folder
from agata_cli.client import ApiError
from experiments.processes import free_port
from experiments.stack import TASKS_DIR, Api, Stack, first_event, read_events

NUMPY_APP = TASKS_DIR / "app_numpy"
DIGITS_APP = TASKS_DIR / "app_digits"
ERROR_APP = TASKS_DIR / "app_error"
STREAM_APP = TASKS_DIR / "app_stream"
LIST_METRICS_APP = Path(__file__).resolve().parents[1] / "apps" / "app_list_metrics"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with started(Stack(tmp_path_factory.mktemp("flower_apps") / "stack", client_count=2,
                       client_params={"request_interval": "2", "task_retry_s": "300",
                                      "node_config": 'site="lab a" batch-size=32'},
                       cloud_overrides={"AGATA_CLOUD_TASK_MANAGER_DEVICE_REJOIN_S": "2"})
                 ) as up:
        yield up


@pytest.fixture
def running(shared: Running) -> Iterator[Running]:
    """The shared stack; the runs the test left going are stopped after it."""
    yield shared
    stop_runs_left(shared.api)



def ended(api: Api, task_id: str) -> dict[str, Any]:
    return wait_for(lambda: (task := api.get(f"/api/tasks/{task_id}"))["status"] != "running"
                    and task, 90, f"task {task_id} to end")


def reports(api: Api, task_id: str) -> list[dict[str, Any]]:
    return api.get(f"/api/tasks/{task_id}/reports")["reports"]


def final_reports(api: Api, task_id: str, count: int) -> list[dict[str, Any]]:
    """The devices' final reports (finished or failed), once there are ``count`` of them."""

    def final() -> list[dict[str, Any]] | None:
        found = [r for r in reports(api, task_id) if r["status"] in ("finished", "failed")]
        return found if len(found) >= count else None

    return wait_for(final, 20, f"{count} final reports of {task_id}")


def test_an_unmodified_app_trains_on_two_devices_with_their_own_partitions(
        running: Running) -> None:
    stack, api, devices = running.stack, running.api, running.devices
    stack.create_task("numpy", NUMPY_APP, free_port(), devices=2,
                      server_arguments={"num-server-rounds": 3})
    assert api.get("/api/tasks/numpy")["kind"] == "flower_app"
    api.post("/rpc_exec_start_server_task", {"task_id": "numpy"})
    task = ended(api, "numpy")
    assert task["status"] == "finished", task

    rounds = api.get("/api/tasks/numpy/metrics")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for entry in rounds:
        metrics = entry["metrics"]
        assert {"train.loss", "evaluate.distance"} <= set(metrics), metrics
        own = {device: metrics[f"train.loss@{device}"] for device in devices}
        # partition p pulls towards p + 1: the two devices see different losses, and the
        # aggregate is weighted by num-examples (10 and 20) as FedAvg does
        assert len(set(own.values())) == 2, own
        low, high = sorted(own.values())
        assert low < metrics["train.loss"] < high
    finals = final_reports(api, "numpy", 2)
    assert sorted(r["status"] for r in finals) == ["finished", "finished"], finals
    assert sorted(r["client_id"] for r in finals) == sorted(devices)
    # each ClientApp's node_config: the device's own keys plus the partition the cloud gave it
    joined = [line for index in range(2)
              for line in (stack.out_dir / "logs" / f"client{index}_task_manager.log")
              .read_text().splitlines() if "task numpy client says: joined run" in line]
    assert len(joined) == 2, joined
    assert all('"site": "lab a"' in line and '"batch-size": 32' in line and
               '"num-partitions": 2' in line for line in joined), joined
    assert {'"partition-id": 0' in line for line in joined} == {True, False}, joined


def test_an_app_that_pushes_and_pulls_its_messages_itself_trains_and_evaluates(
        running: Running) -> None:
    stack, api = running.stack, running.api
    stack.create_task("stream", STREAM_APP, None, devices=2,
                      server_arguments={"num-server-rounds": 3})
    api.post("/rpc_exec_start_server_task", {"task_id": "stream"})
    task = ended(api, "stream")
    assert task["status"] == "finished", task
    rounds = api.get("/api/tasks/stream/metrics")["rounds"]
    # each round's weighted mean moves towards the targets 1 and 2 (weights 10 and 20): after
    # rounds 1-3 the vector is 5/6, 5/4 and 35/24 in every one of its 8 elements
    distances = [entry["metrics"]["evaluate.distance"] for entry in rounds]
    expected = [(10 * abs(1 - v) + 20 * abs(2 - v)) / 30 * 8 ** 0.5
                for v in (5 / 6, 5 / 4, 35 / 24)]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert distances == pytest.approx(expected, rel=1e-6), distances
    # the replies it pulled itself are recorded too, once each round's are all in
    assert all({"train.loss", *(f"train.loss@{d}" for d in running.devices)}
               <= set(entry["metrics"]) for entry in rounds), rounds


def test_run_config_overrides_are_typed_and_unknown_keys_refused(running: Running) -> None:
    stack, api = running.stack, running.api
    stack.create_task("cfg", NUMPY_APP, free_port(), devices=2,
                      server_arguments={"num-rounds": 2})
    with pytest.raises(Exception) as info:
        api.post("/rpc_exec_start_server_task", {"task_id": "cfg"})
    assert "num-rounds" in str(info.value) and "num-server-rounds" in str(info.value)
    with pytest.raises(Exception) as info:
        api.post("/rpc_exec_start_server_task",
                 {"task_id": "cfg", "server_arguments": {"vector-size": "big"}})
    assert "vector-size" in str(info.value)
    assert api.get("/api/tasks/cfg")["status"] == "created"


def test_a_raising_client_app_fails_the_devices_and_the_run_says_why(running: Running) -> None:
    stack, api = running.stack, running.api
    stack.create_task("boom", NUMPY_APP, free_port(), devices=2,
                      server_arguments={"fail-on-round": 2})
    api.post("/rpc_exec_start_server_task", {"task_id": "boom"})
    task = ended(api, "boom")
    assert task["status"] == "failed", task
    assert "missing" in task["status_reason"], task
    failures = final_reports(api, "boom", 2)
    assert [r["status"] for r in failures] == ["failed", "failed"], failures
    assert all("told to fail on round 2" in r["reason"] for r in failures), failures
    rounds = api.get("/api/tasks/boom/metrics")["rounds"]
    assert rounds[0]["round"] == 1 and "train.loss" in rounds[0]["metrics"]


def test_a_raising_server_app_fails_the_task_with_its_exception(running: Running) -> None:
    stack, api = running.stack, running.api
    stack.create_task("srv", NUMPY_APP, free_port(), devices=2,
                      server_arguments={"fail-on-round": -1})
    api.post("/rpc_exec_start_server_task", {"task_id": "srv"})
    task = ended(api, "srv")
    assert task["status"] == "failed", task
    assert "told to fail before round 1" in task["status_reason"], task


def test_the_digits_app_learns_on_two_devices(running: Running) -> None:
    stack, api, devices = running.stack, running.api, running.devices
    stack.create_task("digits", DIGITS_APP, free_port(), devices=2,
                      server_arguments={"num-server-rounds": 2})
    api.post("/rpc_exec_start_server_task", {"task_id": "digits"})
    task = ended(api, "digits")
    assert task["status"] == "finished", task
    rounds = api.get("/api/tasks/digits/metrics")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    final = rounds[-1]["metrics"]
    # ten classes: chance is 0.1; one FedAvg round of the MLP already gets far beyond it
    assert final["evaluate.accuracy"] > 0.6, final
    assert {f"evaluate.accuracy@{device}" for device in devices} <= set(final)
    assert final["train.loss"] < rounds[0]["metrics"]["train.loss"]


def test_list_metrics_are_recorded_element_by_element(running: Running) -> None:
    stack, api, devices = running.stack, running.api, running.devices
    stack.create_task("lists", LIST_METRICS_APP, free_port(), devices=2)
    api.post("/rpc_exec_start_server_task", {"task_id": "lists"})
    task = ended(api, "lists")
    assert task["status"] == "finished", task
    rounds = api.get("/api/tasks/lists/metrics")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for entry in rounds:
        metrics = entry["metrics"]
        # partitions 0 and 1 evaluate [0, .1, .2] and [.1, .2, .3], weighted equally
        for index, mean in enumerate((0.05, 0.15, 0.25)):
            assert metrics[f"evaluate.recall[{index}]"] == pytest.approx(mean), metrics
        assert metrics["evaluate.accuracy"] == pytest.approx(0.5)
        assert metrics["train.epoch-losses[0]"] == pytest.approx(1.5), metrics
        assert metrics["train.epoch-losses[1]"] == pytest.approx(1.0), metrics
        own = sorted(metrics[f"evaluate.recall[2]@{device}"] for device in devices)
        assert own == pytest.approx([0.2, 0.3]), metrics


def test_a_device_missing_a_dependency_of_the_app_reports_setup_failed_naming_it(
        running: Running, tmp_path: Path) -> None:
    app = tmp_path / "needsdeps"
    shutil.copytree(NUMPY_APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = app / "pyproject.toml"
    manifest.write_text(manifest.read_text().replace(
        'dependencies = ["flwr>=1.41", "numpy>=1.26"]',
        'dependencies = ["flwr>=1.41", "numpy>=1.26", "agata-no-such-dist>=1.0"]'))
    stack, api, devices = running.stack, running.api, running.devices
    stack.create_task("needsdeps", app, free_port(), devices=2)
    api.post("/rpc_exec_start_server_task", {"task_id": "needsdeps"})

    def setup_failures() -> list[dict[str, Any]] | None:
        found = [r for r in reports(api, "needsdeps") if r["status"] == "setup_failed"]
        return found if len(found) >= 2 else None

    failures = wait_for(setup_failures, 30, "both devices' setup failures")
    assert sorted(r["client_id"] for r in failures) == sorted(devices)
    assert all(r["reason"] == "setup: agata-no-such-dist (import agata_no_such_dist) cannot be "
               "imported on this device ([project] dependencies)" for r in failures), failures
    assert not [r for r in reports(api, "needsdeps") if r["status"] == "started"]
    api.post("/rpc_exec_stop_server_task", {"task_id": "needsdeps"})


def test_a_task_without_a_port_trains_through_the_gateway(running: Running) -> None:
    stack, api, devices = running.stack, running.api, running.devices
    stack.create_task("portless", NUMPY_APP, None, devices=2,
                      server_arguments={"num-server-rounds": 2})
    assert api.get("/api/tasks/portless")["port"] is None
    api.post("/rpc_exec_start_server_task", {"task_id": "portless"})
    assert ended(api, "portless")["status"] == "finished"
    finals = final_reports(api, "portless", 2)
    assert sorted(r["client_id"] for r in finals) == sorted(devices)
    assert all(r["status"] == "finished" for r in finals), finals
    gateway_log = (stack.out_dir / "logs" / "cloud_gateway.log").read_text()
    assert all(f"device {device} joined run 1 of task portless through this gateway"
               in gateway_log for device in devices)


def test_a_device_whose_client_app_raises_moves_on_to_the_next_task(running: Running) -> None:
    stack, api = running.stack, running.api
    stack.create_task("bad", ERROR_APP, free_port(), devices=2,
                      server_arguments={"min-nodes": 2})
    stack.create_task("good", NUMPY_APP, free_port(), devices=2,
                      server_arguments={"num-server-rounds": 1})
    api.post("/rpc_exec_start_server_task", {"task_id": "bad"})
    failures = final_reports(api, "bad", 2)
    assert all("simulated task failure" in r["reason"] for r in failures), failures
    api.post("/rpc_exec_start_server_task", {"task_id": "good"})
    assert ended(api, "good")["status"] == "finished"
    assert sorted(r["status"] for r in final_reports(api, "good", 2)) == ["finished"] * 2
    # the event reader writes its file every second: wait for the events to be in it
    for event in ("client failed bad", "first train good"):
        wait_for(lambda e=event: first_event(read_events(stack.events_path), e), 10, event)


def _fab_of(app: Path, work: Path) -> Path:
    """The app bundled by Flower's own ``flwr build`` (offline; it wants a folder name of
    letters, digits and hyphens)."""
    copy = work / app.name.replace("_", "-")
    shutil.copytree(app, copy)
    bin_dir = Path(sys.executable).parent
    environ = {**os.environ, "FLWR_HOME": str(work / "flwr-home"), "FLWR_TELEMETRY_ENABLED": "0",
               "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    subprocess.run([str(bin_dir / "flwr"), "build", "--app", str(copy)], cwd=work,
                   env=environ, check=True, capture_output=True, timeout=120)
    (fab,) = work.glob("*.fab")
    return fab


def said(error: ApiError) -> str:
    """Everything an error told the caller."""
    return " ".join([str(error), *(error.details or [])])


def _app_files(app: Path) -> list[str]:
    return sorted(p.relative_to(app).as_posix() for p in app.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def test_an_app_uploads_as_folder_zip_or_fab_and_bad_paths_are_refused(
        running: Running, tmp_path: Path) -> None:
    api = running.api
    expected = _app_files(NUMPY_APP)
    assert any("/" in name for name in expected)
    for task_id in ("by-folder", "by-zip", "by-fab", "bad-paths"):
        api.post("/rpc_exec_create_task", {"task_id": task_id, "host": "127.0.0.1",
                                           "port": free_port(), "devices": 2})
    for name in expected:
        api.upload("by-folder", NUMPY_APP / name, name)
    api.upload_archive("by-zip", "app.zip", zip_folder(NUMPY_APP))
    fab = _fab_of(NUMPY_APP, tmp_path)
    api.upload_archive("by-fab", fab.name, fab.read_bytes())
    for task_id in ("by-folder", "by-zip", "by-fab"):
        task = api.get(f"/api/tasks/{task_id}")
        assert task["kind"] == "flower_app", task
        assert sorted(f["name"] for f in task["files"]) == expected, task_id

    with pytest.raises(ApiError) as refused:
        api.upload("bad-paths", NUMPY_APP / "pyproject.toml", "../pyproject.toml")
    assert refused.value.status == 400 and ".." in said(refused.value)
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("pyproject.toml", (NUMPY_APP / "pyproject.toml").read_bytes())
        archive.writestr("numpyapp/../../evil.py", "x = 1\n")
    with pytest.raises(ApiError) as refused:
        api.upload_archive("bad-paths", "evil.zip", evil.getvalue())
    assert refused.value.status == 400 and "evil.py" in said(refused.value)
    assert api.get("/api/tasks/bad-paths")["files"] == []

    api.post("/rpc_exec_start_server_task",
             {"task_id": "by-fab", "server_arguments": {"num-server-rounds": 1}})
    assert ended(api, "by-fab")["status"] == "finished"
