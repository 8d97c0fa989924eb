"""Digits: data, model and training, shared by the Flower App and the legacy script task.

The data is scikit-learn's 8x8 digits, shipped as ``digits.json`` next to this file (``pixels``:
1797 rows of 64 values 0..16, ``labels``: 0..9; JSON, because a Flower App Bundle carries only
source and text files) and read as ``X`` float32 scaled to 0..1 and ``y`` int64.  A seeded
permutation splits it once into a training part (first 80 %) and a held-out test part (last
20 %, used by the server); the training part is cut into ``num_partitions`` contiguous, equally
sized (IID) shards, one per client.  Everything is deterministic.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

DATA_FILE = "digits.json"
MAX_PIXEL = 16
SPLIT_SEED = 42
"""Seed of the permutation behind the train/test split and the partitions."""
TEST_FRACTION = 0.2
MODEL_SEED = 0
"""Seed of the initial global model."""
NUM_FEATURES = 64
NUM_CLASSES = 10
HIDDEN_UNITS = 64

DEFAULT_LR = 0.1
DEFAULT_BATCH_SIZE = 16
DEFAULT_LOCAL_EPOCHS = 1
MOMENTUM = 0.9


def limit_threads() -> None:
    """Use one CPU thread for torch (tasks share small machines)."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only allowed before any inter-op work started
        pass


limit_threads()


@dataclass(frozen=True)
class Split:
    """Features and labels of one part of the data set."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        """Number of examples."""
        return int(self.y.shape[0])


def data_path() -> Path:
    """Path of the data file shipped in this task's folder."""
    return Path(__file__).resolve().with_name(DATA_FILE)


def load_arrays(path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(X, y)`` from the data file (default: :func:`data_path`)."""
    source = path if path is not None else data_path()
    data = json.loads(source.read_text(encoding="utf-8"))
    pixels = np.asarray(data["pixels"], dtype=np.float32)
    y = np.asarray(data["labels"], dtype=np.int64)
    if pixels.ndim != 2 or pixels.shape[1] != NUM_FEATURES or y.shape != (pixels.shape[0],):
        raise ValueError(f"{source}: unexpected shapes pixels{pixels.shape}, labels{y.shape}")
    if pixels.min() < 0 or pixels.max() > MAX_PIXEL or y.min() < 0 or y.max() >= NUM_CLASSES:
        raise ValueError(f"{source}: pixel or label values out of range")
    return pixels / MAX_PIXEL, y


def split_indices(
    num_examples: int, *, seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(train, test)`` indices: a seeded permutation, test = its last part."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(num_examples)
    num_test = max(1, round(num_examples * test_fraction))
    return order[: num_examples - num_test], order[num_examples - num_test :]


def partition_indices(
    train_indices: np.ndarray, partition_id: int, num_partitions: int
) -> np.ndarray:
    """Indices of one IID shard: contiguous chunk ``partition_id`` of the shuffled train part.

    The shards of ``0 .. num_partitions - 1`` are disjoint, cover the training part and
    differ in size by at most one example.
    """
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    if num_partitions > len(train_indices):
        raise ValueError(
            f"num_partitions ({num_partitions}) exceeds the {len(train_indices)} training examples"
        )
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition_id must be in [0, {num_partitions}), got {partition_id}")
    return np.array_split(train_indices, num_partitions)[partition_id]


def load_test(path: Path | None = None) -> Split:
    """The held-out test split the server evaluates on."""
    x, y = load_arrays(path)
    _, test = split_indices(len(y))
    return Split(x[test], y[test])


def load_partition(partition_id: int, num_partitions: int, path: Path | None = None) -> Split:
    """The training shard of one client."""
    x, y = load_arrays(path)
    train, _ = split_indices(len(y))
    part = partition_indices(train, partition_id, num_partitions)
    return Split(x[part], y[part])


def load_test_share(partition_id: int, num_partitions: int, path: Path | None = None) -> Split:
    """One device's share of the held-out test split (a contiguous chunk, as for training)."""
    x, y = load_arrays(path)
    _, test = split_indices(len(y))
    part = partition_indices(test, partition_id, num_partitions)
    return Split(x[part], y[part])


def build_model(seed: int = MODEL_SEED) -> nn.Module:
    """A small MLP 64 -> 64 -> 10 with seeded initial weights."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return nn.Sequential(
            nn.Linear(NUM_FEATURES, HIDDEN_UNITS),
            nn.ReLU(),
            nn.Linear(HIDDEN_UNITS, NUM_CLASSES),
        )
    finally:
        torch.random.set_rng_state(generator_state)


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's parameters as a list of numpy arrays (state-dict order)."""
    return [tensor.detach().cpu().numpy().copy() for tensor in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    """Load a list of numpy arrays (as from :func:`get_weights`) into the model."""
    keys = list(model.state_dict().keys())
    if len(weights) != len(keys):
        raise ValueError(f"expected {len(keys)} weight arrays, got {len(weights)}")
    state = OrderedDict(
        (key, torch.as_tensor(np.asarray(array, dtype=np.float32)))
        for key, array in zip(keys, weights, strict=True)
    )
    model.load_state_dict(state, strict=True)


def train(
    model: nn.Module,
    data: Split,
    *,
    epochs: int = DEFAULT_LOCAL_EPOCHS,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    momentum: float = MOMENTUM,
    seed: int = 0,
) -> float:
    """Train with SGD + momentum on shuffled mini-batches; return the last epoch's mean loss.

    The update is written out (it equals ``torch.optim.SGD`` without dampening/nesterov)
    because creating any ``torch.optim`` optimizer imports ``torch._dynamo``, which costs
    about 2 s of start-up on a small machine.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError("epochs and batch_size must be >= 1 and lr > 0")
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    params = [p for p in model.parameters() if p.requires_grad]
    velocity = [torch.zeros_like(p) for p in params]
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    epoch_loss = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for start in range(0, len(data), batch_size):
            batch = order[start : start + batch_size]
            for param in params:
                param.grad = None
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            with torch.no_grad():
                for param, buf in zip(params, velocity, strict=True):
                    if param.grad is None:
                        continue
                    buf.mul_(momentum).add_(param.grad)
                    param.add_(buf, alpha=-lr)
            total += float(loss.item()) * len(batch)
        epoch_loss = total / len(data)
    return epoch_loss


def evaluate(model: nn.Module, data: Split) -> tuple[float, float]:
    """Return ``(mean cross-entropy loss, accuracy)`` of the model on ``data``."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x))
        labels = torch.from_numpy(data.y)
        loss = float(nn.functional.cross_entropy(logits, labels).item())
        accuracy = float((logits.argmax(dim=1) == labels).float().mean().item())
    return loss, accuracy
