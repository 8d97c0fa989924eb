"""The same Flower App on 1, 2, 4, … devices: ``python -m experiments.scale --clients 1,2,4``.

As the seeds compare one experiment on 1x, 2x and 4x clusters: for each device count the whole
stack comes up with that many local devices (warm), the app (default ``tasks/app_digits``) runs
``--rounds`` rounds on all of them, and the run is timed from the start call to its end with the
services' events. A sampler reads every process of the stack (ClientApp workers and the
ServerApp host included) from ``/proc`` every 0.2 s for peak memory and CPU. Writes a CSV and a
PNG plot, prints a table, and with ``--json`` one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.flower_app import run_app, run_config, wait_warm
from experiments.stack import TASKS_DIR, Stack, first_event, read_events

logger = logging.getLogger("experiments.scale")

TASK_ID = "scale"
RUN_TIMEOUT_S = 900.0
TICKS_PER_S = 100.0


def _children(pids: set[int]) -> set[int]:
    """Every live descendant of ``pids`` (and ``pids``)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(parents.get(pid, []))
    return found


def _role(pid: int) -> str | None:
    """What a process of the stack is, from its command line."""
    try:
        command = (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\x00", b" ")
                   .decode(errors="replace"))
    except OSError:
        return None
    for module in ("client_worker", "server_host", "client_task_manager", "client_gateway",
                   "cloud_task_manager", "cloud_gateway", "user_manager", "event_reader"):
        if f"-m {module}" in command or f"flower_runtime.{module}" in command:
            return module
    return None


@dataclass
class Sampler:
    """Peak memory and CPU of each process under some roots, read every ``interval_s``."""

    roots: set[int]
    interval_s: float = 0.2
    peak_rss_mb: dict[int, float] = field(default_factory=dict)
    cpu_s: dict[int, float] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        for pid in _children(self.roots):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            role = self.roles.get(pid) or _role(pid)
            if role is None:
                continue
            self.roles[pid] = role
            rss = next((int(line.split()[1]) for line in status.splitlines()
                        if line.startswith("VmRSS:")), 0) / 1024
            self.peak_rss_mb[pid] = max(self.peak_rss_mb.get(pid, 0.0), rss)
            self.cpu_s[pid] = (int(stat[11]) + int(stat[12])) / TICKS_PER_S

    def start(self) -> None:
        """Sample in the background until ``stop``."""
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self._sample()

        self._sample()
        self._thread = threading.Thread(target=loop, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, dict[str, float]]:
        """The largest peak memory and CPU seen per role (over that role's processes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        by_role: dict[str, dict[str, float]] = {}
        for pid, role in self.roles.items():
            entry = by_role.setdefault(role, {"processes": 0, "peak_rss_mb": 0.0,
                                              "cpu_s_max": 0.0})
            entry["processes"] += 1
            entry["peak_rss_mb"] = round(max(entry["peak_rss_mb"], self.peak_rss_mb[pid]), 1)
            entry["cpu_s_max"] = round(max(entry["cpu_s_max"], self.cpu_s.get(pid, 0.0)), 2)
        return by_role


def run_once(app: Path, clients: int, rounds: int, out_dir: Path) -> dict[str, Any]:
    """The app on ``clients`` warm devices; its timings and resources."""
    stack = Stack(out_dir, client_count=clients, client_params={"request_interval": "5"},
                  warm_spares=True,
                  cloud_overrides={"AGATA_CLOUD_TASK_MANAGER_WARM_HOSTS": "1"})
    sampler: Sampler | None = None
    try:
        stack.start_cloud()
        stack.start_clients()
        wait_warm(stack, clients, timeout=60 + 30 * clients)
        assert stack.processes is not None
        sampler = Sampler({process.pid for process in stack.processes.processes.values()})
        sampler.start()
        task, metrics = run_app(stack, TASK_ID, app, clients,
                                run_config(app, clients, rounds), RUN_TIMEOUT_S)
    finally:
        resources = sampler.stop() if sampler is not None else {}
        stack.stop()
    events = read_events(stack.events_path)
    started = first_event(events, "received", function="rpc_exec_start_server_task")
    ended = first_event(events, f"{task['status']} {TASK_ID}", after=started or 0.0)
    reported = [datetime.fromisoformat(r["reported_at"].replace("Z", "+00:00")).timestamp()
                for r in metrics]
    per_round = [b - a for a, b in zip(reported, reported[1:], strict=False)]
    last = metrics[-1]["metrics"] if metrics else {}
    return {
        "clients": clients,
        "status": task["status"],
        "total_s": None if started is None or ended is None else round(ended - started, 3),
        "round_s": round(sum(per_round) / len(per_round), 3) if per_round else None,
        "final_accuracy": last.get("evaluate.accuracy"),
        "resources": resources,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", default="1,2,4",
                        help="device counts, comma-separated (e.g. 1,2,4,8)")
    parser.add_argument("--app", type=Path, default=TASKS_DIR / "app_digits",
                        help="the Flower App's folder")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per run")
    parser.add_argument("--out", type=Path, default=Path("experiments/out"),
                        help="output folder")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    try:
        counts = [int(part) for part in args.clients.split(",") if part.strip()]
    except ValueError:
        parser.error(f"--clients must be whole numbers separated by commas, not {args.clients!r}")
    if not counts or min(counts) < 1:
        parser.error("--clients needs device counts of at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    base = args.out / f"scale-{time.strftime('%Y%m%d-%H%M%S')}"
    runs = []
    for count in counts:
        logger.info("%d device(s)", count)
        runs.append(run_once(args.app.resolve(), count, args.rounds, base / f"clients{count}"))
    _write(base, runs)
    print(f"{'devices':>8} {'status':>9} {'total s':>8} {'round s':>8} "
          f"{'worker MB':>10} {'host MB':>8}")
    for run in runs:
        worker = run["resources"].get("client_worker", {}).get("peak_rss_mb")
        host = run["resources"].get("server_host", {}).get("peak_rss_mb")
        print(f"{run['clients']:>8} {run['status']:>9} {run['total_s']!s:>8} "
              f"{run['round_s']!s:>8} {worker!s:>10} {host!s:>8}")
    print(f"outputs in {base}")
    if args.json:
        print(json.dumps({"app": args.app.name, "rounds": args.rounds, "runs": runs,
                          "csv": str(base / "scale.csv"), "plot": str(base / "scale.png")}))
    return 0 if all(run["status"] == "finished" for run in runs) else 1


def _write(base: Path, runs: list[dict[str, Any]]) -> None:
    base.mkdir(parents=True, exist_ok=True)
    with (base / "scale.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clients", "status", "total_s", "round_s", "final_accuracy",
                         "worker_peak_rss_mb", "host_peak_rss_mb"])
        for run in runs:
            writer.writerow([run["clients"], run["status"], run["total_s"], run["round_s"],
                             run["final_accuracy"],
                             run["resources"].get("client_worker", {}).get("peak_rss_mb"),
                             run["resources"].get("server_host", {}).get("peak_rss_mb")])
    figure, axis = plt.subplots(figsize=(6, 4))
    shown = [run for run in runs if run["total_s"] is not None]
    axis.plot([run["clients"] for run in shown], [run["total_s"] for run in shown], "o-",
              label="total (start → end)")
    axis.plot([run["clients"] for run in shown if run["round_s"] is not None],
              [run["round_s"] for run in shown if run["round_s"] is not None], "s--",
              label="per round")
    axis.set_xlabel("devices")
    axis.set_ylabel("seconds")
    axis.set_title("The same app on more devices")
    axis.legend()
    figure.tight_layout()
    figure.savefig(base / "scale.png", dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
