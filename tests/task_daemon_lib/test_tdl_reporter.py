"""In-process tests of TaskReporter (the child-process round trips are in test_tdl_runner)."""

import logging
import os
import tempfile

import pytest

from task_daemon_lib.messages import (
    REPORT_FD_ENV,
    STDOUT_PREFIX,
    ErrorMessage,
    InfoMessage,
    PrintMessage,
    StatsMessage,
    TriggerMessage,
    parse_report_line,
)
from task_daemon_lib.task_reporter import TaskReporter

pytestmark = pytest.mark.unit


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def read_messages(fd):
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    assert data.endswith(b"\n")
    return [parse_report_line(line) for line in data.splitlines()]


def test_reporter_api_over_env_fd(pipe, monkeypatch):
    r, w = pipe
    monkeypatch.setenv(REPORT_FD_ENV, str(w))
    rep = TaskReporter()
    assert not rep.uses_stdout
    rep.send_info("hello")
    rep.send_stats(3, 0.91)
    rep.send_stats(4, loss=0.2, accuracy=0.9)
    rep.send_stats(5, 0.5, loss=1)
    rep.send_print("text")
    rep.send_error(ValueError("bad data"))
    rep.send_error("plain")
    rep.trigger("save", "--path x")
    rep.trigger("ping")
    msgs = read_messages(r)
    assert [type(m) for m in msgs] == [
        InfoMessage,
        InfoMessage,
        StatsMessage,
        StatsMessage,
        StatsMessage,
        PrintMessage,
        ErrorMessage,
        ErrorMessage,
        TriggerMessage,
        TriggerMessage,
    ]
    assert msgs[0].info == "Started"
    assert msgs[1].info == "hello"
    assert (msgs[2].round, msgs[2].metrics) == (3, {"accuracy": 0.91})
    assert (msgs[3].round, msgs[3].metrics) == (4, {"loss": 0.2, "accuracy": 0.9})
    assert msgs[4].metrics == {"loss": 1.0, "accuracy": 0.5}
    assert msgs[5].message == "text"
    assert msgs[6].exception == "ValueError: bad data"
    assert msgs[7].exception == "plain"
    assert (msgs[8].trigger_name, msgs[8].trigger_arguments) == ("save", "--path x")
    assert (msgs[9].trigger_name, msgs[9].trigger_arguments) == ("ping", "")


def test_send_stats_accepts_numpy_scalars(pipe):
    np = pytest.importorskip("numpy")
    r, w = pipe
    rep = TaskReporter(fd=w)
    rep.send_stats(np.int64(2), np.float32(0.5), loss=np.float64(0.25))
    msgs = read_messages(r)
    assert msgs[-1].round == 2 and msgs[-1].metrics == {"accuracy": 0.5, "loss": 0.25}


def test_send_stats_rejects_bad_input(pipe):
    _, w = pipe
    rep = TaskReporter(fd=w)
    with pytest.raises(TypeError):
        rep.send_stats(1, 0.5, accuracy=0.6)
    with pytest.raises(TypeError):
        rep.send_stats(1.5, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        rep.send_stats(-1, 0.5)


def test_broken_pipe_is_ignored_and_logged_once(pipe, caplog):
    r, w = pipe
    os.close(r)
    with caplog.at_level(logging.WARNING, logger="task_daemon_lib.task_reporter"):
        rep = TaskReporter(fd=w)  # "Started" already hits the broken pipe
        for i in range(5):
            rep.send_info(f"info {i}")
            rep.send_stats(i, 0.1)
    warnings = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(warnings) == 1


def test_stdout_fallback_when_env_unset(monkeypatch, capsys):
    monkeypatch.delenv(REPORT_FD_ENV, raising=False)
    rep = TaskReporter()
    assert rep.uses_stdout
    rep.send_print("héllo ✓ 😀")
    rep.send_stats(1, loss=float("nan"))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(STDOUT_PREFIX) for line in lines)
    assert out.isascii()
    msgs = [parse_report_line(line[len(STDOUT_PREFIX) :]) for line in lines]
    assert msgs[0].info == "Started"
    assert msgs[1].message == "héllo ✓ 😀"
    assert msgs[2].metrics["loss"] != msgs[2].metrics["loss"]  # NaN


@pytest.mark.parametrize("value", ["", "abc", "-3", "99999"])
def test_stdout_fallback_when_env_invalid(monkeypatch, capsys, value):
    monkeypatch.setenv(REPORT_FD_ENV, value)
    assert TaskReporter().uses_stdout
    assert capsys.readouterr().out.startswith(STDOUT_PREFIX)


def test_stdout_fallback_when_env_fd_is_not_a_pipe(monkeypatch, capsys):
    with tempfile.TemporaryFile() as f:
        monkeypatch.setenv(REPORT_FD_ENV, str(f.fileno()))
        assert TaskReporter().uses_stdout
        f.seek(0)
        assert f.read() == b""


def test_a_spool_keeps_every_message_before_it_is_sent(pipe, tmp_path):
    r, w = pipe
    rep = TaskReporter(fd=w)
    spool = tmp_path / "reports.jsonl"
    rep.spool_to(spool)
    rep.send_stats(1, loss=0.5)
    rep.send_print("hello")
    rep.send_checkpoint(1)
    sent = read_messages(r)
    kept = [parse_report_line(line) for line in spool.read_bytes().splitlines()]
    assert kept == sent[1:]  # all but "Started", sent before the spool was set
    assert [type(m).__name__ for m in kept] == ["StatsMessage", "PrintMessage",
                                                "CheckpointMessage"]
    assert oct(spool.stat().st_mode & 0o777) == "0o600"


def test_the_spool_outlives_a_gone_manager_and_refuses_links(pipe, tmp_path):
    r, w = pipe
    rep = TaskReporter(fd=w)
    spool = tmp_path / "reports.jsonl"
    rep.spool_to(spool)
    os.close(r)
    rep.send_stats(2, loss=0.25)  # the pipe is broken: the spool still has it
    assert [m.round for m in map(parse_report_line, spool.read_bytes().splitlines())] == [2]
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        rep.spool_to(tmp_path / "link")
    assert not (tmp_path / "elsewhere").exists()
