"""The manager's own verified copies of a run's checkpoints: copied whole or not at all, the
newest two kept, in folders of mode 0700 that no link leads out of."""

from __future__ import annotations

import io
import os
import stat
import threading
import zipfile
from pathlib import Path

import pytest

from agata_contracts.checkpoints import checkpoint_name
from cloud_task_manager.kept_checkpoints import KeptCheckpoints, copy_verified, is_whole_file
from cloud_task_manager.run_states import COPIER_NICENESS, CheckpointCopier, PendingCheckpoint

pytestmark = pytest.mark.unit


def npz(rounds_done: int, size: int = 4096) -> bytes:
    """A small whole ``.npz``-shaped zip whose content depends on ``rounds_done``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a0.npy", bytes([rounds_done % 256]) * size)
    return buffer.getvalue()


def kept_rounds(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_each_copy_is_verified_and_the_newest_two_are_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    kept = KeptCheckpoints(tmp_path / "data" / "run-checkpoints")
    folder = kept.folder("t", 1)
    for level in (kept.root, folder.parent, folder):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700, level
    for rounds_done in (1, 2, 3):
        (state / checkpoint_name(rounds_done)).write_bytes(npz(rounds_done))
        assert kept.keep(state / checkpoint_name(rounds_done), "t", 1, rounds_done) == \
            folder / checkpoint_name(rounds_done)
    assert kept_rounds(folder) == [checkpoint_name(2), checkpoint_name(3)]
    assert (folder / checkpoint_name(3)).read_bytes() == npz(3)
    assert stat.S_IMODE((folder / checkpoint_name(3)).stat().st_mode) == 0o600

    torn = npz(4)
    (state / checkpoint_name(4)).write_bytes(torn[: len(torn) // 2])
    why = kept.keep(state / checkpoint_name(4), "t", 1, 4)
    assert isinstance(why, str) and "damaged" in why
    flipped = bytearray(npz(5))
    flipped[100] ^= 0xFF
    (state / checkpoint_name(5)).write_bytes(bytes(flipped))
    assert "damaged" in str(kept.keep(state / checkpoint_name(5), "t", 1, 5))
    assert kept_rounds(folder) == [checkpoint_name(2), checkpoint_name(3)], \
        "a damaged copy replaced a good one, or its temporary file was left"

    secret = tmp_path / "secret.npz"
    secret.write_bytes(npz(9))
    (state / checkpoint_name(6)).symlink_to(secret)
    assert "cannot be read" in str(kept.keep(state / checkpoint_name(6), "t", 1, 6))
    assert "cannot be read" in str(kept.keep(state / checkpoint_name(7), "t", 1, 7))
    assert kept_rounds(folder) == [checkpoint_name(2), checkpoint_name(3)]

    kept.prune("t", 1, newer_than=2)
    assert kept_rounds(folder) == [checkpoint_name(2)]
    kept.drop("t", 1)
    assert not folder.exists()
    assert kept.keep(state / checkpoint_name(3), "t", 1, 3) == "the run's state was dropped"
    assert not folder.exists(), "a copy made the folder of a dropped run again"


def test_links_in_the_kept_folders_are_replaced_never_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep-me").write_text("x")
    kept = KeptCheckpoints(tmp_path / "run-checkpoints")
    (kept.root / "task_t").symlink_to(elsewhere, target_is_directory=True)
    folder = kept.folder("t", 1, empty=True)
    assert not folder.parent.is_symlink() and folder.is_dir()
    assert (elsewhere / "keep-me").exists() and not (elsewhere / "run_1").exists()

    target = folder / checkpoint_name(1)
    outside = tmp_path / "outside.npz"
    outside.write_bytes(b"not touched")
    target.symlink_to(outside)
    source = tmp_path / "source.npz"
    source.write_bytes(npz(1))
    assert copy_verified(source, target) is None
    assert not target.is_symlink() and target.read_bytes() == npz(1)
    assert outside.read_bytes() == b"not touched"
    assert is_whole_file(target) and not is_whole_file(outside)


def test_a_runs_end_waits_for_its_copy_under_way(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[int] = []

    def keep(checkpoint: PendingCheckpoint) -> str | None:
        started.set()
        release.wait(10)
        finished.append(checkpoint.rounds_done)
        return None

    copier = CheckpointCopier(keep, duty=1.0)
    copier.submit(PendingCheckpoint(tmp_path / "c.npz", "t", 1, 3, "r"))
    assert started.wait(10)
    threading.Timer(0.2, release.set).start()
    copier.forget("t", 1, timeout_s=10)
    assert finished == [3], "forget returned while the run's copy was still under way"
    copier.close()


def test_the_copier_thread_steps_back_for_the_runs_processes() -> None:
    seen: list[int] = []

    def keep(_: PendingCheckpoint) -> None:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    copier = CheckpointCopier(keep, duty=1.0)
    try:
        copier.submit(PendingCheckpoint(Path("x"), "t", 1, 1, "me"))
        assert copier.flush(10)
    finally:
        copier.close()
    assert seen == [min(os.getpriority(os.PRIO_PROCESS, 0) + COPIER_NICENESS, 19)]
