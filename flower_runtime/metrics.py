"""Per-round metrics read off the replies a ServerApp received, without the app's help.

Aggregated the way FedAvg does (each reply's metrics weighted by its ``num-examples``), and
kept per device too. Keys: ``train.loss`` for the aggregate, ``train.loss@client-7`` for one
device's own value. A list-valued metric (Flower's ``MetricRecord`` allows lists of ints and
floats) is kept element by element as ``name[0]``, ``name[1]``, … (``evaluate.recall[2]``,
``evaluate.recall[2]@client-7``), each aggregated like a number.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

from flwr.app import Message

WEIGHT_KEY = "num-examples"


def element_name(name: str, index: int) -> str:
    """The key of element ``index`` of list metric ``name``: ``name[index]``."""
    return f"{name}[{index}]"


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def flatten_metric(name: str, value: object) -> dict[str, float]:
    """A metric as finite numbers: ``{name: v}`` for a number, ``{name[i]: v_i}`` for each
    finite element of a list; nothing for other values (text, booleans, NaN)."""
    if isinstance(value, list | tuple):
        return {element_name(name, index): number for index, item in enumerate(value)
                if (number := _number(item)) is not None}
    number = _number(value)
    return {} if number is None else {name: number}


def _scalars(reply: Message) -> dict[str, float]:
    values: dict[str, float] = {}
    for record in reply.content.metric_records.values():
        for key, value in record.items():
            values.update(flatten_metric(key, value))
    return values


def round_metrics(replies: list[Message], client_of: Mapping[int, str]) -> dict[str, float]:
    """One round's metrics: weighted aggregates and each device's own values."""
    weighted: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    result: dict[str, float] = {}
    for reply in replies:
        if reply.has_error() or not reply.has_content():
            continue
        kind = reply.metadata.message_type
        values = _scalars(reply)
        weight = values.get(WEIGHT_KEY, 1.0)
        client = client_of.get(reply.metadata.src_node_id, str(reply.metadata.src_node_id))
        for key, value in values.items():
            if key == WEIGHT_KEY:
                continue
            weighted[(kind, key)].append((weight, value))
            result[f"{kind}.{key}@{client}"] = value
    for (kind, key), pairs in weighted.items():
        total = sum(weight for weight, _ in pairs)
        if total > 0:
            result[f"{kind}.{key}"] = sum(w * v for w, v in pairs) / total
    return result
