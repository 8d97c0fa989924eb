"""Flower client of the digits task (legacy ``flwr.client.start_client`` API).

Run by the client task manager as ``python -u client.py --host H --port P --client-id ID
[--name value ...]`` with the task folder as working directory.  Trains on its IID shard of
the training split (``--partition-id`` of ``--num-partitions``) with the settings the server
sends each round.  A legacy Flower client dies at once if the server is not listening yet,
so the client first waits (up to ``--connect-timeout`` seconds) for the server's port to
accept connections.  Sends ``info "Finished"`` when the server ends the federation; on any
failure (including losing the server) sends ``error`` and exits with status 1.
"""

from __future__ import annotations

import argparse
import re
import socket
import time
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runtime import TaskArgumentParser, add_log_level_argument, setup_flower

from task_daemon_lib import TaskReporter
from task_daemon_lib.task_main import exit_now, run_task

if TYPE_CHECKING:
    from flwr.client import Client

DEFAULT_NUM_PARTITIONS = 2
CONNECT_POLL_S = 0.05


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the client's arguments; unknown extra arguments are ignored."""
    parser = TaskArgumentParser(description="Flower client of the digits task")
    parser.add_argument("--host", default="127.0.0.1", help="server host")
    parser.add_argument("--port", type=int, default=8080, help="server port")
    parser.add_argument("--client-id", default=None, help="id given by the client manager")
    parser.add_argument(
        "--partition-id",
        type=int,
        default=None,
        help="training shard to use (default: derived from --client-id, else 0)",
    )
    parser.add_argument("--num-partitions", type=int, default=DEFAULT_NUM_PARTITIONS)
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the server's port to accept connections",
    )
    add_log_level_argument(parser)
    args, _unknown = parser.parse_known_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    if args.num_partitions < 1:
        parser.error(f"--num-partitions must be >= 1, got {args.num_partitions}")
    if args.partition_id is None:
        args.partition_id = default_partition(args.client_id, args.num_partitions)
    if not 0 <= args.partition_id < args.num_partitions:
        parser.error(
            f"--partition-id must be in 0..{args.num_partitions - 1}, got {args.partition_id}"
        )
    if args.connect_timeout < 0:
        parser.error(f"--connect-timeout must be >= 0, got {args.connect_timeout}")
    return args


def default_partition(client_id: str | None, num_partitions: int) -> int:
    """Partition for a client id: its trailing number modulo ``num_partitions``.

    ``client-1`` and ``client-2`` thus get different shards; an id without a trailing number
    is hashed (CRC-32), so the choice is the same on every run.  No id gives shard 0.
    """
    if not client_id:
        return 0
    match = re.search(r"(\d+)$", client_id)
    if match:
        return int(match.group(1)) % num_partitions
    return zlib.crc32(client_id.encode("utf-8")) % num_partitions


def plain_host(host: str) -> str:
    """Host without IPv6 brackets."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def server_address(host: str, port: int) -> str:
    """Flower address ``host:port`` (IPv6 hosts in brackets)."""
    host = plain_host(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wait_for_port(host: str, port: int, timeout: float, interval: float = CONNECT_POLL_S) -> float:
    """Wait until ``host:port`` accepts TCP connections; return the seconds waited.

    Raises ``TimeoutError`` if it does not within ``timeout`` seconds.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection(
                (plain_host(host), port), timeout=max(0.05, min(1.0, remaining))
            ):
                return time.monotonic() - start
        except OSError as exc:
            if time.monotonic() + interval > deadline:
                raise TimeoutError(
                    f"server {server_address(host, port)} did not accept connections "
                    f"within {timeout:g} s ({exc})"
                ) from exc
        time.sleep(interval)


def make_client(args: argparse.Namespace, reporter: TaskReporter) -> Client:
    """Build the Flower client training on this client's shard."""
    import task
    from flwr.client import NumPyClient
    from flwr.common import NDArrays, Scalar

    data = task.load_partition(args.partition_id, args.num_partitions)
    model = task.build_model()

    class DigitsClient(NumPyClient):
        """Trains the global model on the local shard."""

        def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
            """Current local weights."""
            return task.get_weights(model)

        def fit(
            self, parameters: NDArrays, config: dict[str, Scalar]
        ) -> tuple[NDArrays, int, dict[str, Scalar]]:
            """Train the received global model on the shard with the server's settings."""
            server_round = int(config.get("server_round", 0))
            task.set_weights(model, parameters)
            started = time.perf_counter()
            loss = task.train(
                model,
                data,
                epochs=int(config.get("local_epochs", task.DEFAULT_LOCAL_EPOCHS)),
                lr=float(config.get("lr", task.DEFAULT_LR)),
                batch_size=int(config.get("batch_size", task.DEFAULT_BATCH_SIZE)),
                seed=args.partition_id * 100_003 + server_round,
            )
            reporter.send_print(
                f"round {server_round}: trained on {len(data)} examples, loss {loss:.4f} "
                f"({time.perf_counter() - started:.3f} s)"
            )
            return task.get_weights(model), len(data), {"train_loss": loss}

        def evaluate(
            self, parameters: NDArrays, config: dict[str, Scalar]
        ) -> tuple[float, int, dict[str, Scalar]]:
            """Evaluate the received model on the local shard."""
            task.set_weights(model, parameters)
            loss, accuracy = task.evaluate(model, data)
            return loss, len(data), {"accuracy": accuracy}

    return DigitsClient().to_client()


def run(args: argparse.Namespace, reporter: TaskReporter) -> None:
    """Join the federation; returns when the server ends it."""
    setup_flower(args.log_level)
    import grpc
    from flwr.client import start_client

    client = make_client(args, reporter)
    address = server_address(args.host, args.port)
    reporter.send_print(
        f"client {args.client_id or '-'} ready (partition {args.partition_id} of "
        f"{args.num_partitions}); waiting for the server at {address}"
    )
    waited = wait_for_port(args.host, args.port, args.connect_timeout)
    reporter.send_print(f"server answered after {waited:.2f} s; joining the federation")
    try:
        start_client(server_address=address, client=client)
    except grpc.RpcError as exc:  # the server went away (or refused us) mid-federation
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        status = code.name if code is not None else "RPC error"
        raise ConnectionError(f"lost the server at {address}: {status} ({details})") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns the process exit status."""
    return run_task(lambda reporter: run(parse_args(argv), reporter))


if __name__ == "__main__":
    exit_now(main())
