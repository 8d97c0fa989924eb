"""The ServerApp: FedAvg over two devices for ``num-server-rounds`` rounds."""

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Average two devices' (unchanged) arrays; their metrics are what the test reads."""
    FedAvg().start(grid=grid, initial_arrays=ArrayRecord([np.zeros(2)]),
                   num_rounds=int(context.run_config["num-server-rounds"]))
