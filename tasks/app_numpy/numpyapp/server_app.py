"""The ServerApp: FedAvg over every device for ``num-server-rounds`` rounds."""

import logging
import os
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Start from zeros and average the devices' updates."""
    rounds = int(context.run_config["num-server-rounds"])
    size = int(context.run_config["vector-size"])
    if context.run_config.get("fail-on-round") == -1:
        raise RuntimeError("the ServerApp was told to fail before round 1")
    devices = int(context.run_config["min-nodes"])
    strategy = FedAvg(min_available_nodes=devices, min_train_nodes=devices,
                      min_evaluate_nodes=devices)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(size, dtype=np.float64)]),
        num_rounds=rounds,
        train_config=ConfigRecord({"lr": float(context.run_config["learning-rate"])}),
    )
    final = result.arrays.to_numpy_ndarrays()[0]
    logging.getLogger(__name__).warning("final vector mean %.4f", float(final.mean()))
    results = Path(os.environ.get("AGATA_RESULTS_DIR", "agata-results"))
    results.mkdir(parents=True, exist_ok=True)
    np.save(results / "final.npy", final)
