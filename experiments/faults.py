"""Faults as an operator meets them: ``python -m experiments.faults [--json]``.

Each scenario brings up its own stack (two warm local devices, the digits app with many short
rounds) and injects one fault mid-run:

* ``device_kill``: ``kill -9`` of a device's client task manager, then a restart: how many of
  its task processes survive it (orphans), whether the device ever holds two places in the run
  (duplicates), and how long until it trains again;
* ``vanished_device``: a device's task manager and its ClientApp worker killed for good: how
  long until the run ends (its round timeout is ``device_rejoin_s``, set to 5 s here);
* ``manager_kill``: ``kill -9`` of the cloud task manager, then a restart: the ServerApp host
  left behind, how long until the run records its next round, the rounds it lost or redid, and
  the server's reports (kept in its spool) missing from, or doubled in, the run's record;
* ``replica_kill``: two cloud task manager replicas on a throw-away PostgreSQL, ``kill -9`` of
  the one running the run: how long until the other records a round of it (its lease, 3 s
  here, must run out first), and the rounds the run lost;
* ``gateway_down``: the cloud gateway stopped for 20 s while a device's stats change, then
  started again: how long its outbox takes to drain, and whether the last stats arrived;
* ``broker_down``: the cloud's own RabbitMQ node (never the machine's broker; it needs network
  namespaces and ``rabbitmq-server``) stopped for 10 s: how long a gateway call takes while it
  is away (p99), and how long after it is back calls succeed again;
* ``device_replaced`` (``experiments.fault_devices``): three devices, a run of two, one frozen
  mid-run: how long until the third trains in its place, rounds lost, how the run ended.
* ``host_kill``, ``run_end_workers``, ``shutdown_resume``, ``bad_checkpoint``,
  ``wiped_checkpoints`` (``experiments.fault_runs``): a run outliving its host, its end,
  ``agata up``, its newest checkpoint and its app wiping its state folder.

Prints one JSON line with the figures (``null`` with a ``*_note`` where a scenario could not
measure one) and writes it to ``--out``/faults.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika

from agata_cli.client import ApiError, CliError
from agata_contracts.queues import outbox_queue
from experiments.bench_rpc import percentile
from experiments.flower_app import wait_warm
from experiments.live_files import matching
from experiments.netns import Network, netns_unavailable
from experiments.postgres import PostgresUnavailable, temporary_database
from experiments.processes import alive, free_port
from experiments.rabbit_nodes import RabbitNode, rabbitmq_unavailable, start_brokers, stop_brokers
from experiments.stack import TASKS_DIR, Api, Stack

logger = logging.getLogger("experiments.faults")

TASK_ID = "faults"
ROUNDS = 400
REJOIN_S = 5.0
REPLICA_LEASE_S = 3.0
Figures = dict[str, Any]


def _wait(predicate: Callable[[], Any], timeout: float, what: str, poll_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (ApiError, CliError):
            value = None
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _rounds(api: Api) -> int:
    rounds = api.get(f"/api/tasks/{TASK_ID}/metrics")["rounds"]
    return max((r["round"] for r in rounds), default=0)


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _stack(out: Path, name: str, replicas: int = 1, **overrides: str) -> Stack:
    stack = Stack(out / name, client_count=2, replicas=replicas, warm_spares=True,
                  client_params={"request_interval": "1", "task_retry_s": "1",
                                 "task_retry_max_s": "2"},
                  cloud_overrides={"AGATA_CLOUD_TASK_MANAGER_DEVICE_REJOIN_S": str(REJOIN_S),
                                   **overrides})
    stack.start_cloud()
    stack.start_clients()
    wait_warm(stack, 2)
    return stack


def _start_run(stack: Stack, rounds_first: int = 2, rounds: int = ROUNDS,
               app: Path = TASKS_DIR / "app_digits") -> Api:
    api = stack.api
    assert api is not None
    stack.create_task(TASK_ID, app, free_port(), devices=2,
                      server_arguments={"num-server-rounds": rounds, "min-nodes": 2})
    api.post("/rpc_exec_start_server_task", {"task_id": TASK_ID})
    _wait(lambda: _rounds(api) >= rounds_first, 60, f"round {rounds_first}")
    return api


def _server_log(stack: Stack) -> list[str]:
    return (stack.out_dir / "logs" / "cloud_task_manager.log").read_text(
        errors="replace").splitlines()


JOINED = "flower_runtime.server_host: device device-0 joined as partition"
LEFT = "flower_runtime.server_host: device device-0 left"
"""The host's own lines for device-0's socket opening and closing (the run's roster sentences
about the same join or leave are logged too, and echoed by the manager)."""


def device_kill(out: Path) -> Figures:
    """kill -9 device 0's task manager mid-run, then restart it (the run waits up to 30 s for
    it: a restarted device imports its worker's libraries again, slow on a loaded machine)."""
    stack = _stack(out, "device_kill", AGATA_CLOUD_TASK_MANAGER_DEVICE_REJOIN_S="30")
    try:
        api = _start_run(stack)
        assert stack.processes is not None
        manager = stack.processes.processes["client0_task_manager"]
        workers = _children(manager.pid)
        killed = time.monotonic()
        os.kill(manager.pid, signal.SIGKILL)
        manager.wait()
        time.sleep(1.0)
        orphans = sum(alive(pid) for pid in workers)
        stack.processes.environ = stack.client_envs[0]
        stack.processes.start("client0_task_manager", "client_task_manager")
        stack.processes.environ = stack.cloud_env
        before = sum(JOINED in line for line in _server_log(stack))
        _wait(lambda: sum(JOINED in line for line in _server_log(stack)) > before, 60,
              "device-0 to join the run again")
        back = time.monotonic() - killed
        joined = left = peak = 0
        for line in _server_log(stack):
            if JOINED in line:
                joined += 1
                peak = max(peak, joined - left)
            elif line.endswith(LEFT):
                left += 1
        api.post("/rpc_exec_stop_server_task", {"task_id": TASK_ID})
        return {"device_kill_orphans": orphans,
                "device_kill_duplicate_clients": max(0, peak - 1),
                "device_kill_back_in_run_s": round(back, 3)}
    finally:
        stack.stop()


def vanished_device(out: Path) -> Figures:
    """Device 1's task manager and worker killed for good: when does the run end?"""
    stack = _stack(out, "vanished_device")
    try:
        api = _start_run(stack)
        assert stack.processes is not None
        manager = stack.processes.processes["client1_task_manager"]
        workers = _children(manager.pid)
        vanished = time.monotonic()
        for pid in [manager.pid, *workers]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        task = _wait(lambda: (t := api.get(f"/api/tasks/{TASK_ID}"))["status"] != "running"
                     and t, 120, "the run to end")
        return {"vanished_device_end_s": round(time.monotonic() - vanished, 3),
                "vanished_device_round_timeout_s": REJOIN_S,
                "vanished_device_status": task["status"],
                "vanished_device_reason": task.get("status_reason")}
    finally:
        stack.stop()


def _spool(stack: Stack) -> list[dict[str, Any]]:
    """The report lines the run's ServerApp host kept (its spool, read as JSON)."""
    lines: list[dict[str, Any]] = []
    spools = [*matching(stack.out_dir, f"run-state/task_{TASK_ID}/run_*/reports.jsonl"),
              *matching(stack.out_dir, f"task_{TASK_ID}/last-run-reports.jsonl")]
    for spool in sorted(spools):
        lines.extend(json.loads(line) for line in spool.read_text().splitlines() if line)
    return lines


def _train_rounds(spool: list[dict[str, Any]]) -> list[int]:
    return [line["round"] for line in spool if line.get("type") == "stats"
            and "train.loss" in line.get("metrics", {})]


def manager_kill(out: Path, rounds: int = ROUNDS,
                 app: Path = TASKS_DIR / "app_digits") -> Figures:
    """kill -9 the cloud task manager mid-run (the shipped digits app, which declares
    ``resume``, unless ``app`` says otherwise), restart it, follow the run to its end."""
    stack = _stack(out, "manager_kill")
    try:
        api = _start_run(stack, rounds_first=3, rounds=rounds, app=app)
        assert stack.processes is not None
        manager = stack.processes.processes["cloud_task_manager"]
        hosts = _children(manager.pid)
        os.kill(manager.pid, signal.SIGKILL)
        manager.wait()
        time.sleep(1.0)
        left_running = sum(alive(pid) for pid in hosts)
        done = max(_train_rounds(_spool(stack)), default=0)
        restarted = time.monotonic()
        stack.processes.start("cloud_task_manager", "cloud_task_manager")
        _wait(lambda: _rounds(api) > done, 60, f"a round after round {done}", poll_s=0.02)
        resumed_s = time.monotonic() - restarted
        task = _wait(lambda: (t := api.get(f"/api/tasks/{TASK_ID}"))["status"] != "running"
                     and t, 600, "the run to end")
        rows = api.get(f"/api/tasks/{TASK_ID}/metrics")["rounds"]
        recorded = {row["round"]: row["metrics"] for row in rows}
        spool = _spool(stack)
        lost = sum(1 for line in spool if line.get("type") == "stats"
                   and not set(line["metrics"]) <= set(recorded.get(line["round"], {})))
        trained = _train_rounds(spool)
        checked = sum(1 for line in spool if line.get("type") == "stats")
        return {"manager_kill_orphans": left_running,
                "manager_kill_rounds_done_before": done,
                "manager_kill_rounds_lost": rounds - len(set(recorded) & set(range(1, rounds + 1))),
                "manager_kill_resume_s": round(resumed_s, 3),
                "manager_kill_rounds_redone": len(trained) - len(set(trained)),
                "manager_kill_end": f"{task['status']} ({task.get('status_reason')})",
                "reports_checked": checked,
                "reports_lost": lost if checked else None,
                "reports_duplicated": len(rows) - len(recorded)}
    finally:
        stack.stop()


def replica_kill(out: Path, rounds: int = ROUNDS) -> Figures:
    """Two cloud task manager replicas on a throw-away PostgreSQL: kill -9 the one running the
    run; how long until the other records a round of it, and what the run lost."""
    with contextlib.ExitStack() as resources:
        try:
            url = resources.enter_context(temporary_database())
        except PostgresUnavailable as exc:
            return {"replica_takeover_s": None, "replica_kill_note": f"not measured: {exc}"}
        stack = _stack(out, "replica_kill", replicas=2,
                       AGATA_CLOUD_TASK_MANAGER_DATABASE_URL=url,
                       AGATA_CLOUD_TASK_MANAGER_REPLICA_LEASE_S=str(REPLICA_LEASE_S))
        resources.callback(stack.stop)
        api = _start_run(stack, rounds_first=3, rounds=rounds)
        owner = api.get(f"/api/tasks/{TASK_ID}")["replica"]
        assert stack.processes is not None
        process = stack.processes.processes[stack.replica_process(owner)]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        killed = time.monotonic()
        done = _rounds(api)
        _wait(lambda: api.get(f"/api/tasks/{TASK_ID}")["replica"] != owner
              and _rounds(api) > done, 120, "the other replica to train the run", poll_s=0.02)
        taken_over = time.monotonic() - killed
        task = _wait(lambda: (t := api.get(f"/api/tasks/{TASK_ID}"))["status"] != "running"
                     and t, 600, "the run to end")
        recorded = {row["round"] for row in api.get(f"/api/tasks/{TASK_ID}/metrics")["rounds"]}
        return {"replica_takeover_s": round(taken_over, 3),
                "replica_lease_s": REPLICA_LEASE_S,
                "replica_kill_rounds_lost": rounds - len(recorded & set(range(1, rounds + 1))),
                "replica_kill_end": f"{task['status']} ({task.get('status_reason')})"}


def _outbox_depth(stack: Stack, index: int) -> int:
    env = stack.client_envs[index]
    parameters = pika.ConnectionParameters(
        host=env.get("AGATA_CLIENT_BROKER_HOST", "localhost"),
        port=int(env.get("AGATA_CLIENT_BROKER_PORT", "5672")), connection_attempts=1)
    connection = pika.BlockingConnection(parameters)
    try:
        queue = outbox_queue(env["AGATA_CLIENT_BROKER_QUEUE_PREFIX"])
        return int(connection.channel().queue_declare(queue, passive=True)
                   .method.message_count)
    finally:
        connection.close()


def gateway_down(out: Path, outage_s: float = 20.0) -> Figures:
    """The cloud gateway away for ``outage_s`` while device 0's stats change."""
    stack = _stack(out, "gateway_down")
    try:
        api = stack.api
        assert api is not None and stack.processes is not None
        stats = stack.out_dir / "device-0" / "client_info" / "stats.json"
        stack.processes.stop("cloud_gateway")
        down = time.monotonic()
        value = 0
        while time.monotonic() - down < outage_s:
            value += 1
            stats.write_text(json.dumps({"data_qnt": 1000 + value}))
            time.sleep(2.0)
        queued = _outbox_depth(stack, 0)
        stack.processes.start("cloud_gateway", "cloud_gateway")
        _wait(lambda: api.get("/health", auth=False), 30, "the gateway")
        back = time.monotonic()
        _wait(lambda: _outbox_depth(stack, 0) == 0, 60, "the outbox to drain", poll_s=0.02)
        drained = time.monotonic() - back
        final = _wait(lambda: api.get("/api/clients/device-0")["data_qnt"] == 1000 + value,
                      10, "the last stats", poll_s=0.1)
        return {"gateway_down_queued_reports": queued,
                "gateway_back_drain_s": round(drained, 3),
                "gateway_down_last_stats_arrived": bool(final)}
    finally:
        stack.stop()


def broker_down(out: Path, outage_s: float = 10.0, calls: int = 40) -> Figures:
    """The cloud's own RabbitMQ node away for ``outage_s``."""
    reason = netns_unavailable() or rabbitmq_unavailable()
    if reason:
        return {"broker_down_http_ms": None, "broker_recover_s": None,
                "broker_down_note": f"not measured: {reason}"}
    network = Network().start()
    node = RabbitNode(network.add_host("broker"), 5713, out / "broker_down" / "broker-logs")
    stack: Stack | None = None
    try:
        start_brokers([node])
        stack = Stack(out / "broker_down", client_count=0,
                      cloud_overrides=node.overrides("server"))
        api = stack.start_cloud()
        node.stop()
        time.sleep(1.0)
        latencies = []
        outage_started = time.monotonic()
        for _ in range(calls):
            sent = time.monotonic()
            try:
                api.get("/api/tasks")
            except (ApiError, CliError):
                pass
            latencies.append((time.monotonic() - sent) * 1000)
        remaining = outage_s - (time.monotonic() - outage_started)
        if remaining > 0:
            time.sleep(remaining)
        start_brokers([node])
        back = time.monotonic()
        _wait(lambda: api.get("/api/tasks") is not None, 60, "calls to succeed again")
        return {"broker_down_http_ms": round(percentile(latencies, 0.99), 2),
                "broker_recover_s": round(time.monotonic() - back, 3)}
    finally:
        if stack is not None:
            stack.stop()
        stop_brokers([node])
        network.close()


SCENARIOS: dict[str, Callable[[Path], Figures]] = {
    "device_kill": device_kill,
    "vanished_device": vanished_device,
    "manager_kill": manager_kill,
    "replica_kill": replica_kill,
    "gateway_down": gateway_down,
    "broker_down": broker_down,
}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    # these build on this module
    from experiments.fault_devices import SCENARIOS as DEVICE_SCENARIOS
    from experiments.fault_runs import SCENARIOS as RUN_SCENARIOS
    SCENARIOS.update(DEVICE_SCENARIOS)
    SCENARIOS.update(RUN_SCENARIOS)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append",
                        help="run only this scenario (repeatable)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parser.add_argument("--out", type=Path, default=Path("experiments/out") / f"faults-{stamp}",
                        help="where logs and faults.json go")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    figures: Figures = {}
    for name in args.only or list(SCENARIOS):
        logger.info("scenario %s", name)
        try:
            figures.update(SCENARIOS[name](args.out))
        except Exception as exc:
            logger.exception("scenario %s failed", name)
            figures[f"{name}_note"] = f"scenario failed: {exc}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.json").write_text(json.dumps(figures, indent=1))
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:36} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
