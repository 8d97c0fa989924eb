"""The elastic run grid: a silent device is let go and its partition given to the next device
(or to it when it comes back), a run goes on down to its minimum and fails past the grace
naming its devices and round."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from agata_contracts.run_devices import Roster
from flower_runtime.flower_internals import SUPERLINK_NODE_ID, TaskIdentity
from flower_runtime.grid import DevicesMissing, RunGrid

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's messages take the run's identity, as in the ServerApp host."""
    for name, value in (("_run_id", 7), ("_node_id", SUPERLINK_NODE_ID), ("_task_id", 7)):
        monkeypatch.setattr(TaskIdentity, name, value)


class Channel:
    """A device that answers nothing by itself."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.closed = False

    def send(self, data: Message) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.closed = True


def train(node_id: int, round_number: int) -> Message:
    content = RecordDict({"config": ConfigRecord({"server-round": round_number})})
    return Message(content, node_id, "train", group_id=str(round_number))


def answer(grid: RunGrid, channel: Channel, node_id: int) -> None:
    instruction = channel.sent[-1]
    assert grid.deliver(Message(RecordDict(), reply_to=instruction), node_id)


def test_a_silent_device_is_let_go_and_a_newcomer_takes_its_partition() -> None:
    rosters: list[Roster] = []
    grid = RunGrid(expected_nodes=2, join_timeout_s=1, rejoin_timeout_s=1,
                   on_roster=rosters.append)
    a, b, c = Channel(), Channel(), Channel()
    node_a, node_b = grid.join("dev-a", a), grid.join("dev-b", b)
    assert node_a is not None and node_b is not None
    assert grid.join("dev-c", c) is None  # the run has all its devices
    assert sorted(grid.get_node_ids()) == sorted([node_a.node_id, node_b.node_id])

    threading.Timer(0.05, answer, (grid, b, node_b.node_id)).start()
    replies = list(grid.send_and_receive([train(node_a.node_id, 1), train(node_b.node_id, 1)],
                                         timeout=0.3))
    assert len(replies) == 1 and a.closed and not b.closed
    assert rosters[-2].change == ("device dev-a left (partition 0, after round 0): did not "
                                  "answer round 1 within 0.3 s")
    assert rosters[-2].vacancies == 1

    node_c = grid.join("dev-c", c)
    assert node_c is not None and node_c.partition_id == node_a.partition_id
    assert rosters[-1].change == (f"device dev-c replaced device dev-a (partition "
                                  f"{node_a.partition_id}, after round 1)")
    assert sorted(grid.get_node_ids()) == sorted([node_b.node_id, node_c.node_id])
    seats = {d.client_id: d for d in rosters[-1].devices}
    assert seats["dev-b"].rounds_trained == 1 and seats["dev-a"].rounds_trained == 0
    assert seats["dev-a"].replaced_by == "dev-c" and seats["dev-c"].replaced == "dev-a"
    assert seats["dev-a"].left_after_round == 0 and seats["dev-c"].left is None


def test_a_device_that_comes_back_gets_its_own_partition() -> None:
    rosters: list[Roster] = []
    grid = RunGrid(expected_nodes=2, join_timeout_s=1, rejoin_timeout_s=1,
                   on_roster=rosters.append)
    first, second = grid.join("dev-a", Channel()), grid.join("dev-b", Channel())
    assert first is not None and second is not None
    grid.get_node_ids()
    grid.leave(second.node_id, "device dev-b disconnected")
    back = grid.join("dev-b", Channel())
    assert back is not None and back.partition_id == second.partition_id
    assert rosters[-1].change is not None and "dev-b came back" in rosters[-1].change


def test_a_run_goes_on_with_its_minimum_and_fails_under_it_naming_devices() -> None:
    grid = RunGrid(expected_nodes=3, min_nodes=2, join_timeout_s=0.1, rejoin_timeout_s=0.1)
    nodes = [grid.join(f"dev-{i}", Channel()) for i in range(2)]
    assert len(list(grid.get_node_ids())) == 2  # the join timeout passed with the minimum
    assert nodes[0] is not None and nodes[1] is not None
    grid.leave(nodes[0].node_id, "device dev-0 disconnected")
    with pytest.raises(DevicesMissing) as missing:
        grid.get_node_ids()
    text = str(missing.value)
    assert "1 of 2 device(s) missing after 0.1 s" in text
    assert "needs at least 2" in text and "dev-0 (partition 0) left after round 0" in text


def test_a_run_under_its_minimum_waits_for_a_replacement_within_the_grace() -> None:
    grid = RunGrid(expected_nodes=2, join_timeout_s=1, rejoin_timeout_s=5)
    first, second = grid.join("dev-a", Channel()), grid.join("dev-b", Channel())
    assert first is not None and second is not None
    grid.get_node_ids()
    grid.leave(first.node_id, "device dev-a disconnected")
    threading.Timer(0.05, grid.join, ("dev-c", Channel())).start()
    assert len(list(grid.get_node_ids())) == 2


def test_a_device_silent_past_the_answer_timeout_is_let_go_before_the_apps_timeout() -> None:
    grid = RunGrid(expected_nodes=2, join_timeout_s=1, answer_timeout_s=0.2)
    a, b = Channel(), Channel()
    node_a, node_b = grid.join("dev-a", a), grid.join("dev-b", b)
    assert node_a is not None and node_b is not None
    threading.Timer(0.05, answer, (grid, b, node_b.node_id)).start()
    replies = list(grid.send_and_receive([train(node_a.node_id, 1), train(node_b.node_id, 1)],
                                         timeout=30))
    errors = [r for r in replies if r.has_error()]
    assert len(replies) == 2 and len(errors) == 1 and a.closed
    assert "did not answer round 1 within 0.2 s" in errors[0].error.reason
    back = grid.join("dev-a", Channel())
    assert back is not None and back.partition_id == node_a.partition_id


def test_a_sent_model_is_freed_once_the_device_has_it_and_the_app_let_go() -> None:
    grid = RunGrid(expected_nodes=1, join_timeout_s=1)
    channel = Channel()
    node = grid.join("dev-a", channel)
    assert node is not None
    arrays = ArrayRecord([np.zeros(4)])
    kept = weakref.ref(arrays)
    instruction = Message(RecordDict({"arrays": arrays,
                                      "config": ConfigRecord({"server-round": 3})}),
                          node.node_id, "train", group_id="3")
    (sent_id,) = grid.push_messages([instruction])
    channel.sent.clear()  # the socket wrote it out
    del arrays, instruction
    gc.collect()
    assert kept() is None  # the grid kept only what an answer or an error reply needs
    grid.leave(node.node_id, "gone")
    (reply,) = grid.pull_messages([sent_id])
    assert reply.has_error() and reply.metadata.reply_to_message_id == sent_id
    assert reply.metadata.group_id == "3"


def test_replies_an_app_pulls_itself_are_reported_once_each_round_is_answered() -> None:
    seen: list[tuple[int | None, list[Message]]] = []
    grid = RunGrid(expected_nodes=2, join_timeout_s=1,
                   on_replies=lambda number, replies, nodes: seen.append((number, replies)))
    a, b = Channel(), Channel()
    node_a, node_b = grid.join("dev-a", a), grid.join("dev-b", b)
    assert node_a is not None and node_b is not None
    ids = list(grid.push_messages([train(node_a.node_id, 4), train(node_b.node_id, 4)]))

    def reply(channel: Channel, loss: float) -> Message:
        return Message(RecordDict({"arrays": ArrayRecord([np.zeros(3)]),
                                   "metrics": MetricRecord({"loss": loss})}),
                       reply_to=channel.sent[-1])

    assert grid.deliver(reply(a, 1.0), node_a.node_id)
    (first,) = grid.pull_messages(ids)
    assert "arrays" in first.content and seen == []  # round 4 is not all answered yet
    assert grid.deliver(reply(b, 3.0), node_b.node_id)
    assert len(list(grid.pull_messages(ids))) == 1
    ((number, answers),) = seen
    assert number == 4
    assert sorted(r.content["metrics"]["loss"] for r in answers) == [1.0, 3.0]
    assert all(not r.content.array_records for r in answers)  # metrics only, no model kept
