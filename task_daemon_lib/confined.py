"""The default executor: each task process a child of its manager, in a bubblewrap sandbox of
its own (see :mod:`task_daemon_lib.confinement` for what it sees and why bubblewrap), else under
a Landlock ruleset (:mod:`task_daemon_lib.landlock`, without warm spares).

Where the kernel allows neither, the processes run as plain children, and the executor says
so (:attr:`ConfinedExecutor.confinement`, logged as an error by the manager and shown by
``agata status``).
"""

from __future__ import annotations

import shutil
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from task_daemon_lib import confinement, landlock
from task_daemon_lib.confinement import Confinement, Mechanism, SandboxView
from task_daemon_lib.executors import ProcessSpec, TaskProcess, python_mounts, runtime_mounts
from task_daemon_lib.runner import ChildProcess

SCRATCH = ".agata/tmp"
"""Under Landlock, a process's ``HOME`` and ``TMPDIR``, in its results folder (never collected
as a result; the host's ``/tmp`` is not granted)."""


class SandboxedProcess(ChildProcess):
    """A :class:`ChildProcess` whose command runs under bwrap, which exits with 128 + N when
    the command is killed by signal N: that is reported as the signal, as it would be for the
    command unconfined (a command's own exit code above 128 reads the same way, as with
    containers)."""

    def _finish(self, returncode: int) -> None:
        if 128 < returncode < 128 + signal.NSIG:
            returncode = -(returncode - 128)
        super()._finish(returncode)


class ConfinedExecutor:
    """Task processes each in a sandbox showing only its task folder (read-only), its results
    folder (writable) and ``readable`` (read-only, e.g. the cloud's CA file) beyond the
    system; the mechanism is chosen once, at first use. Spares are staged
    (:mod:`task_daemon_lib.staging`); under Landlock no spare is started."""

    def __init__(self, readable: Sequence[Path] = ()) -> None:
        self.readable = tuple(readable)
        self._lock = threading.Lock()
        self._chosen: Confinement | None = None
        self._system: tuple[str, ...] = ()

    @property
    def confinement(self) -> Confinement:
        """The confinement in force (probed the first time it is asked)."""
        with self._lock:
            if self._chosen is None:
                self._chosen = confinement.choose()
                if self._chosen.mechanism is Mechanism.BWRAP:
                    self._system = confinement.system_arguments()
            return self._chosen

    @property
    def spares_allowed(self) -> bool:
        """Whether spares may be started (not under Landlock: a spare's folders are only known
        when it takes its run)."""
        return self.confinement.mechanism is not Mechanism.LANDLOCK

    @property
    def stages_spares(self) -> bool:
        """Whether a spare sees only its stage (whenever a sandbox is in force)."""
        return self.confinement.mechanism is Mechanism.BWRAP

    def view(self, cwd: Path, task_dir: Path | None, results_dir: Path | None,
             state_dir: Path | None = None) -> SandboxView:
        """What a process sees: the task folder (``cwd`` when none is named) read-only with the
        Python install, the runtime packages and ``readable``; the results folder (and a
        ServerApp host's state folder) writable."""
        read_only = (*python_mounts(), *runtime_mounts(), task_dir or cwd)
        writable = tuple(path for path in (results_dir, state_dir) if path is not None)
        return SandboxView(read_only=read_only, writable=writable, cwd=cwd, system=self._system,
                           read_only_if_present=self.readable)

    def process(self, spec: ProcessSpec) -> TaskProcess:
        """A :class:`ChildProcess` running ``spec`` in its sandbox (unconfined when the kernel
        allows none); ``image`` is not used."""
        chosen = self.confinement
        command, env = list(spec.argv), dict(spec.env)
        kind = ChildProcess
        if chosen.mechanism is Mechanism.BWRAP:
            kind = SandboxedProcess
            bwrap = shutil.which("bwrap")
            if bwrap is None:
                raise OSError("bwrap is gone: task processes cannot be confined")
            for folder in (spec.results_dir, spec.state_dir):
                if folder is not None:
                    folder.mkdir(parents=True, exist_ok=True)
            view = self.view(spec.cwd, spec.task_dir, spec.results_dir, spec.state_dir)
            command = confinement.bwrap_argv(bwrap, view, spec.argv,
                                             user_namespace=chosen.user_namespace)
        elif chosen.mechanism is Mechanism.LANDLOCK:
            command, env = self._landlocked(spec)
        return kind(command, cwd=spec.cwd, env=env, on_message=spec.on_message,
                    on_output=spec.on_output, on_exit=spec.on_exit, name=spec.name,
                    require_finished=spec.require_finished, stdin_pipe=spec.stdin_pipe)

    def _landlocked(self, spec: ProcessSpec) -> tuple[list[str], dict[str, str]]:
        """``spec``'s command under Landlock with this executor's view, and its environment
        (its scratch folder as ``HOME`` and ``TMPDIR``)."""
        if spec.results_dir is None:
            raise OSError("under Landlock a task process needs its results folder")
        scratch = spec.results_dir / SCRATCH
        scratch.mkdir(parents=True, exist_ok=True)
        view = self.view(spec.cwd, spec.task_dir, spec.results_dir)
        read_only = [str(path) for path in (*confinement.system_paths(), *view.read_only,
                                            *view.read_only_if_present)]
        packages_in = {str(path.parent) for path in runtime_mounts()}
        command = landlock.command(read_only, [str(path) for path in view.writable],
                                   spec.argv, sorted(packages_in))
        return command, {**spec.env, "HOME": str(scratch), "TMPDIR": str(scratch)}

    def unavailable(self, image: str | None = None) -> str | None:
        """Always None: without a sandbox the process still runs (and the manager said so)."""
        return None
