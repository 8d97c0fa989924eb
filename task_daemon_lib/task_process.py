"""What the two ways of running task code (a child process, a container) share: the router of
their lines, their stop and exit state, and waiting for their end.

A subclass starts the process, reads its output on ``_thread`` and calls ``_finish`` exactly
once, after the process ended and its output was read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from task_daemon_lib.lines import ChildOutcome, LineRouter
from task_daemon_lib.messages import ReportMessage


class TaskProcessBase:
    """The shared state and waits of a task process; see the module docstring."""

    stop_margin_s: float | None = None
    """How long :meth:`stop` waits beyond the grace period (None: until the end comes)."""

    def __init__(self, argv: Sequence[str], *, name: str,
                 on_message: Callable[[ReportMessage], None] | None,
                 on_output: Callable[[str, str], None] | None,
                 on_exit: Callable[[ChildOutcome], None] | None,
                 require_finished: bool, stdin_pipe: bool) -> None:
        if isinstance(argv, str) or not argv:
            raise ValueError("argv must be a non-empty sequence of arguments")
        self._argv = [str(arg) for arg in argv]
        self._router = LineRouter(name, on_message=on_message, on_output=on_output,
                                  on_exit=on_exit, require_finished=require_finished)
        self._name = name
        self._stdin_pipe = stdin_pipe
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._exited = threading.Event()
        self._done = threading.Event()
        self._stop_requested = False
        self._stopped = False
        self._kill_deadline: float | None = None
        self._kill_sent = False
        self._outcome: ChildOutcome | None = None

    def __repr__(self) -> str:
        """Short description for logs."""
        return f"<{type(self).__name__} {self._name!r} pid={self.pid} running={self.running}>"

    @property
    def name(self) -> str:
        """Name used in logs."""
        return self._name

    @property
    def pid(self) -> int | None:
        """The process id on this host, None before start."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """True between start and exit."""
        raise NotImplementedError

    @property
    def outcome(self) -> ChildOutcome | None:
        """How the task ended, None while it runs (or its output is being read)."""
        return self._outcome

    def request_stop(self, grace_s: float = 5.0) -> None:
        """Terminate it; kill it after ``grace_s``. Non-blocking."""
        raise NotImplementedError

    def stop(self, grace_s: float = 5.0) -> ChildOutcome:
        """Stop it (terminate, kill after ``grace_s``) and return its outcome. Idempotent.

        From a callback, use :meth:`request_stop` instead (except in ``on_exit``, where this
        simply returns the outcome).
        """
        self.request_stop(grace_s)
        if threading.current_thread() is self._thread:
            if self._outcome is None:
                raise RuntimeError("stop() would deadlock in a callback; use request_stop()")
            return self._outcome
        timeout = None if self.stop_margin_s is None else max(0.0, grace_s) + self.stop_margin_s
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self._name}: did not end after being killed")
        return self._checked_outcome()

    def wait(self, timeout: float | None = None) -> ChildOutcome | None:
        """Wait until it ended and ``on_exit`` ran; None on timeout."""
        self._require_started()
        if threading.current_thread() is self._thread:
            return self._outcome
        if not self._done.wait(timeout):
            return None
        return self._checked_outcome()

    def _require_started(self) -> object:
        """What was started (raises when :meth:`start` was not called)."""
        raise NotImplementedError

    def _checked_outcome(self) -> ChildOutcome:
        """Return the outcome, which must exist once ``_done`` is set."""
        if self._outcome is None:
            raise RuntimeError(f"{self._name}: no outcome")
        return self._outcome

    def _finish(self, returncode: int) -> None:
        """Compute the outcome, call ``on_exit`` once and wake waiters."""
        self._outcome = self._router.outcome(returncode, self._stopped)
        try:
            self._router.exited(self._outcome)
        finally:
            self._done.set()
