"""Gathering a run's results folder: declared files only, regular files only, within limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agata_common import run_results
from agata_common.run_results import gather_results
from agata_contracts.lifecycle import NO_LIFECYCLE, read_lifecycle

pytestmark = pytest.mark.unit


def test_declared_files_are_gathered_in_path_order(tmp_path: Path) -> None:
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "round-2.png").write_bytes(b"2")
    (tmp_path / "samples" / "round-1.png").write_bytes(b"1")
    (tmp_path / "scratch.tmp").write_bytes(b"x")
    (tmp_path / "output-dev.txt").write_text("log\n")
    lifecycle = read_lifecycle(b'[tool.agata]\nresults = ["samples/*.png"]\n')
    gathered = gather_results(tmp_path, lifecycle)
    assert [item.path for item in gathered.files] == [
        "output-dev.txt", "samples/round-1.png", "samples/round-2.png"]
    assert gathered.size == len("log\n") + 2
    assert gathered.skipped == []


def test_links_and_bad_names_are_left_out_and_said(tmp_path: Path) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret"
    secret.write_text("token")
    results = tmp_path / "results"
    results.mkdir()
    (results / "leak.txt").symlink_to(secret)
    (results / "linked").symlink_to(tmp_path.parent, target_is_directory=True)
    (results / ".hidden").write_text("h")
    os.mkfifo(results / "pipe")
    gathered = gather_results(results, NO_LIFECYCLE)
    assert gathered.files == []
    said = "\n".join(gathered.skipped)
    assert "leak.txt: a link" in said and "linked: a link" in said
    assert ".hidden" in said and "pipe: not a regular file" in said
    assert "token" not in said


def test_limits_count_and_size(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run_results, "MAX_RESULT_FILES", 2)
    monkeypatch.setattr(run_results, "MAX_RESULT_FILE_BYTES", 10)
    monkeypatch.setattr(run_results, "MAX_RESULT_BYTES", 15)
    for name, size in (("a", 8), ("b", 11), ("c", 8), ("d", 1), ("e", 1)):
        (tmp_path / name).write_bytes(b"x" * size)
    gathered = gather_results(tmp_path, NO_LIFECYCLE)
    assert [item.path for item in gathered.files] == ["a", "d"]
    said = "\n".join(gathered.skipped)
    assert "b: 11 bytes" in said and "c: over 15 bytes" in said and "e: over 2" in said


def test_a_missing_folder_gathers_nothing(tmp_path: Path) -> None:
    assert gather_results(tmp_path / "none", NO_LIFECYCLE).files == []


def test_the_runtime_state_folder_is_never_a_result(tmp_path: Path) -> None:
    (tmp_path / ".agata").mkdir()
    (tmp_path / ".agata" / "reports.jsonl").write_text("{}\n")
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / ".agata").mkdir()
    (tmp_path / "samples" / ".agata" / "x.txt").write_text("x")
    (tmp_path / "model.npz").write_bytes(b"m")
    gathered = gather_results(tmp_path, NO_LIFECYCLE)
    assert [f.path for f in gathered.files] == ["model.npz"]
    # a task's own hidden folder deeper down is still said to be left out
    assert [s.split(":")[0] for s in gathered.skipped] == ["samples/.agata/x.txt"]
