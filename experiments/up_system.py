"""The whole system as an operator runs it, ``agata up``, for experiments and tests that stop
it (SIGTERM, as Ctrl-C or a service manager would) and start it again on the same data folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import IO, Any

from agata_cli.app_archive import zip_folder
from agata_cli.broker_roles import drop_roles
from agata_cli.client import ApiError, CliError
from agata_cli.local_deployment import LocalDeployment
from experiments.processes import free_port
from experiments.stack import REPO_ROOT, Api

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


class UpSystem:
    """``python -m agata_cli up`` on one data folder, port and queue prefix, started and
    stopped as often as asked."""

    def __init__(self, data_dir: Path, devices: int = 2) -> None:
        self.data_dir = data_dir
        self.devices = devices
        self.port = free_port()
        self.prefix = f"up-{uuid.uuid4().hex[:8]}."
        self.process: subprocess.Popen[bytes] | None = None
        self.api: Api | None = None
        self._log: IO[bytes] | None = None

    def services(self) -> list[dict[str, Any]]:
        """The services of the state file (empty while it is not there)."""
        try:
            state = json.loads((self.data_dir / "up.json").read_text())
        except (OSError, ValueError):
            return []
        services: list[dict[str, Any]] = state.get("services", [])
        return services

    def start(self) -> Api:
        """Start ``agata up`` and wait until every service runs and the API answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = (self.data_dir / "agata-up.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agata_cli", "up", "--devices", str(self.devices),
             "--data-dir", str(self.data_dir), "--port", str(self.port),
             "--queue-prefix", self.prefix],
            cwd=REPO_ROOT, env={**os.environ, "AGATA_STORAGE_DATA_DIR": str(self.data_dir)},
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        expected = 3 + 2 * self.devices  # user manager, task manager, gateway; 2 a device
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"agata up exited ({self.process.returncode}); see "
                                   f"{self.data_dir / 'agata-up.log'}")
            services = self.services()
            if len(services) == expected and all(s["state"] == "running" for s in services) \
                    and self._answers():
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"agata up did not come up in {START_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        assert self.api is not None
        return self.api

    def _answers(self) -> bool:
        token_file = self.data_dir / "secrets" / "api_token"
        if self.api is None and token_file.is_file():
            self.api = Api(f"http://127.0.0.1:{self.port}", token_file.read_text().strip())
        if self.api is None:
            return False
        try:
            self.api.get("/api/clients", {"limit": 1})
            self.api.get("/api/tasks", {"limit": 1})  # the cloud task manager serves too
        except (ApiError, CliError):
            return False
        return True

    def stop(self) -> int | None:
        """SIGTERM ``agata up`` and wait for it; its exit code (None when it was not up)."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode

    def forget_broker_roles(self) -> None:
        """Delete the broker users and virtual hosts ``agata up`` made for this system (after
        its last stop)."""
        drop_roles(LocalDeployment(data_dir=self.data_dir, port=self.port, api_token="",
                                   devices=self.devices, prefix=self.prefix).broker_roles())

    def create_task(self, task_id: str, app: Path, port: int | None, *, devices: int = 2,
                    deadline_s: int | None = None,
                    server_arguments: dict[str, Any] | None = None) -> Any:
        """Create a Flower App task (``app`` a folder) through the gateway."""
        assert self.api is not None
        self.api.post("/rpc_exec_create_task", {
            "task_id": task_id, "host": "127.0.0.1", **({} if port is None else {"port": port}),
            "server_arguments": server_arguments or {}, "devices": devices,
            **({} if deadline_s is None else {"deadline_s": deadline_s})})
        return self.api.upload_archive(task_id, f"{app.name}.zip", zip_folder(app))
