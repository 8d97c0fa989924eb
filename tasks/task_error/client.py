"""Client of the ``test-error`` task: fails on purpose (AGATA's failover experiment).

Starts, checks whether the server's port answers, announces itself with ``send_print``,
then raises ``RuntimeError`` after ``--fail-after`` seconds (default 0.2): it reports the
error with ``send_error`` and exits with status 1, so the client task manager sees a failed
task.  Needs neither Flower nor torch, so it fails fast.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Sequence

from task_daemon_lib import TaskReporter
from task_daemon_lib.task_main import run_task

FAILURE_MESSAGE = "simulated task failure (AGATA test-error)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the client's arguments; unknown extra arguments are ignored."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--client-id", default=None)
    parser.add_argument("--fail-after", type=float, default=0.2, help="seconds before failing")
    args, _unknown = parser.parse_known_args(argv)
    return args


def server_answers(host: str, port: int, timeout: float = 0.1) -> bool:
    """Whether ``host:port`` accepts a TCP connection right now."""
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout):
            return True
    except OSError:
        return False


def fail(args: argparse.Namespace, reporter: TaskReporter) -> None:
    """Say where the server is, wait ``--fail-after`` seconds, then raise."""
    reachable = server_answers(args.host, args.port)
    reporter.send_print(
        f"test-error client {args.client_id or '-'} started; server {args.host}:{args.port} "
        f"{'answers' if reachable else 'does not answer'}; failing in {args.fail_after:g} s"
    )
    time.sleep(max(0.0, args.fail_after))
    raise RuntimeError(FAILURE_MESSAGE)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: always fails, with status 1."""
    return run_task(lambda reporter: fail(parse_args(argv), reporter))


if __name__ == "__main__":
    sys.exit(main())
