"""run_task: a task script's outcome turned into reports and an exit status."""

import os

import pytest

from task_daemon_lib.messages import ErrorMessage, InfoMessage, parse_report_line
from task_daemon_lib.task_main import run_task
from task_daemon_lib.task_reporter import TaskReporter

pytestmark = pytest.mark.unit


@pytest.fixture
def reporter_and_reader():
    read_fd, write_fd = os.pipe()
    reporter = TaskReporter(fd=write_fd)

    def messages():
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as stream:
            return [parse_report_line(line) for line in stream.read().splitlines()]

    return reporter, messages


def test_a_body_that_returns_finishes(reporter_and_reader):
    reporter, messages = reporter_and_reader
    assert run_task(lambda r: r.send_print("working"), reporter) == 0
    sent = messages()
    assert isinstance(sent[-1], InfoMessage) and sent[-1].info == "Finished"


def test_a_body_that_raises_reports_the_error_and_fails(reporter_and_reader):
    reporter, messages = reporter_and_reader

    def body(_reporter: TaskReporter) -> None:
        raise ValueError("bad shard")

    assert run_task(body, reporter) == 1
    sent = messages()
    errors = [m for m in sent if isinstance(m, ErrorMessage)]
    assert len(errors) == 1 and "bad shard" in errors[0].exception
    assert not any(isinstance(m, InfoMessage) and m.info == "Finished" for m in sent)


def test_exit_zero_passes_without_a_report_and_other_exits_are_errors(reporter_and_reader):
    reporter, messages = reporter_and_reader

    def quiet(_reporter: TaskReporter) -> None:
        raise SystemExit(0)

    def loud(_reporter: TaskReporter) -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        run_task(quiet, reporter)
    with pytest.raises(SystemExit):
        run_task(loud, reporter)
    errors = [m for m in messages() if isinstance(m, ErrorMessage)]
    assert [e.exception for e in errors] == ["SystemExit: 3"]
