"""The digits task: data, partitioning, and a real federation of three processes."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from task_daemon_lib.messages import PrintMessage, StatsMessage

TASKS = Path(__file__).resolve().parents[2] / "tasks"
DIGITS = TASKS / "task_digits"


def load_module(name: str, path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import a task file under a unique name, without writing bytecode into tasks/."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def digits_task(monkeypatch):
    return load_module("digits_task_under_test", DIGITS / "task.py", monkeypatch)


@pytest.fixture
def digits_client(monkeypatch):
    module = load_module("digits_client_under_test", DIGITS / "client.py", monkeypatch)
    yield module
    sys.modules.pop("runtime", None)


def test_shipped_data_is_the_exported_digits(digits_task):
    for path in (TASKS / "data" / "digits.json", DIGITS / "digits.json"):
        x, y = digits_task.load_arrays(path)
        assert x.shape == (1797, 64) and x.dtype == np.float32
        assert y.shape == (1797,) and y.dtype == np.int64
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert set(np.unique(y)) == set(range(10))
    assert (DIGITS / "digits.json").read_bytes() == (TASKS / "data" / "digits.json").read_bytes()


def test_bad_data_files_say_what_is_wrong(digits_task, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"pixels": [[1, 2]], "labels": [0]}')
    with pytest.raises(ValueError, match="unexpected shapes"):
        digits_task.load_arrays(bad)
    bad.write_text(json.dumps({"pixels": [[99] * 64], "labels": [0]}))
    with pytest.raises(ValueError, match="out of range"):
        digits_task.load_arrays(bad)


def test_task_folders_are_flat():
    for name in ("task_digits", "task_error"):
        folder = TASKS / name
        assert {"server.py", "client.py"} <= {p.name for p in folder.iterdir()}
        assert not [p for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"]


def test_split_is_deterministic_and_disjoint(digits_task):
    train, test = digits_task.split_indices(1797)
    train2, test2 = digits_task.split_indices(1797)
    assert np.array_equal(train, train2) and np.array_equal(test, test2)
    assert len(test) == round(1797 * 0.2)
    assert not set(train) & set(test)
    assert sorted(np.concatenate([train, test])) == list(range(1797))


@pytest.mark.parametrize("num_partitions", [1, 2, 3, 7])
def test_partitions_are_disjoint_covering_and_deterministic(digits_task, num_partitions):
    train, _ = digits_task.split_indices(1797)
    parts = [digits_task.partition_indices(train, i, num_partitions) for i in range(num_partitions)]
    again = [digits_task.partition_indices(train, i, num_partitions) for i in range(num_partitions)]
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    merged = np.concatenate(parts)
    assert len(merged) == len(set(merged.tolist())) == len(train)  # disjoint
    assert set(merged.tolist()) == set(train.tolist())  # covering
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    # Loaded shards match the indices and never touch the test split.
    x, y = digits_task.load_arrays()
    _, test = digits_task.split_indices(len(y))
    shard = digits_task.load_partition(num_partitions - 1, num_partitions)
    assert np.array_equal(shard.y, y[parts[-1]])
    assert not set(parts[-1].tolist()) & set(test.tolist())


def test_partition_arguments_are_checked(digits_task):
    train, _ = digits_task.split_indices(1797)
    for partition_id, num_partitions in [(2, 2), (-1, 2), (0, 0), (0, len(train) + 1)]:
        with pytest.raises(ValueError):
            digits_task.partition_indices(train, partition_id, num_partitions)


def test_weights_round_trip(digits_task):
    model = digits_task.build_model(seed=1)
    weights = digits_task.get_weights(model)
    assert [w.shape for w in weights] == [(64, 64), (64,), (10, 64), (10,)]
    other = digits_task.build_model(seed=2)
    digits_task.set_weights(other, weights)
    assert all(np.array_equal(a, b) for a, b in zip(weights, digits_task.get_weights(other)))


def test_default_partition_follows_client_id(digits_client):
    default = digits_client.default_partition
    assert default(None, 2) == 0
    assert default("client-1", 2) == 1 and default("client-2", 2) == 0
    assert default("client-7", 3) == 1
    assert default("device-abc", 4) == default("device-abc", 4)
    assert 0 <= default("device-abc", 4) < 4
    args = digits_client.parse_args(["--client-id", "c3", "--num-partitions", "2", "--x", "y"])
    assert args.partition_id == 1
    args = digits_client.parse_args(["--client-id", "c3", "--partition-id", "0"])
    assert args.partition_id == 0
    with pytest.raises(ValueError, match="partition-id"):
        digits_client.parse_args(["--partition-id", "2", "--num-partitions", "2"])


def test_federation_of_two_clients(task_folder, start_run, free_port):
    """Clients started first wait for the server; 5 rounds reach > 0.8 test accuracy."""
    folder = task_folder("task_digits")
    port = free_port()
    common = ["--host", "127.0.0.1", "--port", str(port)]
    clients = [
        start_run(
            folder,
            "client.py",
            [*common, "--client-id", f"client-{i}", "--extra", "x"],
            f"client-{i}",
        )
        for i in (1, 2)
    ]
    for client in clients:
        assert client.wait_for(
            lambda m: isinstance(m, PrintMessage) and "waiting for the server" in m.message, 60
        ), client.dump()

    started = time.monotonic()
    server = start_run(
        folder, "server.py", [*common, "--num-rounds", "5", "--verbose", "true"], "server"
    )
    outcome = server.wait(90)
    elapsed = time.monotonic() - started
    assert outcome.status == "finished", server.dump()
    assert outcome.returncode == 0
    assert server.infos == ["Started", "Finished"]
    assert server.errors == []

    rounds = {m.round: m.metrics for m in server.stats}
    assert sorted(rounds) == [0, 1, 2, 3, 4, 5]
    for metrics in rounds.values():
        assert set(metrics) == {"loss", "accuracy"}
        assert math.isfinite(metrics["loss"]) and 0.0 <= metrics["accuracy"] <= 1.0
    assert rounds[5]["accuracy"] > 0.8, rounds
    assert rounds[5]["loss"] < rounds[0]["loss"]

    for client, partition in zip(clients, (1, 0)):
        client_outcome = client.wait(30)
        assert client_outcome.status == "finished", client.dump()
        assert client_outcome.returncode == 0
        assert client.infos == ["Started", "Finished"]
        assert client.errors == []
        assert any(f"partition {partition} of 2" in p for p in client.prints)
        assert [p.split(":")[0] for p in client.prints if p.startswith("round ")] == [
            f"round {r}" for r in range(1, 6)
        ]
    print(f"server start to finish: {elapsed:.2f} s; final accuracy {rounds[5]['accuracy']:.3f}")


def test_server_reports_invalid_arguments(task_folder, start_run):
    folder = task_folder("task_digits")
    server = start_run(folder, "server.py", ["--port", "1", "--num-rounds", "0"], "server")
    outcome = server.wait(30)
    assert outcome.status == "failed" and outcome.returncode == 1
    assert server.infos == ["Started"]
    assert len(server.errors) == 1 and "--num-rounds must be >= 1" in server.errors[0]


def test_client_gives_up_when_no_server_answers(task_folder, start_run, free_port):
    folder = task_folder("task_digits")
    args = ["--host", "127.0.0.1", "--port", str(free_port()), "--connect-timeout", "0.3"]
    client = start_run(folder, "client.py", args, "client")
    outcome = client.wait(60)
    assert outcome.status == "failed" and outcome.returncode == 1
    assert len(client.errors) == 1 and "did not accept connections" in client.errors[0]
    assert "Finished" not in client.infos


def test_clients_fail_when_the_server_is_lost(task_folder, start_run, free_port):
    folder = task_folder("task_digits")
    common = ["--host", "127.0.0.1", "--port", str(free_port())]
    server = start_run(folder, "server.py", [*common, "--num-rounds", "100000"], "server")
    clients = [
        start_run(folder, "client.py", [*common, "--client-id", f"client-{i}"], f"client-{i}")
        for i in (1, 2)
    ]
    assert server.wait_for(lambda m: isinstance(m, StatsMessage) and m.round >= 3, 90), (
        server.dump()
    )
    os.kill(server.child.pid, signal.SIGKILL)
    lost = time.monotonic()
    for client in clients:
        outcome = client.wait(30)
        assert outcome.status == "failed" and outcome.returncode == 1, client.dump()
        assert len(client.errors) == 1
        assert client.errors[0].startswith("ConnectionError: lost the server at 127.0.0.1:")
        assert "Finished" not in client.infos
    assert time.monotonic() - lost < 10
