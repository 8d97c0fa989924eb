"""``python -m experiments.flower_app APP_DIR``: one Flower App, run here and by Flower's own
deployment runtime, timed in the same invocation.

Ours: the whole stack as ``python -m`` processes with N local devices; the task is created from
the app folder through the gateway (uploaded as a zip), started, and timed from the start call
to the task's end with the services' own events. Flower's: a SuperLink and N SuperNodes
(``--node-config partition-id=i num-partitions=N``) and ``flwr run``, timed from the submission
to the run's end as its Control API reports it. Both get ``num-server-rounds=R`` and
``min-nodes=N``. Prints a summary, and with ``--json`` one JSON line: ``status``, ``rounds``
(the aggregated train and evaluate metrics of each round), ``wall_s``,
``start_to_first_train_s`` (the start call to the first ClientApp train call on a device),
``flower_deployment_wall_s``, ``flower_status``, ``ratio``, and ``results``: the files
collected from the server and each device, with their sizes. ``--executors confined,subprocess``
runs ours once per executor (each on a stack of its own, both sides set to it; ``--repeat`` runs
each that many times) and adds ``by_executor``: each one's ``start_to_first_train_s`` and
``wall_s`` per run and their medians, to put a number on what confinement costs.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from agata_cli.client import CliError
from agata_contracts.lifecycle import output_log_name
from experiments.flower_deployment import RUN_TIMEOUT_S, run_flower
from experiments.processes import free_port
from experiments.rss import PeakRss
from experiments.stack import FLOWER_WORKERS, WARM_HOSTS, Stack, first_event, read_events
from flower_runtime import moved_bytes

logger = logging.getLogger("experiments.flower_app")

TASK_ID = "bench-app"


def _split(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``train.loss`` → ``{"train": {"loss": …}}``; per-device keys (``…@device``) left out."""
    grouped: dict[str, dict[str, float]] = {"train": {}, "evaluate": {}}
    for key, value in metrics.items():
        kind, _, name = key.partition(".")
        if "@" not in key and kind in grouped:
            grouped[kind][name] = value
    return grouped


WARM = "waiting for a job"
"""What a warm ServerApp host or ClientApp worker logs once it imported what it preloads."""


def warm_logs(stack: Stack, count: int) -> list[Path]:
    """The logs that say when a spare got warm: each of ``count`` devices', then the cloud's."""
    logs = [stack.out_dir / "logs" / f"client{i}_task_manager.log" for i in range(count)]
    logs.append(stack.out_dir / "logs" / "cloud_task_manager.log")
    return logs


def warm_counts(stack: Stack, count: int) -> list[int]:
    """How often each device's and the cloud's log said a spare got warm so far."""
    return [p.read_text(errors="replace").count(WARM) if p.exists() else 0
            for p in warm_logs(stack, count)]


def _last_lines(log: Path, lines: int = 5) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n    ".join(text.splitlines()[-lines:]) or "(empty)"


def wait_warm(stack: Stack, count: int, timeout: float = 120.0,
              before: list[int] | None = None) -> list[int]:
    """Until the cloud's spare ServerApp host and every device's spare ClientApp worker have
    imported what they preload (as on a system that has been up a while): each log says so
    once more than in ``before`` (the counts when the previous run started); the counts now.
    A stack that keeps none of them is refused at once."""
    environments = [stack.cloud_env.get(WARM_HOSTS),
                    *(env.get(FLOWER_WORKERS) for env in stack.client_envs[:count])]
    if "0" in environments:
        raise ValueError("this stack keeps no warm spares to wait for "
                         "(Stack(warm_spares=True) keeps the shipped number)")
    deadline = time.monotonic() + timeout
    while True:
        now = warm_counts(stack, count)
        waiting = [log for log, n, b in zip(warm_logs(stack, count), now,
                                            before or [0] * len(now), strict=True) if n <= b]
        if not waiting:
            return now
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the warm ServerApp host and ClientApp workers did not get ready within "
                f"{timeout:.0f} s; the last lines of the logs still waiting:\n" + "\n".join(
                    f"  {log}:\n    {_last_lines(log)}" for log in waiting))
        time.sleep(0.1)


def run_app(stack: Stack, task_id: str, app: Path, clients: int, run_config: dict[str, Any],
            timeout: float = RUN_TIMEOUT_S) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Create ``task_id`` from the app folder for ``clients`` devices with ``run_config`` as its
    server arguments, start it, wait for its end; the ended task and its rounds' metrics."""
    assert stack.api is not None
    stack.create_task(task_id, app, free_port(), devices=clients, server_arguments=run_config)
    stack.api.post("/rpc_exec_start_server_task", {"task_id": task_id})
    task = stack.api.wait_until_ended(task_id, timeout)
    return task, stack.api.get(f"/api/tasks/{task_id}/metrics")["rounds"]


def declared_config(app: Path) -> dict[str, Any]:
    """The run config keys the app declares (``[tool.flwr.app.config]``) with defaults."""
    manifest = tomllib.loads((app / "pyproject.toml").read_text())
    config = manifest.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    return dict(config) if isinstance(config, dict) else {}


def run_config(app: Path, clients: int, rounds: int, model_mb: float | None = None
               ) -> dict[str, Any]:
    """What the benchmark sets of the app's run config: only keys the app declares
    (``num-server-rounds``, ``min-nodes``, and ``vector-size`` for a model of ``model_mb``
    MB of float64), as Flower too refuses an undeclared key."""
    declared = declared_config(app)
    wanted: dict[str, Any] = {"num-server-rounds": rounds, "min-nodes": clients}
    if model_mb is not None:
        if "vector-size" not in declared:
            raise ValueError(f"{app.name} declares no vector-size: --model-mb needs an app "
                             "whose model size is set by it (tasks/app_numpy)")
        wanted["vector-size"] = max(1, int(model_mb * 1e6 / 8))
    return {key: value for key, value in wanted.items() if key in declared}


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


def host_traffic(stack: Stack, task_id: str) -> int | None:
    """The model bytes the latest run's ServerApp host says it moved both ways (from the
    server output it kept as a result), or None when it said nothing."""
    assert stack.api is not None
    path = f"/api/tasks/{task_id}/runs/0/results/server/{output_log_name('server')}"
    try:
        text = stack.api.download(path).decode(errors="replace")
    except CliError:
        return None
    return moved_bytes(text)


OURS_PROCESSES = {"host": "flower_runtime.server_host", "gateway": "-m cloud_gateway",
                  "device_worker": "flower_runtime.client_worker",
                  "manager": "-m cloud_task_manager"}


def run_ours(app: Path, clients: int, configs: list[dict[str, Any]], out_dir: Path,
             executor: str | None = None) -> list[dict[str, Any]]:
    """The app on this system, once per run config, on one stack (its task managers set to
    ``executor`` when given); figures from the services' events, and each run's peak memory
    per process role."""
    stack = Stack(out_dir / (f"ours-{executor}" if executor else "ours"), client_count=clients,
                  warm_spares=True,
                  client_params={"request_interval": "5",
                                 **({"executor": executor} if executor else {})},
                  cloud_overrides=({"AGATA_CLOUD_TASK_MANAGER_EXECUTOR": executor}
                                   if executor else {}))
    outcomes = []
    try:
        stack.start_cloud()
        stack.start_clients()
        warm: list[int] | None = None
        for index, config in enumerate(configs):
            warm = wait_warm(stack, clients, before=warm)
            task_id = f"{TASK_ID}-{index}"
            memory = PeakRss(OURS_PROCESSES).start()
            try:
                task, metrics = run_app(stack, task_id, app, clients, config)
            finally:
                peaks = memory.stop()
            outcomes.append((task_id, task, metrics, (peaks, memory.cpu_s()),
                             collected_results(stack, task_id, clients),
                             host_traffic(stack, task_id)))
    finally:
        stack.stop()
    events = read_events(stack.events_path)
    figures = []
    previous_end = 0.0
    for task_id, task, metrics, (peaks, cpu), results, moved in outcomes:
        started = first_event(events, "received", after=previous_end,
                              function="rpc_exec_start_server_task")
        ended = first_event(events, f"{task['status']} {task_id}", after=started or 0.0)
        previous_end = ended or previous_end
        first_train = first_event(events, f"first train {task_id}", after=started or 0.0)
        figures.append({
            "status": "completed" if task["status"] == "finished" else task["status"],
            "reason": task.get("status_reason"),
            "rounds": [{"round": r["round"], **_split(r["metrics"])} for r in metrics],
            "wall_s": None if started is None or ended is None else round(ended - started, 4),
            "start_to_first_train_s": (None if started is None or first_train is None
                                       else round(first_train - started, 4)),
            "peak_rss_mb": peaks,
            "cpu_s": cpu,
            "results": results,
            "model_bytes_moved": moved,
        })
    return figures


def model_bytes_moved(model_mb: float, clients: int, rounds: int) -> int:
    """Model bytes a FedAvg round of train and evaluate on every device moves: the global
    model to each device twice (train, evaluate) and each device's update back once (what
    the figures use where the host did not say what it moved)."""
    return int(model_mb * 1e6) * clients * 3 * rounds


def _per_size(sizes: list[float], ours: list[dict[str, Any]], theirs: list[dict[str, Any]],
              clients: int, rounds: int) -> list[dict[str, Any]]:
    """Each model size's figures against the 1-number run (the first) of the same invocation."""
    rows = []
    base = ours[0].get("wall_s")
    flower_base = theirs[0].get("flower_deployment_wall_s") if theirs else None
    for index, size in enumerate(sizes, start=1):
        measured = ours[index].get("model_bytes_moved")
        moved = measured if measured is not None else model_bytes_moved(size, clients, rounds)
        row: dict[str, Any] = {
            "model_mb": size, "model_bytes_moved": moved, "status": ours[index]["status"],
            "wall_s": ours[index]["wall_s"], "peak_rss_mb": ours[index]["peak_rss_mb"],
            "cpu_s": ours[index]["cpu_s"], "mb_per_s": _rate(moved, ours[index]["wall_s"], base)}
        if theirs:
            row.update(flower_status=theirs[index]["flower_status"],
                       flower_deployment_wall_s=theirs[index]["flower_deployment_wall_s"],
                       flower_mb_per_s=_rate(moved, theirs[index]["flower_deployment_wall_s"],
                                             flower_base),
                       flower_peak_rss_mb=theirs[index].get("flower_peak_rss_mb"),
                       flower_cpu_s=theirs[index].get("flower_cpu_s"))
        rows.append(row)
    return rows


def _rate(moved: int, wall_s: float | None, base_s: float | None) -> float | None:
    if wall_s is None or base_s is None or wall_s <= base_s:
        return None
    return round(moved / (wall_s - base_s) / 1e6, 1)


def by_executor(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each executor's ``start_to_first_train_s`` and ``wall_s`` over its runs, with medians."""
    summary: dict[str, dict[str, Any]] = {}
    for executor, figures in runs.items():
        entry: dict[str, Any] = {"statuses": [f["status"] for f in figures]}
        for key in ("start_to_first_train_s", "wall_s"):
            values = [f[key] for f in figures if f[key] is not None]
            entry[key] = values
            entry[f"{key}_median"] = round(statistics.median(values), 4) if values else None
        summary[executor] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("app", type=Path, help="the Flower App's folder")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-mb", default="",
                        help="model sizes in MB (comma-separated): the app (one that declares "
                             "vector-size, such as tasks/app_numpy) is run with a float64 model "
                             "of each size after a 1-number run, on both runtimes; per size: "
                             "wall_s, flower_deployment_wall_s, model_bytes_moved, mb_per_s "
                             "(above the 1-number run) and each side's peak RSS and CPU seconds")
    parser.add_argument("--no-flower", action="store_true",
                        help="skip the run under Flower's own deployment runtime")
    parser.add_argument("--executors", default="",
                        help="run ours with each of these task executors in turn (comma "
                             "separated: confined, subprocess, docker; default: the "
                             "configured one) and compare them (by_executor)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of the app per executor (the first run config)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parser.add_argument("--out", type=Path, default=Path("experiments/out") / f"flower_app-{stamp}",
                        help="where logs, events and figures.json go")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per status poll otherwise
    app = args.app.resolve()
    if not (app / "pyproject.toml").is_file():
        parser.error(f"{app} has no pyproject.toml: not a Flower App folder")
    sizes = [float(size) for size in args.model_mb.split(",")] if args.model_mb else []
    try:
        configs = ([run_config(app, args.clients, args.rounds, 8e-6)]
                   + [run_config(app, args.clients, args.rounds, size) for size in sizes]
                   if sizes else [run_config(app, args.clients, args.rounds)])
    except ValueError as exc:
        parser.error(str(exc))
    executors = [name.strip() for name in args.executors.split(",") if name.strip()]
    repeated = [configs[0]] * max(0, args.repeat - 1)
    runs = {name: run_ours(app, args.clients, configs + repeated, args.out, name)
            for name in executors or [""]}
    ours = next(iter(runs.values()))
    theirs = [] if args.no_flower else run_flower(app, args.clients, configs, args.out)
    figures: dict[str, Any] = {**ours[0], **(theirs[0] if theirs else {})}
    if executors:
        figures["by_executor"] = by_executor(
            {name: [done[0], *done[len(configs):]] for name, done in runs.items()})
    if theirs:
        mine, flowers = figures.get("wall_s"), figures.get("flower_deployment_wall_s")
        figures["ratio"] = round(flowers / mine, 1) if mine and flowers else None
    figures.update(app=app.name, clients=args.clients, rounds_asked=args.rounds,
                   run_config=configs[0])
    if sizes:
        figures["sizes"] = _per_size(sizes, ours, theirs, args.clients, args.rounds)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(f"ours: {figures['status']} in {figures['wall_s']} s "
          f"(first train {figures['start_to_first_train_s']} s after the start call)")
    if "flower_deployment_wall_s" in figures:
        print(f"Flower's deployment runtime: {figures['flower_status']} in "
              f"{figures['flower_deployment_wall_s']} s; ratio {figures['ratio']}")
    for name, entry in figures.get("by_executor", {}).items():
        print(f"executor {name}: first train {entry['start_to_first_train_s_median']} s, "
              f"wall {entry['wall_s_median']} s (medians of {len(entry['statuses'])} runs)")
    for row in figures.get("sizes", []):
        print(f"model {row['model_mb']:g} MB ({row['model_bytes_moved'] / 1e6:.0f} MB moved): "
              f"ours {row['status']} {row['wall_s']} s, {row['mb_per_s']} MB/s, peak RSS "
              f"{row['peak_rss_mb']}, CPU s {row['cpu_s']}"
              + (f"; Flower {row['flower_status']} {row['flower_deployment_wall_s']} s, "
                 f"{row['flower_mb_per_s']} MB/s, peak RSS {row['flower_peak_rss_mb']}, "
                 f"CPU s {row['flower_cpu_s']}"
                 if "flower_status" in row else ""))
    if args.json:
        print(json.dumps(figures))
    ok = figures["status"] == "completed" and all(
        row["status"] == "completed" for row in figures.get("sizes", [])) and all(
        status == "completed" for entry in figures.get("by_executor", {}).values()
        for status in entry["statuses"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
