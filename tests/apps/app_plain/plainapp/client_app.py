"""The ClientApp: one step towards ones, its distance as the metric."""

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Move halfway to a vector of ones."""
    vector = msg.content["arrays"].to_numpy_ndarrays()[0]
    updated = vector + float(msg.content["config"]["lr"]) * (1.0 - vector)
    return Message(RecordDict({"arrays": ArrayRecord([updated]), "metrics": MetricRecord(
        {"loss": float(np.mean((1.0 - updated) ** 2)), "num-examples": 1})}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """How far the global vector is from ones."""
    vector = msg.content["arrays"].to_numpy_ndarrays()[0]
    return Message(RecordDict({"metrics": MetricRecord(
        {"distance": float(np.linalg.norm(1.0 - vector)), "num-examples": 1})}), reply_to=msg)
