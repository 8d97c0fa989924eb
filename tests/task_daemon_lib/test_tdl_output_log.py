"""A task process's output log file: capped, saying where it was cut."""

from __future__ import annotations

from pathlib import Path

from task_daemon_lib.lines import OutputLog


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
