"""AGATA's experiment 2: a failing task (E) makes the client switch to a healthy one (C).

``python -m experiments.exp2 [--repeat N] [--json]``

Both tasks are Flower Apps on two devices: E (``tasks/app_error``, whose ClientApp raises on
its first training message) and C (``tasks/app_digits``). E is started first, so the devices
take it; E's ClientApp raises; each client task manager reports it, sets E aside and starts C
at once. ``failover_s`` is the time from E's reported error to C's ClientApp worker running.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from experiments import report
from experiments.flower_app import wait_warm
from experiments.processes import free_port
from experiments.stack import TASKS_DIR, Stack, first_event, merge_events, span

logger = logging.getLogger("experiments.exp2")

STEPS = (
    "E start -> E client running",
    "E client running -> E error",
    "failover: E error -> C client running",
    "E error -> failure recorded by the client",
    "C client running -> C first train",
    "C first train -> C finished",
    "failover: E error -> C first train",
)


def run_once(out_dir: Path, rounds: int, device_spares: int = 1) -> dict[str, Any]:
    """One full run; returns its timings and outcome."""
    stack = Stack(out_dir, client_count=2, warm_spares=True,
                  client_params={"request_interval": "10", "flower_workers": str(device_spares)})
    marks: dict[str, float] = {}
    result: dict[str, Any] = {}
    try:
        api = stack.start_cloud()
        stack.start_clients()
        wait_warm(stack, 2)
        for task_id, app, server_arguments in (
            ("C", TASKS_DIR / "app_digits", {"num-server-rounds": rounds}),
            ("E", TASKS_DIR / "app_error", {"min-nodes": 2}),
        ):
            stack.create_task(task_id, app, free_port(), devices=2,
                              server_arguments=server_arguments, tags=["exp2"])
        api.post("/rpc_exec_start_server_task", {"task_id": "E"})
        marks["E start returned"] = time.time()
        api.post("/rpc_exec_start_server_task", {"task_id": "C"})
        marks["C start returned"] = time.time()
        result["status_C"] = api.wait_until_ended("C", timeout=240)["status"]
        reports = api.get("/api/tasks/E/reports")["reports"]
        result["E_reports"] = [(r["client_id"], r["status"], r["reason"]) for r in reports]
        if api.get("/api/tasks/E")["status"] == "running":
            api.post("/rpc_exec_stop_server_task", {"task_id": "E"})
        metrics = api.get("/api/tasks/C/metrics")
        result["rounds"] = [(r["round"], r["metrics"].get("evaluate.accuracy"))
                            for r in metrics["rounds"]]
        result["final_accuracy"] = result["rounds"][-1][1] if result["rounds"] else None
    finally:
        result["exit_codes"] = stack.stop()
    events = merge_events(stack.events_path, marks, "exp2")
    result["timings"] = _timings(events, marks)
    result["events"] = str(stack.events_path)
    return result


def _timings(events: list[dict[str, Any]], marks: dict[str, float]) -> dict[str, float | None]:
    e_client = first_event(events, "client started E")
    e_error = first_event(events, "client error E")
    c_client = first_event(events, "client started C")
    e_failed = first_event(events, "client failed E")
    c_first_train = first_event(events, "first train C")
    c_finished = first_event(events, "finished C")
    return {
        STEPS[0]: span(marks.get("E start returned"), e_client),
        STEPS[1]: span(e_client, e_error),
        STEPS[2]: span(e_error, c_client),
        STEPS[3]: span(e_error, e_failed),
        STEPS[4]: span(c_client, c_first_train),
        STEPS[5]: span(c_first_train, c_finished),
        STEPS[6]: span(e_error, c_first_train),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="AGATA experiment 2 (failover E -> C)")
    parser.add_argument("--repeat", type=int, default=1, help="runs (mean ± 95%% CI)")
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds of task C")
    parser.add_argument("--device-spares", type=int, default=1, metavar="N",
                        help="warm ClientApp workers per device (client.params flower_workers); "
                             "with 2, C finds one warm when E fails")
    parser.add_argument("--out", type=Path, default=Path("experiments/out"),
                        help="output folder")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    base = args.out / f"exp2-{time.strftime('%Y%m%d-%H%M%S')}"
    runs = []
    for index in range(1, args.repeat + 1):
        logger.info("run %d/%d", index, args.repeat)
        runs.append(run_once(base / f"run{index}", args.rounds, args.device_spares))
        logger.info("run %d: C %s; E reports %s", index, runs[-1]["status_C"],
                    runs[-1]["E_reports"])
    print(report.write_outputs(base, "exp2", runs, STEPS, "Experiment 2"))
    timings = [run["timings"] for run in runs]
    failovers = [t[STEPS[2]] for t in timings if t[STEPS[2]] is not None]
    figures: dict[str, Any] = {
        "failover_s": round(report.mean_ci95(failovers)[0], 4) if failovers else None,
        "failover_ci95_s": round(report.mean_ci95(failovers)[1], 4) if failovers else None,
        "failover_to_first_train_s": _mean([t[STEPS[6]] for t in timings]),
        "start_to_client_running_s": _mean([t[STEPS[0]] for t in timings]),
        "final_accuracy": _mean([run["final_accuracy"] for run in runs]),
        "statuses_C": [run["status_C"] for run in runs],
        "events": runs[-1]["events"],
        "csv": str(base / "exp2_times.csv"),
        "plots": [str(base / "exp2_timings.png"), str(base / "exp2_accuracy.png")],
        "runs": len(runs),
    }
    print(f"outputs in {base}")
    if args.json:
        print(json.dumps(figures))
    ok = all(run["status_C"] == "finished" for run in runs) and len(failovers) == len(runs)
    return 0 if ok else 1


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(report.mean_ci95(present)[0], 4) if present else None


if __name__ == "__main__":
    sys.exit(main())
