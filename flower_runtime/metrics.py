"""Per-round metrics read off the replies a ServerApp received, without the app's help.

Aggregated the way FedAvg does (each reply's metrics weighted by its ``num-examples``), and
kept per device too. Keys: ``train.loss`` for the aggregate, ``train.loss@client-7`` for one
device's own value.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

from flwr.app import Message

WEIGHT_KEY = "num-examples"


def _scalars(reply: Message) -> dict[str, float]:
    values: dict[str, float] = {}
    for record in reply.content.metric_records.values():
        for key, value in record.items():
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and math.isfinite(value):
                values[key] = float(value)
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
