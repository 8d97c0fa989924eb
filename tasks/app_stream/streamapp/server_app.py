"""The ServerApp: FedAvg over ``min-nodes`` devices for ``num-server-rounds`` rounds, adding
each reply into the new model as soon as it arrives and letting it go, then an evaluation of
the new model on every device (the messages Flower's ``FedAvg`` sends).

Flower's ``FedAvg`` keeps every reply of a round, a NumPy copy of each while it averages, and
the previous round's replies until the next round's are in. This app keeps the model it sends
(until the devices have it), the replies that arrived and are not yet added, and the sum: a
model of M bytes costs about (2 + replies in flight) x M."""

import io
import logging
import os
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()
log = logging.getLogger(__name__)

POLL_S = 0.02
"""How often the app looks for new replies."""

CHUNK = 1 << 20
"""Elements added per step: the weighted sum needs no temporary array of the model's size."""


def npy_view(data: bytes) -> np.ndarray:
    """The array in ``.npy`` bytes, read in place (``Array.numpy()`` copies it)."""
    head = io.BytesIO(data[:4096])
    read_header = (np.lib.format.read_array_header_1_0
                   if np.lib.format.read_magic(head) == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(head)
    if fortran or dtype.hasobject:
        raise ValueError("the app takes C-ordered numeric arrays only")
    count = int(np.prod(shape))
    return np.frombuffer(data, dtype=dtype, count=count, offset=head.tell()).reshape(shape)


def connected(grid: Grid, wanted: int, timeout_s: float) -> list[int]:
    """The first ``wanted`` devices, waiting up to ``timeout_s`` for them."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= wanted:
            return nodes[:wanted]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(nodes)} of {wanted} devices joined in {timeout_s:g} s")
        time.sleep(0.2)


def train_round(grid: Grid, sending: list[np.ndarray], nodes: list[int], server_round: int,
                lr: float, timeout_s: float) -> np.ndarray:
    """Send the model to ``nodes`` and return the weighted mean of their updates. The model is
    taken out of ``sending`` (an argument would stay referenced by the caller) and let go
    once it is on its way."""
    model = ArrayRecord([sending.pop()])
    config = ConfigRecord({"server-round": server_round, "lr": lr})
    pending = set(grid.push_messages([
        Message(RecordDict({"arrays": model, "config": config}), node, MessageType.TRAIN,
                group_id=str(server_round))
        for node in nodes]))
    del model
    total: np.ndarray | None = None
    weight = 0.0
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"round {server_round}: {len(pending)} devices did not answer "
                               f"in {timeout_s:g} s")
        replies = list(grid.pull_messages(pending))
        if not replies:
            time.sleep(POLL_S)
        while replies:
            reply = replies.pop()
            pending.discard(reply.metadata.reply_to_message_id)
            if reply.has_error():
                raise RuntimeError(f"round {server_round}: a device failed: "
                                   f"{reply.error.reason}")
            w = float(reply.content["metrics"]["num-examples"])
            update = npy_view(next(iter(reply.content["arrays"].values())).data).reshape(-1)
            if total is None:
                total = np.zeros_like(update)
            for start in range(0, update.size, CHUNK):
                total[start:start + CHUNK] += w * update[start:start + CHUNK]
            weight += w
            del reply, update
    assert total is not None
    total /= weight
    return total


def evaluate_round(grid: Grid, vector: np.ndarray, nodes: list[int], server_round: int,
                   timeout_s: float) -> float:
    """Send ``vector`` to ``nodes`` for evaluation; their mean distance to their targets."""
    model = ArrayRecord([vector])
    config = ConfigRecord({"server-round": server_round})
    replies = list(grid.send_and_receive([
        Message(RecordDict({"arrays": model, "config": config}), node, MessageType.EVALUATE,
                group_id=str(server_round))
        for node in nodes], timeout=timeout_s))
    del model
    failed = [r.error.reason for r in replies if r.has_error()]
    if failed or len(replies) < len(nodes):
        raise RuntimeError(f"round {server_round}: evaluation failed: "
                           f"{failed or 'devices did not answer'}")
    return float(np.mean([float(r.content["metrics"]["distance"]) for r in replies]))


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Start from zeros and average the devices' updates, round by round."""
    config = context.run_config
    rounds = int(config["num-server-rounds"])
    devices = int(config["min-nodes"])
    lr = float(config["learning-rate"])
    answer_s = float(config["answer-timeout-s"])
    vector = np.zeros(int(config["vector-size"]), dtype=np.float64)
    for server_round in range(1, rounds + 1):
        nodes = connected(grid, devices, float(config["join-timeout-s"]))
        sending = [vector]
        del vector
        vector = train_round(grid, sending, nodes, server_round, lr, answer_s)
        distance = evaluate_round(grid, vector, nodes, server_round, answer_s)
        log.warning("round %d: mean %.4f, distance %.4f", server_round, float(vector.mean()),
                    distance)
    results = Path(os.environ.get("AGATA_RESULTS_DIR", "agata-results"))
    results.mkdir(parents=True, exist_ok=True)
    np.save(results / "final.npy", vector)
