"""The ServerApp host's checkpoints: the file format, and what the checkpointer keeps from the
instructions a strategy sends."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from agata_contracts.checkpoints import checkpoint_name, checkpoint_round
from flower_runtime.checkpoint import (
    Checkpointer,
    CheckpointError,
    checkpoint_bytes,
    read_checkpoint,
)
from task_daemon_lib.messages import CheckpointMessage, parse_report_line
from task_daemon_lib.task_reporter import TaskReporter

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def server_identity() -> None:
    """Messages are made as the ServerApp host makes them: as the run's server node."""
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    TaskIdentity.task_id = 1


@pytest.fixture
def reporter_pipe() -> Iterator[tuple[TaskReporter, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    yield TaskReporter(fd=write_end), read_end
    os.close(read_end)
    os.close(write_end)


def sent(read_end: int) -> list[object]:
    try:
        data = os.read(read_end, 1 << 16)
    except BlockingIOError:
        return []
    return [parse_report_line(line) for line in data.splitlines()]


def instruction(kind: str, server_round: int, value: float) -> Message:
    content = RecordDict({"arrays": ArrayRecord([np.full(3, value), np.arange(2.0)]),
                          "config": ConfigRecord({"server-round": server_round})})
    return Message(content, dst_node_id=7, message_type=kind)


def test_a_checkpoint_keeps_names_values_and_round() -> None:
    arrays = ArrayRecord(array_dict={"layer.weight": Array(np.eye(2, dtype=np.float32)),
                                     "layer.bias": Array(np.array([1.5, -2.0]))})
    rounds, restored = read_checkpoint(checkpoint_bytes(arrays, 7))
    assert rounds == 7
    assert list(restored.keys()) == list(arrays.keys())
    for name in arrays:
        np.testing.assert_array_equal(restored[name].numpy(), arrays[name].numpy())
        assert restored[name].numpy().dtype == arrays[name].numpy().dtype


def test_a_torch_state_dict_comes_back_by_its_names() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 2)
    _, restored = read_checkpoint(checkpoint_bytes(ArrayRecord(model.state_dict()), 1))
    state = restored.to_torch_state_dict()
    assert set(state) == {"weight", "bias"}
    assert torch.equal(state["weight"], model.state_dict()["weight"])


def test_what_is_not_a_checkpoint_is_refused_without_unpickling() -> None:
    with pytest.raises(CheckpointError):
        read_checkpoint(b"not a zip")
    pickled = io.BytesIO()
    np.savez(pickled, __agata_meta__=np.array([{"round": 1}], dtype=object))
    with pytest.raises(CheckpointError):
        read_checkpoint(pickled.getvalue())
    no_round = io.BytesIO()
    np.savez(no_round, __agata_meta__=np.array('{"round": -1, "names": []}'))
    with pytest.raises(CheckpointError, match="no round"):
        read_checkpoint(no_round.getvalue())


def test_checkpoint_names_round_trip_and_refuse_strangers() -> None:
    assert checkpoint_round(checkpoint_name(12)) == 12
    for name in ("checkpoint-x.npz", "../checkpoint-1.npz", "checkpoint-1.npz.tmp", "resume.npz"):
        assert checkpoint_round(name) is None
    with pytest.raises(ValueError):
        checkpoint_name(-1)


def test_the_model_after_each_round_is_kept_and_reported(
        tmp_path: Path, reporter_pipe: tuple[TaskReporter, int]) -> None:
    reporter, read_end = reporter_pipe
    sent(read_end)  # "Started"
    keeper = Checkpointer(tmp_path, reporter)
    keeper.instructions_sent(instruction("train", 1, 0.0))  # the initial model: nothing done
    keeper.flush()
    assert sent(read_end) == [] and not list(tmp_path.iterdir())
    for server_round in (1, 2, 3):
        keeper.replies_seen(server_round)  # the train replies: nothing held yet
        keeper.instructions_sent(instruction("evaluate", server_round, float(server_round)))
        keeper.flush()
        assert sent(read_end) == [], "kept before the round's evaluation came back"
        keeper.replies_seen(server_round)
        if server_round < 3:
            keeper.instructions_sent(instruction("train", server_round + 1,
                                                 float(server_round)))  # the same model
        keeper.flush()
        assert [(type(m), m.round) for m in sent(read_end)  # type: ignore[attr-defined]
                ] == [(CheckpointMessage, server_round)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(2), checkpoint_name(3)]
    rounds, arrays = read_checkpoint((tmp_path / checkpoint_name(3)).read_bytes())
    assert rounds == 3
    np.testing.assert_array_equal(arrays.to_numpy_ndarrays()[0], np.full(3, 3.0))


def test_an_evaluation_without_replies_is_kept_by_the_next_training(
        tmp_path: Path, reporter_pipe: tuple[TaskReporter, int]) -> None:
    reporter, read_end = reporter_pipe
    sent(read_end)
    keeper = Checkpointer(tmp_path, reporter)
    keeper.instructions_sent(instruction("evaluate", 1, 1.0))
    keeper.instructions_sent(instruction("train", 2, 1.0))
    keeper.flush()
    assert [m.round for m in sent(read_end)] == [1]  # type: ignore[attr-defined]


def test_a_resumed_run_numbers_its_checkpoints_after_the_rounds_done(
        tmp_path: Path, reporter_pipe: tuple[TaskReporter, int]) -> None:
    reporter, read_end = reporter_pipe
    sent(read_end)
    keeper = Checkpointer(tmp_path, reporter, rounds_before=5)
    keeper.instructions_sent(instruction("train", 1, 0.0))
    keeper.instructions_sent(instruction("evaluate", 1, 1.0))
    keeper.replies_seen(1)
    keeper.flush()
    assert [m.round for m in sent(read_end)] == [6]  # type: ignore[attr-defined]
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint_name(6)]


def test_instructions_without_a_round_or_arrays_are_not_kept(
        tmp_path: Path, reporter_pipe: tuple[TaskReporter, int]) -> None:
    reporter, read_end = reporter_pipe
    sent(read_end)
    keeper = Checkpointer(tmp_path, reporter)
    keeper.instructions_sent(Message(RecordDict({"arrays": ArrayRecord([np.ones(1)])}),
                                     dst_node_id=7, message_type="evaluate"))
    keeper.instructions_sent(Message(RecordDict({"config": ConfigRecord({"server-round": 4})}),
                                     dst_node_id=7, message_type="evaluate"))
    keeper.instructions_sent(Message(RecordDict({"arrays": ArrayRecord([np.ones(1)]),
                                                 "config": ConfigRecord({"server-round": 4})}),
                                     dst_node_id=7, message_type="query"))
    keeper.flush()
    assert sent(read_end) == [] and not list(tmp_path.iterdir())
