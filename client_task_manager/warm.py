"""A Flower ClientApp worker kept started and pre-imported, for the next run that needs one.

Starting Python with Flower and torch takes seconds; a worker started ahead of time has paid
that before the run's first message arrives. ``take`` hands the spare worker to a run (its
reports and exit now go to that run) and starts the next spare at once.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from task_daemon_lib.messages import ReportMessage
from task_daemon_lib.runner import ChildOutcome, ChildProcess

logger = logging.getLogger(__name__)

WORKER_MODULE = "flower_runtime.client_worker"

OnMessage = Callable[[ReportMessage], None]
OnExit = Callable[[ChildOutcome], None]


def flower_installed() -> bool:
    """Whether this device can run Flower Apps at all (checked without importing Flower)."""
    return importlib.util.find_spec("flwr") is not None


class _Binding:
    """Where a worker's reports go: nowhere while it is the spare, to its run once taken."""

    def __init__(self) -> None:
        self.on_message: OnMessage | None = None
        self.on_exit: OnExit | None = None
        self.lock = threading.Lock()

    def message(self, message: ReportMessage) -> None:
        with self.lock:
            target = self.on_message
        if target is not None:
            target(message)

    def exited(self, outcome: ChildOutcome) -> None:
        with self.lock:
            target = self.on_exit
        if target is not None:
            target(outcome)
        else:
            logger.info("spare Flower worker ended: %s", outcome.reason or outcome.status)


class WarmWorkers:
    """Keeps one spare ClientApp worker (when ``enabled``); hands it out on demand."""

    def __init__(self, work_dir: Path, *, enabled: bool = True) -> None:
        self.work_dir = work_dir
        self.enabled = enabled
        self._spare: tuple[ChildProcess, _Binding] | None = None
        self._lock = threading.Lock()

    def _spawn(self) -> tuple[ChildProcess, _Binding]:
        binding = _Binding()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        child = ChildProcess([sys.executable, "-u", "-m", WORKER_MODULE], cwd=self.work_dir,
                             on_message=binding.message, on_exit=binding.exited,
                             name="flower worker", stdin_pipe=True)
        child.start()
        return child, binding

    def prepare(self) -> None:
        """Start the spare if there is none (or it died)."""
        if not self.enabled:
            return
        with self._lock:
            if self._spare is not None and self._spare[0].running:
                return
            try:
                self._spare = self._spawn()
            except OSError as exc:
                logger.warning("cannot start a spare Flower worker: %s", exc)
                self._spare = None

    def take(self, name: str, on_message: OnMessage, on_exit: OnExit) -> ChildProcess:
        """A started worker bound to a run's callbacks (the spare, or a new one); the next
        spare is started before returning."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is None or not spare[0].running:
            spare = self._spawn()
        child, binding = spare
        with binding.lock:
            binding.on_message, binding.on_exit = on_message, on_exit
        logger.info("%s runs in Flower worker pid %s", name, child.pid)
        self.prepare()
        return child

    def close(self) -> None:
        """End the spare (it reads end-of-file and exits)."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare[0].close_input()
            if spare[0].wait(5) is None:
                spare[0].stop(2)
