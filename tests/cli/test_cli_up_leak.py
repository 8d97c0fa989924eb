"""Task code confined under ``agata up``: a Flower App of our own whose ClientApp and ServerApp
try every secret a malicious task wants (the data directory's secret files and databases, other
processes' ``/proc/*/environ``), the broker as ``guest`` on the deployment's virtual hosts and
the cloud gateway with whatever they read, created, started and fetched with the ``agata`` CLI
on ``agata up --devices 2`` with the default executor on both sides: every attempt fails, and
the run still trains and returns its results. The same probe run unconfined (this test's own
process) reads the secrets and gets in with them, so it is able to find what it looks for."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from broker_support import drop_roles
from support import free_port, wait_for

from agata_cli.client import Gateway
from agata_cli.local_deployment import LocalDeployment
from task_daemon_lib import confinement
from task_daemon_lib.confinement import Mechanism

AGATA = [sys.executable, "-m", "agata_cli"]
LEAK_APP = Path(__file__).resolve().parents[1] / "apps" / "app_leak"
DEVICES = 2
REFUSED = (401, 403)

pytestmark = pytest.mark.skipif(confinement.choose().mechanism is not Mechanism.BWRAP,
                                reason="bubblewrap cannot start a sandbox here")


@dataclass
class Up:
    """A running ``agata up`` and what a test needs of it."""

    data_dir: Path
    deployment: LocalDeployment
    token_file: Path
    url: str

    def cli(self, *arguments: str) -> str:
        """``agata --url URL --token-file FILE ARGUMENTS``'s output (it must succeed)."""
        done = subprocess.run([*AGATA, "--url", self.url, "--token-file", str(self.token_file),
                               *arguments], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (arguments, done.stdout, done.stderr)
        return done.stdout


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    # not under /tmp, which a sandbox replaces with a private one: the data directory must be
    # kept out by the sandbox's binds, as a real one (~/.local/share/agata) is
    data_dir = Path.home() / ".cache" / f"agata-leak-{uuid.uuid4().hex[:8]}"
    prefix = f"leak-{uuid.uuid4().hex[:8]}."
    port = free_port()
    output = tmp_path / "up.out"
    with output.open("w") as sink:
        supervisor = subprocess.Popen(
            [*AGATA, "up", "--devices", str(DEVICES), "--data-dir", str(data_dir), "--port",
             str(port), "--queue-prefix", prefix], stdout=sink, stderr=subprocess.STDOUT)
    deployment = LocalDeployment(data_dir=data_dir, port=port, api_token="", devices=DEVICES,
                                 prefix=prefix)
    try:
        wait_for(lambda: "AGATA is up" in output.read_text(errors="replace")
                 or supervisor.poll() is not None, 120, "agata up to be up")
        assert supervisor.poll() is None, output.read_text(errors="replace")
        yield Up(data_dir, deployment, data_dir / "secrets" / "api_token", deployment.url)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(60)
        finally:
            drop_roles(deployment.broker_roles())
            shutil.rmtree(data_dir, ignore_errors=True)
    assert supervisor.returncode == 0, output.read_text(errors="replace")


def load_doors() -> ModuleType:
    """The probe's doors module, loaded here (unconfined) from the app's folder."""
    spec = importlib.util.spec_from_file_location("leak_doors_control",
                                                  LEAK_APP / "leakapp" / "doors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_leaking_app_under_agata_up_opens_nothing_and_still_trains(up: Up,
                                                                     tmp_path: Path) -> None:
    data_dirs = [up.data_dir / "cloud",
                 *(up.deployment.device_data_dir(i) for i in range(DEVICES))]
    for data_dir in data_dirs:  # each task manager records its choice once it has started
        wait_for(lambda d=data_dir: (confinement.read(d) or {}).get("mechanism") == "bwrap",
                 30, f"the task manager of {data_dir.name} to confine with bwrap")
    # what an attacker wants (every secret file of the deployment: the operator token, each
    # device's credential and broker password, the cloud's), and where it could guess them
    secrets = sorted(str(path) for path in up.data_dir.rglob("secrets/*") if path.is_file())
    names = {Path(path).name for path in secrets}
    assert {"api_token", "device_credential.json", "broker_password"} <= names, names
    virtual_hosts = [role.virtual_host for role in up.deployment.broker_roles()]
    config = {"look-under": str(up.data_dir), "secret-files": ",".join(secrets),
              "broker": "127.0.0.1:5672", "broker-vhosts": ",".join(virtual_hosts),
              "gateway-url": up.url}

    up.cli("tasks", "create", "--id", "leak", "--from-dir", str(LEAK_APP), "--devices",
           str(DEVICES), "--port", str(free_port()), "--server-arg", "num-server-rounds=1",
           *(f"--server-arg={name}={value}" for name, value in config.items()))
    up.cli("tasks", "start", "leak")
    api = Gateway(up.url, up.token_file.read_text().strip(), "the test's token")
    task = wait_for(lambda: (found := api.get("/api/tasks/leak"))["status"] not in (
        "created", "running") and found, 120, "the leak task to end")
    assert task["status"] == "finished", task
    devices = [up.deployment.device_id(i) for i in range(DEVICES)]
    wait_for(lambda: len([f for f in api.get("/api/tasks/leak/results")["files"]
                          if f["path"].endswith(("leaks-server.json", "leaks-client.json"))])
             == 1 + DEVICES, 30, "every side's report among the results")
    up.cli("tasks", "results", "leak", "-o", str(tmp_path / "results"))
    reports = {path.parent.name: json.loads(path.read_text())
               for path in (tmp_path / "results").rglob("leaks-*.json")}
    assert len(reports) == 1 + DEVICES, sorted(reports)
    # the ServerApp host's own state folder (its run's checkpoints and report spool) is the
    # run's own: at its stage's path in a warm spare's sandbox
    own_state = re.compile(r".*/(hosts/spare-[^/]+/state|run-state/task_leak/run_1)/[^/]+$")
    own_stage = re.compile(r".*/((hosts|workers)/spare-[^/]+/state|run-state/task_leak/run_1)"
                           r"(/[^/]+)?$")
    reports["server"]["read"] = [path for path in reports["server"]["read"]
                                 if not own_state.match(path)]

    for side, seen in reports.items():
        assert seen["read"] == [], (side, seen["read"][:20])
        assert seen["service_environ"] == [] and seen["pids"] <= 3, (side, seen)
        assert set(seen["secret_files"]) >= set(secrets), side
        assert not any(outcome == "read" for outcome in seen["secret_files"].values()), (
            side, seen["secret_files"])
        assert seen["tokens"] == [], (side, seen["tokens"])
        assert sorted(seen["broker"]) == sorted(virtual_hosts), (side, seen["broker"])
        assert all(outcome.startswith("refused") for outcome in seen["broker"].values()), (
            side, seen["broker"])
        # the gateway was reached (it answered), and let nothing in
        assert seen["gateway"] and all(status in REFUSED for status in seen["gateway"].values()
                                       ), (side, seen["gateway"])
        # /tmp is the task's private tmpfs; a task process's own state folder (a host's
        # checkpoints, a spare stage's) is its own to write (the known gap: a ServerApp runs
        # in the host, so its checkpoints are within its reach)
        assert all(path.startswith("/tmp/") or own_stage.match(path)
                   for path in seen["written"]), (side, seen)
    assert [path for path in up.data_dir.rglob("agata-leak-written.txt")
            if not own_stage.match(str(path))] == []
    rounds = api.get("/api/tasks/leak/metrics")["rounds"]
    assert [entry["round"] for entry in rounds] == [1]
    for device in devices:
        assert all(rounds[0]["metrics"][f"train.leak-{what}@{device}"] == 0
                   for what in ("read", "environ", "secrets", "broker", "gateway")), rounds[0]

    # the same doors tried unconfined, from this test's process: the secret files read, the
    # gateway lets the operator token and a device's credential in; the broker still refuses
    # guest (its lock, not the sandbox's)
    doors = load_doors()
    outcomes, tokens = doors.read_secrets(secrets, {})
    assert all(outcome == "read" for outcome in outcomes.values()), outcomes
    statuses: dict[str, Any] = doors.try_gateway(up.url, tokens)
    operator = next(label for label in tokens if label.startswith(str(up.token_file)))
    assert statuses[f"{operator} as operator"] == 200, statuses
    device = next(label for label in tokens if "device_credential.json" in label)
    assert statuses[f"{device} as device"] == 200, statuses
    assert all(outcome.startswith("refused") for outcome in
               doors.try_broker("127.0.0.1:5672", virtual_hosts).values())
