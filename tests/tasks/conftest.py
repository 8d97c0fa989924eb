"""Fixtures for the shipped tasks: run their scripts as real child processes.

Each test copies a task folder (flat, as it is uploaded) to a temporary directory and runs
``server.py`` / ``client.py`` there through :class:`task_daemon_lib.runner.ChildProcess`,
exactly as the task managers do, recording every report message.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from task_daemon_lib.messages import (
    ErrorMessage,
    InfoMessage,
    PrintMessage,
    ReportMessage,
    StatsMessage,
)
from task_daemon_lib.runner import ChildOutcome, ChildProcess, python_argv

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def _free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_answers(port: int) -> bool:
    """Whether 127.0.0.1:port accepts TCP connections."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class TaskRun:
    """One task script running as a child process, with everything it reported."""

    def __init__(self, folder: Path, script: str, args: Sequence[str], name: str) -> None:
        self.name = name
        self.messages: list[ReportMessage] = []
        self.output: list[tuple[str, str]] = []
        self._cond = threading.Condition()
        self.child = ChildProcess(
            python_argv(folder / script, *args),
            cwd=folder,
            on_message=self._on_message,
            on_output=self._on_output,
            name=name,
        )

    def _on_message(self, message: ReportMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def _on_output(self, stream: str, line: str) -> None:
        with self._cond:
            self.output.append((stream, line))

    def start(self) -> TaskRun:
        self.child.start()
        return self

    def wait_for(self, predicate: Callable[[ReportMessage], bool], timeout: float) -> bool:
        """Wait until a message matching ``predicate`` arrived (False on timeout or exit)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if any(predicate(m) for m in self.messages):
                    return True
                if self.child.outcome is not None:
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))

    def wait(self, timeout: float) -> ChildOutcome:
        """Wait for the child's end; fail the test (with its output) on timeout."""
        outcome = self.child.wait(timeout)
        assert outcome is not None, f"{self.name} still runs after {timeout} s:\n{self.dump()}"
        return outcome

    def dump(self) -> str:
        """Reports and output, for assertion messages."""
        with self._cond:
            lines = [repr(m) for m in self.messages]
            lines += [f"[{stream}] {line}" for stream, line in self.output[-40:]]
        return "\n".join(lines)

    @property
    def stats(self) -> list[StatsMessage]:
        return [m for m in self.messages if isinstance(m, StatsMessage)]

    @property
    def infos(self) -> list[str]:
        return [m.info for m in self.messages if isinstance(m, InfoMessage)]

    @property
    def prints(self) -> list[str]:
        return [m.message for m in self.messages if isinstance(m, PrintMessage)]

    @property
    def errors(self) -> list[str]:
        return [m.exception for m in self.messages if isinstance(m, ErrorMessage)]


@pytest.fixture(scope="session", autouse=True)
def rabbitmq_answers() -> None:
    """The task tests need no broker: overrides the suite-wide RabbitMQ check."""


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Returns a function giving a TCP port that was free a moment ago on 127.0.0.1."""
    return _free_port


@pytest.fixture
def port_answers() -> Callable[[int], bool]:
    """Returns a function telling whether 127.0.0.1:port accepts TCP connections."""
    return _port_answers


@pytest.fixture
def task_folder(tmp_path: Path) -> Callable[[str], Path]:
    """Copy ``tasks/<name>`` (its files only, like an upload) to a temporary folder."""

    def copy(name: str) -> Path:
        source = TASKS / name
        target = tmp_path / name
        target.mkdir()
        for entry in source.iterdir():
            if entry.is_file():
                shutil.copy2(entry, target / entry.name)
        return target

    return copy


@pytest.fixture
def start_run() -> Iterator[Callable[[Path, str, Sequence[str], str], TaskRun]]:
    """Start task scripts; whatever still runs at the end of the test is stopped."""
    runs: list[TaskRun] = []

    def start(folder: Path, script: str, args: Sequence[str], name: str) -> TaskRun:
        run = TaskRun(folder, script, args, name)
        runs.append(run)
        return run.start()

    yield start
    for run in runs:
        if run.child.running:
            run.child.request_stop(grace_s=2.0)
    for run in runs:
        run.child.wait(10.0)
