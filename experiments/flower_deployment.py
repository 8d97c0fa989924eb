"""Flower's own deployment runtime on loopback, to time an app against: a SuperLink and N
SuperNodes (``--node-config partition-id=i num-partitions=N``), ``flwr run``, and the run's end
as the SuperLink's Control API reports it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flwr.proto.control_pb2 import ListRunsRequest
from flwr.supercore.control import ControlHttpClient
from flwr.supercore.interceptors.http.runtime_version import RuntimeVersionHttpInterceptor

from experiments.processes import free_port, wait_for_http
from experiments.rss import PeakRss

RUN_TIMEOUT_S = 600.0
FLOWER_PROCESSES = {"superlink": "flower-superlink", "serverapp": "flwr-serverapp",
                    "supernode": "flower-supernode", "clientapp": "flwr-clientapp"}


class FlowerDeployment:
    """A SuperLink and SuperNodes on loopback, each with its own FLWR_HOME; stopped by group."""

    def __init__(self, work: Path, clients: int) -> None:
        self.work = work
        self.clients = clients
        self.port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.bin = Path(sys.executable).parent

    def environ(self, name: str) -> dict[str, str]:
        home = self.work / name
        home.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
                "PATH": f"{self.bin}:{os.environ.get('PATH', '')}"}

    def _start(self, name: str, argv: list[str]) -> None:
        log = (self.work / f"{name}.log").open("wb")
        self.processes.append(subprocess.Popen(
            argv, env=self.environ(name), cwd=self.work / name, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True))

    def start(self) -> None:
        """The SuperLink, then the SuperNodes (they retry until it answers)."""
        self._start("superlink", [str(self.bin / "flower-superlink"), "--insecure",
                                  "--host", "127.0.0.1", "--port", str(self.port),
                                  "--disable-runtime-dependency-installation"])
        wait_for_http(f"http://127.0.0.1:{self.port}/health", 60)
        for index in range(self.clients):
            self._start(f"supernode{index}", [
                str(self.bin / "flower-supernode"), "--insecure",
                "--superlink", f"127.0.0.1:{self.port}", "--host", "127.0.0.1",
                "--port", str(free_port()),
                "--node-config", f"partition-id={index} num-partitions={self.clients}"])

    def flwr(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The ``flwr`` command against this SuperLink."""
        environ = self.environ("cli")
        (Path(environ["FLWR_HOME"]) / "config.toml").write_text(
            f'[superlink]\ndefault = "task"\n\n[superlink.task]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        return subprocess.run([str(self.bin / "flwr"), *args], env=environ,
                              capture_output=True, text=True, timeout=120)

    def stop(self) -> None:
        """Every process group: terminated, then killed."""
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def _run_status(control: ControlHttpClient, run_id: int) -> str:
    """The run's status as ``flwr ls`` shows it (``finished:completed``...), asked of the
    SuperLink's Control API in this process: a ``flwr ls`` process per poll would import Flower
    each time, taking a core from the run it times."""
    runs = control.ListRuns(ListRunsRequest(run_id=run_id)).run_dict
    if run_id not in runs:
        return ""
    status = runs[run_id].status
    return f"{status.status}:{status.sub_status}" if status.sub_status else status.status


def run_flower(app: Path, clients: int, configs: list[dict[str, Any]], out_dir: Path
               ) -> list[dict[str, Any]]:
    """The same app under Flower's SuperLink/SuperNodes/``flwr run``, once per run config."""
    work = out_dir / "flower"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copy = work / "app"
    shutil.copytree(app, copy, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    deployment = FlowerDeployment(work, clients)
    figures = []
    try:
        deployment.start()
        for config in configs:
            memory = PeakRss(FLOWER_PROCESSES).start()
            try:
                run = _flower_run(deployment, copy, config)
            finally:
                peaks = memory.stop()
            figures.append({**run, "flower_peak_rss_mb": peaks,
                            "flower_cpu_s": memory.cpu_s()})
    finally:
        deployment.stop()
    return figures


def _flower_run(deployment: FlowerDeployment, app: Path, config: dict[str, Any]
                ) -> dict[str, Any]:
    started = time.monotonic()
    overrides = " ".join(f"{key}={value}" for key, value in config.items())
    submitted = deployment.flwr("run", str(app), "task", "--format", "json",
                                *(["--run-config", overrides] if overrides else []))
    match = re.search(r'"run-id":\s*"?(\d+)', submitted.stdout)
    if match is None:
        raise RuntimeError(f"flwr run gave no run id: {submitted.stdout[-500:]} "
                           f"{submitted.stderr[-500:]}")
    run_id = int(match.group(1))
    control = ControlHttpClient.from_server_address(
        f"127.0.0.1:{deployment.port}", insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")])
    deadline = started + RUN_TIMEOUT_S
    status = ""
    while not status.startswith("finished"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Flower's run still going after {RUN_TIMEOUT_S:.0f} s")
        time.sleep(0.2)
        status = _run_status(control, run_id)
    return {"flower_deployment_wall_s": round(time.monotonic() - started, 3),
            "flower_status": status}
