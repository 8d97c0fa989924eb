"""Waiting for warm spares: a stack without any is refused at once, and a spare that never gets
warm is reported with the last lines of the log that should have said so."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.flower_app import WARM, wait_warm
from experiments.stack import FLOWER_WORKERS, WARM_HOSTS, Stack

pytestmark = pytest.mark.unit


def stack_with_logs(tmp_path: Path, cloud: str, device: str) -> Stack:
    stack = Stack(tmp_path, client_count=1)
    stack.cloud_env = {WARM_HOSTS: "1"}
    stack.client_envs = [{FLOWER_WORKERS: "1"}]
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "cloud_task_manager.log").write_text(cloud)
    (logs / "client0_task_manager.log").write_text(device)
    return stack


def test_warm_spares_are_counted_from_the_logs(tmp_path: Path) -> None:
    stack = stack_with_logs(tmp_path, f"host {WARM}\n", f"worker {WARM}\nworker {WARM}\n")
    assert wait_warm(stack, 1, timeout=1) == [2, 1]


def test_a_spare_that_never_gets_warm_is_reported_with_its_log(tmp_path: Path) -> None:
    stack = stack_with_logs(tmp_path, f"host {WARM}\n",
                            "ModuleNotFoundError: No module named 'flower_runtime'\n")
    with pytest.raises(TimeoutError) as waited:
        wait_warm(stack, 1, timeout=0.3)
    said = str(waited.value)
    assert "client0_task_manager.log" in said and "No module named 'flower_runtime'" in said
    assert "cloud_task_manager.log" not in said


def test_a_stack_without_spares_is_refused_at_once(tmp_path: Path) -> None:
    stack = stack_with_logs(tmp_path, "", "")
    stack.cloud_env = {WARM_HOSTS: "0"}
    with pytest.raises(ValueError, match="keeps no warm spares"):
        wait_warm(stack, 1, timeout=60)
