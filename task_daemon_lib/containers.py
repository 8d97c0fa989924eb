"""Runs one task process inside a Docker container, with the interface of
:class:`task_daemon_lib.runner.ChildProcess`.

The container sees only what its :class:`ContainerSpec` mounts: the task folder read-only, the
results folder read-write, and read-only extras (the Python install and the virtualenv, mounted
at their own paths so ``sys.executable`` works inside); its root file system is read-only with
a small ``/tmp``. It runs as the uid:gid of this process without any capability, under
Docker's init (which forwards signals and reaps zombies), with the CPU, memory and process
limits of the spec. Its environment is exactly the ``env`` given (plus ``PYTHONUNBUFFERED``).

No report pipe crosses into a container: the task's :class:`~task_daemon_lib.TaskReporter`
falls back to stdout, and lines carrying :data:`~task_daemon_lib.messages.STDOUT_PREFIX` are
parsed into report messages. Standard input, output and error travel over one attach socket,
opened before the container starts so no output is lost.

Containers never outlive their owner: each is labelled with it and removed when it ends, and
:mod:`task_daemon_lib.container_owners` removes those of an owner that died.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import selectors
import shlex
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from docker.errors import DockerException, NotFound

from task_daemon_lib.container_owners import (
    API_TIMEOUT_S,
    GUARD,
    OWNER_LABEL,
    OWNER_START_LABEL,
    docker_client,
    remove_orphans,
    running_containers,
    start_time,
)
from task_daemon_lib.container_spec import (
    CONTAINER_TMP,
    DEFAULT_IMAGE,
    ContainerLimits,
    ContainerSpec,
    engine_available,
)
from task_daemon_lib.executors import python_mounts
from task_daemon_lib.lines import (
    ChildOutcome,
    LineSplitter,
)
from task_daemon_lib.messages import (
    REPORT_FD_ENV,
    ReportMessage,
)
from task_daemon_lib.task_process import TaskProcessBase

__all__ = [
    "DEFAULT_IMAGE",
    "OWNER_LABEL",
    "ContainerLimits",
    "ContainerProcess",
    "ContainerSpec",
    "engine_available",
    "python_mounts",
    "remove_orphans",
    "running_containers",
]

logger = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024
_POLL_INTERVAL_S = 0.1
_STOP_MARGIN_S = 60.0
_FRAME_HEADER = 8
_STREAMS = {1: "stdout", 2: "stderr"}


def _container_name(name: str) -> str:
    """A unique container name derived from a task's name."""
    safe = re.sub(r"[^a-zA-Z0-9_.-]+", "-", name).strip("-.")[:40] or "task"
    return f"agata-{safe}-{secrets.token_hex(4)}"


class ContainerProcess(TaskProcessBase):
    """Runs ``argv`` in a container and listens to its output; see the module docstring.

    Same interface and callback rules as :class:`~task_daemon_lib.runner.ChildProcess`:
    callbacks run on the background reader thread, ``on_exit`` exactly once after the
    container ended, its output was read and the container was removed. Exit codes above 128
    (death by a signal, as Docker reports them) become negative signal numbers.
    """

    stop_margin_s = _STOP_MARGIN_S

    def __init__(
        self,
        argv: Sequence[str],
        *,
        spec: ContainerSpec,
        env: Mapping[str, str],
        on_message: Callable[[ReportMessage], None] | None = None,
        on_output: Callable[[str, str], None] | None = None,
        on_exit: Callable[[ChildOutcome], None] | None = None,
        name: str = "task",
        require_finished: bool = True,
        stdin_pipe: bool = False,
    ) -> None:
        """Prepare (but do not start) the container; see the class docstring."""
        super().__init__(argv, name=name, on_message=on_message, on_output=on_output,
                         on_exit=on_exit, require_finished=require_finished,
                         stdin_pipe=stdin_pipe)
        self._spec = spec
        self._env = dict(env)
        self._client: Any = None
        self._container_id: str | None = None
        self._pid: int | None = None
        self._sock: socket.socket | None = None
        self._attach: Any = None
        self._input_closed = False

    @property
    def pid(self) -> int | None:
        """Host pid of the container's main process (Docker's init, the task's parent), None
        before :meth:`start`."""
        return self._pid

    @property
    def container_id(self) -> str | None:
        """Id of the container, None before :meth:`start`."""
        return self._container_id

    @property
    def running(self) -> bool:
        """True between :meth:`start` and the container's exit."""
        return self._container_id is not None and not self._exited.is_set()

    def start(self) -> None:
        """Create and start the container and the reader thread (raises OSError when the
        engine refuses, FileNotFoundError when the task folder is missing)."""
        with self._lock:
            if self._container_id is not None:
                raise RuntimeError(f"{self._name}: already started")
            if not Path(self._spec.task_dir).is_dir():
                raise FileNotFoundError(f"task folder {self._spec.task_dir} does not exist")
            Path(self._spec.results_dir).mkdir(parents=True, exist_ok=True)
            try:
                self._create_and_start()
            except DockerException as exc:
                self._discard()
                raise OSError(f"{self._name}: cannot start container: {exc}") from exc
            except BaseException:
                self._discard()
                raise
            self._thread = threading.Thread(target=self._run, name=f"{self._name}-reader",
                                            daemon=True)
            self._thread.start()
        logger.info("started %s in container %s (pid %s): %s", self._name,
                    (self._container_id or "")[:12], self._pid, shlex.join(self._argv))

    def send_input(self, line: str) -> None:
        """Write one line to the task's standard input (``stdin_pipe=True``); OSError when
        the container is gone."""
        self._require_started()
        if not self._stdin_pipe or self._sock is None:
            raise RuntimeError(f"{self._name}: started without a stdin pipe")
        if self._input_closed:
            raise BrokenPipeError(f"{self._name}: standard input is closed")
        self._sock.sendall(line.rstrip("\n").encode() + b"\n")

    def close_input(self) -> None:
        """Close the task's standard input (it reads end-of-file)."""
        self._require_started()
        with self._lock:
            if not self._stdin_pipe or self._input_closed or self._sock is None:
                return
            self._input_closed = True
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                logger.debug("%s: closing stdin: %s", self._name, exc)

    def request_stop(self, grace_s: float = 5.0) -> None:
        """Send SIGTERM to the task; SIGKILL it after ``grace_s``. Non-blocking (one short
        engine request); does nothing once it exited."""
        self._require_started()
        with self._lock:
            if self._stop_requested or self._exited.is_set():
                return
            self._stop_requested = True
            self._kill_deadline = time.monotonic() + max(0.0, grace_s)
        logger.info("stopping %s (container %s)", self._name, (self._container_id or "")[:12])
        self._signal("SIGTERM")

    # --- internals -------------------------------------------------------------------

    def _create_and_start(self) -> None:
        """Create the container, attach to its streams, start it; caller holds the lock."""
        GUARD.ensure()
        spec = self._spec
        limits = spec.limits
        self._client = docker_client()
        api = self._client.api
        env = dict(self._env)
        env.pop(REPORT_FD_ENV, None)
        env["PYTHONUNBUFFERED"] = "1"
        host_config = api.create_host_config(
            mounts=spec.mounts(),
            network_mode=spec.network_mode,
            nano_cpus=int(limits.cpus * 1e9),
            mem_limit=f"{limits.memory_mb}m",
            memswap_limit=f"{limits.memory_mb}m",
            pids_limit=limits.pids,
            read_only=True,
            tmpfs={CONTAINER_TMP: f"rw,nosuid,nodev,size={limits.tmp_mb}m,mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            init=True,
            auto_remove=False,
        )
        created = api.create_container(
            spec.image,
            command=self._argv,
            name=_container_name(self._name),
            user=spec.container_user(),
            environment=env,
            working_dir=str(spec.working_dir or spec.task_dir),
            labels={OWNER_LABEL: str(os.getpid()),
                    OWNER_START_LABEL: start_time(os.getpid()) or ""},
            host_config=host_config,
            stdin_open=self._stdin_pipe,
            detach=False,
        )
        self._container_id = cast(str, created["Id"])
        self._attach = api.attach_socket(
            self._container_id,
            params={"stdin": int(self._stdin_pipe), "stdout": 1, "stderr": 1, "stream": 1},
        )
        raw = self._attach
        if isinstance(raw, socket.SocketIO):
            raw = raw._sock  # type: ignore[attr-defined]
        self._sock = cast(socket.socket, raw)
        # Blocking with a bound: reads follow the selector, writes of stdin may wait a while.
        self._sock.settimeout(API_TIMEOUT_S)
        api.start(self._container_id)
        state = api.inspect_container(self._container_id)["State"]
        self._pid = int(state.get("Pid") or 0) or None

    def _discard(self) -> None:
        """Remove a container that failed to start; caller holds the lock."""
        if self._client is None:
            return
        if self._container_id is not None:
            try:
                self._client.api.remove_container(self._container_id, force=True)
            except DockerException as exc:
                logger.warning("cannot remove container of %s: %s", self._name, exc)
        self._close_connection()
        self._container_id = None

    def _close_connection(self) -> None:
        """Close the attach socket and the client."""
        for closable in (self._attach, self._sock):
            if closable is not None:
                try:
                    closable.close()
                except OSError:
                    pass
        if self._client is not None:
            self._client.close()

    def _require_started(self) -> str:
        """The container id, or raise if :meth:`start` was not called."""
        if self._container_id is None:
            raise RuntimeError(f"{self._name}: not started")
        return self._container_id

    def _signal(self, name: str) -> None:
        """Send a signal to the container's main process (through its init)."""
        try:
            self._client.api.kill(self._require_started(), signal=name)
        except DockerException as exc:
            logger.debug("signalling %s with %s: %s", self._name, name, exc)

    def _run(self) -> None:
        """Reader thread body: read the streams, wait for the exit, remove, publish."""
        returncode = -1
        try:
            self._listen()
            returncode = self._wait_exit()
        except Exception as exc:
            logger.exception("reader of %s failed", self._name)
            self._router.fail(f"task runner error: {exc!r}")
            self._signal("SIGKILL")
        with self._lock:
            self._stopped = self._stop_requested
            self._exited.set()
        self._remove()
        self._finish(returncode)

    def _listen(self) -> None:
        """Demultiplex the attach stream into lines until the engine closes it."""
        sock = self._sock
        assert sock is not None
        splitters = {stream: LineSplitter() for stream in _STREAMS.values()}
        buf = bytearray()
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            while True:
                self._maybe_escalate()
                if not sel.select(_POLL_INTERVAL_S):
                    continue
                try:
                    chunk = sock.recv(_READ_CHUNK)
                except (BlockingIOError, InterruptedError, TimeoutError):
                    continue
                except OSError as exc:
                    logger.warning("reading the output of %s failed: %s", self._name, exc)
                    chunk = b""
                if not chunk:
                    break
                buf += chunk
                self._frames(buf, splitters)
        for stream, splitter in splitters.items():
            for line in splitter.flush():
                self._dispatch(stream, line)

    def _frames(self, buf: bytearray, splitters: Mapping[str, LineSplitter]) -> None:
        """Consume the complete frames (8-byte header: stream, 0, 0, 0, size) in ``buf``."""
        while len(buf) >= _FRAME_HEADER:
            size = int.from_bytes(buf[4:_FRAME_HEADER], "big")
            if len(buf) < _FRAME_HEADER + size:
                return
            stream = _STREAMS.get(buf[0], "stdout")
            payload = bytes(buf[_FRAME_HEADER:_FRAME_HEADER + size])
            del buf[:_FRAME_HEADER + size]
            for line in splitters[stream].feed(payload):
                self._dispatch(stream, line)

    def _wait_exit(self) -> int:
        """Poll the container until it is no longer running; return its exit code."""
        api = self._client.api
        while True:
            state = api.inspect_container(self._require_started())["State"]
            if not state.get("Running") and not state.get("Restarting"):
                break
            self._maybe_escalate()
            time.sleep(_POLL_INTERVAL_S)
        code = int(state.get("ExitCode", -1))
        if state.get("OOMKilled"):
            self._router.stderr_tail.append(
                f"[container] out of memory (limit {self._spec.limits.memory_mb} MB)")
        if 128 < code < 128 + signal.NSIG:
            code = -(code - 128)
        logger.info("%s (container %s) exited with code %s", self._name,
                    self._require_started()[:12], code)
        return code

    def _maybe_escalate(self) -> None:
        """SIGKILL the container once the stop grace period has passed."""
        with self._lock:
            if self._kill_deadline is None or self._kill_sent:
                return
            if time.monotonic() < self._kill_deadline:
                return
            self._kill_sent = True
        logger.warning("%s ignored SIGTERM; killing its container", self._name)
        self._signal("SIGKILL")

    def _remove(self) -> None:
        """Remove the container and close the connection."""
        try:
            self._client.api.remove_container(self._require_started(), force=True)
        except NotFound:
            pass
        except DockerException as exc:
            logger.warning("cannot remove container of %s: %s", self._name, exc)
        self._close_connection()

    def _dispatch(self, stream: str, line: str) -> None:
        """Route one output line: a prefixed stdout report, or plain output."""
        self._router.output_line(stream, line)
