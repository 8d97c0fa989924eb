"""Flower server of the digits task (legacy ``flwr.server.start_server`` API).

Run by the cloud task manager as ``python -u server.py --host H --port P [--name value ...]``
with the task folder as working directory.  Runs FedAvg for ``--num-rounds`` rounds with at
least ``--min-clients`` clients, evaluates the global model on the held-out test split after
every round (round 0 = the initial model) and reports each result with ``send_stats``.
Sends ``info "Finished"`` at the end; on failure sends ``error`` and exits with status 1.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from runtime import TaskArgumentParser, add_log_level_argument, setup_flower

from task_daemon_lib import TaskReporter
from task_daemon_lib.task_main import exit_now, run_task

DEFAULT_NUM_ROUNDS = 3
DEFAULT_MIN_CLIENTS = 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the server's arguments; unknown extra arguments are ignored."""
    parser = TaskArgumentParser(description="Flower server of the digits task")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=8080, help="port to bind")
    parser.add_argument("--num-rounds", type=int, default=DEFAULT_NUM_ROUNDS)
    parser.add_argument(
        "--min-clients",
        type=int,
        default=DEFAULT_MIN_CLIENTS,
        help="clients needed to start a round (and trained on in each round)",
    )
    parser.add_argument(
        "--local-epochs", type=int, default=1, help="local epochs per round (sent to clients)"
    )
    parser.add_argument(
        "--lr", type=float, default=0.1, help="clients' SGD learning rate (sent to clients)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="clients' mini-batch size (sent to clients)"
    )
    parser.add_argument(
        "--round-timeout",
        type=float,
        default=0.0,
        help="seconds to wait for the clients' results of a round; 0 = no limit",
    )
    add_log_level_argument(parser)
    args, _unknown = parser.parse_known_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    for name in ("num_rounds", "min_clients", "local_epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.lr > 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    if args.round_timeout < 0:
        parser.error(f"--round-timeout must be >= 0, got {args.round_timeout}")
    return args


def bind_address(host: str, port: int) -> str:
    """Flower address ``host:port`` (IPv6 hosts in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def run(args: argparse.Namespace, reporter: TaskReporter) -> None:
    """Run the federation; returns when all rounds are done."""
    setup_flower(args.log_level)
    import task
    from flwr.common import Metrics, NDArrays, Scalar, ndarrays_to_parameters
    from flwr.server import ServerConfig, start_server
    from flwr.server.strategy import FedAvg

    test_data = task.load_test()
    model = task.build_model()

    def evaluate_fn(
        server_round: int, weights: NDArrays, _config: dict[str, Scalar]
    ) -> tuple[float, dict[str, Scalar]]:
        """Evaluate the global model on the held-out split and report the result."""
        task.set_weights(model, weights)
        loss, accuracy = task.evaluate(model, test_data)
        reporter.send_stats(server_round, loss=loss, accuracy=accuracy)
        return loss, {"accuracy": accuracy}

    def fit_config(server_round: int) -> dict[str, Scalar]:
        """Training settings sent to the clients with every round."""
        return {
            "server_round": server_round,
            "local_epochs": args.local_epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
        }

    def aggregate_fit_metrics(results: list[tuple[int, Metrics]]) -> Metrics:
        """Example-weighted mean of the clients' training loss."""
        total = sum(num for num, _ in results)
        losses = [(num, m["train_loss"]) for num, m in results if "train_loss" in m]
        if not total or not losses:
            return {}
        return {"train_loss": sum(num * float(loss) for num, loss in losses) / total}

    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,  # evaluation is centralized (evaluate_fn)
        min_fit_clients=args.min_clients,
        min_evaluate_clients=args.min_clients,
        min_available_clients=args.min_clients,
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=fit_config,
        fit_metrics_aggregation_fn=aggregate_fit_metrics,
        initial_parameters=ndarrays_to_parameters(task.get_weights(model)),
    )
    reporter.send_print(
        f"serving on {bind_address(args.host, args.port)}: {args.num_rounds} rounds, "
        f"{args.min_clients} clients, {len(test_data)} test examples"
    )
    start_server(
        server_address=bind_address(args.host, args.port),
        config=ServerConfig(
            num_rounds=args.num_rounds,
            round_timeout=args.round_timeout or None,
        ),
        strategy=strategy,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns the process exit status."""
    return run_task(lambda reporter: run(parse_args(argv), reporter))


if __name__ == "__main__":
    exit_now(main())
