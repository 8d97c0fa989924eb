"""The ServerApp: FedAvg of the MLP over ``min-nodes`` devices for ``num-server-rounds``."""

import logging

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from digitsapp import task

app = ServerApp()


def resume_point(context: Context, initial: ArrayRecord) -> tuple[int, ArrayRecord]:
    """The rounds already done and the arrays to start from: AGATA's checkpoint when it started
    this run again after a restart (``[tool.agata] resume = true``), else none and ``initial``."""
    if "agata.resume" not in context.state:
        return 0, initial
    return int(context.state["agata.resume"]["round"]), context.state["agata.checkpoint"]


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Start from the seeded model (or the checkpoint), average the devices' updates, log the
    final accuracy."""
    devices = int(context.run_config["min-nodes"])
    done, arrays = resume_point(context, ArrayRecord(task.build_model().state_dict()))
    strategy = FedAvg(min_available_nodes=devices, min_train_nodes=devices,
                      min_evaluate_nodes=devices)
    rounds = int(context.run_config["num-server-rounds"])
    if done < rounds:  # a checkpoint taken after the last round leaves nothing to train
        arrays = strategy.start(
            grid=grid,
            initial_arrays=arrays,
            num_rounds=rounds - done,
            train_config=ConfigRecord({"lr": float(context.run_config["learning-rate"])}),
        ).arrays
    model = task.build_model()
    model.load_state_dict(arrays.to_torch_state_dict())
    loss, accuracy = task.evaluate(model, task.load_test())
    logging.getLogger(__name__).warning("final model on the held-out test set: loss %.4f, "
                                        "accuracy %.4f", loss, accuracy)
