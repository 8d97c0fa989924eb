"""Flower server of the ``test-error`` task (AGATA's failover experiment).

A normal, long-lived legacy Flower server (``flwr.server.start_server``, FedAvg) that waits
for ``--min-clients`` clients and runs ``--num-rounds`` rounds (default 1000, i.e. it keeps
the task running until the manager stops it).  Its clients fail on purpose (``client.py``),
so in practice it just waits.  Self-contained: this folder is uploaded on its own.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from task_daemon_lib import TaskReporter
from task_daemon_lib.task_main import run_task


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the server's arguments; unknown extra arguments are ignored."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--num-rounds", type=int, default=1000)
    parser.add_argument("--min-clients", type=int, default=2)
    parser.add_argument("--log-level", type=str.upper, default="WARNING")
    args, _unknown = parser.parse_known_args(argv)
    return args


def run(args: argparse.Namespace, reporter: TaskReporter) -> None:
    """Serve until all rounds are done (in practice: until stopped)."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # before importing flwr; offline
    from flwr.common.logger import FLOWER_LOGGER, update_console_handler

    update_console_handler(level=args.log_level, colored=False)
    FLOWER_LOGGER.addFilter(
        lambda record: "DEPRECATED FEATURE" not in str(record.msg)  # legacy API on purpose
    )
    import numpy as np
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerConfig, start_server
    from flwr.server.strategy import FedAvg

    strategy = FedAvg(
        fraction_evaluate=0.0,
        min_fit_clients=args.min_clients,
        min_evaluate_clients=args.min_clients,
        min_available_clients=args.min_clients,
        initial_parameters=ndarrays_to_parameters([np.zeros(1, dtype=np.float32)]),
    )
    host = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host
    reporter.send_print(f"test-error server waiting for clients on {host}:{args.port}")
    start_server(
        server_address=f"{host}:{args.port}",
        config=ServerConfig(num_rounds=args.num_rounds),
        strategy=strategy,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns the process exit status."""
    return run_task(lambda reporter: run(parse_args(argv), reporter))


if __name__ == "__main__":
    sys.exit(main())
