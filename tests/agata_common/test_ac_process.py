"""A service missing a package of an extra it needs says which extra to install and exits 2,
without a traceback; any other failure to start is still logged with its traceback."""

from __future__ import annotations

import logging

import pytest

from agata_common.process import run_service

pytestmark = pytest.mark.unit


def fail_with(error: Exception) -> None:
    raise error


def test_a_missing_extra_is_named_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    missing = ModuleNotFoundError("No module named 'docker'", name="docker.errors")
    assert run_service("client_task_manager", lambda: fail_with(missing)) == 2
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "pip install 'agata-flmngr[docker]'" in record.getMessage()
    assert record.exc_info is None


def test_another_missing_module_is_a_failure_with_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    missing = ModuleNotFoundError("No module named 'nowhere'", name="nowhere")
    assert run_service("client_task_manager", lambda: fail_with(missing)) == 1
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None
