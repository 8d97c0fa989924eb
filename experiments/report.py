"""Turning experiment runs into tables, a CSV, PNG plots and mean ± 95 % confidence intervals."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

# Two-sided 95 % Student t quantiles by degrees of freedom (1..30); 1.96 beyond.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % confidence interval (0 for a single value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    df = len(values) - 1
    t = _T95[df - 1] if df <= len(_T95) else 1.96
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def table(runs: list[dict[str, float | None]], steps: Sequence[str]) -> str:
    """A text table: one row per step, mean ± CI over runs (seconds)."""
    width = max(len(step) for step in steps) + 2
    lines = [f"{'step':<{width}}{'mean (s)':>12}{'± 95% CI':>12}{'runs':>6}"]
    for step in steps:
        values = [float(v) for run in runs if (v := run.get(step)) is not None]
        if not values:
            lines.append(f"{step:<{width}}{'n/a':>12}{'':>12}{0:>6}")
            continue
        mean, half = mean_ci95(values)
        lines.append(f"{step:<{width}}{mean:>12.4f}{half:>12.4f}{len(values):>6}")
    return "\n".join(lines)


def write_csv(path: Path, runs: list[dict[str, float | None]], steps: Sequence[str]) -> None:
    """One row per run, one column per step (seconds)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", *steps])
        for index, run in enumerate(runs, start=1):
            writer.writerow([index, *("" if run.get(s) is None else f"{run[s]:.6f}"
                                      for s in steps)])


def plot_timings(path: Path, runs: list[dict[str, float | None]], steps: Sequence[str],
                 title: str) -> None:
    """A bar chart of the mean time of every step, with 95 % CI error bars."""
    means, errors, labels = [], [], []
    for step in steps:
        values = [float(v) for run in runs if (v := run.get(step)) is not None]
        if values:
            mean, half = mean_ci95(values)
            means.append(mean)
            errors.append(half)
            labels.append(step)
    figure, axis = plt.subplots(figsize=(9, 4.5))
    axis.barh(labels, means, xerr=errors, color="#3b7dd8", capsize=4)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("seconds, log scale (mean, 95 % CI)")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_accuracy(path: Path, rounds: list[list[tuple[int, float]]], title: str) -> None:
    """Held-out accuracy per round, one line per run."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for index, series in enumerate(rounds, start=1):
        if series:
            xs, ys = zip(*series, strict=True)
            axis.plot(xs, ys, marker="o", label=f"run {index}")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("round")
    axis.set_ylabel("accuracy (held-out digits)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.set_title(title)
    if len(rounds) > 1:
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_outputs(base: Path, name: str, runs: list[dict[str, Any]], steps: Sequence[str],
                  title: str) -> str:
    """The step table (returned), CSV and both plots of an experiment's runs."""
    timings = [run["timings"] for run in runs]
    write_csv(base / f"{name}_times.csv", timings, steps)
    plot_timings(base / f"{name}_timings.png", timings, steps, f"{title}: step times")
    plot_accuracy(base / f"{name}_accuracy.png", [run["rounds"] for run in runs],
                  f"{title}: held-out accuracy per round")
    return table(timings, steps)
