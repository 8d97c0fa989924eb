"""The DCGAN Flower App: its networks and local training, the server's sample grids, and the
joint state both networks travel in."""

from __future__ import annotations

import importlib
import io
import math
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from agata_cli.app_archive import zip_folder

TASKS = Path(__file__).resolve().parents[2] / "tasks"
DCGAN = TASKS / "app_dcgan"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_app_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import ``dcganapp.<name>`` from the app folder, without writing bytecode into tasks/."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(DCGAN))
    return importlib.import_module(f"dcganapp.{name}")


@pytest.fixture(autouse=True)
def forget_app_package():
    """Every test imports the app afresh (and leaves no ``dcganapp`` behind)."""
    yield
    for name in [n for n in sys.modules if n == "dcganapp" or n.startswith("dcganapp.")]:
        del sys.modules[name]


@pytest.fixture
def dcgan_task(monkeypatch):
    return load_app_module("task", monkeypatch)


@pytest.fixture
def dcgan_server(monkeypatch):
    return load_app_module("server_app", monkeypatch)


def test_shipped_data_is_a_copy_of_the_digits_apps_file(dcgan_task):
    data = DCGAN / "dcganapp" / "digits.json"
    # a real file: uploads (ours and Flower's FAB builder) leave links out
    assert not data.is_symlink()
    assert data.read_bytes() == (TASKS / "app_digits" / "digitsapp" / "digits.json").read_bytes()
    images = dcgan_task.load_images()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert images.min() == -1.0 and images.max() == 1.0


def test_the_app_uploaded_as_a_folder_carries_its_data():
    names = zipfile.ZipFile(io.BytesIO(zip_folder(DCGAN))).namelist()
    assert "dcganapp/digits.json" in names


def test_partitions_are_disjoint_and_cover_the_data(dcgan_task):
    shards = [dcgan_task.partition_indices(1797, i, 3) for i in range(3)]
    joined = np.concatenate(shards)
    assert sorted(joined.tolist()) == list(range(1797))
    assert {len(s) for s in shards} == {599}
    with pytest.raises(ValueError, match="partition_id"):
        dcgan_task.partition_indices(1797, 3, 3)


def test_models_have_the_right_shapes_and_a_training_step_changes_them(dcgan_task):
    generator, discriminator = dcgan_task.build_models(latent_dim=16)
    with torch.no_grad():
        fake = generator(torch.randn(5, 16))
        assert fake.shape == (5, 1, 8, 8)
        assert float(fake.min()) >= -1.0 and float(fake.max()) <= 1.0
        assert discriminator(fake).shape == (5,)

    before = dcgan_task.joint_state_dict(generator, discriminator)
    before = {key: value.clone() for key, value in before.items()}
    images = dcgan_task.load_partition(0, 20)[:64]
    epochs: list[tuple[int, float, float]] = []
    losses = dcgan_task.train(generator, discriminator, images, epochs=2, lr=0.0002,
                              batch_size=32, seed=1,
                              on_epoch=lambda *args: epochs.append(args))
    assert [epoch for epoch, _, _ in epochs] == [1, 2]
    assert math.isfinite(losses.d_loss) and math.isfinite(losses.g_loss)
    assert (losses.d_loss, losses.g_loss) == epochs[-1][1:]
    after = dcgan_task.joint_state_dict(generator, discriminator)
    for prefix in ("generator.", "discriminator."):
        changed = [key for key in after if key.startswith(prefix)
                   and not torch.equal(after[key], before[key])]
        assert changed, f"no {prefix} weights changed"


def test_training_is_deterministic_for_a_seed(dcgan_task):
    images = dcgan_task.load_partition(1, 20)[:40]
    runs = []
    for _ in range(2):
        generator, discriminator = dcgan_task.build_models()
        losses = dcgan_task.train(generator, discriminator, images, batch_size=16, seed=7)
        runs.append((losses, dcgan_task.joint_state_dict(generator, discriminator)))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][key], runs[1][1][key]) for key in runs[0][1])
    assert dcgan_task.run_seed(0, 1, 0) != dcgan_task.run_seed(0, 2, 0)
    assert dcgan_task.run_seed(0, 1, 0) != dcgan_task.run_seed(0, 1, 1)


def test_the_server_saves_each_rounds_samples_as_png(dcgan_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AGATA_RESULTS_DIR", str(tmp_path / "results"))
    task = dcgan_server.task
    arrays = ArrayRecord(task.joint_state_dict(*task.build_models(16)))
    save = dcgan_server.sample_saver(latent_dim=16, seed=0)
    for server_round in (0, 1):
        assert save(server_round, arrays) is None
    for server_round in (0, 1):
        png = tmp_path / "results" / "samples" / f"round-{server_round}.png"
        data = png.read_bytes()
        assert len(data) > 0 and data.startswith(PNG_SIGNATURE)
    saved = dcgan_server.save_generator(arrays)
    assert saved == tmp_path / "results" / "generator.npz"
    with np.load(saved) as weights:
        assert set(weights.files) == set(task.build_models(16)[0].state_dict())


def test_results_go_to_agata_results_in_the_working_directory_without_the_variable(
        dcgan_server, tmp_path, monkeypatch):
    monkeypatch.delenv("AGATA_RESULTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert dcgan_server.results_dir() == tmp_path / "agata-results"


def test_the_sample_grid_tiles_eight_by_eight_digits(dcgan_task):
    images = np.full((64, 1, 8, 8), 1.0, dtype=np.float32)
    grid = dcgan_task.image_grid(images, 8, padding=1, scale=2)
    assert grid.shape == (2 * 73, 2 * 73)
    assert grid.min() == 0.0 and grid.max() == 1.0


def test_the_joint_state_round_trips_through_an_array_record(dcgan_task):
    generator, discriminator = dcgan_task.build_models(16, seed=3)
    record = ArrayRecord(dcgan_task.joint_state_dict(generator, discriminator))
    assert {key.split(".", 1)[0] for key in record} == {"generator", "discriminator"}

    other_generator, other_discriminator = dcgan_task.build_models(16, seed=4)
    dcgan_task.load_joint_state_dict(record.to_torch_state_dict(),
                                     other_generator, other_discriminator)
    for ours, theirs in ((generator, other_generator), (discriminator, other_discriminator)):
        for key, value in ours.state_dict().items():
            assert torch.equal(value, theirs.state_dict()[key]), key
    with pytest.raises(KeyError, match="neither prefix"):
        dcgan_task.load_joint_state_dict({"critic.w": torch.zeros(1)},
                                         other_generator, other_discriminator)


def test_fedavg_of_two_devices_joint_states_loads_into_both_networks(dcgan_task):
    replies = []
    for seed, examples in ((1, 100), (2, 300)):
        networks = dcgan_task.build_models(16, seed=seed)
        replies.append((networks, RecordDict({
            "arrays": ArrayRecord(dcgan_task.joint_state_dict(*networks)),
            "metrics": MetricRecord({"d_loss": 1.0, "g_loss": 1.0, "num-examples": examples}),
        })))
    averaged = aggregate_arrayrecords([reply for _, reply in replies], "num-examples")
    generator, discriminator = dcgan_task.build_models(16, seed=5)
    dcgan_task.load_joint_state_dict(averaged.to_torch_state_dict(), generator, discriminator)
    (first_g, first_d), (second_g, second_d) = (networks for networks, _ in replies)
    for merged, first, second in ((generator, first_g, second_g),
                                  (discriminator, first_d, second_d)):
        for key, value in merged.state_dict().items():
            expected = 0.25 * first.state_dict()[key] + 0.75 * second.state_dict()[key]
            assert torch.allclose(value, expected, atol=1e-6), key
