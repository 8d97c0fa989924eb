"""A child process started ahead of time, for the next run that needs one.

Starting Python with Flower and torch takes seconds; a child started early has paid that before
its run begins. ``take`` hands the spare to a run (its reports and exit now go to that run's
callbacks); the caller says when to start the next spare with ``prepare`` (both managers: when
a run ends), so the next one's imports do not compete with a run for the CPU. What a spare is
started as may follow the runs (``retarget``): a spare of an older command line is still handed
out while no other is ready, and replaced at the next ``prepare``.

A confined spare cannot see its run's folders when it starts: where the executor stages spares,
each gets its own stage (:mod:`task_daemon_lib.staging`), filled when it is taken, and ``take``
says where the run's app and results folders are seen from inside.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
from task_daemon_lib.staging import SpareStage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Taken:
    """A started child bound to its run, and where it sees the run's folders (the job names
    these paths)."""

    process: TaskProcess
    app: Path | None
    results: Path | None
    state: Path | None = None


class _Binding:
    """Where a child's reports go: nowhere while it is the spare, to its run once taken. Its
    stage, if any, is removed when it exits."""

    def __init__(self, name: str, argv: Sequence[str], stage: SpareStage | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.stage = stage
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
        if self.stage is not None:
            self.stage.remove()
        if target is not None:
            target(outcome)
        else:
            logger.info("spare %s ended: %s", self.name, outcome.reason or outcome.status)


Retarget = Callable[[Path], Sequence[str]]
"""The command line for spares started after a run of the app in this folder."""


class WarmPool:
    """Keeps ``spares`` spare children of ``argv`` and hands them out on demand.

    The child reads its job as one line on standard input; end-of-file tells a spare that is
    no longer wanted to exit. It runs task code, so it gets ``task_environ(env)`` only.
    ``retarget``, when given, sees each run's app folder when the run takes its process, and
    says the command line of the spares started from then on.
    """

    def __init__(self, argv: Sequence[str], work_dir: Path, *, name: str, spares: int = 1,
                 env: Mapping[str, str] | None = None,
                 executor: Executor | None = None, retarget: Retarget | None = None) -> None:
        self.argv = list(argv)
        self.retarget = retarget
        self.executor: Executor = executor or SubprocessExecutor()
        self.work_dir = work_dir
        self.name = name
        self.spares = max(0, spares)
        self.env = task_environ(env)
        self._ready: list[tuple[TaskProcess, _Binding]] = []
        self._retired: list[TaskProcess] = []
        """Spares of an older command line, told to exit; ``close`` makes sure they did."""
        self._lock = threading.Lock()
        self._closed = False
        self._cleared = False

    def _spawn(self, image: str | None = None, task_dir: Path | None = None,
               results_dir: Path | None = None, state_dir: Path | None = None, *,
               staged: bool = False) -> tuple[TaskProcess, _Binding]:
        stage = SpareStage.create(self.work_dir) if staged else None
        binding = _Binding(self.name, self.argv, stage)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cwd = task_dir or self.work_dir
        if stage is not None:
            cwd, task_dir, results_dir, state_dir = (stage.app, stage.app, stage.results,
                                                     stage.state)
        try:
            child = self._process(binding, cwd, image, task_dir, results_dir, state_dir)
        except BaseException:
            if stage is not None:
                stage.remove()
            raise
        return child, binding

    def _process(self, binding: _Binding, cwd: Path, image: str | None, task_dir: Path | None,
                 results_dir: Path | None, state_dir: Path | None) -> TaskProcess:
        child = self.executor.process(ProcessSpec(
            binding.argv, cwd=cwd, env=self.env, name=self.name,
            on_message=binding.message, on_output=binding.output, on_exit=binding.exited,
            stdin_pipe=True, image=image, task_dir=task_dir, results_dir=results_dir,
            state_dir=state_dir))
        child.start()
        return child

    def prepare(self) -> None:
        """End the spares of an older command line, and start spares until there are ``spares``
        alive (none where the executor gives a process only its own run's folders); never
        raises."""
        if not self.executor.spares_allowed:
            return
        staged = self.executor.stages_spares
        with self._lock:
            if staged and not self._cleared:
                SpareStage.clear_stale(self.work_dir)
                self._cleared = True
            outdated = [spare for spare in self._ready
                        if spare[0].running and spare[1].argv != self.argv]
            self._ready = [spare for spare in self._ready
                           if spare[0].running and spare[1].argv == self.argv]
            self._retired = [child for child in self._retired if child.running]
            for child, _ in outdated:
                child.close_input()  # it reads end-of-file and exits
                self._retired.append(child)
            while not self._closed and len(self._ready) < self.spares:
                try:
                    self._ready.append(self._spawn(staged=staged))
                except OSError as exc:
                    logger.warning("cannot start a spare %s: %s", self.name, exc)
                    return

    def take(self, name: str, on_message: OnMessage | None, on_exit: OnExit | None,
             on_output: OnOutput | None = None, *, image: str | None = None,
             task_dir: Path | None = None, results_dir: Path | None = None,
             state_dir: Path | None = None) -> Taken:
        """A started child bound to a run's callbacks (its output to ``on_output`` when given):
        the oldest live spare (its stage filled with ``task_dir``, ``results_dir`` and
        ``state_dir``), or a new one for them when there is none, the run asks for its own
        container ``image`` or the executor starts no spares (raises OSError when it cannot
        start); with where it sees those folders. Call ``prepare`` for the next."""
        spare = None
        reuse = image is None and self.executor.spares_allowed
        if reuse and self.spares and self.retarget is not None and task_dir is not None:
            self._follow(task_dir)
        with self._lock:
            self._ready = [ready for ready in self._ready if ready[0].running]
            current = [ready for ready in self._ready if ready[1].argv == self.argv]
            if reuse and (current or self._ready):
                spare = (current or self._ready)[0]
                self._ready.remove(spare)
        folders = (task_dir, results_dir, state_dir)
        if spare is not None and spare[1].stage is not None:
            stage = spare[1].stage
            try:
                self._fill(stage, spare[0].pid, task_dir, results_dir, state_dir)
                folders = (stage.app, stage.results,
                           stage.state if state_dir is not None else None)
            except OSError as exc:
                logger.warning("%s: cannot hand its folders to a spare (%s); starting a new "
                               "process for it", name, exc)
                spare[0].close_input()
                spare = None
        if spare is None:
            spare = self._spawn(image, task_dir, results_dir, state_dir)
        child, binding = spare
        with binding.lock:
            binding.on_message, binding.on_exit = on_message, on_exit
            binding.on_output = on_output
        logger.info("%s runs in %s pid %s", name, self.name, child.pid)
        return Taken(child, *folders)

    def _follow(self, task_dir: Path) -> None:
        """Ask ``retarget`` what the next spares start as, after this run's app."""
        assert self.retarget is not None
        try:
            argv = list(self.retarget(task_dir))
        except Exception as exc:  # a spare's command line is an optimisation, never a failure
            logger.warning("%s: keeping the spares' command line (%s)", self.name, exc)
            return
        with self._lock:
            if argv != self.argv:
                logger.info("%s spares start as %s from now on", self.name, " ".join(argv))
                self.argv = argv

    @staticmethod
    def _fill(stage: SpareStage, pid: int | None, task_dir: Path | None,
              results_dir: Path | None, state_dir: Path | None) -> None:
        """Fill the stage of the spare ``pid`` with the run's folders (the task and results
        folders are needed; a state folder where the run has one)."""
        if task_dir is None or results_dir is None:
            raise OSError("a staged spare needs the run's task and results folders")
        stage.fill(task_dir, results_dir, pid, state_dir=state_dir)

    def close(self) -> None:
        """End the spares (they read end-of-file and exit); none is started after this."""
        with self._lock:
            self._closed = True
            ready = [child for child, _ in self._ready] + self._retired
            self._ready, self._retired = [], []
        for child in ready:
            child.close_input()
        for child in ready:
            # a spare holds no work: one still importing is not waited for
            if child.wait(0.5) is None:
                child.stop(1)
