"""The run states table: a run's arguments and its newest checkpoint, on each database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from agata_common.database import make_engine
from cloud_task_manager.models import Base, TaskRecord
from cloud_task_manager.run_states import RunStates


@pytest.fixture
def engine(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(database_url, tmp_path / "tasks.db")
    Base.metadata.create_all(made)
    yield made
    made.dispose()


def test_only_a_newer_checkpoint_of_the_latest_run_is_kept(engine: Engine) -> None:
    states = RunStates(engine, max_checkpoint_bytes=100)
    with states._sessions.begin() as session:
        session.add(TaskRecord(id="t", host="127.0.0.1", own_port=1, credential_hash="h",
                               credential_nonce="n"))
        session.flush()
        RunStates.begin(session, "t", 1, {"num-server-rounds": 5})
    assert states.get("t", 1).checkpoint is None  # type: ignore[union-attr]
    assert states.save_checkpoint("t", 1, 2, b"two")
    assert not states.save_checkpoint("t", 1, 1, b"one"), "an older checkpoint replaced a newer"
    assert not states.save_checkpoint("t", 1, 2, b"two again")
    assert not states.save_checkpoint("t", 0, 9, b"old run")
    assert not states.save_checkpoint("t", 1, 9, b"x" * 101), "over the size limit"
    state = states.get("t", 1)
    assert state is not None
    assert (state.checkpoint_round, state.checkpoint, state.arguments) == (
        2, b"two", {"num-server-rounds": 5})
    assert states.get("t", 2) is None
    with states._sessions.begin() as session:
        RunStates.begin(session, "t", 2, {})
    fresh = states.get("t", 2)
    assert fresh is not None and fresh.checkpoint is None and fresh.checkpoint_round is None


def test_the_copier_copies_a_runs_newest_checkpoint_and_skips_the_overtaken(
        tmp_path: Path) -> None:
    import threading

    from cloud_task_manager.run_states import CheckpointCopier, PendingCheckpoint

    release = threading.Event()
    copied: list[int] = []

    def keep(checkpoint: PendingCheckpoint) -> str | None:
        release.wait(10)
        copied.append(checkpoint.rounds_done)
        return None

    copier = CheckpointCopier(keep, duty=1.0)
    for rounds_done in (1, 2, 3, 4):
        copier.submit(PendingCheckpoint(tmp_path / "c.npz", "t", 1, rounds_done, "r"))
    release.set()
    assert copier.flush(10)
    assert copied[-1] == 4 and not {2, 3} & set(copied)  # overtaken while 1 or 4 was copied
    copier.submit(PendingCheckpoint(tmp_path / "c.npz", "t", 1, 5, "r"))
    copier.forget("t", 1)
    copier.close()
    assert 5 not in copied


def test_a_damaged_checkpoint_is_skipped_for_the_previous_good_one(tmp_path: Path) -> None:
    import numpy as np
    from flwr.app import ArrayRecord

    from agata_contracts.checkpoints import checkpoint_name
    from cloud_task_manager.run_states import is_whole_checkpoint, newest_local_checkpoint
    from flower_runtime.checkpoint import checkpoint_bytes

    good = checkpoint_bytes(ArrayRecord([np.arange(1000.0)]), 4)
    assert is_whole_checkpoint(good)
    assert not is_whole_checkpoint(good[: len(good) // 2])
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0xFF
    assert not is_whole_checkpoint(bytes(flipped))
    (tmp_path / checkpoint_name(4)).write_bytes(good)
    (tmp_path / checkpoint_name(5)).write_bytes(good[: len(good) // 2])  # truncated newest
    assert newest_local_checkpoint(tmp_path, None) == (4, tmp_path / checkpoint_name(4))
    assert newest_local_checkpoint(tmp_path, 4) is None


def test_a_runs_pace_says_early_whether_it_makes_its_deadline() -> None:
    from cloud_task_manager.deadlines import projected_miss

    assert projected_miss(0.5, 10, 6.0) is None
    why = projected_miss(2.0, 100, 30.0)
    assert why is not None and "100 round(s) left need about 200 s" in why and "30 s" in why
