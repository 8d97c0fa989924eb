"""The ClientApp: one gradient step towards this device's target, then its distance to it."""

import time

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


def _target(context: Context, size: int) -> np.ndarray:
    partition = int(context.node_config["partition-id"])
    return np.full(size, float(partition + 1))


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Move the vector towards the target (after ``train-delay-s``, to make rounds last);
    fail on purpose when the run config says so."""
    server_round = int(msg.content["config"]["server-round"])
    if int(context.run_config["fail-on-round"]) == server_round:
        raise RuntimeError(f"told to fail on round {server_round}")
    time.sleep(float(context.run_config.get("train-delay-s", 0.0)))
    vector = msg.content["arrays"].to_numpy_ndarrays()[0]
    target = _target(context, vector.size)
    lr = float(msg.content["config"]["lr"])
    updated = vector + lr * (target - vector)
    loss = float(np.mean((target - updated) ** 2))
    partition = int(context.node_config["partition-id"])
    content = RecordDict({
        "arrays": ArrayRecord([updated]),
        "metrics": MetricRecord({"loss": loss, "num-examples": 10 * (partition + 1)}),
    })
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """How far the global vector is from this device's target."""
    vector = msg.content["arrays"].to_numpy_ndarrays()[0]
    distance = float(np.linalg.norm(_target(context, vector.size) - vector))
    partition = int(context.node_config["partition-id"])
    content = RecordDict({"metrics": MetricRecord({"distance": distance,
                                                   "num-examples": 10 * (partition + 1)})})
    return Message(content=content, reply_to=msg)
