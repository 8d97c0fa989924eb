"""Faults a run should outlive, for ``experiments.faults`` (``--only NAME`` runs one):

* ``host_kill``: ``kill -9`` of the run's ServerApp host: how long until the run records a new
  round (``host_kill_resume_s``), and the rounds it had recorded but started again before
  (``host_kill_rounds_lost``);
* ``run_end_workers``: a run fails (its deadline passes): how long until none of the devices'
  workers of it is left (``run_end_workers_s``, by the devices' logs);
* ``shutdown_resume``: SIGTERM of ``agata up`` (the whole system) mid-run, then a new
  ``agata up`` on the same data folder: the rounds the run lost (``shutdown_resume_rounds_lost``);
* ``bad_checkpoint``: the newest checkpoint damaged (the host's file and the manager's kept
  copy truncated, the database's copy altered) while the host is frozen, then ``kill -9`` of
  the cloud task manager: the rounds lost when it starts again (``bad_checkpoint_rounds_lost``;
  at most the rounds since the previous checkpoint, one here);
* ``wiped_checkpoints``: every checkpoint in the run's state folder deleted or overwritten (as
  the app's own code could: the folder is writable in its sandbox) while the host is frozen,
  then ``kill -9`` of the cloud task manager: the run resumes from the copy the manager kept out
  of the app's reach (``wiped_checkpoints_rounds_lost``: at most the rounds since that copy).

Each brings up its own system with two devices and the NumPy Flower App (which declares
``resume``), 0.1 s of training per round.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.faults import _rounds, _wait
from experiments.live_files import matching
from experiments.processes import alive
from experiments.stack import TASKS_DIR, Api, Stack
from experiments.up_system import UpSystem

TASK_ID = "faults"
NUMPY_APP = TASKS_DIR / "app_numpy"
ROUNDS = 60
Figures = dict[str, Any]
_RESUMED = re.compile(r"resumed after round (\d+)")


def _stack(out: Path, name: str) -> Stack:
    stack = Stack(out / name, client_count=2,
                  client_params={"request_interval": "1", "task_retry_s": "300"})
    stack.start_cloud()
    stack.start_clients()
    return stack


def _start(api: Api, create: Callable[..., Any], rounds: int = ROUNDS,
           deadline_s: int | None = None, first: int = 3) -> None:
    create(TASK_ID, NUMPY_APP, None, devices=2, deadline_s=deadline_s,
           server_arguments={"num-server-rounds": rounds, "train-delay-s": 0.1})
    api.post("/rpc_exec_start_server_task", {"task_id": TASK_ID})
    _wait(lambda: _rounds(api) >= first, 120, f"round {first}")


def _task(api: Api) -> dict[str, Any]:
    task: dict[str, Any] = api.get(f"/api/tasks/{TASK_ID}")
    return task


def _ended(api: Api, timeout: float = 300) -> dict[str, Any]:
    task: dict[str, Any] = _wait(lambda: (t := _task(api))["status"] != "running" and t,
                                 timeout, "the run to end")
    return task


def _resumed(api: Api, timeout: float = 60) -> tuple[int, str]:
    """The round the run resumed after, and its reason saying so."""
    reason: str = _wait(lambda: _RESUMED.search(r := _task(api).get("status_reason") or "")
                        and r, timeout, "the run to resume")
    found = _RESUMED.search(reason)
    assert found is not None
    return int(found.group(1)), reason


def _resumed_after(api: Api, timeout: float = 60) -> int:
    return _resumed(api, timeout)[0]


def _missing(api: Api, rounds: int) -> int:
    recorded = {row["round"] for row in api.get(f"/api/tasks/{TASK_ID}/metrics")["rounds"]}
    return rounds - len(recorded & set(range(1, rounds + 1)))


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def host_pid(out_dir: Path, task_id: str) -> int | None:
    """The ServerApp host serving ``task_id`` under ``out_dir``: it works in its run's results
    folder, matched by what it is (device and inode), not by its name (a confined spare's
    sandbox shows it at its stage's path)."""
    runs = {(found.st_dev, found.st_ino)
            for run in matching(out_dir, f"task_{task_id}/*", folders=True)
            for found in [_stat(run)] if found is not None}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            cwd = os.stat(entry / "cwd")
        except OSError:
            continue
        if b"flower_runtime.server_host" in command and (cwd.st_dev, cwd.st_ino) in runs:
            return int(entry.name)
    return None


def host_kill(out: Path) -> Figures:
    """kill -9 the run's ServerApp host mid-run; follow the run to its end."""
    stack = _stack(out, "host_kill")
    try:
        api = stack.api
        assert api is not None
        _start(api, stack.create_task)
        pid = _wait(lambda: host_pid(stack.out_dir, TASK_ID), 10, "the host's pid")
        before = _rounds(api)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: _rounds(api) > before, 60, "a round after the kill", poll_s=0.02)
        resume_s = time.monotonic() - killed
        resumed = _resumed_after(api)
        task = _ended(api)
        return {"host_kill_resume_s": round(resume_s, 3),
                "host_kill_rounds_lost": max(0, before - resumed),
                "host_kill_end": f"{task['status']} ({task.get('status_reason')})",
                "host_kill_rounds_missing": _missing(api, ROUNDS)}
    finally:
        stack.stop()


def _workers(stack: Stack) -> int:
    joined = exited = 0
    for index in range(stack.client_count):
        log = (stack.out_dir / "logs" / f"client{index}_task_manager.log").read_text(
            errors="replace")
        joined += log.count("client says: joined run")
        exited += log.count("task_daemon_lib.lines: Flower worker ended")
    return joined - exited


def run_end_workers(out: Path) -> Figures:
    """A run that fails (its deadline of 15 s passes): from its end to no worker of it."""
    stack = _stack(out, "run_end_workers")
    try:
        api = stack.api
        assert api is not None
        _start(api, stack.create_task, rounds=2000, deadline_s=15)
        _wait(lambda: _workers(stack) == 2, 30, "both workers in the run")
        task = _wait(lambda: (t := _task(api))["status"] != "running" and t, 60,
                     "the deadline", poll_s=0.01)
        ended = time.monotonic()
        _wait(lambda: _workers(stack) == 0, 30, "the workers to exit", poll_s=0.01)
        return {"run_end_workers_s": round(time.monotonic() - ended, 3),
                "run_end_workers_end": f"{task['status']} ({task.get('status_reason')})"}
    finally:
        stack.stop()


def shutdown_resume(out: Path) -> Figures:
    """SIGTERM of ``agata up`` mid-run, then ``agata up`` again on the same data folder."""
    system = UpSystem(out / "shutdown_resume", devices=2)
    try:
        api = system.start()
        _start(api, system.create_task)
        stopped = system.stop()
        before = _recorded_rounds(system.data_dir / "cloud" / "tasks.db")
        api = system.start()
        resumed = _resumed_after(api, 120)
        task = _ended(api)
        return {"shutdown_resume_rounds_lost": max(0, before - resumed),
                "shutdown_resume_up_exit": stopped,
                "shutdown_resume_end": f"{task['status']} ({task.get('status_reason')})",
                "shutdown_resume_rounds_missing": _missing(api, ROUNDS)}
    finally:
        system.stop()
        system.forget_broker_roles()


def _recorded_rounds(database: Path) -> int:
    """The last round the stopped system recorded (read from its SQLite file)."""
    with sqlite3.connect(database) as connection:
        row = connection.execute("SELECT max(round) FROM task_round_metrics WHERE task_id = ?",
                                 (TASK_ID,)).fetchone()
    return int(row[0] or 0)


def _damage_database(database: Path) -> None:
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE run_states SET checkpoint = substr(checkpoint, 1, "
                           "length(checkpoint) / 2) WHERE task_id = ?", (TASK_ID,))


def bad_checkpoint(out: Path) -> Figures:
    """Freeze the host, damage its newest checkpoint (file and database copy), kill -9 the
    cloud task manager, start it again: what did the run lose?"""

    def damage(stack: Stack, data_dir: Path) -> tuple[int, Figures]:
        newest_round = max(_round(path) for path in matching(stack.out_dir, "checkpoint-*.npz"))
        for newest in matching(stack.out_dir, f"checkpoint-{newest_round}.npz"):  # each copy
            newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
        _damage_database(data_dir / "tasks.db")
        return newest_round, {}

    return _checkpoints_damaged(out, "bad_checkpoint", damage)


def wiped_checkpoints(out: Path) -> Figures:
    """Freeze the host, delete or overwrite every checkpoint in its run's state folder (what
    hostile app code can do), kill -9 the cloud task manager, start it again: what did the run
    lose?"""

    def wipe(_: Stack, data_dir: Path) -> tuple[int, Figures]:
        state = data_dir / "run-state" / f"task_{TASK_ID}" / "run_1"
        kept = data_dir / "run-checkpoints" / f"task_{TASK_ID}" / "run_1"
        newest_round = _newest(state)
        try:  # a small model is copied before its round's report is read
            _wait(lambda: _newest(kept) >= newest_round, 5, "the newest kept copy")
        except TimeoutError:
            pass  # frozen between its checkpoint's write and its report: one copy behind
        kept_round = _newest(kept)
        files = sorted(state.glob("checkpoint-*.npz"), key=_round)
        for index, path in enumerate(files):
            if index % 2:
                path.unlink()
            else:
                path.write_bytes(b"PK\x03\x04" + os.urandom(256))
        return newest_round, {"wiped_checkpoints_kept_round": kept_round}

    return _checkpoints_damaged(out, "wiped_checkpoints", wipe)


def _checkpoints_damaged(out: Path, name: str,
                         damage: Callable[[Stack, Path], tuple[int, Figures]]) -> Figures:
    """Freeze the host after round 6, ``damage`` its checkpoints (it returns the newest round
    and its own figures), kill -9 the cloud task manager, start it again: what did the run
    lose?"""
    stack = _stack(out, name)
    try:
        api = stack.api
        assert api is not None and stack.processes is not None
        _start(api, stack.create_task, first=6)
        pid = _wait(lambda: host_pid(stack.out_dir, TASK_ID), 10, "the host's pid")
        os.kill(pid, signal.SIGSTOP)
        newest_round, figures = damage(stack, stack.replica_data_dir(0))
        manager = stack.processes.processes["cloud_task_manager"]
        os.kill(manager.pid, signal.SIGKILL)
        manager.wait()
        stack.start_replica(0)
        _wait(lambda: not alive(pid), 30, "the frozen host to be killed")
        resumed, reason = _resumed(api)
        task = _ended(api)
        return {f"{name}_rounds_lost": max(0, newest_round - resumed),
                f"{name}_newest_round": newest_round, **figures,
                f"{name}_reason": reason,
                f"{name}_end": f"{task['status']} ({task.get('status_reason')})",
                f"{name}_rounds_missing": _missing(api, ROUNDS)}
    finally:
        stack.stop()


def _round(path: Path) -> int:
    return int(path.stem.split("-")[1])


def _newest(folder: Path) -> int:
    return max((_round(path) for path in folder.glob("checkpoint-*.npz")), default=0)


SCENARIOS: dict[str, Callable[[Path], Figures]] = {
    "host_kill": host_kill,
    "run_end_workers": run_end_workers,
    "shutdown_resume": shutdown_resume,
    "bad_checkpoint": bad_checkpoint,
    "wiped_checkpoints": wiped_checkpoints,
}
