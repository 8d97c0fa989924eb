"""The ServerApp: FedAvg for ``num-server-rounds``, then the final model saved where it works."""

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Train, then ``np.savez("final_model", ...)`` in the working directory."""
    result = FedAvg().start(grid=grid, initial_arrays=ArrayRecord([np.zeros(4)]),
                            num_rounds=int(context.run_config["num-server-rounds"]),
                            train_config=ConfigRecord({"lr": 0.5}))
    np.savez("final_model", *result.arrays.to_numpy_ndarrays())
