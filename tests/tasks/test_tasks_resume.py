"""The shipped apps' side of resuming: a checkpoint taken after the last round leaves nothing to
train, and the app ends with that model instead of failing."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

from agata_contracts.checkpoints import CHECKPOINT_KEY, RESUME_KEY, ROUND_KEY
from flower_runtime.grid import RunGrid
from flower_runtime.manifest import read_manifest

TASKS = Path(__file__).resolve().parents[2] / "tasks"


def resumed_after_the_last_round(app: Path, arrays: ArrayRecord) -> Context:
    config = dict(read_manifest((app / "pyproject.toml").read_bytes()).run_config)
    state = RecordDict({RESUME_KEY: ConfigRecord({ROUND_KEY: int(config["num-server-rounds"])}),
                        CHECKPOINT_KEY: arrays})
    return Context(run_id=1, node_id=SUPERLINK_NODE_ID, node_config={}, state=state,
                   run_config=config)


def server_app(app: Path, package: str, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(app))
    for name in [n for n in sys.modules if n == package or n.startswith(f"{package}.")]:
        del sys.modules[name]
    return importlib.import_module(f"{package}.server_app").app


def no_devices() -> RunGrid:
    """A grid no device joins: any round the app tried would fail at once."""
    return RunGrid(expected_nodes=1, join_timeout_s=0.01)


def test_the_numpy_app_ends_with_the_checkpoint(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    app = TASKS / "app_numpy"
    monkeypatch.setenv("AGATA_RESULTS_DIR", str(tmp_path))
    vector = np.full(8, 1.5)
    server_app(app, "numpyapp", monkeypatch)(  # type: ignore[operator]
        no_devices(), resumed_after_the_last_round(app, ArrayRecord([vector])))
    np.testing.assert_array_equal(np.load(tmp_path / "final.npy"), vector)


def test_the_digits_app_ends_with_the_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    app = TASKS / "app_digits"
    monkeypatch.syspath_prepend(str(app))
    task = importlib.import_module("digitsapp.task")
    model = task.build_model()
    server_app(app, "digitsapp", monkeypatch)(  # type: ignore[operator]
        no_devices(), resumed_after_the_last_round(app, ArrayRecord(model.state_dict())))
