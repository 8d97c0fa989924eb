"""A task script's entry point: run its body with a reporter and turn the outcome into reports.

Every task script (server or client) ends the same way: ``Finished`` on success, the exception
as an ``error`` and exit status 1 on failure. ``run_task`` is that, written once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

from task_daemon_lib.task_reporter import TaskReporter

TaskBody = Callable[[TaskReporter], None]
"""What a script does, given its reporter; raising means the task failed."""


def run_task(body: TaskBody, reporter: TaskReporter | None = None) -> int:
    """Run ``body``; report ``Finished`` (status 0) or the error (status 1).

    A ``SystemExit`` with status 0 (Flower's way to end on a signal) is passed on without a
    report; any other exit status is reported as an error first.
    """
    reporter = reporter or TaskReporter()
    try:
        body(reporter)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            reporter.send_error(f"SystemExit: {exc.code}")
        raise
    except Exception as exc:
        reporter.send_error(exc)
        return 1
    reporter.send_info("Finished")
    return 0


def exit_now(status: int) -> NoReturn:
    """Flush stdout/stderr and end the process at once with ``status``.

    Skips the interpreter's teardown, which takes about a second with torch and gRPC loaded
    (the manager only sees the task end when the process is gone). Call it last: every report
    has been written by then (the reporter writes unbuffered).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
