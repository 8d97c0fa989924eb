"""AGATA's experiment 1: a task created and started on the cloud reaches a client and trains.

``python -m experiments.exp1 [--repeat N] [--json] [--idle-cpu S]``

Starts every service as its own process with two devices, waits until they are up and warm,
creates the digits Flower App (``tasks/app_digits``) through the gateway's HTTP API, uploads it,
starts it; each device's client task manager learns of it (push), downloads and verifies the
files and hands the app to its warm ClientApp worker, which joins the run and trains. Prints the
step timings (mean ± 95 % CI over repeats), writes a CSV, PNG plots, and ``events.json``;
``--json`` ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from agata_cli.app_archive import zip_folder
from experiments import report
from experiments.flower_app import wait_warm
from experiments.processes import free_port
from experiments.stack import TASKS_DIR, Stack, first_event, last_event, merge_events, span

logger = logging.getLogger("experiments.exp1")

TASK_ID = "digits"
APP = TASKS_DIR / "app_digits"
STEPS = (
    "1 create task (HTTP)",
    "2 upload app (HTTP)",
    "3 start request -> server running",
    "4 server running -> device asks (push)",
    "5 request -> task offered",
    "6 download + verify files",
    "7 files -> ClientApp worker running",
    "8 worker running -> first train",
    "start returned -> first train (total)",
    "training (first train -> task finished)",
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / 100.0


def run_once(out_dir: Path, rounds: int, idle_cpu_s: float) -> dict[str, Any]:
    """One full run; returns its step timings and figures."""
    stack = Stack(out_dir, client_count=2, client_params={"request_interval": "10"},
                  warm_spares=True)
    marks: dict[str, float] = {}
    result: dict[str, Any] = {}
    try:
        api = stack.start_cloud()
        stack.start_clients()
        wait_warm(stack, 2)
        port = free_port()
        marks["create sent"] = time.time()
        api.post("/rpc_exec_create_task", {
            "task_id": TASK_ID, "host": "127.0.0.1", "port": port,
            "selection_criteria": "data_qnt >= 0", "devices": 2,
            "server_arguments": {"num-server-rounds": rounds},
            "tags": ["digits", "exp1"]})
        marks["create returned"] = time.time()
        api.upload_archive(TASK_ID, "app_digits.zip", zip_folder(APP))
        marks["upload returned"] = time.time()
        api.post("/rpc_exec_start_server_task", {"task_id": TASK_ID})
        marks["start returned"] = time.time()
        status = api.wait_until_ended(TASK_ID, timeout=240)["status"]
        marks["task ended"] = time.time()
        metrics = api.get(f"/api/tasks/{TASK_ID}/metrics")
        result["status"] = status
        result["rounds"] = [(r["round"], r["metrics"].get("evaluate.accuracy"))
                            for r in metrics["rounds"]]
        result["final_accuracy"] = result["rounds"][-1][1] if result["rounds"] else None
        if idle_cpu_s > 0:
            result["idle_cpu_percent"] = _idle_cpu(stack, idle_cpu_s)
    finally:
        result["exit_codes"] = stack.stop()
    events = merge_events(stack.events_path, marks, "exp1")
    result["timings"] = _timings(events, marks)
    result["events"] = str(stack.events_path)
    return result


def _idle_cpu(stack: Stack, seconds: float) -> float:
    pid = next(iter(stack.client_pids().values()))
    logger.info("measuring the idle client task manager's CPU for %.0f s", seconds)
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return round(100 * (cpu_seconds(pid) - before) / (time.monotonic() - started), 3)


def _timings(events: list[dict[str, Any]], marks: dict[str, float]) -> dict[str, float | None]:
    start = marks.get("start returned")
    start_received = first_event(events, "received", function="rpc_exec_start_server_task")
    server_started = first_event(events, f"server started {TASK_ID}")
    offered = first_event(events, f"offers received {TASK_ID}")
    asked = last_event(events, "requesting tasks", before=offered) if offered else None
    download_start = first_event(events, f"download started {TASK_ID}")
    download_end = first_event(events, f"download finished {TASK_ID}")
    client_start = first_event(events, f"client started {TASK_ID}")
    first_train = first_event(events, f"first train {TASK_ID}")
    finished = first_event(events, f"finished {TASK_ID}")
    return {
        STEPS[0]: span(marks.get("create sent"), marks.get("create returned")),
        STEPS[1]: span(marks.get("create returned"), marks.get("upload returned")),
        STEPS[2]: span(start_received, server_started),
        STEPS[3]: span(server_started, asked),
        STEPS[4]: span(asked, offered),
        STEPS[5]: span(download_start, download_end),
        STEPS[6]: span(download_end, client_start),
        STEPS[7]: span(client_start, first_train),
        STEPS[8]: span(start, first_train),
        STEPS[9]: span(first_train, finished),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="AGATA experiment 1 (task reaches a client)")
    parser.add_argument("--repeat", type=int, default=1, help="runs (mean ± 95%% CI)")
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds")
    parser.add_argument("--idle-cpu", type=float, default=0.0, metavar="S",
                        help="also measure the idle client task manager's CPU for S seconds")
    parser.add_argument("--out", type=Path, default=Path("experiments/out"),
                        help="output folder")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    base = args.out / f"exp1-{time.strftime('%Y%m%d-%H%M%S')}"
    runs = []
    for index in range(1, args.repeat + 1):
        logger.info("run %d/%d", index, args.repeat)
        runs.append(run_once(base / f"run{index}", args.rounds, args.idle_cpu))
        logger.info("run %d: task %s, final accuracy %s", index, runs[-1]["status"],
                    runs[-1]["final_accuracy"])
    print(report.write_outputs(base, "exp1", runs, STEPS, "Experiment 1"))
    timings = [run["timings"] for run in runs]
    totals = [t[STEPS[8]] for t in timings if t[STEPS[8]] is not None]
    accuracies = [run["final_accuracy"] for run in runs if run["final_accuracy"] is not None]
    figures: dict[str, Any] = {
        "start_to_first_train_s": round(report.mean_ci95(totals)[0], 4) if totals else None,
        "start_to_first_train_ci95_s": round(report.mean_ci95(totals)[1], 4)
        if totals else None,
        "final_accuracy": round(report.mean_ci95(accuracies)[0], 4) if accuracies else None,
        "statuses": [run["status"] for run in runs],
        "events": runs[-1]["events"],
        "csv": str(base / "exp1_times.csv"),
        "plots": [str(base / "exp1_timings.png"), str(base / "exp1_accuracy.png")],
        "runs": len(runs),
    }
    idle = [run["idle_cpu_percent"] for run in runs if "idle_cpu_percent" in run]
    if idle:
        figures["idle_client_cpu_percent"] = max(idle)
    print(f"outputs in {base}")
    if args.json:
        print(json.dumps(figures))
    ok = all(run["status"] == "finished" for run in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
