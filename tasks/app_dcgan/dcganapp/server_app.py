"""The ServerApp: FedAvg of both networks over ``min-nodes`` devices for ``num-server-rounds``.

Results go to ``$AGATA_RESULTS_DIR`` (or ``agata-results`` in the current directory when it is
unset, e.g. under ``flwr run``): ``samples/round-<N>.png`` after every round (``round-0.png`` is
the initial generator), a grid of digits generated from the same seeded noise each time, and
``generator.npz``, the final generator's state dict.
"""

import logging
import os
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from matplotlib import image as mpimg

from dcganapp import task

matplotlib.use("Agg")  # files only, never a display

RESULTS_ENV = "AGATA_RESULTS_DIR"
DEFAULT_RESULTS_DIR = "agata-results"
GRID_COLUMNS = 8
GRID_SAMPLES = GRID_COLUMNS * GRID_COLUMNS

logger = logging.getLogger("dcganapp")

app = ServerApp()


def resume_point(context: Context, initial: ArrayRecord) -> tuple[int, ArrayRecord]:
    """The rounds already done and the arrays to start from: AGATA's checkpoint when it started
    this run again after a restart (``[tool.agata] resume = true``), else none and ``initial``."""
    if "agata.resume" not in context.state:
        return 0, initial
    return int(context.state["agata.resume"]["round"]), context.state["agata.checkpoint"]


def results_dir() -> Path:
    """Where this run's results go (created on first use)."""
    folder = Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS_DIR).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def generator_from(arrays: ArrayRecord, latent_dim: int) -> task.Generator:
    """The generator held in a joint ArrayRecord (both networks, prefixed keys)."""
    generator, discriminator = task.build_models(latent_dim)
    task.load_joint_state_dict(arrays.to_torch_state_dict(), generator, discriminator)
    return generator


def save_samples(arrays: ArrayRecord, server_round: int, latent_dim: int, seed: int) -> Path:
    """Save an 8x8 grid of generated digits as ``samples/round-<server_round>.png``."""
    images = task.sample(generator_from(arrays, latent_dim), GRID_SAMPLES, seed)
    path = results_dir() / "samples" / f"round-{server_round}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    mpimg.imsave(path, task.image_grid(images, GRID_COLUMNS), cmap="gray", vmin=0.0, vmax=1.0)
    logger.info("round %d: samples saved to %s", server_round, path)
    return path


def sample_saver(latent_dim: int, seed: int,
                 rounds_before: int = 0) -> Callable[[int, ArrayRecord], MetricRecord | None]:
    """FedAvg's ``evaluate_fn``: save the global generator's samples after each round (numbered
    after the ``rounds_before`` a resumed run had done)."""

    def save(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        save_samples(arrays, server_round + rounds_before, latent_dim, seed)
        return None

    return save


def save_generator(arrays: ArrayRecord) -> Path:
    """Save the generator's part of the joint state as ``generator.npz``."""
    path = results_dir() / "generator.npz"
    np.savez(path, **task.generator_state(arrays.to_torch_state_dict()))
    return path


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Start from the seeded networks, average both each round, save samples and the generator."""
    config = context.run_config
    devices = int(config["min-nodes"])
    latent_dim = int(config["latent-dim"])
    seed = int(config["seed"])
    generator, discriminator = task.build_models(latent_dim, seed)
    done, arrays = resume_point(context,
                                ArrayRecord(task.joint_state_dict(generator, discriminator)))
    strategy = FedAvg(fraction_evaluate=0.0, min_available_nodes=devices,
                      min_train_nodes=devices)
    rounds = int(config["num-server-rounds"])
    if done < rounds:  # a checkpoint taken after the last round leaves nothing to train
        result = strategy.start(
            grid=grid,
            initial_arrays=arrays,
            num_rounds=rounds - done,
            train_config=ConfigRecord({"lr": float(config["learning-rate"])}),
            evaluate_fn=sample_saver(latent_dim, seed, done),
        )
        for server_round, metrics in sorted(result.train_metrics_clientapp.items()):
            logger.warning("round %d: d_loss %.4f g_loss %.4f", server_round + done,
                           float(metrics["d_loss"]), float(metrics["g_loss"]))
        arrays = result.arrays
    logger.warning("final generator saved to %s", save_generator(arrays))
