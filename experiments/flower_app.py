"""``python -m experiments.flower_app APP_DIR``: one Flower App, run here and by Flower's own
deployment runtime, timed in the same invocation.

Ours: the whole stack as ``python -m`` processes with N local devices; the task is created from
the app folder through the gateway (uploaded as a zip), started, and timed from the start call
to the task's end with the services' own events. Flower's: a SuperLink and N SuperNodes
(``--node-config partition-id=i num-partitions=N``) and ``flwr run``, timed from the submission
to the run's end as ``flwr ls`` reports it. Both get ``num-server-rounds=R`` and
``min-nodes=N``. Prints a summary, and with ``--json`` one JSON line: ``status``, ``rounds``
(the aggregated train and evaluate metrics of each round), ``wall_s``,
``start_to_first_train_s`` (the start call to the first ClientApp train call on a device),
``flower_deployment_wall_s``, ``flower_status``, ``ratio``, and ``results``: the files
collected from the server and each device, with their sizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.processes import free_port, wait_for_http
from experiments.stack import Stack, first_event, read_events

logger = logging.getLogger("experiments.flower_app")

TASK_ID = "bench-app"
RUN_TIMEOUT_S = 600.0


def _split(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``train.loss`` → ``{"train": {"loss": …}}``; per-device keys (``…@device``) left out."""
    grouped: dict[str, dict[str, float]] = {"train": {}, "evaluate": {}}
    for key, value in metrics.items():
        kind, _, name = key.partition(".")
        if "@" not in key and kind in grouped:
            grouped[kind][name] = value
    return grouped


def wait_warm(stack: Stack, count: int, timeout: float = 120.0) -> None:
    """Until the cloud's spare ServerApp host and every device's spare ClientApp worker have
    imported what they preload (as on a system that has been up a while)."""
    deadline = time.monotonic() + timeout
    logs = [stack.out_dir / "logs" / f"client{i}_task_manager.log" for i in range(count)]
    logs.append(stack.out_dir / "logs" / "cloud_task_manager.log")
    while time.monotonic() < deadline:
        if all(p.exists() and "waiting for a job" in p.read_text(errors="replace")
               for p in logs):
            return
        time.sleep(0.1)
    raise TimeoutError("the warm ServerApp host and ClientApp workers did not get ready")


def run_app(stack: Stack, task_id: str, app: Path, clients: int, rounds: int,
            timeout: float = RUN_TIMEOUT_S) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Create ``task_id`` from the app folder for ``clients`` devices and ``rounds`` rounds,
    start it, wait for its end; the ended task and its rounds' metrics."""
    assert stack.api is not None
    stack.create_task(task_id, app, free_port(), devices=clients,
                      server_arguments={"num-server-rounds": rounds, "min-nodes": clients})
    stack.api.post("/rpc_exec_start_server_task", {"task_id": task_id})
    task = stack.api.wait_until_ended(task_id, timeout)
    return task, stack.api.get(f"/api/tasks/{task_id}/metrics")["rounds"]


RESULTS_WAIT_S = 30.0


def collected_results(stack: Stack, task_id: str, clients: int,
                      timeout: float = RESULTS_WAIT_S) -> dict[str, Any]:
    """The latest run's result files with their sizes, ``{"server": {name: bytes}, "devices":
    {client: {name: bytes}}}``, once every device's log arrived (or ``timeout`` passed)."""
    assert stack.api is not None
    deadline = time.monotonic() + timeout
    while True:
        files = stack.api.get(f"/api/tasks/{task_id}/results")["files"]
        devices = {f["client_id"] for f in files if f["client_id"]}
        if len(devices) >= clients or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    found: dict[str, Any] = {"server": {}, "devices": {}}
    for item in files:
        if item["client_id"] is None:
            found["server"][item["path"].split("/", 1)[1]] = item["size"]
        else:
            name = item["path"].split("/", 2)[2]
            found["devices"].setdefault(item["client_id"], {})[name] = item["size"]
    return found


def run_ours(app: Path, clients: int, rounds: int, out_dir: Path) -> dict[str, Any]:
    """The app on this system; figures from the services' events."""
    stack = Stack(out_dir / "ours", client_count=clients,
                  client_params={"request_interval": "5"})
    try:
        stack.start_cloud()
        stack.start_clients()
        wait_warm(stack, clients)
        task, metrics = run_app(stack, TASK_ID, app, clients, rounds)
        results = collected_results(stack, TASK_ID, clients)
    finally:
        stack.stop()
    events = read_events(stack.events_path)
    started = first_event(events, "received", function="rpc_exec_start_server_task")
    ended = first_event(events, f"{task['status']} {TASK_ID}", after=started or 0.0)
    first_train = first_event(events, f"first train {TASK_ID}", after=started or 0.0)
    return {
        "status": "completed" if task["status"] == "finished" else task["status"],
        "reason": task.get("status_reason"),
        "rounds": [{"round": r["round"], **_split(r["metrics"])} for r in metrics],
        "wall_s": None if started is None or ended is None else round(ended - started, 4),
        "start_to_first_train_s": (None if started is None or first_train is None
                                   else round(first_train - started, 4)),
        "results": results,
    }


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
            argv, env=self.environ(name), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))

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


def _run_status(deployment: FlowerDeployment, run_id: int) -> str:
    listed = deployment.flwr("ls", "task", "--run-id", str(run_id), "--format", "json")
    try:
        runs = json.loads(listed.stdout).get("runs", [])
    except ValueError:
        return ""
    return str(runs[0].get("status", "")) if runs else ""


def run_flower(app: Path, clients: int, rounds: int, out_dir: Path) -> dict[str, Any]:
    """The same app under Flower's SuperLink/SuperNodes/``flwr run``."""
    work = out_dir / "flower"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copy = work / "app"
    shutil.copytree(app, copy, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    deployment = FlowerDeployment(work, clients)
    try:
        deployment.start()
        started = time.monotonic()
        submitted = deployment.flwr("run", str(copy), "task", "--format", "json", "--run-config",
                                    f"num-server-rounds={rounds} min-nodes={clients}")
        match = re.search(r'"run-id":\s*"?(\d+)', submitted.stdout)
        if match is None:
            raise RuntimeError(f"flwr run gave no run id: {submitted.stdout[-500:]} "
                               f"{submitted.stderr[-500:]}")
        run_id = int(match.group(1))
        deadline = started + RUN_TIMEOUT_S
        status = ""
        while not status.startswith("finished"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Flower's run still going after {RUN_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
            status = _run_status(deployment, run_id)
        return {"flower_deployment_wall_s": round(time.monotonic() - started, 3),
                "flower_status": status}
    finally:
        deployment.stop()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("app", type=Path, help="the Flower App's folder")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-flower", action="store_true",
                        help="skip the run under Flower's own deployment runtime")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parser.add_argument("--out", type=Path, default=Path("experiments/out") / f"flower_app-{stamp}",
                        help="where logs, events and figures.json go")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    app = args.app.resolve()
    if not (app / "pyproject.toml").is_file():
        parser.error(f"{app} has no pyproject.toml: not a Flower App folder")
    figures = run_ours(app, args.clients, args.rounds, args.out)
    if not args.no_flower:
        figures.update(run_flower(app, args.clients, args.rounds, args.out))
        ours, theirs = figures.get("wall_s"), figures.get("flower_deployment_wall_s")
        figures["ratio"] = round(theirs / ours, 1) if ours and theirs else None
    figures.update(app=app.name, clients=args.clients, rounds_asked=args.rounds)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(f"ours: {figures['status']} in {figures['wall_s']} s "
          f"(first train {figures['start_to_first_train_s']} s after the start call)")
    if "flower_deployment_wall_s" in figures:
        print(f"Flower's deployment runtime: {figures['flower_status']} in "
              f"{figures['flower_deployment_wall_s']} s; ratio {figures['ratio']}")
    if args.json:
        print(json.dumps(figures))
    return 0 if figures["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
