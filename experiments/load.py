"""Device polls under load: ``python -m experiments.load --clients N --interval S --duration S``.

Brings up the cloud side (user manager, cloud task manager, gateway, each its own
``python -m``), enrolls ``--clients`` simulated devices (each joins and polls with its own
credential) with varied stats, starts a few tasks
whose criteria match some of them (their servers only wait), then has every device ask
``POST /rpc_exec_client_requesting_task`` once per ``--interval`` seconds for ``--duration``
seconds over keep-alive HTTP on loopback. Prints the achieved ``polls_per_s``, latency
percentiles, ``errors``, and the CPU each process used (load generator included); ``--json``
prints one JSON line per configuration.

``--replicas K`` runs K cloud task managers on one throw-away PostgreSQL database (each with
its own data folder); ``--clients`` and ``--replicas`` take comma-separated lists, and every
combination is measured in the same invocation, one after the other, so a list holds its own
baseline (``--replicas 1,2``: one replica against two; ``--clients 300,600,1000``: the knee).
``--database postgresql`` puts a single replica on PostgreSQL too, to compare like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from experiments.bench_rpc import percentile
from experiments.postgres import PostgresUnavailable, temporary_database
from experiments.processes import free_port
from experiments.stack import Stack

logger = logging.getLogger("experiments.load")

WAITING_SERVER = """\
import time
from task_daemon_lib import TaskReporter

TaskReporter().send_info("Started")
time.sleep(3600)
"""
TASKS = (
    ("load-many", "data_qnt >= 20"),
    ("load-camera", "'camera' in sensors and data_qnt >= 50"),
    ("load-few", "data_qnt >= 95"),
    ("load-none", "data_qnt > 1000"),
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def device_id(index: int) -> str:
    """The id of simulated device ``index``."""
    return f"load-{index:05d}"


async def register(session: aiohttp.ClientSession, url: str, api_token: str,
                   count: int) -> list[str]:
    """Enroll the simulated devices (a join token each, spent for its own secret) and report
    their varied stats with their own credentials; their tokens."""
    operator = {"Authorization": f"Bearer {api_token}"}

    async def one(index: int) -> str:
        client_id = device_id(index)
        async with session.post(f"{url}/api/clients/enroll", json={"client_id": client_id},
                                headers=operator) as response:
            response.raise_for_status()
            join_token = (await response.json())["join_token"]
        async with session.post(f"{url}/api/client/join",
                                json={"join_token": join_token, "client_id": client_id}
                                ) as response:
            response.raise_for_status()
            token = f"{client_id}:{(await response.json())['secret']}"
        body = {"user_id": client_id, "data_qnt": index % 100,
                "sensors": ["camera"] if index % 3 == 0 else ["gps"]}
        async with session.post(f"{url}/rpc_exec_update_user_info", json=body,
                                headers={"Authorization": f"Bearer {token}"}) as response:
            response.raise_for_status()
        return token

    tokens: list[str] = []
    for start in range(0, count, 100):
        tokens += await asyncio.gather(*(one(i) for i in range(start, min(start + 100, count))))
    return tokens


async def enroll_all(url: str, api_token: str, clients: int) -> list[str]:
    """Enroll every simulated device; their tokens."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        return await register(session, url, api_token, clients)


async def poll_load(url: str, tokens: list[str], interval: float, duration: float,
                    warmup: float, mark: Callable[[], None]) -> dict[str, Any]:
    """Every device polls once per ``interval`` with its own credential for ``warmup`` and
    then ``duration`` seconds; ``mark`` is called when the measured part begins. Latencies,
    throughput and errors of the measured part, and the p99 of the warm-up."""
    samples: list[tuple[float, float, bool]] = []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        started = time.monotonic()
        measured_from = started + warmup
        end = measured_from + duration
        asyncio.get_running_loop().call_later(warmup, mark)

        async def device(index: int) -> None:
            body = json.dumps({"client_id": device_id(index)}).encode()
            headers = {"Authorization": f"Bearer {tokens[index]}",
                       "Content-Type": "application/json"}
            next_at = started + random.uniform(0, interval)
            while True:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.monotonic() >= end:
                    return
                sent = time.monotonic()
                ok = True
                try:
                    async with session.post(f"{url}/rpc_exec_client_requesting_task",
                                            data=body, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                samples.append((sent, time.monotonic() - sent, ok))
                next_at += interval

        await asyncio.gather(*(device(i) for i in range(len(tokens))))
    measured = [(latency * 1000, ok) for sent, latency, ok in samples if sent >= measured_from]
    warm = [latency * 1000 for sent, latency, _ in samples if sent < measured_from]
    ms = [latency for latency, _ in measured]
    return {
        "polls": len(measured),
        "polls_per_s": round(len(measured) / duration, 1),
        "p50_ms": round(percentile(ms, 0.5), 2) if ms else None,
        "p99_ms": round(percentile(ms, 0.99), 2) if ms else None,
        "errors": sum(not ok for _, ok in measured) + sum(not ok for s, _, ok in samples
                                                          if s < measured_from),
        "warmup_p99_ms": round(percentile(warm, 0.99), 2) if warm else None,
    }


def start_tasks(stack: Stack, folder: Path) -> None:
    """Create and start the tasks the devices' polls are matched against."""
    assert stack.api is not None
    server = folder / "server.py"
    server.write_text(WAITING_SERVER)
    for task_id, criteria in TASKS:
        stack.api.post("/rpc_exec_create_task", {
            "task_id": task_id, "port": free_port(), "selection_criteria": criteria})
        stack.api.upload_files(task_id, [server])
        stack.api.post("/rpc_exec_start_server_task", {"task_id": task_id})


def run(clients: int, interval: float, duration: float, out: Path,
        warmup: float = 5.0, replicas: int = 1, database_url: str = "") -> dict[str, Any]:
    """Bring the cloud up (``replicas`` task managers on ``database_url``), enroll the
    devices, load it, stop it; the figures (CPU of the measured part only)."""
    overrides = {"AGATA_SERVER_GATEWAY_JOIN_RATE_PER_MINUTE": "100000"}
    if database_url:
        overrides["AGATA_CLOUD_TASK_MANAGER_DATABASE_URL"] = database_url
    stack = Stack(out, client_count=0, replicas=replicas, cloud_overrides=overrides)
    try:
        api = stack.start_cloud()
        start_tasks(stack, out)
        assert stack.processes is not None
        pids = {name: process.pid for name, process in stack.processes.processes.items()
                if name != "event_reader"}
        pids["load_generator"] = 0
        tokens = asyncio.run(enroll_all(api.url, api.token or "", clients))
        before: dict[str, float] = {}
        began = [0.0]

        def mark() -> None:
            began[0] = time.monotonic()
            before.update({name: cpu_seconds(pid) if pid else time.process_time()
                           for name, pid in pids.items()})

        figures = asyncio.run(poll_load(api.url, tokens, interval, duration, warmup, mark))
        wall = time.monotonic() - began[0]
        figures["cpu_percent"] = {
            name: round(100 * ((cpu_seconds(pid) if pid else time.process_time())
                               - before[name]) / wall, 1)
            for name, pid in pids.items()}
        figures["cpu_ms_per_poll"] = {
            name: round(1000 * percent / 100 * wall / max(figures["polls"], 1), 3)
            for name, percent in figures["cpu_percent"].items()}
    finally:
        stack.stop()
    return {"clients": clients, "replicas": replicas,
            "database": "postgresql" if database_url else "sqlite", "interval_s": interval,
            "duration_s": duration, "warmup_s": warmup, **figures}


def measure(clients: int, replicas: int, database: str, args: argparse.Namespace
            ) -> dict[str, Any]:
    """One configuration in a fresh folder (and a fresh database when PostgreSQL is used)."""
    with tempfile.TemporaryDirectory(prefix="agata-load-") as folder:
        if replicas == 1 and database == "sqlite":
            return run(clients, args.interval, args.duration, Path(folder), args.warmup)
        with temporary_database() as url:
            return run(clients, args.interval, args.duration, Path(folder), args.warmup,
                       replicas, url)


def _counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers of at least 1")
    return values


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=_counts, default=[1000],
                        help="simulated devices (a comma-separated list: each is measured)")
    parser.add_argument("--replicas", type=_counts, default=[1],
                        help="cloud task managers on one PostgreSQL (a list: each is measured)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                        help="the database of a single replica (several always use "
                             "PostgreSQL)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of load before the measured part (every device's first "
                             "poll, the caches filling); its p99 is reported apart")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    failed = False
    for replicas in args.replicas:
        for clients in args.clients:
            try:
                result = measure(clients, replicas, args.database, args)
            except PostgresUnavailable as exc:
                parser.exit(2, f"cannot measure {replicas} replica(s): {exc}\n")
            failed = failed or result["errors"] > 0
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                for key, value in result.items():
                    print(f"{key:16} {value}")
                print(flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
