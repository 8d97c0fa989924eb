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


def _begun_run(engine: Engine) -> RunStates:
    """Run states whose task ``t`` (owned by replica ``r``) has begun its run 1."""
    states = RunStates(engine, max_checkpoint_bytes=1 << 20)
    with states._sessions.begin() as session:
        session.add(TaskRecord(id="t", host="127.0.0.1", own_port=1, credential_hash="h",
                               credential_nonce="n", owner="r"))
        session.flush()
        RunStates.begin(session, "t", 1, {})
    return states


def test_a_damaged_copy_never_replaces_the_good_one_and_a_restart_takes_the_previous(
        engine: Engine, tmp_path: Path) -> None:
    import numpy as np
    from flwr.app import ArrayRecord

    from agata_contracts.checkpoints import RESUME_FILE, checkpoint_name
    from flower_runtime.checkpoint import checkpoint_bytes

    states = _begun_run(engine)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    good = {r: checkpoint_bytes(ArrayRecord([np.full(100, float(r))]), r) for r in (5, 6)}
    (state_dir / checkpoint_name(5)).write_bytes(good[5])
    assert states.keep_checkpoint_file(state_dir / checkpoint_name(5), "t", 1, 5,
                                       owner="r") is None
    (state_dir / checkpoint_name(6)).write_bytes(good[6][: len(good[6]) // 2])  # torn
    why = states.keep_checkpoint_file(state_dir / checkpoint_name(6), "t", 1, 6, owner="r")
    assert why is not None and "damaged" in why
    state = states.get("t", 1)
    assert state is not None and state.checkpoint_round == 5

    # the database's copy rots too: the previous whole local file is taken, and said so
    (state_dir / checkpoint_name(4)).write_bytes(checkpoint_bytes(ArrayRecord([np.zeros(3)]), 4))
    rotten = RunStates(engine, 1 << 20)
    rotten.save_checkpoint("t", 1, 6, good[6][:100])
    state = rotten.get("t", 1)
    assert state is not None
    (state_dir / checkpoint_name(5)).write_bytes(good[5][:-10])
    resumed, reason = rotten.restart_point("t", state, True, state_dir, "a test")
    assert resumed and reason.startswith("resumed after round 4 from its checkpoint"), reason
    assert "checkpoint after round 6 is damaged and was skipped" in reason
    assert (state_dir / RESUME_FILE).read_bytes().startswith(b"PK")


def test_a_wiped_state_folder_resumes_from_the_copy_the_manager_kept(
        engine: Engine, tmp_path: Path) -> None:
    import numpy as np
    from flwr.app import ArrayRecord

    from agata_contracts.checkpoints import RESUME_FILE, checkpoint_name
    from cloud_task_manager.kept_checkpoints import KeptCheckpoints
    from flower_runtime.checkpoint import checkpoint_bytes

    states = _begun_run(engine)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    kept = KeptCheckpoints(tmp_path / "run-checkpoints")
    kept.folder("t", 1)
    good = {r: checkpoint_bytes(ArrayRecord([np.full(100, float(r))]), r) for r in (3, 4, 5)}
    for rounds_done in (3, 4, 5):
        (state_dir / checkpoint_name(rounds_done)).write_bytes(good[rounds_done])
        if rounds_done < 5:  # the newest not copied yet
            assert kept.keep(state_dir / checkpoint_name(rounds_done), "t", 1,
                             rounds_done) == kept.path("t", 1) / checkpoint_name(rounds_done)

    # hostile task code: one checkpoint deleted, the other two overwritten with garbage
    (state_dir / checkpoint_name(3)).unlink()
    for rounds_done in (4, 5):
        (state_dir / checkpoint_name(rounds_done)).write_bytes(b"PK garbage")
    state = states.get("t", 1)
    assert state is not None
    resumed, reason = states.restart_point("t", state, True, state_dir, "a test", kept)
    assert resumed, reason
    assert reason.startswith("resumed after round 4 from its checkpoint (its newer checkpoint "
                             "after round 5 is damaged and was skipped; taken from the copy the "
                             "manager kept"), reason
    assert (state_dir / RESUME_FILE).read_bytes() == good[4]
    assert (kept.path("t", 1) / checkpoint_name(4)).read_bytes() == good[4], \
        "the kept copy was moved, not copied"

    # no whole checkpoint anywhere: round 0, and the stale kept copies go with the state folder
    for path in kept.path("t", 1).iterdir():
        path.write_bytes(b"rotten")
    resumed, reason = states.restart_point("t", state, True, state_dir, "again", kept)
    assert not resumed and reason.startswith("started again from round 0 (its checkpoint after "
                                             "round 5 is damaged"), reason
    assert not list(kept.path("t", 1).iterdir()) and not list(state_dir.iterdir())
