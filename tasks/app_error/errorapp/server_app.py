"""The ServerApp: FedAvg of a small NumPy vector (its devices never answer)."""

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Ask ``min-nodes`` devices to train for ``num-server-rounds`` rounds."""
    devices = int(context.run_config["min-nodes"])
    strategy = FedAvg(min_available_nodes=devices, min_train_nodes=devices,
                      min_evaluate_nodes=devices)
    strategy.start(grid=grid, initial_arrays=ArrayRecord([np.zeros(4)]),
                   num_rounds=int(context.run_config["num-server-rounds"]))
