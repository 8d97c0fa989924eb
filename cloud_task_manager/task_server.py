"""Runs each task's server side and its triggers as child processes: ``server.py`` for a script
task, the ServerApp host (``python -m flower_runtime.server_host``) for a Flower App."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agata_contracts.lifecycle import RESULTS_DIR_ENV, output_log_name
from agata_contracts.results import MAX_OUTPUT_LOG_BYTES
from agata_contracts.tasks import SERVER_SCRIPT, TaskKind
from flower_runtime import RUN_CREDENTIAL_ENV, SERVER_HOST_MODULE
from flower_runtime.jobs import HostJob
from task_daemon_lib.executors import Executor, ProcessSpec, SubprocessExecutor, TaskProcess
from task_daemon_lib.launcher import start_task_process
from task_daemon_lib.lines import OutputLog
from task_daemon_lib.messages import ReportMessage
from task_daemon_lib.runner import (
    ChildOutcome,
    python_argv,
    script_arguments,
    task_environ,
)
from task_daemon_lib.warm import WarmPool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLaunch:
    """Everything needed to start one run of a task's server."""

    task_id: str
    run: int
    folder: Path
    host: str
    port: int
    arguments: Mapping[str, str | int | float | bool]
    kind: TaskKind = TaskKind.SCRIPT
    devices: int = 1
    min_devices: int | None = None
    run_credential: str = ""
    join_timeout_s: float = 300.0
    rejoin_timeout_s: float = 30.0
    results_dir: Path | None = None
    image: str | None = None
    resume: bool = False
    max_message_mb: float = 4096.0
    answer_timeout_s: float = 0.0
    state_dir: Path | None = None
    """The run's state folder (checkpoints, report spool): the manager's, outside the results
    folder where the app works and writes."""

    def host_arguments(self) -> list[str]:
        """The ServerApp host's arguments (a Flower App's run)."""
        return ["--app", str(self.folder), "--host", self.host, "--port", str(self.port),
                "--run-id", str(self.run), "--devices", str(self.devices),
                *(["--min-devices", str(self.min_devices)] if self.min_devices else []),
                "--join-timeout-s", str(self.join_timeout_s),
                "--rejoin-timeout-s", str(self.rejoin_timeout_s),
                *(["--answer-timeout-s", str(self.answer_timeout_s)]
                  if self.answer_timeout_s else []),
                "--run-config", json.dumps(dict(self.arguments)),
                "--max-message-mb", f"{self.max_message_mb:g}",
                *(["--results-dir", str(self.results_dir)] if self.results_dir else []),
                *(["--state-dir", str(self.state_dir)] if self.state_dir else []),
                *(["--resume"] if self.resume else [])]

    def argv(self) -> list[str]:
        """The server process's command line, when it is started for this run alone."""
        if self.kind is TaskKind.FLOWER_APP:
            return [sys.executable, "-u", "-m", SERVER_HOST_MODULE, *self.host_arguments()]
        return python_argv(self.folder / SERVER_SCRIPT,
                           *script_arguments(self.host, self.port, self.arguments))


class ServerProcesses:
    """The live server processes, one per running task; a Flower App's run takes the warm
    ServerApp host when ``warm`` keeps one."""

    def __init__(
        self,
        *,
        stop_grace_s: float,
        on_report: Callable[[ServerLaunch, ReportMessage], None],
        on_exit: Callable[[ServerLaunch, ChildOutcome], None],
        warm: WarmPool | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.stop_grace_s = stop_grace_s
        self.warm = warm
        self.executor: Executor = executor or SubprocessExecutor()
        self._on_report = on_report
        self._on_exit = on_exit
        self._children: dict[str, TaskProcess] = {}
        self._lock = threading.Lock()

    def start(self, launch: ServerLaunch) -> int:
        """Start ``server.py`` of a task; return its pid (raises OSError if it cannot start)."""
        env = task_environ(dict(
            AGATA_TASK_ID=launch.task_id,
            AGATA_TASK_HOST=launch.host,
            AGATA_TASK_PORT=str(launch.port),
            AGATA_TASK_RUN=str(launch.run),
            **({RESULTS_DIR_ENV: str(launch.results_dir)} if launch.results_dir else {}),
            **({RUN_CREDENTIAL_ENV: launch.run_credential}
               if launch.kind is TaskKind.FLOWER_APP else {}),
        ))
        name = f"task {launch.task_id} server"
        output = OutputLog(launch.results_dir / output_log_name("server"),
                           MAX_OUTPUT_LOG_BYTES, name, append=True) if launch.results_dir else None

        held: list[TaskProcess] = []

        def hold(child: TaskProcess) -> None:
            with self._lock:
                held.append(child)
                self._children[launch.task_id] = child

        def exited(outcome: ChildOutcome) -> None:
            if output is not None:
                output.close()
            with self._lock:
                if held and self._children.get(launch.task_id) is held[0]:
                    del self._children[launch.task_id]
            self._on_exit(launch, outcome)

        def report(message: ReportMessage) -> None:
            self._on_report(launch, message)

        with self._lock:
            if launch.task_id in self._children:
                raise RuntimeError(f"task {launch.task_id} already has a server process")
        warm = launch.kind is TaskKind.FLOWER_APP and self.warm is not None

        def job(app: Path, results_dir: Path | None, state_dir: Path | None) -> str:
            seen = dataclasses.replace(launch, folder=app, results_dir=results_dir,
                                       state_dir=state_dir)
            return HostJob(arguments=seen.host_arguments(),
                           run_credential=launch.run_credential).model_dump_json()

        spec = ProcessSpec(launch.argv(), cwd=launch.folder, env=env, name=name,
                           on_message=report, on_output=output, on_exit=exited,
                           image=launch.image, task_dir=launch.folder,
                           results_dir=launch.results_dir, state_dir=launch.state_dir)
        try:
            child = start_task_process(spec, self.executor, warm=self.warm,
                                       job=job if warm else None,
                                       stop_grace_s=self.stop_grace_s, hold=hold)
        except BaseException:
            if not warm:  # a spare that refused its job is held until it exits
                with self._lock:
                    self._children.pop(launch.task_id, None)
            raise
        assert child.pid is not None
        return child.pid

    def prepare_spare(self) -> None:
        """Start the warm ServerApp host if there is none (never raises)."""
        if self.warm is not None:
            self.warm.prepare()

    def is_running(self, task_id: str) -> bool:
        """Whether a server process of the task is alive."""
        with self._lock:
            return task_id in self._children

    def stop(self, task_id: str) -> ChildOutcome | None:
        """Terminate the task's server, kill it after the grace period; None if none ran."""
        with self._lock:
            child = self._children.get(task_id)
        if child is None:
            return None
        return child.stop(self.stop_grace_s)

    def request_stop(self, task_id: str) -> None:
        """Begin stopping the task's server without waiting for it (its exit is reported as
        usual)."""
        with self._lock:
            child = self._children.get(task_id)
        if child is not None:
            child.request_stop(self.stop_grace_s)

    def stop_all(self) -> None:
        """Stop every server (on shutdown), in parallel, and the warm host."""
        if self.warm is not None:
            self.warm.close()
        with self._lock:
            children = list(self._children.values())
        for child in children:
            child.request_stop(self.stop_grace_s)
        for child in children:
            child.wait(self.stop_grace_s + 5)

    def run_trigger(self, task_id: str, script: Path, arguments: str,
                    results_dir: Path | None = None) -> None:
        """Run a trigger script of the task in the background; its outcome is logged."""

        def exited(outcome: ChildOutcome) -> None:
            if outcome.status == "failed":
                logger.warning("task %s trigger %s failed: %s", task_id, script.name,
                               outcome.reason)
            else:
                logger.info("task %s trigger %s %s", task_id, script.name, outcome.status)

        start_task_process(ProcessSpec(
            python_argv(script, *([arguments] if arguments else [])),
            cwd=script.parent,
            env=task_environ(),
            on_exit=exited,
            name=f"task {task_id} trigger {script.stem}",
            require_finished=False,
            task_dir=script.parent,
            results_dir=results_dir,
        ), self.executor)


def kill_orphan(pid: int, *folders: Path) -> bool:
    """Kill a server left by an earlier manager if ``pid`` still runs something of this task's
    folders (its ``server.py`` in the task's folder, or the ServerApp host of its app, which
    works in its run's results folder)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00")
        cwd = os.readlink(f"/proc/{pid}/cwd").encode()
    except OSError:
        return False
    insides = [str(folder).encode() for folder in folders]
    if not any(argument == inside or argument.startswith(inside + b"/")
               for argument in [*command, cwd] for inside in insides):
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        return False
    logger.warning("killed orphaned server process %d of %s", pid, folders[0].name)
    return True
