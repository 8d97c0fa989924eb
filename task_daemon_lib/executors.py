"""Where task processes run: as child processes of their manager, each in a sandbox of its own
(``confined``, the default: :mod:`task_daemon_lib.confined`), as plain child processes
(``subprocess``, unconfined), or each in its own Docker container (``docker``).

Both managers and their warm pools start every task process through an :class:`Executor`, so
the choice is one configuration value. Either way the process gets only the environment it is
given (:func:`task_daemon_lib.runner.task_environ`); a sandbox or a container also sees only
the folders its executor mounts: read-only the task folders, the Python install, the
virtualenv and the project's runtime packages (not the folder around them), and writable only
the results folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from task_daemon_lib.confinement import Confinement, Mechanism
from task_daemon_lib.lines import ChildOutcome
from task_daemon_lib.messages import ReportMessage
from task_daemon_lib.runner import ChildProcess

if TYPE_CHECKING:
    from task_daemon_lib.containers import ContainerLimits

RUNTIME_PACKAGES = ("task_daemon_lib", "flower_runtime", "agata_contracts",
                    "microservice_interconnect")
"""This project's packages a task process runs (the ClientApp worker, the ServerApp host, the
reporter): each is mounted read-only into containers, never the folder holding them, which
may hold data directories too."""


def python_mounts() -> tuple[Path, ...]:
    """The host paths a sandbox or container needs to run this interpreter at the same path:
    the Python install and the virtualenv (``sys.base_prefix`` and ``sys.prefix``)."""
    return tuple(dict.fromkeys(Path(p) for p in (sys.base_prefix, sys.prefix)))


def runtime_mounts() -> tuple[Path, ...]:
    """The folders of :data:`RUNTIME_PACKAGES`, where this process imports them from."""
    root = Path(__file__).resolve().parent.parent
    return tuple(root / name for name in RUNTIME_PACKAGES if (root / name).is_dir())


class ExecutorKind(StrEnum):
    """The executors a manager can be configured with."""

    CONFINED = "confined"
    SUBPROCESS = "subprocess"
    DOCKER = "docker"


class TaskProcess(Protocol):
    """What a manager needs of a running task process (a child process or a container)."""

    @property
    def name(self) -> str:
        """Name used in logs."""

    @property
    def pid(self) -> int | None:
        """The process id on this host, None before start."""

    @property
    def running(self) -> bool:
        """True between start and exit."""

    @property
    def outcome(self) -> ChildOutcome | None:
        """How it ended, None while it runs."""

    def start(self) -> None:
        """Start it (OSError when it cannot start)."""

    def send_input(self, line: str) -> None:
        """Write one line to its standard input."""

    def close_input(self) -> None:
        """Close its standard input."""

    def request_stop(self, grace_s: float = 5.0) -> None:
        """Terminate it; kill it after ``grace_s``. Non-blocking."""

    def stop(self, grace_s: float = 5.0) -> ChildOutcome:
        """Stop it and return how it ended."""

    def wait(self, timeout: float | None = None) -> ChildOutcome | None:
        """Wait for its end (None on timeout)."""


OnMessage = Callable[[ReportMessage], None]
OnOutput = Callable[[str, str], None]
OnExit = Callable[[ChildOutcome], None]


@dataclass(frozen=True)
class ProcessSpec:
    """One task process to make: ``argv`` run in ``cwd`` with exactly ``env``, where its
    reports, output lines and exit go, and, where containers are used, the ``image`` the task
    asks for, the only task folder it sees (``task_dir``, read-only) and the only ones it may
    write (``results_dir``, and a ServerApp host's ``state_dir``)."""

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    name: str = "task"
    on_message: OnMessage | None = None
    on_output: OnOutput | None = None
    on_exit: OnExit | None = None
    require_finished: bool = True
    """Whether ending without ``Finished`` is a failure (a trigger script need not report)."""
    stdin_pipe: bool = False
    image: str | None = None
    task_dir: Path | None = None
    results_dir: Path | None = None
    state_dir: Path | None = None


class Executor(Protocol):
    """Makes (unstarted) task processes."""

    @property
    def spares_allowed(self) -> bool:
        """Whether processes may be started before their run is known (a container is given
        only its own run's folders, so it cannot)."""

    @property
    def stages_spares(self) -> bool:
        """Whether a spare sees only the stage it is given (``task_dir`` and ``results_dir``
        of :mod:`task_daemon_lib.staging`), filled when it takes its run."""

    @property
    def confinement(self) -> Confinement:
        """What confines the processes it makes."""

    def process(self, spec: ProcessSpec) -> TaskProcess:
        """An unstarted task process as ``spec`` describes it."""

    def unavailable(self, image: str | None = None) -> str | None:
        """Why a task (asking for ``image``) cannot run here; None when it can."""


class SubprocessExecutor:
    """Task processes as child processes of this one (in their own session, killed with it),
    unconfined: they see what this process sees."""

    spares_allowed = True
    stages_spares = False
    confinement = Confinement(Mechanism.NONE, "executor = subprocess is configured: task "
                                              "processes are plain child processes")

    def process(self, spec: ProcessSpec) -> TaskProcess:
        """A :class:`ChildProcess`; ``image`` and the folders are not needed."""
        return ChildProcess(spec.argv, cwd=spec.cwd, env=spec.env, on_message=spec.on_message,
                            on_output=spec.on_output, on_exit=spec.on_exit, name=spec.name,
                            require_finished=spec.require_finished,
                            stdin_pipe=spec.stdin_pipe)

    def unavailable(self, image: str | None = None) -> str | None:
        """Always None: a child process needs nothing more."""
        return None


@dataclass(frozen=True)
class DockerExecutor:
    """Task processes each in a container that sees only its own run: its task folder
    read-only, its results folder writable, the Python install, the virtualenv and the
    project's runtime packages read-only; the host's network (a Flower process must reach its
    peer); the given limits. No spare is started ahead: its folders are not known yet."""

    image: str
    limits: ContainerLimits | None = None
    spares_allowed = False
    stages_spares = False

    @property
    def confinement(self) -> Confinement:
        """Containers of this executor's image (or the task's)."""
        return Confinement(Mechanism.DOCKER, f"a container each, image {self.image} unless "
                                             "the task names another")

    def process(self, spec: ProcessSpec) -> TaskProcess:
        """A :class:`~task_daemon_lib.containers.ContainerProcess` working in its task folder
        (``ValueError`` without the run's two folders)."""
        from task_daemon_lib.containers import ContainerLimits, ContainerProcess, ContainerSpec

        task_dir, results_dir = spec.task_dir, spec.results_dir
        if task_dir is None or results_dir is None:
            raise ValueError(f"{spec.name}: a container is started for one run only, with its "
                             "task and results folders")
        results_dir.mkdir(parents=True, exist_ok=True)
        if spec.state_dir is not None:
            spec.state_dir.mkdir(parents=True, exist_ok=True)
        container = ContainerSpec(
            task_dir=task_dir, results_dir=results_dir, image=spec.image or self.image,
            writable_mounts=(spec.state_dir,) if spec.state_dir is not None else (),
            read_only_mounts=(*python_mounts(), *runtime_mounts()),
            network_mode="host", limits=self.limits or ContainerLimits(), working_dir=task_dir)
        return ContainerProcess(spec.argv, spec=container, env=spec.env,
                                on_message=spec.on_message, on_output=spec.on_output,
                                on_exit=spec.on_exit, name=spec.name,
                                require_finished=spec.require_finished,
                                stdin_pipe=spec.stdin_pipe)

    def unavailable(self, image: str | None = None) -> str | None:
        """Why a container of ``image`` (default: this executor's) cannot start here: no
        engine answers, or the image is not built."""
        from task_daemon_lib.containers import engine_available

        return engine_available(image or self.image)


def make_executor(kind: str, *, image: str, cpus: float, memory_mb: int,
                  readable: Sequence[Path] = ()) -> Executor:
    """The executor a manager's configuration names (``confined``, ``subprocess`` or
    ``docker``); a confined process may also read ``readable``."""
    if ExecutorKind(kind) is ExecutorKind.CONFINED:
        from task_daemon_lib.confined import ConfinedExecutor

        return ConfinedExecutor(readable)
    if ExecutorKind(kind) is ExecutorKind.SUBPROCESS:
        return SubprocessExecutor()
    from task_daemon_lib.containers import ContainerLimits

    return DockerExecutor(image=image, limits=ContainerLimits(cpus=cpus, memory_mb=memory_mb))
