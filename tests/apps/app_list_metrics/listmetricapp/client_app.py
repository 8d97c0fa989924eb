"""The ClientApp: no learning, only metrics; ``recall`` is a list of three numbers that depend
on the device's partition and the round."""

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


def _partition(context: Context) -> int:
    return int(context.node_config["partition-id"])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Send the arrays back unchanged, with a list of per-epoch losses."""
    partition = _partition(context)
    metrics = MetricRecord({"epoch-losses": [1.0 + partition, 0.5 + partition],
                            "num-examples": 1})
    content = RecordDict({"arrays": msg.content["arrays"], "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Per-class recall [p, p + 1, p + 2] / 10 of partition p, and its number of examples."""
    partition = _partition(context)
    recall = [(partition + index) / 10 for index in range(3)]
    metrics = MetricRecord({"recall": recall, "accuracy": 0.5, "num-examples": 1})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


