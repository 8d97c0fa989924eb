"""The ClientApp: one step of the vector towards this device's target."""

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Move the vector by ``lr`` towards ``partition-id + 1`` in every element."""
    partition = int(context.node_config["partition-id"])
    vector = msg.content["arrays"].to_numpy_ndarrays()[0]
    lr = float(msg.content["config"]["lr"])
    vector += lr * (float(partition + 1) - vector)
    loss = float(np.mean((float(partition + 1) - vector) ** 2))
    content = RecordDict({
        "arrays": ArrayRecord([vector]),
        "metrics": MetricRecord({"loss": loss, "num-examples": 10 * (partition + 1)}),
    })
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global vector's distance to this device's target."""
    partition = int(context.node_config["partition-id"])
    vector = msg.content["arrays"].to_numpy_ndarrays()[0]
    distance = float(np.sqrt(np.sum((float(partition + 1) - vector) ** 2)))
    content = RecordDict({"metrics": MetricRecord({"distance": distance,
                                                   "num-examples": 10 * (partition + 1)})})
    return Message(content=content, reply_to=msg)
