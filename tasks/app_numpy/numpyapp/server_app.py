"""The ServerApp: FedAvg over every device for ``num-server-rounds`` rounds."""

import logging
import os
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


def resume_point(context: Context, initial: ArrayRecord) -> tuple[int, ArrayRecord]:
    """The rounds already done and the arrays to start from: AGATA's checkpoint when it started
    this run again after a restart (``[tool.agata] resume = true``), else none and ``initial``."""
    if "agata.resume" not in context.state:
        return 0, initial
    return int(context.state["agata.resume"]["round"]), context.state["agata.checkpoint"]


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Start from zeros and average the devices' updates."""
    rounds = int(context.run_config["num-server-rounds"])
    size = int(context.run_config["vector-size"])
    if context.run_config.get("fail-on-round") == -1:
        raise RuntimeError("the ServerApp was told to fail before round 1")
    devices = int(context.run_config["min-nodes"])
    done, arrays = resume_point(context, ArrayRecord([np.zeros(size, dtype=np.float64)]))
    strategy = FedAvg(min_available_nodes=devices, min_train_nodes=devices,
                      min_evaluate_nodes=devices)
    if done < rounds:
        arrays = strategy.start(
            grid=grid,
            initial_arrays=arrays,
            num_rounds=rounds - done,
            train_config=ConfigRecord({"lr": float(context.run_config["learning-rate"])}),
        ).arrays
    final = arrays.to_numpy_ndarrays()[0]
    logging.getLogger(__name__).warning("final vector mean %.4f", float(final.mean()))
    results = Path(os.environ.get("AGATA_RESULTS_DIR", "agata-results"))
    results.mkdir(parents=True, exist_ok=True)
    np.save(results / "final.npy", final)
