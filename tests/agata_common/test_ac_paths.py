"""Folders and files the services write where task code could have left links."""

from __future__ import annotations

from pathlib import Path

import pytest

from agata_common.paths import own_folder, write_new_file

pytestmark = pytest.mark.unit


def test_a_folder_replaced_by_a_link_is_made_again_without_following_it(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    state = tmp_path / "results" / ".agata"
    state.parent.mkdir()
    state.symlink_to(elsewhere)
    assert own_folder(state, empty=True) == state
    assert state.is_dir() and not state.is_symlink()
    assert (elsewhere / "keep.txt").read_text() == "keep", "the link's target was emptied"
    write_new_file(state / "resume.npz", b"model")
    assert not (elsewhere / "resume.npz").exists()


def test_a_file_is_written_new_never_through_a_link(tmp_path: Path) -> None:
    secret = tmp_path / "authorized_keys"
    secret.write_text("key")
    folder = own_folder(tmp_path / "state")
    (folder / "resume.npz").symlink_to(secret)
    write_new_file(folder / "resume.npz", b"model")
    assert secret.read_text() == "key"
    assert (folder / "resume.npz").read_bytes() == b"model"
    assert oct((folder / "resume.npz").stat().st_mode & 0o777) == "0o600"
    (folder / "old.npz").write_bytes(b"old")
    own_folder(folder, empty=True)
    assert list(folder.iterdir()) == []
    blocker = tmp_path / "file-in-the-way"
    blocker.write_text("x")
    assert own_folder(blocker).is_dir()
