"""Task code confined by default, end to end: a Flower App of our own whose ClientApp and
ServerApp look for what a malicious task wants (the data directories' secrets and databases,
another run's folders, other processes' environments) and try to write outside their results
folder, run on every service as ``python -m`` with two devices and the default executor (the
cloud's ServerApp host and device-1's worker warm spares, device-0's worker started for its
run): every attempt fails, and the run still trains and returns its results. The spares started
after the run import only what the app uses of what ``warm_preload`` names."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from agata_contracts.results import device_folder
from experiments.live_files import matching
from experiments.processes import free_port
from experiments.stack import Api, Stack
from task_daemon_lib import confinement
from task_daemon_lib.confinement import Mechanism

LEAK_APP = Path(__file__).resolve().parents[1] / "apps" / "app_leak"
WRITTEN = "agata-leak-written.txt"
PRELOAD = "numpy,csv"
"""What the spares import at first: the app uses numpy, not csv."""

pytestmark = pytest.mark.skipif(confinement.choose().mechanism is not Mechanism.BWRAP,
                                reason="bubblewrap cannot start a sandbox here")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = Stack(tmp_path / "stack", client_count=2, warm_spares=True,
                    client_params={"request_interval": "2", "warm_preload": PRELOAD},
                    cloud_overrides={"AGATA_CLOUD_TASK_MANAGER_WARM_PRELOAD": PRELOAD},
                    client_overrides=[{"AGATA_CLIENT_PARAMS_FLOWER_WORKERS": "0"}])
    try:
        yield started
    finally:
        codes = started.stop()
        assert all(code == 0 for code in codes.values()), codes


def run_to_end(stack: Stack, api: Api, task_id: str, app: Path,
               arguments: dict[str, Any]) -> dict[str, Any]:
    stack.create_task(task_id, app, free_port(), devices=2, server_arguments=arguments)
    api.post("/rpc_exec_start_server_task", {"task_id": task_id})
    task: dict[str, Any] = wait_for(
        lambda: (found := api.get(f"/api/tasks/{task_id}"))["status"] != "running" and found,
        120, f"task {task_id} to end")
    return task


def result_json(api: Api, task_id: str, path: str) -> dict[str, Any]:
    def fetch() -> dict[str, Any] | None:
        names = {item["path"] for item in api.get(f"/api/tasks/{task_id}/results")["files"]}
        if path not in names:
            return None
        value: dict[str, Any] = json.loads(api.download(
            f"/api/tasks/{task_id}/runs/0/results/{path}"))
        return value

    return wait_for(fetch, 30, f"result {path} of {task_id}")


def test_a_leaking_app_reaches_nothing_and_still_trains(stack: Stack, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    api = stack.start_cloud()
    devices = stack.start_clients()
    data_dirs = [stack.replica_data_dir(0),
                 *(Path(env["AGATA_STORAGE_DATA_DIR"]) for env in stack.client_envs)]
    for data_dir in data_dirs:
        assert (confinement.read(data_dir) or {}).get("mechanism") == "bwrap", data_dir

    # what `agata up` or a manager without download_secret keep there too, and another
    # run's folders on each side (its results, a device's offer with its credential)
    other_runs = [data_dir / "results" / "task_other" / "run_1" for data_dir in data_dirs]
    for planted in (stack.out_dir / "secrets" / "api_token",
                    stack.replica_data_dir(0) / "download.key",
                    *(run / "model.npz" for run in other_runs),
                    *(run.with_name("run_1.offer.json") for run in other_runs[1:])):
        planted.parent.mkdir(parents=True, exist_ok=True)
        planted.write_text("a secret of the test")
        planted.chmod(0o600)
    names = ("device_credential.json", "tasks.db", "users.db", "api_token", "download.key")
    secrets = [path for name in names for path in matching(stack.out_dir, name)]
    assert len(secrets) >= 6, secrets  # each device's credential, the cloud's databases, keys

    task = run_to_end(stack, api, "leak", LEAK_APP, {"look-under": str(stack.out_dir)})
    assert task["status"] == "finished", task
    found = {"server": result_json(api, "leak", "server/leaks-server.json")}
    for device in devices:
        found[device] = result_json(api, "leak",
                                    f"devices/{device_folder(device)}/leaks-client.json")
    # the ServerApp host's own state folder (its run's checkpoints and report spool, which
    # the host process writes) is the run's own: at its stage's path in a warm spare's sandbox
    own_state = re.compile(r".*/(hosts/spare-[^/]+/state|run-state/task_leak/run_1)/[^/]+$")
    found["server"]["read"] = [path for path in found["server"]["read"]
                               if not own_state.match(path)]
    for side, seen in found.items():
        assert seen["read"] == [], (side, seen["read"][:20])
        # pytest's folders lie under /tmp, whose sandbox copy is the task's private tmpfs:
        # a write there lands in it, never on the host (checked below)
        assert all(path.startswith("/tmp/") for path in seen["written"]), (side, seen)
        assert seen["service_environ"] == [], (side, seen)
        assert seen["pids"] <= 3, (side, seen)  # its own PID namespace
    assert matching(stack.out_dir, WRITTEN) == []  # spares come and go meanwhile
    for log in (stack.out_dir / "logs" / name
                for name in ("cloud_task_manager.log", "client1_task_manager.log")):
        assert "warm (numpy, csv); waiting" in log.read_text(), log
        wait_for(lambda: "warm (numpy); waiting" in log.read_text(),
                 60, f"a spare without csv in {log.name}")
    rounds = api.get("/api/tasks/leak/metrics")["rounds"]
    assert [entry["round"] for entry in rounds] == [1, 2]
    for entry in rounds:
        assert all(entry["metrics"][f"train.leak-{what}@{device}"] == 0
                   for what in ("read", "environ") for device in devices), entry

    # the same probe, unconfined (this test's own process), finds what it looks for
    control = tmp_path / "control"
    shutil.copytree(LEAK_APP, control / "app")  # the probe's own app: a copy of it here
    (control / "secrets").mkdir()
    (control / "secrets" / "device_credential.json").write_text("{}")
    monkeypatch.chdir(control / "app")
    monkeypatch.syspath_prepend(str(control / "app"))
    monkeypatch.delenv("AGATA_RESULTS_DIR", raising=False)
    from leakapp.probe import look_around

    unconfined = look_around(str(control))
    assert unconfined["read"] == [str(control / "secrets" / "device_credential.json")]
    assert str(control / "app") in unconfined["written"]
    assert unconfined["service_environ"] and unconfined["pids"] > 3
    assert os.path.exists(control / WRITTEN)
