"""Round metrics off a ServerApp's replies: numbers and list-valued metrics, per element."""

from __future__ import annotations

import math

from flwr.app import Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from flower_runtime.metrics import flatten_metric, round_metrics


def test_a_list_metric_is_kept_element_by_element() -> None:
    assert flatten_metric("loss", 0.5) == {"loss": 0.5}
    assert flatten_metric("count", 3) == {"count": 3.0}
    assert flatten_metric("recall", [0.25, 1, 0.75]) == {
        "recall[0]": 0.25, "recall[1]": 1.0, "recall[2]": 0.75}
    assert flatten_metric("recall", [0.5, math.nan, math.inf, 2]) == {
        "recall[0]": 0.5, "recall[3]": 2.0}  # non-finite elements are left out, not shifted
    assert flatten_metric("empty", []) == {}
    assert flatten_metric("flag", True) == {} and flatten_metric("text", "x") == {}


def reply(node: int, kind: str, metrics: dict[str, float | int | list[float] | list[int]]
          ) -> Message:
    """Device ``node``'s reply to a ``kind`` instruction, made as Flower makes replies."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    instruction = Message(RecordDict(), dst_node_id=node, message_type=kind)
    TaskIdentity.node_id = node
    try:
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=instruction)
    finally:
        TaskIdentity.node_id = SUPERLINK_NODE_ID


def test_a_rounds_list_metrics_are_aggregated_per_element_and_kept_per_device() -> None:
    replies = [
        reply(1, "evaluate", {"num-examples": 1, "accuracy": 0.5, "recall": [0.2, 0.4]}),
        reply(2, "evaluate", {"num-examples": 3, "accuracy": 0.9, "recall": [0.6, 0.8]}),
    ]
    metrics = round_metrics(replies, {1: "dev-a", 2: "dev-b"})
    assert metrics["evaluate.accuracy"] == (0.5 + 3 * 0.9) / 4
    assert math.isclose(metrics["evaluate.recall[0]"], (0.2 + 3 * 0.6) / 4)
    assert math.isclose(metrics["evaluate.recall[1]"], (0.4 + 3 * 0.8) / 4)
    assert metrics["evaluate.recall[1]@dev-a"] == 0.4
    assert metrics["evaluate.recall[0]@dev-b"] == 0.6
    assert not any(key.startswith("evaluate.num-examples") for key in metrics)
