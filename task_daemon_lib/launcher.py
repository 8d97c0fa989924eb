"""Starting a run's task process, the one way both managers do it: the warm pool's spare handed
the run's job line, or a fresh process where there is no spare to take.

A confined spare sees its run's folders where its stage put them, not where they lie on the
host (:mod:`task_daemon_lib.staging`): the job line is written here, once the spare is taken,
from the paths it sees, so neither manager needs to know.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from task_daemon_lib.executors import Executor, ProcessSpec, TaskProcess
from task_daemon_lib.warm import WarmPool

JobLine = Callable[[Path, Path | None, Path | None], str]
"""A run's job line, given where its process sees the run's app folder, results folder and state
folder (a ServerApp host's checkpoints)."""


def start_task_process(spec: ProcessSpec, executor: Executor, *, warm: WarmPool | None = None,
                       job: JobLine | None = None, stop_grace_s: float = 5.0,
                       hold: Callable[[TaskProcess], None] | None = None) -> TaskProcess:
    """Start the run's task process: a spare of ``warm`` (or one it starts for the run) handed
    the line ``job`` writes for the folders it sees, when both are given; else a fresh
    process of ``spec``.

    ``hold`` sees the process before it is started or handed its job, so that its exit, which
    may come at once, finds it held. Raises OSError (ValueError: the executor refuses
    ``spec``) when it cannot start; a spare that does not take its job is asked to stop.
    """
    if warm is not None and job is not None:
        taken = warm.take(spec.name, spec.on_message, spec.on_exit, spec.on_output,
                          image=spec.image, task_dir=spec.task_dir,
                          results_dir=spec.results_dir, state_dir=spec.state_dir)
        child = taken.process
        if hold is not None:
            hold(child)
        try:
            child.send_input(job(taken.app or spec.task_dir or spec.cwd, taken.results,
                                 taken.state))
        except OSError:
            child.request_stop(stop_grace_s)
            raise
        return child
    child = executor.process(spec)
    if hold is not None:
        hold(child)
    child.start()
    return child
