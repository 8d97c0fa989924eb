"""The ClientApp: local SGD on this device's shard, and evaluation on its share of the test set.

The shard comes from ``context.node_config`` (``partition-id`` of ``num-partitions``), which the
runtime assigns among the devices of the run.
"""

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from digitsapp import task

app = ClientApp()


def _partition(context: Context) -> tuple[int, int]:
    return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this device's shard for ``local-epochs``."""
    model = task.build_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    shard = task.load_partition(*_partition(context))
    config = msg.content["config"]
    loss = task.train(model, shard, epochs=int(context.run_config["local-epochs"]),
                      lr=float(config["lr"]), batch_size=int(context.run_config["batch-size"]),
                      seed=int(config["server-round"]))
    content = RecordDict({
        "arrays": ArrayRecord(model.state_dict()),
        "metrics": MetricRecord({"loss": loss, "num-examples": len(shard)}),
    })
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Loss and accuracy of the received global model on this device's share of the test set."""
    model = task.build_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    held_out = task.load_test_share(*_partition(context))
    loss, accuracy = task.evaluate(model, held_out)
    content = RecordDict({"metrics": MetricRecord({
        "loss": loss, "accuracy": accuracy, "num-examples": len(held_out)})})
    return Message(content=content, reply_to=msg)
