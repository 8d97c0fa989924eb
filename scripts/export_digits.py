"""Export scikit-learn's bundled 8x8 digits as ``digits.json`` for the shipped tasks.

``load_digits`` reads a file shipped inside scikit-learn, so nothing is downloaded.  The file
holds ``pixels`` (1797 rows of 64 values 0..16, as scikit-learn has them) and ``labels``
(0..9); JSON, because a Flower App Bundle carries only source and text files.  It is written
to the shipped copy, ``tasks/app_digits/digitsapp/digits.json``, and copied into every other
app that reads it: each task folder is uploaded (and run) on its own, and an app's upload
leaves links out.  ``tasks/data/digits.json`` and ``tasks/task_digits/digits.json`` are links
to the shipped copy.

Usage: ``python scripts/export_digits.py [--root REPO_ROOT]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

DATA_FILE = "digits.json"
SHIPPED = "app_digits/digitsapp"
"""The folder (under ``tasks/``) of the one exported file."""
COPIES = ("app_dcgan/dcganapp",)
"""Folders (under ``tasks/``) of apps that carry a copy (an app's upload leaves links out)."""


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Return ``(X, y)``: scaled float32 pixels and int64 labels."""
    from sklearn.datasets import load_digits  # heavy import, only needed here

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    if x.shape != (1797, 64) or y.shape != (1797,):
        raise RuntimeError(f"unexpected digits shapes {x.shape}, {y.shape}")
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise RuntimeError("scaled digits pixels are not within 0..1")
    return x, y


def json_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    """The arrays as JSON: ``pixels`` (the original 0..16 values) and ``labels``."""
    pixels = np.rint(x * 16).astype(np.int64)
    return json.dumps({"pixels": pixels.tolist(), "labels": y.tolist()},
                      separators=(",", ":")).encode()


def export(root: Path) -> list[Path]:
    """Write the data file under ``root/tasks``; return the paths written."""
    x, y = digits_arrays()
    data = json_bytes(x, y)
    main = root / "tasks" / SHIPPED / DATA_FILE
    main.parent.mkdir(parents=True, exist_ok=True)
    main.write_bytes(data)
    written = [main]
    for task in COPIES:
        copy = root / "tasks" / task / DATA_FILE
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(main, copy)
        written.append(copy)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="repository root (default: the parent of scripts/)",
    )
    args = parser.parse_args(argv)
    for path in export(args.root):
        sys.stdout.write(f"wrote {path} ({path.stat().st_size} bytes)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
