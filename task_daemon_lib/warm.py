"""A child process started ahead of time, for the next run that needs one.

Starting Python with Flower and torch takes seconds; a child started early has paid that before
its run begins. ``take`` hands the spare to a run (its reports and exit now go to that run's
callbacks); the caller says when to start the next spare with ``prepare`` (both managers: when
a run ends), so the next one's imports do not compete with a run for the CPU.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from task_daemon_lib.executors import (
    Executor,
    OnExit,
    OnMessage,
    OnOutput,
    ProcessSpec,
    SubprocessExecutor,
    TaskProcess,
)
from task_daemon_lib.lines import log_output
from task_daemon_lib.messages import ReportMessage
from task_daemon_lib.runner import ChildOutcome, task_environ

logger = logging.getLogger(__name__)


class _Binding:
    """Where a child's reports go: nowhere while it is the spare, to its run once taken."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.on_message: OnMessage | None = None
        self.on_exit: OnExit | None = None
        self.on_output: OnOutput | None = None
        self.lock = threading.Lock()

    def message(self, message: ReportMessage) -> None:
        with self.lock:
            target = self.on_message
        if target is not None:
            target(message)

    def output(self, stream: str, line: str) -> None:
        with self.lock:
            target = self.on_output
        if target is not None:
            target(stream, line)
        else:
            log_output(self.name, stream, line)

    def exited(self, outcome: ChildOutcome) -> None:
        with self.lock:
            target = self.on_exit
        if target is not None:
            target(outcome)
        else:
            logger.info("spare %s ended: %s", self.name, outcome.reason or outcome.status)


class WarmPool:
    """Keeps ``spares`` spare children of ``argv`` and hands them out on demand.

    The child reads its job as one line on standard input; end-of-file tells a spare that is
    no longer wanted to exit. It runs task code, so it gets ``task_environ(env)`` only.
    """

    def __init__(self, argv: Sequence[str], work_dir: Path, *, name: str, spares: int = 1,
                 env: Mapping[str, str] | None = None,
                 executor: Executor | None = None) -> None:
        self.argv = list(argv)
        self.executor: Executor = executor or SubprocessExecutor()
        self.work_dir = work_dir
        self.name = name
        self.spares = max(0, spares)
        self.env = task_environ(env)
        self._ready: list[tuple[TaskProcess, _Binding]] = []
        self._lock = threading.Lock()
        self._closed = False

    def _spawn(self, image: str | None = None, task_dir: Path | None = None,
               results_dir: Path | None = None,
               state_dir: Path | None = None) -> tuple[TaskProcess, _Binding]:
        binding = _Binding(self.name)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        child = self.executor.process(ProcessSpec(
            self.argv, cwd=self.work_dir, env=self.env, name=self.name,
            on_message=binding.message, on_output=binding.output, on_exit=binding.exited,
            stdin_pipe=True, image=image, task_dir=task_dir, results_dir=results_dir,
            state_dir=state_dir))
        child.start()
        return child, binding

    def prepare(self) -> None:
        """Start spares until there are ``spares`` alive (none where the executor gives a process
        only its own run's folders); never raises."""
        if not self.executor.spares_allowed:
            return
        with self._lock:
            self._ready = [spare for spare in self._ready if spare[0].running]
            while not self._closed and len(self._ready) < self.spares:
                try:
                    self._ready.append(self._spawn())
                except OSError as exc:
                    logger.warning("cannot start a spare %s: %s", self.name, exc)
                    return

    def take(self, name: str, on_message: OnMessage | None, on_exit: OnExit | None,
             on_output: OnOutput | None = None, *, image: str | None = None,
             task_dir: Path | None = None, results_dir: Path | None = None,
             state_dir: Path | None = None) -> TaskProcess:
        """A started child bound to a run's callbacks (its output to ``on_output`` when given):
        the oldest live spare, or a new one (for this run's ``task_dir`` and ``results_dir``)
        when there is none, the run asks for its own container ``image`` or the executor
        starts no spares (raises OSError when it cannot start). Call ``prepare`` for the
        next."""
        spare = None
        reuse = image is None and self.executor.spares_allowed
        with self._lock:
            while reuse and self._ready and spare is None:
                candidate = self._ready.pop(0)
                if candidate[0].running:
                    spare = candidate
        if spare is None:
            spare = self._spawn(image, task_dir, results_dir, state_dir)
        child, binding = spare
        with binding.lock:
            binding.on_message, binding.on_exit = on_message, on_exit
            binding.on_output = on_output
        logger.info("%s runs in %s pid %s", name, self.name, child.pid)
        return child

    def close(self) -> None:
        """End the spares (they read end-of-file and exit); none is started after this."""
        with self._lock:
            self._closed = True
            ready, self._ready = self._ready, []
        for child, _ in ready:
            child.close_input()
        for child, _ in ready:
            # a spare holds no work: one still importing is not waited for
            if child.wait(0.5) is None:
                child.stop(1)
