"""Devices that vanish and come back, for ``experiments.faults``.

* ``device_replaced``: three compatible devices, a run of two; one device of the run freezes
  (``SIGSTOP`` of its gateway, task manager and their workers) mid-run: how long until the
  third device trains in the run (it takes the frozen one's partition), the rounds the run lost,
  and how it ended (the frozen device is thawed once replaced: the run has all its devices).

The helpers (freezing and thawing a device, reading a run's devices) serve the end-to-end
tests of elastic runs too.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from experiments.faults import _wait
from experiments.flower_app import WARM, wait_warm
from experiments.stack import TASKS_DIR, Api, Stack

logger = logging.getLogger("experiments.fault_devices")

TASK_ID = "elastic"
ANSWER_S = 3.0
"""The round timeout of these runs: a device silent this long on a round is let go."""
REJOIN_S = 20.0
ROUNDS = 60
Figures = dict[str, Any]


def seats(api: Api, task_id: str) -> list[dict[str, Any]]:
    """The devices of the task's latest run, as the cloud keeps them."""
    return list(api.get(f"/api/tasks/{task_id}/devices")["seats"])


def in_run(api: Api, task_id: str) -> list[str]:
    """The devices in the task's run now."""
    return [s["client_id"] for s in seats(api, task_id) if s.get("left") is None]


def device_processes(stack: Stack, index: int) -> list[int]:
    """Device ``index``'s gateway, task manager and every process below them."""
    assert stack.processes is not None
    roots = [stack.processes.processes[f"client{index}_{name}"].pid
             for name in ("gateway", "task_manager")]
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family = list(roots)
    for pid in family:
        family += [child for child, parent in parents.items() if parent == pid]
    return family


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue


@contextmanager
def frozen(stack: Stack, index: int) -> Iterator[list[int]]:
    """Device ``index`` hibernates (every process of it stopped) until the block ends."""
    pids = device_processes(stack, index)
    _signal_all(pids, signal.SIGSTOP)
    try:
        yield pids
    finally:
        _signal_all(pids, signal.SIGCONT)


def elastic_stack(out: Path, devices: int, **cloud: str) -> Stack:
    """A stack of ``devices`` warm devices whose runs let a device silent on a round go
    after ``ANSWER_S`` and wait ``REJOIN_S`` under their minimum; devices hold a task whose run
    did not need them for 300 s (only a run's call for a replacement lifts that)."""
    stack = Stack(out, client_count=devices, warm_spares=True,
                  client_params={"request_interval": "1", "task_retry_s": "300",
                                 "task_retry_max_s": "300"},
                  cloud_overrides={"AGATA_CLOUD_TASK_MANAGER_DEVICE_ANSWER_S": str(ANSWER_S),
                                   "AGATA_CLOUD_TASK_MANAGER_DEVICE_REJOIN_S": str(REJOIN_S),
                                   **cloud})
    stack.start_cloud()
    stack.start_clients()
    wait_warm(stack, devices)
    return stack


def wait_spare(stack: Stack, index: int, spares: int) -> None:
    """Until device ``index`` has had ``spares`` warm ClientApp workers (one is spent on each
    run it tried): an idle device on a system up a while has one ready."""
    log = stack.out_dir / "logs" / f"client{index}_task_manager.log"
    _wait(lambda: log.read_text(errors="replace").count(WARM) >= spares, 120,
         f"device {index}'s next spare worker")


def rounds_recorded(api: Api, task_id: str) -> list[int]:
    """The rounds the task's latest run recorded."""
    return [r["round"] for r in api.get(f"/api/tasks/{task_id}/metrics")["rounds"]]


def device_replaced(out: Path, rounds: int = ROUNDS) -> Figures:
    """Three devices, a run of two, one of the run frozen mid-run."""
    stack = elastic_stack(out / "device_replaced", 3)
    try:
        api = stack.api
        assert api is not None
        stack.create_task(TASK_ID, TASKS_DIR / "app_digits", None, devices=2,
                          server_arguments={"num-server-rounds": rounds, "min-nodes": 2})
        api.post("/rpc_exec_start_server_task", {"task_id": TASK_ID})
        _wait(lambda: len(rounds_recorded(api, TASK_ID)) >= 3, 120, "round 3")
        members = in_run(api, TASK_ID)
        ids = [f"device-{i}" for i in range(3)]
        victim = ids.index(members[0])
        third = next(client for client in ids if client not in members)
        wait_spare(stack, ids.index(third), 2)
        with frozen(stack, victim):
            vanished = time.monotonic()
            _wait(lambda: any(s["client_id"] == third and s["rounds_trained"] >= 1
                             for s in seats(api, TASK_ID)), 60,
                 f"{third} to train in the run", poll_s=0.02)
            replaced_s = time.monotonic() - vanished
        task = api.wait_until_ended(TASK_ID, 300)
        recorded = rounds_recorded(api, TASK_ID)
        logger.info("devices of the run: %s", seats(api, TASK_ID))
        return {"device_replaced_s": round(replaced_s, 3),
                "device_replaced_round_timeout_s": ANSWER_S,
                "device_replaced_rounds_lost": rounds - len(set(recorded)),
                "device_replaced_status": {"finished": "completed"}.get(task["status"],
                                                                       task["status"]),
                **({} if task["status"] == "finished"
                   else {"device_replaced_reason": task.get("status_reason")})}
    finally:
        stack.stop()


SCENARIOS: dict[str, Callable[[Path], Figures]] = {"device_replaced": device_replaced}
