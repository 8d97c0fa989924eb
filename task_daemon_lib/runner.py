"""Runs one federated task as a child process and listens to its reports and output.

Used by the cloud task manager (for ``server.py``) and the client task manager (for
``client.py``).  The child gets the write end of a report pipe (see
:mod:`task_daemon_lib.messages` for the line format); one background thread multiplexes
that pipe and the child's stdout/stderr with :mod:`selectors`, so a child flooding its
output can never block the report channel, and a child that never ends its lines cannot
exhaust memory.
"""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from task_daemon_lib import spawner
from task_daemon_lib.lines import (
    MAX_LINE_BYTES,
    STDERR_TAIL_LINES,
    TRUNCATION_MARK,
    ChildOutcome,
    ChildStatus,
)
from task_daemon_lib.lines import LineSplitter as _LineSplitter
from task_daemon_lib.messages import (
    REPORT_FD_ENV,
    ReportMessage,
)
from task_daemon_lib.task_process import TaskProcessBase

__all__ = [
    "MAX_LINE_BYTES",
    "STDERR_TAIL_LINES",
    "TRUNCATION_MARK",
    "ChildOutcome",
    "ChildProcess",
    "ChildStatus",
    "python_argv",
    "script_arguments",
]

logger = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024
_POLL_INTERVAL_S = 0.1
_DRAIN_TIMEOUT_S = 5.0

TASK_ENV_PASSTHROUGH = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "VIRTUAL_ENV",
    "PYTHONPATH",
})
"""What task code inherits of its manager's environment (plus ``LC_*``): never the manager's
tokens, secrets or database address."""


def task_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for task code: the pass-through variables of ours, then ``extra``."""
    kept = {name: value for name, value in os.environ.items()
            if name in TASK_ENV_PASSTHROUGH or name.startswith("LC_")}
    kept.update(extra or {})
    return kept


def python_argv(script: Path, *args: str) -> list[str]:
    """Return argv running ``script`` with the current interpreter, unbuffered."""
    return [sys.executable, "-u", str(script), *args]


def script_arguments(host: str, port: int,
                     arguments: Mapping[str, str | int | float | bool]) -> list[str]:
    """The command line of a task script: ``--host H --port P --name value ...`` (booleans as
    ``true``/``false``); both managers start ``server.py``/``client.py`` this way."""
    argv = ["--host", host, "--port", str(port)]
    for name, value in arguments.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        argv += [f"--{name}", text]
    return argv


class ChildProcess(TaskProcessBase):
    """Runs one child process and listens to its report pipe, stdout and stderr.

    Callbacks run on the background reader thread; exceptions they raise are logged.
    ``on_exit`` is called exactly once, after the child was reaped and its pipes drained.
    The child runs in its own session; stopping it signals its whole process group, and
    with ``kill_group_on_exit`` processes it left behind in its group are killed when it
    exits.  ``env=None`` inherits this process's environment, otherwise ``env`` is the
    whole environment; ``PYTHONUNBUFFERED=1`` and ``AGATA_REPORT_FD`` are always set.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        on_message: Callable[[ReportMessage], None] | None = None,
        on_output: Callable[[str, str], None] | None = None,
        on_exit: Callable[[ChildOutcome], None] | None = None,
        name: str = "task",
        require_finished: bool = True,
        kill_group_on_exit: bool = True,
        stdin_pipe: bool = False,
    ) -> None:
        """Prepare (but do not start) the child; see the class docstring."""
        super().__init__(argv, name=name, on_message=on_message, on_output=on_output,
                         on_exit=on_exit, require_finished=require_finished,
                         stdin_pipe=stdin_pipe)
        self._cwd = Path(cwd)
        self._env = dict(env) if env is not None else None
        self._kill_group_on_exit = kill_group_on_exit
        self._proc: subprocess.Popen[bytes] | None = None
        self._report_r: int | None = None
        self._reaped = False

    @property
    def pid(self) -> int | None:
        """Process id of the child, None before :meth:`start`."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True between :meth:`start` and the child's exit."""
        return self._proc is not None and not self._exited.is_set()

    def start(self) -> None:
        """Spawn the child and the reader thread (raises OSError if spawning fails)."""
        with self._lock:
            if self._proc is not None:
                raise RuntimeError(f"{self._name}: already started")
            report_r, report_w = os.pipe()
            env = dict(os.environ) if self._env is None else dict(self._env)
            env["PYTHONUNBUFFERED"] = "1"
            env[REPORT_FD_ENV] = str(report_w)
            try:
                proc = spawner.popen(
                    self._argv,
                    cwd=self._cwd,
                    env=env,
                    stdin=subprocess.PIPE if self._stdin_pipe else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(report_w,),
                    start_new_session=True,
                )
            except BaseException:
                os.close(report_r)
                raise
            finally:
                os.close(report_w)
            assert proc.stdout is not None and proc.stderr is not None
            for fd in (report_r, proc.stdout.fileno(), proc.stderr.fileno()):
                os.set_blocking(fd, False)
            self._proc = proc
            self._report_r = report_r
            self._thread = threading.Thread(
                target=self._run, name=f"{self._name}-reader", daemon=True
            )
            self._thread.start()
        logger.info("started %s (pid %d): %s", self._name, proc.pid, shlex.join(self._argv))

    def send_input(self, line: str) -> None:
        """Write one line to the child's standard input (``stdin_pipe=True``); OSError when
        the child is gone."""
        proc = self._require_started()
        if proc.stdin is None:
            raise RuntimeError(f"{self._name}: started without a stdin pipe")
        proc.stdin.write(line.rstrip("\n").encode() + b"\n")
        proc.stdin.flush()

    def close_input(self) -> None:
        """Close the child's standard input (it reads end-of-file)."""
        proc = self._require_started()
        if proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError as exc:
                logger.debug("%s: closing stdin: %s", self._name, exc)

    def request_stop(self, grace_s: float = 5.0) -> None:
        """Send SIGTERM to the child's group; SIGKILL it after ``grace_s``. Non-blocking.

        Safe to call from callbacks; does nothing if the child already exited.
        """
        self._require_started()
        with self._lock:
            if self._stop_requested or self._reaped:
                return
            self._stop_requested = True
            self._kill_deadline = time.monotonic() + max(0.0, grace_s)
            logger.info("stopping %s (pid %s)", self._name, self.pid)
            self._signal_group(signal.SIGTERM)

    # --- internals -------------------------------------------------------------------

    def _require_started(self) -> subprocess.Popen[bytes]:
        """Return the Popen object or raise if :meth:`start` was not called."""
        if self._proc is None:
            raise RuntimeError(f"{self._name}: not started")
        return self._proc

    def _signal_group(self, signum: int) -> None:
        """Signal the child's process group; caller holds the lock, child not reaped."""
        proc = self._require_started()
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            logger.warning("not allowed to signal process group of %s", self._name)

    def _run(self) -> None:
        """Reader thread body: listen until exit, then publish the outcome."""
        try:
            self._listen()
        except Exception as exc:
            logger.exception("reader of %s failed", self._name)
            self._router.fail(f"task runner error: {exc!r}")
            self._reap(force_kill=True)
        self._exit()

    def _listen(self) -> None:
        """Multiplex the three pipes until the child exited and they are drained."""
        proc = self._require_started()
        assert proc.stdout is not None and proc.stderr is not None
        assert self._report_r is not None
        sel = selectors.DefaultSelector()
        try:
            for fd, stream in (
                (self._report_r, "report"),
                (proc.stdout.fileno(), "stdout"),
                (proc.stderr.fileno(), "stderr"),
            ):
                sel.register(fd, selectors.EVENT_READ, (stream, _LineSplitter()))
            self._select_loop(sel)
            # Drain timeout hit: emit what is buffered of pipes still open.
            for key in list(sel.get_map().values()):
                stream, splitter = key.data
                for line in splitter.flush():
                    self._dispatch(stream, line)
        finally:
            sel.close()
            os.close(self._report_r)
            proc.stdout.close()
            proc.stderr.close()

    def _select_loop(self, sel: selectors.BaseSelector) -> None:
        """Read pipes until all hit EOF after exit, or the drain timeout passes."""
        drain_deadline: float | None = None
        while True:
            timeout = _POLL_INTERVAL_S
            if drain_deadline is None:
                if self._check_exit():
                    drain_deadline = time.monotonic() + _DRAIN_TIMEOUT_S
                else:
                    self._maybe_escalate()
            if drain_deadline is not None:
                if not sel.get_map():
                    return
                remaining = drain_deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning(
                        "%s exited but its output pipes are still open; giving up on them",
                        self._name,
                    )
                    return
                timeout = min(timeout, remaining)
            if not sel.get_map():
                time.sleep(timeout)  # child closed all pipes but still runs
                continue
            for key, _events in sel.select(timeout):
                self._read_ready(sel, key)

    def _read_ready(self, sel: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
        """Read one chunk from a ready pipe and dispatch the completed lines."""
        stream, splitter = key.data
        try:
            chunk = os.read(key.fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            logger.warning("reading %s of %s failed: %s", stream, self._name, exc)
            chunk = b""
        if chunk:
            lines = splitter.feed(chunk)
        else:
            sel.unregister(key.fd)
            lines = splitter.flush()
        for line in lines:
            self._dispatch(stream, line)

    def _check_exit(self) -> bool:
        """Reap the child if it exited (killing group leftovers first); True if it did."""
        proc = self._require_started()
        try:
            # WNOWAIT: leave the child a zombie until its group has been dealt with.
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None  # already reaped behind our back (e.g. SIGCHLD ignored): gone
        else:
            if info is None:
                return False
        self._reap(force_kill=False)
        return True

    def _reap(self, *, force_kill: bool) -> None:
        """Kill what is left of the group if wanted, then reap the child."""
        proc = self._require_started()
        with self._lock:
            if not self._reaped:
                # The unreaped child keeps its pid (= group id) reserved, so this
                # cannot hit an unrelated group.
                if force_kill or self._stop_requested or self._kill_group_on_exit:
                    self._signal_group(signal.SIGKILL)
                proc.wait()
                self._reaped = True
                self._stopped = self._stop_requested
        self._exited.set()
        logger.info("%s (pid %d) exited with code %s", self._name, proc.pid, proc.returncode)

    def _maybe_escalate(self) -> None:
        """SIGKILL the group once the stop grace period has passed."""
        with self._lock:
            if self._kill_deadline is None or self._kill_sent or self._reaped:
                return
            if time.monotonic() < self._kill_deadline:
                return
            self._kill_sent = True
            logger.warning("%s ignored SIGTERM; killing its process group", self._name)
            self._signal_group(signal.SIGKILL)

    def _dispatch(self, stream: str, line: str) -> None:
        """Route one line from a pipe."""
        if stream == "report":
            self._router.report_line(line)
        else:
            self._router.output_line(stream, line)

    def _exit(self) -> None:
        """Close its input and publish the outcome (once)."""
        proc = self._require_started()
        self.close_input()
        self._finish(proc.returncode if proc.returncode is not None else -1)
