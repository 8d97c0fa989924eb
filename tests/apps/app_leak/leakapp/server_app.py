"""The ServerApp: looks around, keeps what it found as a result, then runs FedAvg."""

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from leakapp.doors import try_doors
from leakapp.probe import look_around, report

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Report what the cloud's task process can reach and open, then train as usual."""
    found = {**look_around(str(context.run_config["look-under"])),
             **try_doors(context.run_config)}
    report(found, "leaks-server.json")
    FedAvg(min_available_nodes=2, min_train_nodes=2, min_evaluate_nodes=2).start(
        grid=grid, initial_arrays=ArrayRecord([np.zeros(2)]),
        num_rounds=int(context.run_config["num-server-rounds"]))
