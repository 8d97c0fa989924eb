"""Searching a running stack's folders: what matches, and a folder vanishing meanwhile."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from experiments import live_files
from experiments.live_files import matching

pytestmark = pytest.mark.unit


def test_files_and_folders_match_by_the_end_of_their_path(tmp_path: Path) -> None:
    for name in ("a/run-state/task_x/run_1/reports.jsonl", "b/task_x/run_2/reports.jsonl",
                 "c/task_x/last-run-reports.jsonl", "d/task_y/last-run-reports.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert matching(tmp_path, "run-state/task_x/run_*/reports.jsonl") == [
        tmp_path / "a/run-state/task_x/run_1/reports.jsonl"]
    assert matching(tmp_path, "task_x/last-run-reports.jsonl") == [
        tmp_path / "c/task_x/last-run-reports.jsonl"]
    assert matching(tmp_path, "task_x/*", folders=True) == [
        tmp_path / "a/run-state/task_x/run_1", tmp_path / "b/task_x/run_2"]


def test_a_folder_removed_during_the_search_is_skipped(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "stays" / "x.npz").parent.mkdir(parents=True)
    (tmp_path / "stays" / "x.npz").write_text("")
    (tmp_path / "spare" / "state" / "deep").mkdir(parents=True)
    real_walk = os.walk

    def walk_while_a_spare_ends(root: Path) -> object:
        for step in real_walk(root):
            if step[0] == str(tmp_path / "spare"):
                shutil.rmtree(tmp_path / "spare")  # its stage goes while we look
            yield step

    monkeypatch.setattr(live_files.os, "walk", walk_while_a_spare_ends)
    assert matching(tmp_path, "*.npz") == [tmp_path / "stays" / "x.npz"]
