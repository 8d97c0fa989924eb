"""A task process's output log file: capped, saying where it was cut."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from task_daemon_lib.lines import OutputLog

pytestmark = pytest.mark.unit


def test_the_output_log_stops_at_its_limit_and_says_so(tmp_path: Path) -> None:
    log = OutputLog(tmp_path / "output-x.txt", limit=20)
    log("stdout", "0123456789")
    log("stderr", "abcdefghij")
    log("stdout", "never")
    log.close()
    log("stdout", "after close")
    text = (tmp_path / "output-x.txt").read_text()
    assert text.startswith("0123456789\n")
    assert "truncated" in text and "abcdefghij" not in text and "never" not in text


def test_a_resumed_run_appends_to_its_log_within_the_same_limit(tmp_path: Path) -> None:
    path = tmp_path / "output-server.txt"
    first = OutputLog(path, limit=25)
    first("stdout", "before the restart")
    first.close()
    again = OutputLog(path, limit=25, append=True)
    again("stdout", "after")
    again("stdout", "too much for the limit")
    again.close()
    text = path.read_text()
    assert text.startswith("before the restart\nafter\n") and "truncated" in text


def test_the_log_is_never_written_through_a_link(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("key")
    (tmp_path / "linked.txt").symlink_to(secret)
    os.link(secret, tmp_path / "hard.txt")
    for name in ("linked.txt", "hard.txt"):
        with pytest.raises(OSError):
            OutputLog(tmp_path / name, limit=100, append=True)
    assert secret.read_text() == "key"


def test_a_fifo_in_place_of_the_log_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "output-server.txt"
    os.mkfifo(fifo)
    for append in (True, False):
        with pytest.raises(OSError):
            OutputLog(fifo, limit=100, append=append)
