"""DCGAN on the 8x8 digits: data, the two networks, local training and sample grids.

The data is scikit-learn's 8x8 digits (``digits.json`` next to this file: ``pixels``, 1797 rows
of 64 values 0..16, and ``labels``, unused here), read as images of shape ``(1, 8, 8)`` scaled
to -1..1 to match the generator's ``tanh``. A seeded permutation of all examples is cut into
``num_partitions`` contiguous, equally sized (IID) shards, one per device.

Both networks are small and have no batch normalisation, so every entry of their state dicts is
a float tensor that FedAvg can average. They travel together as one state dict whose keys carry
the prefixes ``generator.`` and ``discriminator.``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

DATA_FILE = "digits.json"
MAX_PIXEL = 16
IMAGE_SIZE = 8
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
SPLIT_SEED = 42
"""Seed of the permutation behind the partitions."""
MODEL_SEED = 0
"""Seed of the initial global models."""

DEFAULT_LATENT_DIM = 16
DEFAULT_LR = 0.0002
DEFAULT_BATCH_SIZE = 32
BETAS = (0.5, 0.999)
ADAM_EPS = 1e-8
LEAKY_SLOPE = 0.2

GENERATOR_PREFIX = "generator."
DISCRIMINATOR_PREFIX = "discriminator."

EpochCallback = Callable[[int, float, float], None]
"""Called after each local epoch with ``(epoch, d_loss, g_loss)`` (epochs count from 1)."""


def limit_threads() -> None:
    """Use one CPU thread for torch (tasks share small machines)."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only allowed before any inter-op work started
        pass


limit_threads()


def data_path() -> Path:
    """Path of the data file shipped in this app's package folder."""
    return Path(__file__).resolve().parent / DATA_FILE


def load_images(path: Path | None = None) -> np.ndarray:
    """All digits as float32 images ``(N, 1, 8, 8)`` in -1..1 (default file: :func:`data_path`)."""
    source = path if path is not None else data_path()
    pixels = np.asarray(json.loads(source.read_text(encoding="utf-8"))["pixels"],
                        dtype=np.float32)
    if pixels.ndim != 2 or pixels.shape[1] != NUM_PIXELS:
        raise ValueError(f"{source}: unexpected shape of pixels {pixels.shape}")
    if pixels.min() < 0 or pixels.max() > MAX_PIXEL:
        raise ValueError(f"{source}: pixel values out of range 0..{MAX_PIXEL}")
    scaled = pixels / (MAX_PIXEL / 2) - 1.0
    return scaled.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)


def partition_indices(num_examples: int, partition_id: int, num_partitions: int) -> np.ndarray:
    """Indices of one IID shard: contiguous chunk ``partition_id`` of a seeded permutation."""
    if not 1 <= num_partitions <= num_examples:
        raise ValueError(f"num_partitions must be in [1, {num_examples}], got {num_partitions}")
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition_id must be in [0, {num_partitions}), got {partition_id}")
    order = np.random.default_rng(SPLIT_SEED).permutation(num_examples)
    return np.array_split(order, num_partitions)[partition_id]


def load_partition(partition_id: int, num_partitions: int, path: Path | None = None) -> np.ndarray:
    """The images of one device's shard."""
    images = load_images(path)
    return images[partition_indices(len(images), partition_id, num_partitions)]


class Generator(nn.Module):
    """Latent vector ``(B, latent_dim)`` -> image ``(B, 1, 8, 8)`` in -1..1."""

    def __init__(self, latent_dim: int = DEFAULT_LATENT_DIM) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.project = nn.Sequential(nn.Linear(latent_dim, 64 * 2 * 2), nn.ReLU())
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(64, 32, kernel_size=4, stride=2, padding=1),  # 2x2 -> 4x4
            nn.ReLU(),
            nn.ConvTranspose2d(32, 1, kernel_size=4, stride=2, padding=1),  # 4x4 -> 8x8
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Generate images from latent vectors."""
        return self.upsample(self.project(z).view(-1, 64, 2, 2))


class Discriminator(nn.Module):
    """Image ``(B, 1, 8, 8)`` -> logit ``(B,)`` of it being a real digit."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=4, stride=2, padding=1),  # 8x8 -> 4x4
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(32, 64, kernel_size=4, stride=2, padding=1),  # 4x4 -> 2x2
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Flatten(),
            nn.Linear(64 * 2 * 2, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Real-vs-fake logits."""
        return self.net(images).squeeze(1)


def build_models(
    latent_dim: int = DEFAULT_LATENT_DIM, seed: int = MODEL_SEED
) -> tuple[Generator, Discriminator]:
    """The generator and discriminator with seeded initial weights (global RNG left as is)."""
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return Generator(latent_dim), Discriminator()
    finally:
        torch.random.set_rng_state(rng_state)


def joint_state_dict(generator: nn.Module, discriminator: nn.Module) -> dict[str, torch.Tensor]:
    """Both networks' state dicts in one, keys prefixed ``generator.`` / ``discriminator.``."""
    state = {GENERATOR_PREFIX + k: v for k, v in generator.state_dict().items()}
    state.update({DISCRIMINATOR_PREFIX + k: v for k, v in discriminator.state_dict().items()})
    return state


def load_joint_state_dict(
    state: Mapping[str, torch.Tensor], generator: nn.Module, discriminator: nn.Module
) -> None:
    """Load a state dict from :func:`joint_state_dict` into both networks (strictly)."""
    parts: dict[str, dict[str, torch.Tensor]] = {GENERATOR_PREFIX: {}, DISCRIMINATOR_PREFIX: {}}
    for key, value in state.items():
        prefix = next((p for p in parts if key.startswith(p)), None)
        if prefix is None:
            raise KeyError(f"state key {key!r} has neither prefix {list(parts)}")
        parts[prefix][key.removeprefix(prefix)] = value
    generator.load_state_dict(parts[GENERATOR_PREFIX], strict=True)
    discriminator.load_state_dict(parts[DISCRIMINATOR_PREFIX], strict=True)


def generator_state(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The generator's entries of a joint state dict as numpy arrays, prefix removed."""
    return {key.removeprefix(GENERATOR_PREFIX): value.detach().cpu().numpy()
            for key, value in state.items() if key.startswith(GENERATOR_PREFIX)}


class Adam:
    """Adam (Kingma & Ba), written out.

    Same update as ``torch.optim.Adam`` without weight decay or amsgrad; creating any
    ``torch.optim`` optimizer imports ``torch._dynamo``, about 1-2 s of start-up on a small
    machine, which is most of a round here.
    """

    def __init__(self, params: Iterator[nn.Parameter], lr: float = DEFAULT_LR,
                 betas: tuple[float, float] = BETAS, eps: float = ADAM_EPS) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        """Forget the parameters' gradients."""
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update from the current gradients."""
        self.steps += 1
        correction1 = 1 - self.beta1**self.steps
        correction2 = 1 - self.beta2**self.steps
        step_size = self.lr / correction1
        for param, m, v in zip(self.params, self.m, self.v, strict=True):
            if param.grad is None:
                continue
            m.mul_(self.beta1).add_(param.grad, alpha=1 - self.beta1)
            v.mul_(self.beta2).addcmul_(param.grad, param.grad, value=1 - self.beta2)
            denom = (v / correction2).sqrt_().add_(self.eps)
            param.addcdiv_(m, denom, value=-step_size)


@dataclass(frozen=True)
class Losses:
    """Mean losses of one epoch over its examples."""

    d_loss: float
    g_loss: float


def run_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A deterministic seed for one device's training in one round."""
    return (seed * 1_000_003 + server_round * 1_009 + partition_id) % (2**31 - 1)


def train(
    generator: Generator,
    discriminator: Discriminator,
    images: np.ndarray,
    *,
    epochs: int = 1,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
) -> Losses:
    """Train both networks on ``images`` (standard non-saturating GAN losses); last epoch's
    mean losses.

    Per mini-batch the discriminator takes one step on real (label 1) and generated (label 0)
    images, then the generator one step to make the discriminator say 1 for its images. Fresh
    Adam states each call (the optimizer state is not federated).
    """
    if epochs < 1 or batch_size < 1 or lr <= 0 or len(images) == 0:
        raise ValueError("epochs and batch_size must be >= 1, lr > 0 and images non-empty")
    real_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    rng = torch.Generator().manual_seed(seed)
    g_opt = Adam(generator.parameters(), lr=lr)
    d_opt = Adam(discriminator.parameters(), lr=lr)
    bce = nn.BCEWithLogitsLoss()
    generator.train()
    discriminator.train()
    losses = Losses(math.nan, math.nan)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(real_all), generator=rng)
        d_total = g_total = 0.0
        for start in range(0, len(order), batch_size):
            real = real_all[order[start : start + batch_size]]
            count = len(real)
            ones, zeros = torch.ones(count), torch.zeros(count)
            fake = generator(torch.randn(count, generator.latent_dim, generator=rng))

            d_opt.zero_grad()
            d_loss = bce(discriminator(real), ones) + bce(discriminator(fake.detach()), zeros)
            d_loss.backward()
            d_opt.step()

            g_opt.zero_grad()
            g_loss = bce(discriminator(fake), ones)
            g_loss.backward()
            g_opt.step()

            d_total += float(d_loss.item()) * count
            g_total += float(g_loss.item()) * count
        losses = Losses(d_total / len(order), g_total / len(order))
        if on_epoch is not None:
            on_epoch(epoch, losses.d_loss, losses.g_loss)
    return losses


def sample(generator: Generator, count: int, seed: int) -> np.ndarray:
    """``count`` images ``(count, 1, 8, 8)`` in -1..1 from seeded latent vectors."""
    z = torch.randn(count, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    generator.eval()
    with torch.no_grad():
        return generator(z).numpy()


def image_grid(images: np.ndarray, columns: int, *, padding: int = 1, scale: int = 4) -> np.ndarray:
    """Tile images ``(N, 1, H, W)`` in -1..1 into one grey image in 0..1, each pixel repeated
    ``scale`` times per side; the background between tiles is black."""
    count, _, height, width = images.shape
    rows = math.ceil(count / columns)
    grid = np.zeros((rows * (height + padding) + padding, columns * (width + padding) + padding),
                    dtype=np.float32)
    for index, image in enumerate(np.clip((images[:, 0] + 1) / 2, 0.0, 1.0)):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return np.kron(grid, np.ones((scale, scale), dtype=np.float32))
