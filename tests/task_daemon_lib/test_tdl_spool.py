"""Reading a report spool back: its rounds and how it ended, never through a link or a FIFO,
at most its tail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from task_daemon_lib.messages import ErrorMessage, InfoMessage, StatsMessage, encode_report
from task_daemon_lib.spool import read_spool

pytestmark = pytest.mark.unit


def write(path: Path, *messages: object) -> None:
    path.write_bytes(b"".join(encode_report(m) for m in messages))  # type: ignore[arg-type]


def test_rounds_and_the_end_are_read_back(tmp_path: Path) -> None:
    spool = tmp_path / "reports.jsonl"
    write(spool, StatsMessage(round=1, metrics={"loss": 0.5}), InfoMessage(info="Finished"))
    reading = read_spool(spool)
    assert not isinstance(reading, str)
    assert [m.round for m in reading.stats] == [1] and reading.finished and reading.ended
    write(spool, StatsMessage(round=1), ErrorMessage(exception="ValueError: bad"))
    failed = read_spool(spool)
    assert not isinstance(failed, str) and failed.error == "ValueError: bad"
    missing = read_spool(tmp_path / "none.jsonl")
    assert not isinstance(missing, str) and not missing.ended and missing.stats == []


def test_only_the_tail_of_a_long_spool_is_read(tmp_path: Path) -> None:
    spool = tmp_path / "reports.jsonl"
    write(spool, *[StatsMessage(round=n, metrics={"loss": 1.0}) for n in range(1, 2001)],
          InfoMessage(info="Finished"))
    reading = read_spool(spool, limit=4096)
    assert not isinstance(reading, str)
    assert reading.finished, "the end of the run is at the end of the spool"
    assert reading.stats[-1].round == 2000 and len(reading.stats) < 100


def test_links_and_fifos_are_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    write(secret, InfoMessage(info="Finished"))
    (tmp_path / "linked.jsonl").symlink_to(secret)
    assert isinstance(read_spool(tmp_path / "linked.jsonl"), str)
    folder = tmp_path / "state"
    folder.symlink_to(tmp_path)
    assert isinstance(read_spool(folder / "secret"), str)
    os.mkfifo(tmp_path / "fifo.jsonl")
    assert isinstance(read_spool(tmp_path / "fifo.jsonl"), str)
